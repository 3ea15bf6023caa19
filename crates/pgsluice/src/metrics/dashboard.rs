//! The live dashboard on `metrics_listen`: the page (`dashboard.html`, embedded in the
//! binary) and the JSON document it polls (`GET /api/stats`). [`Snapshot::read`] copies
//! what the page shows out of the process; [`stats_json`] turns it into the document
//! without touching the process, so tests build snapshots by hand. The format is in
//! `docs/dashboard.md`. Names of databases, users and hosts are shown; credentials
//! and query texts are not (a snapshot has none to show).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::hosts;
use super::pools::{self, Labels, Series, QUERY, WAIT, XACT};
use super::recent::{Baseline, Hists, Recent};
use crate::admin::Console;
use crate::pool::PoolCounts;
use crate::stats::{HistogramSnapshot, Totals};
use crate::sync::LockExt;

/// The page, served at `/`.
pub(super) const PAGE: &str = include_str!("dashboard.html");

/// The quantiles reported for each histogram.
const QUANTILES: [(&str, f64); 3] = [("p50_us", 0.5), ("p95_us", 0.95), ("p99_us", 0.99)];

/// How many pools the "slowest" list names.
const SLOWEST: usize = 5;

/// A replicated database's host, as its health checks last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostView {
    /// The host's pool identity.
    pub(super) key: Labels,
    /// `primary`, `replica` or `unknown`.
    pub(super) role: &'static str,
    /// The last check succeeded.
    pub(super) up: bool,
    /// Left out of routing after failures.
    pub(super) banned: bool,
    /// WAL bytes still to replay, when known.
    pub(super) lag_bytes: Option<u64>,
}

/// What the dashboard shows, copied out of the process at one moment.
pub(super) struct Snapshot {
    /// Time since start.
    pub(super) uptime: Duration,
    /// PAUSE or SUSPEND holds every database.
    pub(super) paused: bool,
    /// Clients parked without a task.
    pub(super) clients_parked: usize,
    /// The per-pool series, as `/metrics` has them.
    pub(super) pools: Vec<(Labels, Series)>,
    /// The hosts of replicated databases.
    pub(super) hosts: Vec<HostView>,
    /// The histograms about a minute ago, for the recent percentiles.
    pub(super) baseline: Option<Baseline>,
}

impl Snapshot {
    /// Reads the process through its console interface; `recent` keeps the copies of
    /// the histograms the recent percentiles are measured from.
    pub(super) fn read(console: &dyn Console, now: Instant, recent: &Mutex<Recent>) -> Snapshot {
        let flags = console.router().db_flags();
        let hosts = hosts::rows(&console.router().clusters(), now)
            .into_iter()
            .map(|r| HostView {
                key: r.key,
                role: r.role,
                up: r.state.up,
                banned: r.banned,
                lag_bytes: r.state.lag_bytes,
            })
            .collect();
        let pools: Vec<(Labels, Series)> = pools::series(&console.router().pools())
            .into_iter()
            .collect();
        let current: Hists = pools.iter().map(|(l, s)| (l.clone(), s.hists)).collect();
        let baseline = recent.locked().baseline(now, &current);
        Snapshot {
            uptime: console.uptime(),
            paused: flags.paused_all || flags.suspended,
            clients_parked: console.client_counts().parked,
            pools,
            hosts,
            baseline,
        }
    }
}

/// Count, sum and quantiles of a histogram (quantiles `null` while it is empty).
fn latency(h: &HistogramSnapshot) -> Value {
    let mut v = json!({ "count": h.count, "sum_us": h.sum_us });
    for (name, q) in QUANTILES {
        v[name] = json!(h.quantile_us(q));
    }
    v
}

fn latencies(h: &[HistogramSnapshot; 3]) -> Value {
    json!({
        "query": latency(&h[QUERY]),
        "xact": latency(&h[XACT]),
        "wait": latency(&h[WAIT]),
    })
}

fn clients(c: &PoolCounts) -> Value {
    json!({
        "active": c.cl_linked,
        "waiting": c.cl_waiting,
        "idle": c.cl_active.saturating_sub(c.cl_linked),
    })
}

fn servers(c: &PoolCounts) -> Value {
    json!({
        "active": c.sv_active,
        "idle": c.sv_idle,
        "tested": c.sv_tested,
        "login": c.sv_login,
    })
}

fn totals(t: &Totals) -> Value {
    json!({
        "xacts": t.xacts,
        "queries": t.queries,
        "server_assignments": t.server_assignments,
        "received_bytes": t.received,
        "sent_bytes": t.sent,
        "xact_time_us": t.xact_time_us,
        "query_time_us": t.query_time_us,
        "wait_time_us": t.wait_time_us,
        "client_logins": t.client_connects,
    })
}

/// What the histograms of `l` gained since the baseline (all of it without one).
fn since(
    base: Option<&Baseline>,
    l: &Labels,
    now: &[HistogramSnapshot; 3],
) -> [HistogramSnapshot; 3] {
    let then = base
        .and_then(|b| b.hists.get(l))
        .copied()
        .unwrap_or_default();
    [now[0] - then[0], now[1] - then[1], now[2] - then[2]]
}

/// The `/api/stats` document of a snapshot.
pub(super) fn stats_json(s: &Snapshot) -> Value {
    let role_of = |l: &Labels| s.hosts.iter().find(|h| &h.key == l).map(|h| h.role);
    let base = s.baseline.as_ref();
    let mut all_counts = PoolCounts::default();
    let mut all_totals = Totals::default();
    let mut all_hists = [HistogramSnapshot::default(); 3];
    let mut all_recent = [HistogramSnapshot::default(); 3];
    let mut by_host: BTreeMap<&str, (usize, PoolCounts)> = BTreeMap::new();
    let mut pools = Vec::with_capacity(s.pools.len());
    for (l, p) in &s.pools {
        all_counts = all_counts.combine(&p.counts);
        all_totals = all_totals + p.totals;
        let recent = since(base, l, &p.hists);
        for (a, h) in all_hists.iter_mut().zip(p.hists) {
            *a = *a + h;
        }
        for (a, h) in all_recent.iter_mut().zip(recent) {
            *a = *a + h;
        }
        let host = by_host.entry(&l.host).or_default();
        host.0 += 1;
        host.1 = host.1.combine(&p.counts);
        pools.push(json!({
            "database": l.database,
            "user": l.user,
            "host": l.host,
            "role": role_of(l),
            "pool_size": p.size,
            "paused": p.paused,
            "clients": clients(&p.counts),
            "servers": servers(&p.counts),
            "max_wait_us": p.counts.maxwait_us,
            "totals": totals(&p.totals),
            "latency": latencies(&p.hists),
            "latency_recent": base.map(|_| latencies(&recent)),
        }));
    }

    // The pools whose transactions take longest at the 95th percentile, over the
    // recent window when there is one.
    let mut ranked: Vec<(u64, &Labels, [HistogramSnapshot; 3])> = s
        .pools
        .iter()
        .filter_map(|(l, p)| {
            let h = since(base, l, &p.hists);
            Some((h[XACT].quantile_us(0.95)?, l, h))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let slowest: Vec<Value> = ranked
        .into_iter()
        .take(SLOWEST)
        .map(|(p95, l, h)| {
            json!({
                "database": l.database,
                "user": l.user,
                "host": l.host,
                "xact_p95_us": p95,
                "query_p95_us": h[QUERY].quantile_us(0.95),
                "wait_p95_us": h[WAIT].quantile_us(0.95),
            })
        })
        .collect();

    let hosts: Vec<Value> = by_host
        .into_iter()
        .map(|(host, (n, c))| {
            let checked = s.hosts.iter().find(|h| h.key.host == host);
            json!({
                "host": host,
                "pools": n,
                "servers": servers(&c),
                "clients": clients(&c),
                "role": checked.map(|h| h.role),
                "up": checked.map(|h| h.up),
                "banned": checked.map(|h| h.banned),
                "lag_bytes": checked.and_then(|h| h.lag_bytes),
            })
        })
        .collect();

    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.uptime.as_secs(),
        "uptime_ms": s.uptime.as_millis() as u64,
        "paused": s.paused,
        "clients_parked": s.clients_parked,
        "recent_s": base.map(|b| b.age.as_secs_f64()),
        "summary": {
            "clients": clients(&all_counts),
            "servers": servers(&all_counts),
            "totals": totals(&all_totals),
            "latency": latencies(&all_hists),
            "latency_recent": base.map(|_| latencies(&all_recent)),
        },
        "pools": pools,
        "slowest": slowest,
        "hosts": hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{test_support, Groups};

    fn labels(db: &str, host: &str) -> Labels {
        Labels {
            database: db.into(),
            user: "u".into(),
            host: host.into(),
        }
    }

    fn series_of(db: &str, edit: impl FnOnce(&crate::pool::Pool)) -> Series {
        let p = test_support::pool(db, "u", Groups::standalone(db, "u"), |s| s.size = 7);
        edit(&p);
        let mut all = pools::series(&[p]);
        all.pop_first().unwrap().1
    }

    #[test]
    fn the_document_of_a_snapshot() {
        let fast = series_of("fast", |p| {
            p.stats.add_xact(1, 10, 20, Duration::from_micros(300));
            p.stats.add_xact(1, 10, 20, Duration::from_micros(300));
        });
        let slow = series_of("slow", |p| {
            p.stats.add_xact(2, 10, 20, Duration::from_millis(40));
        });
        let idle = series_of("idle", |_| {});
        let snap = Snapshot {
            uptime: Duration::from_secs(42),
            paused: false,
            clients_parked: 3,
            pools: vec![
                (labels("fast", "10.0.0.1:5432"), fast),
                (labels("slow", "10.0.0.2:5432"), slow),
                (labels("idle", "10.0.0.1:5432"), idle),
            ],
            hosts: vec![HostView {
                key: labels("slow", "10.0.0.2:5432"),
                role: "replica",
                up: true,
                banned: false,
                lag_bytes: Some(128),
            }],
            baseline: None,
        };
        let v = stats_json(&snap);
        assert_eq!(v["uptime_s"], 42);
        assert_eq!(v["clients_parked"], 3);
        let pools = v["pools"].as_array().unwrap();
        assert_eq!(pools.len(), 3);
        let fast = &pools[0];
        assert_eq!(fast["database"], "fast");
        assert_eq!(fast["pool_size"], 7);
        assert_eq!(fast["role"], Value::Null);
        assert_eq!(fast["totals"]["xacts"], 2);
        assert_eq!(fast["latency"]["xact"]["count"], 2);
        assert_eq!(fast["latency"]["xact"]["p50_us"], 250);
        assert_eq!(fast["clients"]["waiting"], 0);
        assert_eq!(pools[1]["role"], "replica");
        // The 40 ms transaction falls in (25 ms, 50 ms]: p95 near the top of it.
        assert_eq!(pools[1]["latency"]["xact"]["p95_us"], 48_750);
        assert_eq!(pools[2]["latency"]["wait"]["p99_us"], Value::Null, "empty");

        let slowest = v["slowest"].as_array().unwrap();
        assert_eq!(
            slowest.len(),
            2,
            "pools without transactions are not ranked"
        );
        assert_eq!(slowest[0]["database"], "slow");
        assert_eq!(slowest[1]["database"], "fast");

        assert_eq!(v["summary"]["totals"]["xacts"], 3);
        assert_eq!(v["summary"]["totals"]["queries"], 4);
        assert_eq!(v["summary"]["latency"]["xact"]["count"], 3);

        let hosts = v["hosts"].as_array().unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0]["host"], "10.0.0.1:5432");
        assert_eq!(hosts[0]["pools"], 2);
        assert_eq!(hosts[0]["role"], Value::Null);
        assert_eq!(hosts[1]["role"], "replica");
        assert_eq!(hosts[1]["lag_bytes"], 128);
        assert_eq!(v["recent_s"], Value::Null);
        assert_eq!(pools[0]["latency_recent"], Value::Null);
    }

    #[test]
    fn recent_percentiles_cover_what_happened_since_the_baseline() {
        let pool = test_support::pool("db", "u", Groups::standalone("db", "u"), |_| {});
        let key = labels("db", "h");
        // A slow minute long ago, then fast transactions.
        pool.stats.add_xact(1, 0, 0, Duration::from_secs(2));
        let then = pools::series(std::slice::from_ref(&pool))
            .pop_first()
            .unwrap()
            .1
            .hists;
        pool.stats.add_xact(1, 0, 0, Duration::from_micros(100));
        pool.stats.add_xact(1, 0, 0, Duration::from_micros(100));
        let now = pools::series(&[pool]).pop_first().unwrap().1;
        let snap = Snapshot {
            uptime: Duration::from_secs(100),
            paused: false,
            clients_parked: 0,
            pools: vec![(key.clone(), now)],
            hosts: Vec::new(),
            baseline: Some(Baseline {
                age: Duration::from_secs(60),
                hists: BTreeMap::from([(key, then)]),
            }),
        };
        let v = stats_json(&snap);
        assert_eq!(v["recent_s"], 60.0);
        let p = &v["pools"][0];
        assert_eq!(p["latency"]["xact"]["count"], 3);
        assert_eq!(p["latency"]["xact"]["p99_us"], 2_455_000, "since start");
        assert_eq!(p["latency_recent"]["xact"]["count"], 2);
        assert_eq!(
            p["latency_recent"]["xact"]["p99_us"], 495,
            "the last minute"
        );
        assert_eq!(v["summary"]["latency_recent"]["xact"]["count"], 2);
        assert_eq!(
            v["slowest"][0]["xact_p95_us"], 475,
            "ranked over the window"
        );
    }

    #[test]
    fn no_secrets_in_the_document() {
        // The document is built from counts and names only; a database named like
        // markup stays a JSON string (the page inserts text, never HTML).
        let s = series_of("db", |_| {});
        let snap = Snapshot {
            uptime: Duration::ZERO,
            paused: true,
            clients_parked: 0,
            pools: vec![(labels("<b>x</b>", "h"), s)],
            hosts: Vec::new(),
            baseline: None,
        };
        let text = stats_json(&snap).to_string();
        assert!(text.contains(r#""database":"<b>x</b>""#), "{text}");
        assert!(!text.contains("password"), "{text}");
        assert!(
            !PAGE.contains("innerHTML"),
            "the page builds DOM nodes from text"
        );
        assert!(
            !PAGE.contains("http://") && !PAGE.contains("https://"),
            "no external resource"
        );
    }
}
