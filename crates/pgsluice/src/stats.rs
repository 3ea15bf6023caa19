//! Statistics behind SHOW STATS / STATS_TOTALS / STATS_AVERAGES / TOTALS and the
//! Prometheus endpoint: latency histograms with fixed buckets, totals that add up per
//! database, and averages over the last completed `stats_period`.
//!
//! Everything is updated once per transaction (a server checkout) or once per wait,
//! never per protocol message, with relaxed atomics.

use std::ops::{Add, Sub};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the histogram buckets, in microseconds (the last, +Inf, is implicit).
pub const BUCKETS_US: [u64; 16] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A latency histogram with the fixed [`BUCKETS_US`] buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket counts (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A copy of a histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per-bucket counts (not cumulative); the last is +Inf.
    pub buckets: [u64; BUCKETS_US.len() + 1],
    /// Sum of the observations, µs.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records `n` observations of `value`.
    pub fn observe_n(&self, value: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let us = value.as_micros().min(u64::MAX as u128) as u64;
        let i = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[i].fetch_add(n, Relaxed);
        self.sum_us.fetch_add(us.saturating_mul(n), Relaxed);
        self.count.fetch_add(n, Relaxed);
    }

    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        self.observe_n(value, 1);
    }

    /// Reads the histogram.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::default();
        for (d, b) in s.buckets.iter_mut().zip(&self.buckets) {
            *d = b.load(Relaxed);
        }
        s.sum_us = self.sum_us.load(Relaxed);
        s.count = self.count.load(Relaxed);
        s
    }
}

impl HistogramSnapshot {
    /// The `q` quantile (`0.5` for p50, `0.99` for p99), estimated from the buckets.
    ///
    /// See [`quantile_us`]; `None` when the histogram is empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        quantile_us(&self.buckets, q)
    }
}

/// Estimates the `q` quantile (clamped to `0..=1`), in microseconds, of observations
/// counted in the [`BUCKETS_US`] buckets (`buckets` per bucket, not cumulative; the
/// last is +Inf), the way Prometheus's `histogram_quantile` does: find the bucket the
/// rank falls in and interpolate linearly between its bounds (the first bucket starts
/// at 0). A rank in the +Inf bucket gives the largest finite bound, since nothing is
/// known above it. `None` when there is no observation.
///
/// ```
/// use pgsluice::stats::{quantile_us, BUCKETS_US};
/// let mut buckets = [0u64; BUCKETS_US.len() + 1];
/// buckets[1] = 10; // ten observations in (500 µs, 1 ms]
/// assert_eq!(quantile_us(&buckets, 0.5), Some(750));
/// assert_eq!(quantile_us(&[0; BUCKETS_US.len() + 1], 0.5), None);
/// ```
pub fn quantile_us(buckets: &[u64; BUCKETS_US.len() + 1], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        let cumulative = below + n;
        if n > 0 && cumulative as f64 >= rank {
            let Some(&upper) = BUCKETS_US.get(i) else {
                return BUCKETS_US.last().copied();
            };
            let lower = if i == 0 { 0 } else { BUCKETS_US[i - 1] };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some(lower + ((upper - lower) as f64 * within).round() as u64);
        }
        below = cumulative;
    }
    BUCKETS_US.last().copied()
}

impl Sub for HistogramSnapshot {
    type Output = HistogramSnapshot;
    /// The observations made between two snapshots of one histogram (`self` the later).
    fn sub(mut self, o: HistogramSnapshot) -> HistogramSnapshot {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a = a.saturating_sub(b);
        }
        self.sum_us = self.sum_us.saturating_sub(o.sum_us);
        self.count = self.count.saturating_sub(o.count);
        self
    }
}

impl Add for HistogramSnapshot {
    type Output = HistogramSnapshot;
    fn add(mut self, o: HistogramSnapshot) -> HistogramSnapshot {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.sum_us += o.sum_us;
        self.count += o.count;
        self
    }
}

/// Counter totals of one pool, or summed over several (SHOW STATS_TOTALS semantics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Times a server connection was assigned to a client.
    pub server_assignments: u64,
    /// Transactions.
    pub xacts: u64,
    /// Queries (Query, Sync and FunctionCall messages).
    pub queries: u64,
    /// Bytes received from clients.
    pub received: u64,
    /// Bytes sent to clients.
    pub sent: u64,
    /// Time server connections were held by clients, µs.
    pub xact_time_us: u64,
    /// Time spent in queries, µs (see docs/admin-console.md for how it is measured).
    pub query_time_us: u64,
    /// Time clients waited for a server connection, µs.
    pub wait_time_us: u64,
    /// Client logins.
    pub client_connects: u64,
    /// Server connections opened.
    pub servers_opened: u64,
    /// Parse messages of named statements from clients (transaction mode).
    pub client_parses: u64,
    /// Parse messages of named statements sent to servers, the clients' and pgsluice's.
    pub server_parses: u64,
    /// Bind messages of named statements from clients (transaction mode).
    pub binds: u64,
}

impl Add for Totals {
    type Output = Totals;
    fn add(self, o: Totals) -> Totals {
        Totals {
            server_assignments: self.server_assignments + o.server_assignments,
            xacts: self.xacts + o.xacts,
            queries: self.queries + o.queries,
            received: self.received + o.received,
            sent: self.sent + o.sent,
            xact_time_us: self.xact_time_us + o.xact_time_us,
            query_time_us: self.query_time_us + o.query_time_us,
            wait_time_us: self.wait_time_us + o.wait_time_us,
            client_connects: self.client_connects + o.client_connects,
            servers_opened: self.servers_opened + o.servers_opened,
            client_parses: self.client_parses + o.client_parses,
            server_parses: self.server_parses + o.server_parses,
            binds: self.binds + o.binds,
        }
    }
}

impl Sub for Totals {
    type Output = Totals;
    fn sub(self, o: Totals) -> Totals {
        Totals {
            server_assignments: self.server_assignments.saturating_sub(o.server_assignments),
            xacts: self.xacts.saturating_sub(o.xacts),
            queries: self.queries.saturating_sub(o.queries),
            received: self.received.saturating_sub(o.received),
            sent: self.sent.saturating_sub(o.sent),
            xact_time_us: self.xact_time_us.saturating_sub(o.xact_time_us),
            query_time_us: self.query_time_us.saturating_sub(o.query_time_us),
            wait_time_us: self.wait_time_us.saturating_sub(o.wait_time_us),
            client_connects: self.client_connects.saturating_sub(o.client_connects),
            servers_opened: self.servers_opened.saturating_sub(o.servers_opened),
            client_parses: self.client_parses.saturating_sub(o.client_parses),
            server_parses: self.server_parses.saturating_sub(o.server_parses),
            binds: self.binds.saturating_sub(o.binds),
        }
    }
}

/// Averages over one stats period, as PgBouncer defines them: counts and bytes per
/// second; transaction and query time per transaction/query; wait time per assignment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Averages {
    /// Server assignments per second.
    pub server_assignments: u64,
    /// Transactions per second.
    pub xacts: u64,
    /// Queries per second.
    pub queries: u64,
    /// Bytes received per second.
    pub received: u64,
    /// Bytes sent per second.
    pub sent: u64,
    /// Average transaction duration, µs.
    pub xact_time_us: u64,
    /// Average query duration, µs.
    pub query_time_us: u64,
    /// Average wait per assignment, µs.
    pub wait_time_us: u64,
    /// Client logins per second.
    pub client_connects: u64,
    /// Client Parse messages (named) per second.
    pub client_parses: u64,
    /// Parse messages sent to servers per second.
    pub server_parses: u64,
    /// Client Bind messages (named) per second.
    pub binds: u64,
}

impl Averages {
    /// Averages of the change from `old` to `new` over `period`.
    pub fn between(old: Totals, new: Totals, period: Duration) -> Averages {
        let d = new - old;
        let us = period.as_micros() as u64;
        if us == 0 {
            return Averages::default();
        }
        let rate = |n: u64| ((n as u128) * 1_000_000 / us as u128) as u64;
        let per = |t: u64, n: u64| t.checked_div(n).unwrap_or(0);
        Averages {
            server_assignments: rate(d.server_assignments),
            xacts: rate(d.xacts),
            queries: rate(d.queries),
            received: rate(d.received),
            sent: rate(d.sent),
            xact_time_us: per(d.xact_time_us, d.xacts),
            query_time_us: per(d.query_time_us, d.queries),
            wait_time_us: per(d.wait_time_us, d.server_assignments),
            client_connects: rate(d.client_connects),
            client_parses: rate(d.client_parses),
            server_parses: rate(d.server_parses),
            binds: rate(d.binds),
        }
    }
}

impl Averages {
    /// PgBouncer's periodic log line (`log_stats`), word for word.
    pub fn log_line(&self) -> String {
        format!(
            "stats: {} xacts/s, {} queries/s, {} client parses/s, {} server parses/s, \
             {} binds/s, in {} B/s, out {} B/s, xact {} us, query {} us, wait {} us",
            self.xacts,
            self.queries,
            self.client_parses,
            self.server_parses,
            self.binds,
            self.received,
            self.sent,
            self.xact_time_us,
            self.query_time_us,
            self.wait_time_us,
        )
    }
}

/// The two most recent period boundaries of one pool: averages are computed between
/// them, so they stay stable during a period (as in PgBouncer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Totals at the older boundary.
    pub older: Totals,
    /// Totals at the newer boundary.
    pub newer: Totals,
    /// Time between the two boundaries (zero until two boundaries passed).
    pub period: Duration,
}

impl Window {
    /// Moves the window: the newer boundary becomes the older one.
    pub fn advance(&mut self, now: Totals, period: Duration) {
        self.older = self.newer;
        self.newer = now;
        self.period = period;
    }

    /// Averages over the last completed period.
    pub fn averages(&self) -> Averages {
        Averages::between(self.older, self.newer, self.period)
    }

    /// The windows of several pools as one (the longest period).
    pub fn combine(&self, o: &Window) -> Window {
        Window {
            older: self.older + o.older,
            newer: self.newer + o.newer,
            period: self.period.max(o.period),
        }
    }
}

/// Prepared-statement traffic of one relay run, PgBouncer's SHOW STATS counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreparedCounts {
    /// Parse messages of named statements from the client.
    pub client_parses: u64,
    /// Parse messages of named statements sent to the server (the client's and injected).
    pub server_parses: u64,
    /// Bind messages of named statements from the client.
    pub binds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_micros(501));
        h.observe_n(Duration::from_secs(100), 2);
        h.observe_n(Duration::from_secs(1), 0);
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[BUCKETS_US.len()], 2);
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_us, 1001 + 200_000_000);
    }

    #[test]
    fn averages_follow_pgbouncer_definitions() {
        let old = Totals::default();
        let new = Totals {
            server_assignments: 20,
            xacts: 10,
            queries: 40,
            received: 1000,
            sent: 3000,
            xact_time_us: 50_000,
            query_time_us: 40_000,
            wait_time_us: 2_000,
            client_connects: 2,
            servers_opened: 1,
            client_parses: 6,
            server_parses: 4,
            binds: 30,
        };
        let a = Averages::between(old, new, Duration::from_secs(2));
        assert_eq!(a.xacts, 5);
        assert_eq!(a.queries, 20);
        assert_eq!(a.received, 500);
        assert_eq!(a.sent, 1500);
        assert_eq!(a.xact_time_us, 5_000);
        assert_eq!(a.query_time_us, 1_000);
        assert_eq!(a.wait_time_us, 100);
        assert_eq!(a.client_connects, 1);
        assert_eq!((a.client_parses, a.server_parses, a.binds), (3, 2, 15));
        assert_eq!(
            Averages::between(old, new, Duration::ZERO),
            Averages::default()
        );
        let mut w = Window::default();
        w.advance(new, Duration::from_secs(2));
        assert_eq!(
            w.averages(),
            Averages::between(old, new, Duration::from_secs(2))
        );
        let both = w.combine(&w);
        assert_eq!(both.averages().xacts, 10);
        assert_eq!(both.averages().xact_time_us, 5_000);
        assert_eq!(
            a.log_line(),
            "stats: 5 xacts/s, 20 queries/s, 3 client parses/s, 2 server parses/s, 15 binds/s, \
             in 500 B/s, out 1500 B/s, xact 5000 us, query 1000 us, wait 100 us"
        );
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let mut b = [0u64; BUCKETS_US.len() + 1];
        assert_eq!(quantile_us(&b, 0.5), None, "empty");
        // 100 observations in (0, 500 µs]: the quantiles spread over the bucket.
        b[0] = 100;
        assert_eq!(quantile_us(&b, 0.5), Some(250));
        assert_eq!(quantile_us(&b, 0.99), Some(495));
        assert_eq!(quantile_us(&b, 1.0), Some(500));
        assert_eq!(quantile_us(&b, 0.0), Some(0));
        // 90 fast ones and 10 in (1 ms, 2.5 ms]: p50 stays fast, p95 lands in the slow
        // bucket halfway, p99 near its top.
        b[0] = 90;
        b[2] = 10;
        assert_eq!(quantile_us(&b, 0.5), Some(278));
        assert_eq!(quantile_us(&b, 0.95), Some(1_750));
        assert_eq!(quantile_us(&b, 0.99), Some(2_350));
        // Out-of-range q is clamped, NaN taken as 0.
        assert_eq!(quantile_us(&b, 7.0), Some(2_500));
        assert_eq!(quantile_us(&b, f64::NAN), Some(0));
    }

    #[test]
    fn a_quantile_beyond_the_last_bound_is_that_bound() {
        let h = Histogram::default();
        h.observe_n(Duration::from_millis(1), 1);
        h.observe_n(Duration::from_secs(100), 9);
        let s = h.snapshot();
        assert_eq!(s.quantile_us(0.05), Some(750));
        assert_eq!(s.quantile_us(0.5), Some(60_000_000));
    }

    #[test]
    fn snapshots_subtract_to_what_happened_between() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1));
        let before = h.snapshot();
        h.observe_n(Duration::from_millis(20), 3);
        let d = h.snapshot() - before;
        assert_eq!(d.count, 3);
        assert_eq!(d.sum_us, 60_000);
        assert_eq!(d.buckets[1], 0);
        assert_eq!(d.buckets[5], 3);
        assert_eq!(
            before - h.snapshot(),
            HistogramSnapshot::default(),
            "saturates"
        );
    }
}
