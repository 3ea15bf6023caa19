//! What one benchmark run collects, and the statistics over rounds.

use crate::args::{Cell, Mode};
use crate::clients::{IdleResult, StormResult};
use crate::pgbench::Outcome;

/// Who serves the clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Contender {
    Pgsluice,
    Pgbouncer,
    /// PostgreSQL itself (or, in the pooler-only test, the fake backend itself).
    Direct,
}

impl Contender {
    pub(crate) const ALL: [Contender; 3] =
        [Contender::Pgsluice, Contender::Pgbouncer, Contender::Direct];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Pgsluice => "pgsluice",
            Contender::Pgbouncer => "PgBouncer",
            Contender::Direct => "direct",
        }
    }

    /// Line colour in the charts, (red, green, blue).
    pub(crate) fn colour(self) -> (u8, u8, u8) {
        match self {
            Contender::Pgsluice => (0x2b, 0x7b, 0xb9),
            Contender::Pgbouncer => (0xe8, 0x8a, 0x1d),
            Contender::Direct => (0x70, 0x70, 0x70),
        }
    }
}

/// One pgbench run.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// `throughput` or `pooler-only`.
    pub(crate) section: &'static str,
    pub(crate) cell: Cell,
    pub(crate) contender: Contender,
    pub(crate) round: usize,
    pub(crate) outcome: Outcome,
    /// Pooler CPU (utime + stime) per processed transaction, microseconds.
    pub(crate) cpu_us_per_tx: Option<f64>,
}

/// A cell/contender that was not run, and why.
#[derive(Debug, Clone)]
pub(crate) struct Skipped {
    pub(crate) section: &'static str,
    pub(crate) cell: Cell,
    pub(crate) contender: Contender,
    pub(crate) reason: String,
}

/// Per-query latencies of one contender at one client count, all rounds pooled.
#[derive(Debug, Clone)]
pub(crate) struct Latency {
    pub(crate) contender: Contender,
    pub(crate) clients: u32,
    pub(crate) mode: Mode,
    /// Sorted, microseconds.
    pub(crate) samples_us: Vec<u64>,
    pub(crate) errors: u64,
}

impl Latency {
    pub(crate) fn p(&self, q: f64) -> Option<f64> {
        if self.samples_us.is_empty() {
            return None;
        }
        let idx = ((self.samples_us.len() - 1) as f64 * q).round() as usize;
        Some(self.samples_us[idx] as f64)
    }
}

/// Everything one run collected.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// (key, value) lines describing the machine and the settings.
    pub(crate) meta: Vec<(String, String)>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) skipped: Vec<Skipped>,
    pub(crate) latency: Vec<Latency>,
    pub(crate) idle: Vec<(Contender, IdleResult)>,
    pub(crate) storm: Vec<(Contender, StormResult)>,
    /// Sections that could not run, with the reason.
    pub(crate) failures: Vec<String>,
}

/// Median, min and max of a set of numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stat {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) n: usize,
}

impl Stat {
    pub(crate) fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        })
    }
}

/// The summary of one cell for one contender.
#[derive(Debug, Clone)]
pub(crate) enum Summary {
    /// Every round ran clean.
    Ok { tps: Stat, cpu: Option<Stat> },
    /// At least one round had errors (failed transactions or aborted clients).
    Errors {
        rounds_with_errors: usize,
        rounds: usize,
        failed: u64,
        aborted: u64,
        first_error: Option<String>,
    },
    /// Not run (reason).
    NotRun(String),
}

impl Summary {
    pub(crate) fn tps(&self) -> Option<f64> {
        match self {
            Summary::Ok { tps, .. } => Some(tps.median),
            _ => None,
        }
    }

    pub(crate) fn cpu(&self) -> Option<f64> {
        match self {
            Summary::Ok { cpu, .. } => cpu.map(|c| c.median),
            _ => None,
        }
    }
}

impl Results {
    /// The cells of a section, in order of first appearance.
    pub(crate) fn cells(&self, section: &str) -> Vec<Cell> {
        let mut cells: Vec<Cell> = self
            .samples
            .iter()
            .filter(|s| s.section == section)
            .map(|s| s.cell)
            .chain(
                self.skipped
                    .iter()
                    .filter(|s| s.section == section)
                    .map(|s| s.cell),
            )
            .collect();
        cells.sort();
        cells.dedup();
        cells
    }

    pub(crate) fn summary(&self, section: &str, cell: Cell, who: Contender) -> Option<Summary> {
        if let Some(s) = self
            .skipped
            .iter()
            .find(|s| s.section == section && s.cell == cell && s.contender == who)
        {
            return Some(Summary::NotRun(s.reason.clone()));
        }
        let runs: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.section == section && s.cell == cell && s.contender == who)
            .collect();
        if runs.is_empty() {
            return None;
        }
        let bad: Vec<&&Sample> = runs.iter().filter(|s| !s.outcome.clean()).collect();
        if !bad.is_empty() {
            return Some(Summary::Errors {
                rounds_with_errors: bad.len(),
                rounds: runs.len(),
                failed: bad.iter().map(|s| s.outcome.failed).sum(),
                aborted: bad.iter().map(|s| s.outcome.aborted).sum(),
                first_error: bad.iter().find_map(|s| s.outcome.first_error.clone()),
            });
        }
        let tps: Vec<f64> = runs.iter().map(|s| s.outcome.tps).collect();
        let cpu: Vec<f64> = runs.iter().filter_map(|s| s.cpu_us_per_tx).collect();
        Some(Summary::Ok {
            tps: Stat::of(&tps)?,
            cpu: Stat::of(&cpu),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_median_min_max() {
        let s = Stat::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Stat::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Stat::of(&[]).is_none());
    }
}
