//! SHOW HOSTS (pgsluice's own, PgBouncer has no such command): one row per host of
//! every replicated database and server user, with what its health checks found and
//! its pool's server connections. Plain databases have no rows.

use std::sync::Arc;
use std::time::Instant;

use super::super::result::{format_time, Cell, ResultSet, Ty};
use super::super::Ctx;
use crate::clock::wall_us_now;
use crate::router::{Availability, Cluster};

use Ty::{Int4, Int8, Text};

/// The columns of SHOW HOSTS.
const HOST_COLUMNS: [(&str, Ty); 14] = [
    ("database", Text),
    ("user", Text),
    ("host", Text),
    ("port", Int4),
    ("role", Text),
    ("configured_role", Text),
    ("state", Text),
    ("lag_bytes", Int8),
    ("replay_age_ms", Int8),
    ("banned_until", Text),
    ("checks_failed", Int8),
    ("last_error", Text),
    ("sv_active", Int4),
    ("sv_idle", Int4),
];

/// SHOW HOSTS.
pub(super) fn hosts(ctx: &Ctx<'_>) -> ResultSet {
    let clusters = ctx.console.router().clusters();
    rows(&clusters, Instant::now(), wall_us_now())
}

/// The rows of the clusters in force (a retired cluster's checks have stopped, so
/// its record is stale; its connections still show in SHOW POOLS and SERVERS), at
/// `now`, which is `now_us` µs since the Unix epoch.
fn rows(clusters: &[Arc<Cluster>], now: Instant, now_us: u64) -> ResultSet {
    let mut rs = ResultSet::new(&HOST_COLUMNS);
    for c in clusters.iter().filter(|c| !c.is_retired()) {
        let key = c.key();
        for (h, pool) in c.members() {
            let counts = pool.counts();
            let availability = h.availability(now);
            // A wall-clock time, like the console's other times (second resolution).
            let banned_until = h
                .banned_until
                .filter(|_| availability == Availability::Banned)
                .map(|b| {
                    let left = b.saturating_duration_since(now).as_micros();
                    format_time(now_us.saturating_add(saturating_u64(left)))
                });
            rs.push(vec![
                key.database.as_ref().into(),
                key.user.as_ref().into(),
                h.config.host.as_str().into(),
                h.config.port.into(),
                h.role.as_str().into(),
                h.config.role.as_str().into(),
                availability.as_str().into(),
                h.lag_bytes.map_or(Cell::Null, Cell::from),
                h.replay_age
                    .map_or(Cell::Null, |a| Cell::from(saturating_u64(a.as_millis()))),
                banned_until.into(),
                h.checks_failed.into(),
                h.last_error.into(),
                counts.sv_active.into(),
                counts.sv_idle.into(),
            ]);
        }
    }
    rs
}

fn saturating_u64(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::HostRole;
    use crate::pool::test_support::open;
    use crate::pool::{ReturnAs, Start};
    use crate::router::test_support::{cluster, hosts};
    use crate::router::Observation;

    const BAN: Duration = Duration::from_secs(10);

    fn column(rs: &ResultSet, row: usize, name: &str) -> Cell {
        let i = rs.column_names().iter().position(|c| *c == name).unwrap();
        rs.rows()[row][i].clone()
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.to_owned())
    }

    #[tokio::test]
    async fn one_row_per_host_with_role_state_lag_and_connections() {
        let mut list = hosts(&["10.0.0.1:5432", "10.0.0.2:5433", "10.0.0.3"]);
        list[1].role = HostRole::Replica;
        let c = cluster("app", list);
        let gone = cluster("old", hosts(&["10.9.9.9"]));
        gone.retire();
        let t = Instant::now();
        let hosts = c.hosts();
        hosts.record(
            0,
            t,
            Ok(Observation {
                in_recovery: false,
                lsn: 5000,
                replay_age: None,
            }),
            BAN,
        );
        hosts.record(
            1,
            t,
            Ok(Observation {
                in_recovery: true,
                lsn: 4000,
                replay_age: Some(Duration::from_millis(250)),
            }),
            BAN,
        );
        let why = "could not connect to server 10.0.0.3:5432: Connection refused (os error 111)";
        hosts.report_failure(2, t, BAN, why.into());
        // One busy server connection on the primary, one idle on the replica.
        let (mut co, _server0) = open(&c.pools()[0], t);
        co.return_as(ReturnAs::Clean);
        drop(co);
        let Ok(Start::Ready(_busy)) = c.pools()[0].start_checkout(None, t) else {
            panic!("the idle connection")
        };
        let (mut idle, _server1) = open(&c.pools()[1], t);
        idle.return_as(ReturnAs::Clean);
        drop(idle);

        let at_us = 1_709_210_096_000_000; // 2024-02-29 12:34:56 UTC
        let rs = rows(&[c.clone(), gone], t, at_us);
        assert_eq!(rs.column_names().len(), HOST_COLUMNS.len());
        assert_eq!(rs.rows().len(), 3, "the retired cluster is left out");
        assert_eq!(column(&rs, 0, "database"), text("app"));
        assert_eq!(column(&rs, 0, "user"), text("u"));
        let hosts: Vec<_> = (0..3).map(|r| column(&rs, r, "host")).collect();
        assert_eq!(
            hosts,
            [text("10.0.0.1"), text("10.0.0.2"), text("10.0.0.3")]
        );
        assert_eq!(column(&rs, 1, "port"), text("5433"));
        assert_eq!(column(&rs, 2, "port"), text("5432"));
        let roles: Vec<_> = (0..3).map(|r| column(&rs, r, "role")).collect();
        assert_eq!(roles, [text("primary"), text("replica"), text("unknown")]);
        assert_eq!(column(&rs, 0, "configured_role"), text("auto"));
        assert_eq!(column(&rs, 1, "configured_role"), text("replica"));
        let states: Vec<_> = (0..3).map(|r| column(&rs, r, "state")).collect();
        assert_eq!(states, [text("up"), text("up"), text("banned")]);
        assert_eq!(column(&rs, 0, "lag_bytes"), text("0"));
        assert_eq!(column(&rs, 1, "lag_bytes"), text("1000"));
        assert_eq!(column(&rs, 2, "lag_bytes"), Cell::Null);
        assert_eq!(column(&rs, 0, "replay_age_ms"), Cell::Null);
        assert_eq!(column(&rs, 1, "replay_age_ms"), text("250"));
        assert_eq!(column(&rs, 0, "banned_until"), Cell::Null);
        assert_eq!(
            column(&rs, 2, "banned_until"),
            text("2024-02-29 12:35:06 UTC"),
            "now + ban_time"
        );
        assert_eq!(column(&rs, 2, "checks_failed"), text("1"));
        assert_eq!(column(&rs, 0, "last_error"), Cell::Null);
        assert_eq!(column(&rs, 2, "last_error"), text(why));
        let sv: Vec<_> = (0..3)
            .map(|r| (column(&rs, r, "sv_active"), column(&rs, r, "sv_idle")))
            .collect();
        assert_eq!(
            sv,
            [
                (text("1"), text("0")),
                (text("0"), text("1")),
                (text("0"), text("0"))
            ]
        );

        // Once the ban has run out, a host that was not reached since is down.
        let rs = rows(&[c], t + BAN, at_us);
        assert_eq!(column(&rs, 2, "state"), text("down"));
        assert_eq!(column(&rs, 2, "banned_until"), Cell::Null);
    }
}
