//! The per-host metric families of replicated databases: one series per host of each
//! cluster in force, labelled `database`, `user`, `host` (as the per-pool series have
//! it) and, on the gauges, `role` as the host last reported it. A cluster retired by a
//! reload is left out: its checks have stopped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use super::pools::Labels;
use super::text::Family;
use crate::router::{Availability, Cluster, HostState};

/// One host's figures.
pub(super) struct HostRow {
    /// The host's pool identity.
    pub(super) key: Labels,
    /// `database="..",user="..",host=".."`.
    labels: String,
    /// `primary`, `replica` or `unknown`, as the host last reported it.
    pub(super) role: &'static str,
    /// Health-check results.
    pub(super) state: HostState,
    /// Left out of routing after failures.
    pub(super) banned: bool,
}

/// The hosts of the replicated databases in force, each once, read at `now`.
pub(super) fn rows(clusters: &[Arc<Cluster>], now: Instant) -> Vec<HostRow> {
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for c in clusters.iter().filter(|c| !c.is_retired()) {
        for (state, pool) in c.members() {
            let key = Labels {
                database: c.key().database.to_string(),
                user: c.key().user.to_string(),
                host: pool.target().display_addr(),
            };
            // A host listed twice in one database: its first entry speaks for it.
            if !seen.insert(key.clone()) {
                continue;
            }
            rows.push(HostRow {
                labels: key.prom(),
                key,
                role: state.role.as_str(),
                banned: state.availability(now) == Availability::Banned,
                state,
            });
        }
    }
    rows
}

/// Appends the per-host families, read at `now`.
pub(super) fn render(f: &mut Family<'_>, clusters: &[Arc<Cluster>], now: Instant) {
    let rows = rows(clusters, now);
    let with_role = |r: &HostRow| format!("{},role=\"{}\"", r.labels, r.role);
    f.header(
        "pgsluice_host_up",
        "gauge",
        "1 when the host's last health check (or connection attempt) succeeded.",
    );
    for r in &rows {
        f.sample("pgsluice_host_up", &with_role(r), u8::from(r.state.up));
    }
    f.header(
        "pgsluice_host_banned",
        "gauge",
        "1 while the host is left out of routing after failures.",
    );
    for r in &rows {
        f.sample("pgsluice_host_banned", &with_role(r), u8::from(r.banned));
    }
    f.header(
        "pgsluice_host_replica_lag_bytes",
        "gauge",
        "WAL bytes a replica has still to replay (0 on the primary; absent while unknown).",
    );
    for r in &rows {
        if let Some(lag) = r.state.lag_bytes {
            f.sample("pgsluice_host_replica_lag_bytes", &with_role(r), lag);
        }
    }
    f.header(
        "pgsluice_host_checks_failed_total",
        "counter",
        "Health checks and connection attempts of the host that failed.",
    );
    for r in &rows {
        f.sample(
            "pgsluice_host_checks_failed_total",
            &r.labels,
            r.state.checks_failed,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::text::samples;
    use super::*;
    use crate::router::test_support::{cluster, hosts};
    use crate::router::Observation;

    const BAN: Duration = Duration::from_secs(5);

    #[test]
    fn each_host_once_with_its_role_state_and_lag() {
        let c = cluster("rep", hosts(&["10.0.0.1:5432", "10.0.0.2:5433"]));
        let retired = cluster("rep", hosts(&["10.0.0.1:5432"]));
        retired.retire();
        let t = Instant::now();
        c.hosts().record(
            0,
            t,
            Ok(Observation {
                in_recovery: false,
                lsn: 900,
                replay_age: None,
            }),
            BAN,
        );
        c.hosts().record(1, t, Err("refused".into()), BAN);
        let mut out = String::new();
        render(&mut Family { out: &mut out }, &[c, retired], t);
        let h1 = r#"database="rep",user="u",host="10.0.0.1:5432""#;
        let h2 = r#"database="rep",user="u",host="10.0.0.2:5433""#;
        let expected = [
            (format!("pgsluice_host_up{{{h1},role=\"primary\"}}"), "1"),
            (format!("pgsluice_host_up{{{h2},role=\"unknown\"}}"), "0"),
            (
                format!("pgsluice_host_banned{{{h1},role=\"primary\"}}"),
                "0",
            ),
            (
                format!("pgsluice_host_banned{{{h2},role=\"unknown\"}}"),
                "1",
            ),
            (
                format!("pgsluice_host_replica_lag_bytes{{{h1},role=\"primary\"}}"),
                "0",
            ),
            (format!("pgsluice_host_checks_failed_total{{{h1}}}"), "0"),
            (format!("pgsluice_host_checks_failed_total{{{h2}}}"), "1"),
        ];
        // Exactly these, each once; the unknown lag of host 2 is left out.
        let mut got = samples(&out);
        got.sort();
        let mut want: Vec<(String, String)> = expected
            .into_iter()
            .map(|(s, v)| (s, v.to_owned()))
            .collect();
        want.sort();
        assert_eq!(got, want, "{out}");
    }
}
