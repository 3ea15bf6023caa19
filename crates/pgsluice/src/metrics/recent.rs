//! The dashboard's sliding window: the histograms only grow, so percentiles of the
//! last minute come from the difference between now and a copy taken about a minute
//! ago. [`Recent`] keeps a few such copies (one per `every` at most, taken when
//! `/api/stats` is asked), with the time passed in, so tests drive it without a clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::pools::Labels;
use crate::stats::HistogramSnapshot;

/// Every pool's query, transaction and wait histograms.
pub(super) type Hists = BTreeMap<Labels, [HistogramSnapshot; 3]>;

/// Copies of the histograms from the last `span` or so.
#[derive(Debug)]
pub(super) struct Recent {
    samples: VecDeque<(Instant, Hists)>,
    every: Duration,
    span: Duration,
}

/// The window a document covers: its length and the histograms at its start.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Baseline {
    /// Time from the copy to now.
    pub(super) age: Duration,
    /// The histograms then.
    pub(super) hists: Hists,
}

impl Recent {
    /// A window of about `span`, copying at most once per `every`.
    pub(super) fn new(span: Duration, every: Duration) -> Recent {
        Recent {
            samples: VecDeque::new(),
            every,
            span,
        }
    }

    /// Records `current` (unless a copy is younger than `every`) and returns the copy
    /// from about `span` ago: the newest one at least that old, or the oldest kept
    /// while the window is still filling. `None` before any earlier copy exists.
    pub(super) fn baseline(&mut self, now: Instant, current: &Hists) -> Option<Baseline> {
        let due = self
            .samples
            .back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= self.every);
        if due {
            self.samples.push_back((now, current.clone()));
        }
        // Keep one copy older than the span (the baseline), drop those before it.
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= self.span)
        {
            self.samples.pop_front();
        }
        let (t, hists) = self.samples.front()?;
        let age = now.saturating_duration_since(*t);
        (!age.is_zero()).then(|| Baseline {
            age,
            hists: hists.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hists(count: u64) -> Hists {
        let h = HistogramSnapshot {
            count,
            ..HistogramSnapshot::default()
        };
        let key = Labels {
            database: "d".into(),
            user: "u".into(),
            host: "h".into(),
        };
        BTreeMap::from([(key, [h; 3])])
    }

    fn count(b: &Baseline) -> u64 {
        b.hists.values().next().unwrap()[0].count
    }

    #[test]
    fn the_baseline_is_about_a_span_old() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut r = Recent::new(s(60), s(5));
        assert_eq!(r.baseline(t0, &hists(0)), None, "nothing earlier yet");
        // Filling: the oldest copy.
        let b = r.baseline(t0 + s(2), &hists(2)).unwrap();
        assert_eq!((b.age, count(&b)), (s(2), 0));
        for i in 1..=30 {
            r.baseline(t0 + s(5 * i), &hists(5 * i));
        }
        // At 150 s, copies every 5 s: the newest at least 60 s old is the one of 90 s.
        let b = r.baseline(t0 + s(151), &hists(151)).unwrap();
        assert_eq!((b.age, count(&b)), (s(61), 90));
        assert!(r.samples.len() <= 14, "{}", r.samples.len());
        // A long pause: the last copy before it serves, however old.
        let b = r.baseline(t0 + s(1000), &hists(1000)).unwrap();
        assert_eq!(count(&b), 150);
        assert_eq!(b.age, s(850));
    }
}
