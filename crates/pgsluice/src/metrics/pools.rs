//! The per-pool metric families. Every series carries `database`, `user` and `host`
//! (the pool's server, `host:port` or the socket path): a replicated database has a
//! pool per host, so (database, user) alone would repeat a series. Pools that share
//! all three labels (a pool retired by a reload and its successor, a host listed
//! twice) are summed into one series, so no series is ever emitted twice.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::text::{esc, Family};
use crate::pool::{Pool, PoolCounts};
use crate::stats::{HistogramSnapshot, Totals};

/// A counter family: name, help, and how to read it from a pool's totals.
type Counter = (&'static str, &'static str, fn(&Totals) -> f64);

/// The labels of a per-pool series (also the dashboard's pool identity).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Labels {
    /// The database name clients use.
    pub(super) database: String,
    /// The pool's server user.
    pub(super) user: String,
    /// The pool's server, `host:port` or the socket path.
    pub(super) host: String,
}

impl Labels {
    /// `database="..",user="..",host=".."`, escaped.
    pub(super) fn prom(&self) -> String {
        format!(
            "database=\"{}\",user=\"{}\",host=\"{}\"",
            esc(&self.database),
            esc(&self.user),
            esc(&self.host)
        )
    }
}

/// What one series reports: a pool, or the sum of the pools with its labels.
pub(super) struct Series {
    pub(super) counts: PoolCounts,
    /// pool_size and paused come from a pool in force when there is one.
    pub(super) size: usize,
    pub(super) paused: bool,
    live: bool,
    pub(super) totals: Totals,
    /// Query, transaction and wait durations.
    pub(super) hists: [HistogramSnapshot; 3],
}

impl Series {
    fn of(p: &Pool) -> Series {
        let (query, xact, wait) = p.stats.histograms();
        Series {
            counts: p.counts(),
            size: p.settings().size,
            paused: p.is_paused(),
            live: !p.is_retired(),
            totals: p.stats.totals(),
            hists: [query, xact, wait],
        }
    }

    fn absorb(&mut self, other: Series) {
        self.counts = self.counts.combine(&other.counts);
        self.totals = self.totals + other.totals;
        for (mine, theirs) in self.hists.iter_mut().zip(other.hists) {
            *mine = *mine + theirs;
        }
        if other.live && !self.live {
            self.size = other.size;
            self.paused = other.paused;
            self.live = true;
        }
    }
}

/// The pools' series by label set.
pub(super) fn series(pools: &[Arc<Pool>]) -> BTreeMap<Labels, Series> {
    let mut by_labels: BTreeMap<Labels, Series> = BTreeMap::new();
    for p in pools {
        let labels = Labels {
            database: p.key().database.to_string(),
            user: p.key().user.to_string(),
            host: p.target().display_addr(),
        };
        let s = Series::of(p);
        match by_labels.entry(labels) {
            Entry::Vacant(e) => {
                e.insert(s);
            }
            Entry::Occupied(mut e) => e.get_mut().absorb(s),
        }
    }
    by_labels
}

/// Appends every per-pool family.
pub(super) fn render(f: &mut Family<'_>, pools: &[Arc<Pool>]) {
    let all: Vec<(String, Series)> = series(pools)
        .into_iter()
        .map(|(l, s)| (l.prom(), s))
        .collect();
    f.header(
        "pgsluice_pool_client_connections",
        "gauge",
        "Client connections by pool and state.",
    );
    for (l, s) in &all {
        let c = &s.counts;
        let idle = c.cl_active - c.cl_linked;
        for (state, n) in [
            ("active", c.cl_linked),
            ("idle", idle),
            ("waiting", c.cl_waiting),
        ] {
            f.sample(
                "pgsluice_pool_client_connections",
                &format!("{l},state=\"{state}\""),
                n,
            );
        }
    }
    f.header(
        "pgsluice_pool_server_connections",
        "gauge",
        "Server connections by pool and state.",
    );
    for (l, s) in &all {
        let c = &s.counts;
        for (state, n) in [
            ("active", c.sv_active),
            ("idle", c.sv_idle),
            ("tested", c.sv_tested),
            ("login", c.sv_login),
        ] {
            f.sample(
                "pgsluice_pool_server_connections",
                &format!("{l},state=\"{state}\""),
                n,
            );
        }
    }
    f.header(
        "pgsluice_pool_max_wait_seconds",
        "gauge",
        "How long the oldest waiting client has waited.",
    );
    for (l, s) in &all {
        f.sample(
            "pgsluice_pool_max_wait_seconds",
            l,
            s.counts.maxwait_us as f64 / 1e6,
        );
    }
    f.header(
        "pgsluice_pool_size",
        "gauge",
        "Configured maximum of server connections.",
    );
    for (l, s) in &all {
        f.sample("pgsluice_pool_size", l, s.size);
    }
    f.header(
        "pgsluice_pool_paused",
        "gauge",
        "1 while the pool is paused.",
    );
    for (l, s) in &all {
        f.sample("pgsluice_pool_paused", l, u8::from(s.paused));
    }

    for (name, help, get) in COUNTERS {
        f.header(name, "counter", help);
        for (l, s) in &all {
            f.sample(name, l, get(&s.totals));
        }
    }
    f.header(
        "pgsluice_server_connections_opened_total",
        "counter",
        "Server connections opened.",
    );
    for (l, s) in &all {
        f.sample(
            "pgsluice_server_connections_opened_total",
            l,
            s.totals.servers_opened,
        );
    }

    for (i, (name, help)) in HISTOGRAMS.iter().enumerate() {
        f.header(name, "histogram", help);
        for (l, s) in &all {
            f.histogram(name, l, &s.hists[i]);
        }
    }
}

/// Index of the query, transaction and wait histograms in [`Series::hists`].
pub(super) const QUERY: usize = 0;
/// See [`QUERY`].
pub(super) const XACT: usize = 1;
/// See [`QUERY`].
pub(super) const WAIT: usize = 2;

/// The histogram families, in the order of [`Series::hists`].
const HISTOGRAMS: [(&str, &str); 3] = [
    (
        "pgsluice_query_duration_seconds",
        "Query duration (per transaction: hold time divided by its queries).",
    ),
    (
        "pgsluice_transaction_duration_seconds",
        "Time a server connection was held for one transaction.",
    ),
    (
        "pgsluice_wait_duration_seconds",
        "Time a client waited for a server connection.",
    ),
];

const COUNTERS: [Counter; 12] = [
    (
        "pgsluice_server_assignments_total",
        "Server connections assigned to clients.",
        |t| t.server_assignments as f64,
    ),
    ("pgsluice_transactions_total", "Transactions pooled.", |t| {
        t.xacts as f64
    }),
    ("pgsluice_queries_total", "Queries pooled.", |t| {
        t.queries as f64
    }),
    (
        "pgsluice_received_bytes_total",
        "Bytes received from clients.",
        |t| t.received as f64,
    ),
    ("pgsluice_sent_bytes_total", "Bytes sent to clients.", |t| {
        t.sent as f64
    }),
    (
        "pgsluice_transaction_time_seconds_total",
        "Time server connections were held by clients.",
        |t| t.xact_time_us as f64 / 1e6,
    ),
    (
        "pgsluice_query_time_seconds_total",
        "Time spent in queries.",
        |t| t.query_time_us as f64 / 1e6,
    ),
    (
        "pgsluice_wait_time_seconds_total",
        "Time clients waited for a server connection.",
        |t| t.wait_time_us as f64 / 1e6,
    ),
    ("pgsluice_client_logins_total", "Client logins.", |t| {
        t.client_connects as f64
    }),
    (
        "pgsluice_prepared_client_parses_total",
        "Parse messages of named statements from clients (SHOW STATS total_client_parse_count).",
        |t| t.client_parses as f64,
    ),
    (
        "pgsluice_prepared_server_parses_total",
        "Parse messages of named statements sent to servers (SHOW STATS total_server_parse_count).",
        |t| t.server_parses as f64,
    ),
    (
        "pgsluice_prepared_binds_total",
        "Bind messages of named statements from clients (SHOW STATS total_bind_count).",
        |t| t.binds as f64,
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::super::text::samples;
    use super::*;
    use crate::pool::{test_support, Groups};
    use crate::router::test_support::{cluster, hosts};

    fn render_text(pools: &[Arc<Pool>]) -> String {
        let mut out = String::new();
        render(&mut Family { out: &mut out }, pools);
        out
    }

    #[test]
    fn a_cluster_of_two_hosts_has_a_series_per_host_and_none_twice() {
        let c = cluster("rep", hosts(&["10.0.0.1:5432", "10.0.0.2:5433"]));
        c.pools()[0]
            .stats
            .add_xact(1, 10, 20, Duration::from_millis(1));
        c.pools()[1]
            .stats
            .add_xact(1, 10, 20, Duration::from_millis(1));
        c.pools()[1]
            .stats
            .add_xact(1, 10, 20, Duration::from_millis(1));
        let plain = test_support::pool("app", "u", Groups::standalone("app", "u"), |_| {});
        let mut pools = c.pools().to_vec();
        pools.push(plain);
        let text = render_text(&pools);
        let all = samples(&text);
        let mut seen = HashSet::new();
        for (series, _) in &all {
            assert!(seen.insert(series.clone()), "{series} twice in\n{text}");
        }
        let value = |series: &str| {
            all.iter()
                .find(|(s, _)| s == series)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        };
        assert_eq!(
            value(r#"pgsluice_transactions_total{database="rep",user="u",host="10.0.0.1:5432"}"#),
            "1"
        );
        assert_eq!(
            value(r#"pgsluice_transactions_total{database="rep",user="u",host="10.0.0.2:5433"}"#),
            "2"
        );
        assert_eq!(
            value(r#"pgsluice_pool_size{database="app",user="u",host="127.0.0.1:1"}"#),
            "5"
        );
        assert_eq!(
            value(
                r#"pgsluice_wait_duration_seconds_bucket{database="rep",user="u",host="10.0.0.2:5433",le="+Inf"}"#
            ),
            "0"
        );
    }

    #[test]
    fn pools_with_the_same_labels_are_summed_into_one_series() {
        let groups = Groups::standalone("app", "u");
        let old = test_support::pool("app", "u", groups.clone(), |s| s.size = 9);
        let new = test_support::pool("app", "u", groups, |s| s.size = 4);
        old.retire();
        old.stats.add_xact(1, 10, 20, Duration::from_millis(1));
        new.stats.add_xact(2, 10, 20, Duration::from_millis(1));
        let text = render_text(&[old, new]);
        let all = samples(&text);
        let get = |name: &str| {
            let found: Vec<_> = all.iter().filter(|(s, _)| s.starts_with(name)).collect();
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            found[0].1.clone()
        };
        assert_eq!(get("pgsluice_transactions_total{"), "2");
        assert_eq!(get("pgsluice_queries_total{"), "3");
        assert_eq!(get("pgsluice_transaction_duration_seconds_count{"), "2");
        assert_eq!(get("pgsluice_pool_size{"), "4", "the pool in force");
    }
}
