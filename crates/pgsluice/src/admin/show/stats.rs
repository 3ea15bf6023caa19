//! SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS: per-database totals since
//! start and averages over the last completed `stats_period`, with PgBouncer 1.24's
//! prepared-statement counters (client Parse, server Parse, Bind of named statements;
//! counted in transaction mode, where pgsluice tracks statements, as PgBouncer does).

use std::collections::BTreeMap;

use super::super::result::{Cell, ResultSet, Ty};
use super::super::Ctx;
use super::{pools_by_db, ADMIN_DB};
use crate::stats::{Averages, Totals};

use Ty::{Numeric, Text};

fn total_cells(t: &Totals) -> [Cell; 12] {
    [
        t.server_assignments.into(),
        t.xacts.into(),
        t.queries.into(),
        t.received.into(),
        t.sent.into(),
        t.xact_time_us.into(),
        t.query_time_us.into(),
        t.wait_time_us.into(),
        t.client_parses.into(),
        t.server_parses.into(),
        t.binds.into(),
        t.client_connects.into(),
    ]
}

fn average_cells(a: &Averages) -> [Cell; 12] {
    [
        a.server_assignments.into(),
        a.xacts.into(),
        a.queries.into(),
        a.received.into(),
        a.sent.into(),
        a.xact_time_us.into(),
        a.query_time_us.into(),
        a.wait_time_us.into(),
        a.client_parses.into(),
        a.server_parses.into(),
        a.binds.into(),
        a.client_connects.into(),
    ]
}

/// Per database: (totals, averages over the last stats period).
fn db_stats(ctx: &Ctx<'_>) -> BTreeMap<String, (Totals, Averages)> {
    let mut out = BTreeMap::new();
    for (db, pools) in pools_by_db(ctx) {
        let (mut old, mut new, mut period) = (Totals::default(), Totals::default(), None);
        let mut total = Totals::default();
        for p in &pools {
            let w = p.stats.window();
            old = old + w.older;
            new = new + w.newer;
            if !w.period.is_zero() {
                period = Some(period.map_or(w.period, |d: std::time::Duration| d.max(w.period)));
            }
            total = total + p.stats.totals();
        }
        let avg = period.map_or_else(Averages::default, |d| Averages::between(old, new, d));
        out.insert(db, (total, avg));
    }
    out.entry(ADMIN_DB.into()).or_default();
    out
}

/// SHOW STATS, STATS_TOTALS, STATS_AVERAGES.
pub(super) fn stats(ctx: &Ctx<'_>, totals: bool, averages: bool) -> ResultSet {
    const TOTALS: [&str; 12] = [
        "total_server_assignment_count",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "total_client_parse_count",
        "total_server_parse_count",
        "total_bind_count",
        "total_client_connect_count",
    ];
    const AVERAGES: [&str; 12] = [
        "avg_server_assignment_count",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
        "avg_client_parse_count",
        "avg_server_parse_count",
        "avg_bind_count",
        "avg_client_connect_count",
    ];
    // STATS_TOTALS and STATS_AVERAGES use short names (PgBouncer keeps the avg_
    // prefix on the prepared-statement columns of STATS_AVERAGES).
    const SHORT: [&str; 12] = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "bytes_received",
        "bytes_sent",
        "xact_time",
        "query_time",
        "wait_time",
        "client_parse_count",
        "server_parse_count",
        "bind_count",
        "client_connect_count",
    ];
    let mut cols: Vec<(&'static str, Ty)> = vec![("database", Text)];
    match (totals, averages) {
        (true, true) => {
            cols.extend(TOTALS.iter().map(|n| (*n, Numeric)));
            cols.extend(AVERAGES.iter().map(|n| (*n, Numeric)));
        }
        (true, false) => cols.extend(SHORT.iter().map(|n| (*n, Numeric))),
        _ => cols.extend(SHORT.iter().enumerate().map(|(i, n)| {
            let name = if (8..11).contains(&i) {
                AVERAGES[i]
            } else {
                *n
            };
            (name, Numeric)
        })),
    }
    let mut rs = ResultSet::new(&cols);
    for (db, (t, a)) in db_stats(ctx) {
        let mut row: Vec<Cell> = vec![db.into()];
        if totals {
            row.extend(total_cells(&t));
        }
        if averages {
            row.extend(average_cells(&a));
        }
        rs.push(row);
    }
    rs
}

/// SHOW TOTALS: every database together, one row per figure.
pub(super) fn totals(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&[("name", Text), ("value", Numeric)]);
    let (mut t, mut old, mut new, mut period) = (
        Totals::default(),
        Totals::default(),
        Totals::default(),
        std::time::Duration::ZERO,
    );
    for p in ctx.console.router().pools() {
        let w = p.stats.window();
        old = old + w.older;
        new = new + w.newer;
        period = period.max(w.period);
        t = t + p.stats.totals();
    }
    let a = Averages::between(old, new, period);
    const NAMES: [&str; 12] = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "client_bytes",
        "server_bytes",
        "xact_time",
        "query_time",
        "wait_time",
        "ps_client_parse_count",
        "ps_server_parse_count",
        "ps_bind_count",
        "client_connect_count",
    ];
    for (name, v) in NAMES.iter().zip(total_cells(&t)) {
        rs.push(vec![format!("total_{name}").into(), v]);
    }
    for (name, v) in NAMES.iter().zip(average_cells(&a)) {
        rs.push(vec![format!("avg_{name}").into(), v]);
    }
    rs
}
