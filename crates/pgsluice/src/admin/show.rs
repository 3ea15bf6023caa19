//! The SHOW commands. Column names, order and types follow PgBouncer's current
//! admin console (1.25); columns pgsluice adds would go at the end.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use pgsluice_protocol::SqlState;

use super::result::{Cell, ResultSet, Ty};
use super::{notice, AdminError, Ctx};
use crate::config::{pgbouncer_show, Config};
use crate::pool::{ClientInfo, Pool, PoolCounts, ServerInfo};

mod hosts;
mod shards;
mod sockets;
mod stats;

use Ty::{Int4, Text};

/// pgsluice's own keys SET cannot change (they need a restart).
pub(super) const FIXED_KEYS: [&str; 5] = [
    "listen",
    "workers",
    "relay_lanes",
    "log_format",
    "metrics_listen",
];
/// Parameters psql and drivers may SHOW; answered with fixed values.
const FAKE_PARAMS: [(&str, &str); 6] = [
    ("client_encoding", "UTF8"),
    ("default_transaction_isolation", "read committed"),
    ("standard_conforming_strings", "on"),
    ("datestyle", "ISO"),
    ("timezone", "UTC"),
    ("extra_float_digits", "2"),
];

/// Whether `key` is one of the parameters answered with a fixed value.
pub(super) fn is_fake_param(key: &str) -> bool {
    FAKE_PARAMS.iter().any(|(k, _)| *k == key)
}

/// Runs `SHOW what`.
pub(super) fn show(ctx: &Ctx<'_>, what: &str, out: &mut BytesMut) -> Result<(), AdminError> {
    if let Some((name, value)) = FAKE_PARAMS.iter().find(|(k, _)| *k == what) {
        let mut rs = ResultSet::new(&[(name, Text)]);
        rs.push(vec![(*value).into()]);
        rs.write(out);
        return Ok(());
    }
    let rs = match what {
        "help" => {
            notice(out, "Console usage", Some(HELP));
            pgsluice_protocol::backend::command_complete(out, "SHOW");
            return Ok(());
        }
        "version" => {
            let mut rs = ResultSet::new(&[("version", Text)]);
            rs.push(vec![super::VERSION_STRING.into()]);
            rs
        }
        "config" => config(ctx),
        "databases" => databases(ctx),
        "pools" => pools(ctx),
        "hosts" => hosts::hosts(ctx),
        "shards" => shards::shards(ctx),
        "users" => users(ctx),
        "stats" => stats::stats(ctx, true, true),
        "stats_totals" => stats::stats(ctx, true, false),
        "stats_averages" => stats::stats(ctx, false, true),
        "totals" => stats::totals(ctx),
        "lists" => lists(ctx),
        "state" => state(ctx),
        "mem" => mem(ctx),
        "clients" => sockets::clients(ctx),
        "servers" => sockets::servers(ctx),
        "sockets" => sockets::sockets(ctx, false),
        "active_sockets" => sockets::sockets(ctx, true),
        "fds" => {
            ctx.require_admin()?;
            sockets::fds(ctx)
        }
        "dns_hosts" => ResultSet::new(&[("hostname", Text), ("ttl", Ty::Int8), ("addrs", Text)]),
        "dns_zones" => ResultSet::new(&[("zonename", Text), ("serial", Ty::Int8), ("count", Int4)]),
        "peers" => peers(ctx),
        "peer_pools" => ResultSet::new(&[
            ("peer_id", Int4),
            ("cl_active_cancel_req", Int4),
            ("cl_waiting_cancel_req", Int4),
            ("sv_active_cancel", Int4),
            ("sv_login", Int4),
        ]),
        _ => {
            return Err(AdminError::new(
                SqlState::SYNTAX_ERROR,
                format!("invalid command 'SHOW {what}', use SHOW HELP;"),
            ))
        }
    };
    rs.write(out);
    Ok(())
}

const HELP: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
\tSHOW PEERS|PEER_POOLS\n\
\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n\
\tSHOW DNS_HOSTS|DNS_ZONES\n\
\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
\tSHOW HOSTS|SHARDS\n\
\tSET key = arg\n\
\tRELOAD\n\
\tPAUSE [<db>]\n\
\tRESUME [<db>]\n\
\tDISABLE <db>\n\
\tENABLE <db>\n\
\tRECONNECT [<db>]\n\
\tKILL [<db>]\n\
\tKILL_CLIENT <client_id>\n\
\tSUSPEND\n\
\tSHUTDOWN\n\
\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\
\tWAIT_CLOSE [<db>]";

/// The admin console's own database name in the views.
pub(super) const ADMIN_DB: &str = "pgbouncer";

/// SHOW CONFIG: every PgBouncer `[pgbouncer]` key (PgBouncer's value formats and
/// `changeable` column), then pgsluice's own `[general]` keys, all alphabetical.
fn config(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("key", Text),
        ("value", Text),
        ("default", Text),
        ("changeable", Text),
    ]);
    let cfg = ctx.console.config();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut rows: Vec<[String; 4]> = pgbouncer_show::rows(&cfg)
        .into_iter()
        .map(|r| {
            [
                r.key.to_owned(),
                r.value,
                r.default,
                yes_no(r.changeable).to_owned(),
            ]
        })
        .collect();
    let current = general_settings(&cfg);
    let defaults = general_settings(&Config::default());
    for (key, value) in current {
        if pgbouncer_show::changeable(&key).is_some() {
            continue;
        }
        let changeable = !FIXED_KEYS.contains(&key.as_str());
        let default = defaults.get(&key).cloned().unwrap_or_default();
        rows.push([key, value, default, yes_no(changeable).to_owned()]);
    }
    rows.sort();
    for row in rows {
        rs.push(row.into_iter().map(Cell::from).collect());
    }
    rs
}

/// The `[general]` settings as display strings, by key.
pub(super) fn general_settings(cfg: &Config) -> BTreeMap<String, String> {
    let table = crate::config::load::to_table(cfg);
    let mut out = BTreeMap::new();
    if let Some(toml::Value::Table(g)) = table.get("general") {
        for (k, v) in g {
            out.insert(k.clone(), display_value(v));
        }
    }
    let g = &cfg.general;
    out.entry("admin_users".into())
        .or_insert_with(|| g.admin_users.join(","));
    out.entry("stats_users".into())
        .or_insert_with(|| g.stats_users.join(","));
    out.entry("metrics_listen".into())
        .or_insert_with(|| g.metrics_listen.map(|a| a.to_string()).unwrap_or_default());
    out.entry("stats_period".into())
        .or_insert_with(|| g.stats_period.to_string());
    out.entry("workers".into()).or_default();
    out.entry("relay_lanes".into()).or_default();
    // A secret: shown only as set or not.
    if let Some(token) = out.get_mut("metrics_auth_token") {
        *token = "<redacted>".into();
    }
    out
}

fn display_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Boolean(b) => if *b { "1" } else { "0" }.into(),
        toml::Value::Array(a) => a.iter().map(display_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Pools grouped by database name.
pub(super) fn pools_by_db(ctx: &Ctx<'_>) -> BTreeMap<String, Vec<Arc<Pool>>> {
    let mut m: BTreeMap<String, Vec<Arc<Pool>>> = BTreeMap::new();
    for p in ctx.console.router().pools() {
        m.entry(p.key().database.to_string()).or_default().push(p);
    }
    m
}

/// SHOW DATABASES.
fn databases(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("name", Text),
        ("host", Text),
        ("port", Int4),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int4),
        ("min_pool_size", Int4),
        ("reserve_pool_size", Int4),
        ("server_lifetime", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
        ("max_connections", Int4),
        ("current_connections", Int4),
        ("max_client_connections", Int4),
        ("current_client_connections", Int4),
        ("paused", Int4),
        ("disabled", Int4),
    ]);
    let cfg = ctx.console.config();
    let flags = ctx.console.router().db_flags();
    let by_db = pools_by_db(ctx);
    let mut names: Vec<&str> = cfg.databases.keys().map(String::as_str).collect();
    names.push(ADMIN_DB);
    names.sort_unstable();
    for name in names {
        if name == ADMIN_DB && !cfg.databases.contains_key(name) {
            let port = ctx.console.listen_addrs().first().map_or(0, |a| a.port());
            rs.push(vec![
                ADMIN_DB.into(),
                Cell::Null,
                port.into(),
                ADMIN_DB.into(),
                ADMIN_DB.into(),
                2i32.into(),
                0i32.into(),
                0i32.into(),
                0i32.into(),
                "statement".into(),
                Cell::Null,
                0i32.into(),
                0i32.into(),
                0i32.into(),
                ctx.console.admin_clients().len().into(),
                0i32.into(),
                0i32.into(),
            ]);
            continue;
        }
        let d = &cfg.databases[name];
        let pools = by_db.get(name).map(Vec::as_slice).unwrap_or_default();
        let group = ctx.console.router().database_group(name);
        let servers = group.as_ref().map_or_else(
            || pools.iter().map(|p| p.server_count()).sum(),
            |g| g.open(),
        );
        let clients: usize = pools.iter().map(|p| p.client_count()).sum();
        let hosts = pgbouncer_show::database_hosts(d);
        rs.push(vec![
            name.into(),
            hosts.host.into(),
            hosts.port.map_or(Cell::Null, Cell::from),
            d.dbname.as_deref().unwrap_or(name).into(),
            d.user.as_deref().into(),
            d.pool_size.unwrap_or(cfg.general.default_pool_size).into(),
            cfg.min_pool_size(name).into(),
            d.reserve_pool
                .unwrap_or(cfg.general.reserve_pool_size)
                .into(),
            cfg.general.server_lifetime.0.as_secs().into(),
            d.pool_mode.map(|m| m.as_str()).into(),
            hosts.load_balance_hosts.into(),
            cfg.max_db_connections(name).into(),
            servers.into(),
            cfg.max_db_client_connections(name).into(),
            clients.into(),
            flags.is_paused(name).into(),
            flags.disabled.contains(name).into(),
        ]);
    }
    rs
}

/// SHOW POOLS.
fn pools(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("database", Text),
        ("user", Text),
        ("cl_active", Int4),
        ("cl_waiting", Int4),
        ("cl_active_cancel_req", Int4),
        ("cl_waiting_cancel_req", Int4),
        ("sv_active", Int4),
        ("sv_active_cancel", Int4),
        ("sv_being_canceled", Int4),
        ("sv_idle", Int4),
        ("sv_used", Int4),
        ("sv_tested", Int4),
        ("sv_login", Int4),
        ("maxwait", Int4),
        ("maxwait_us", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
    ]);
    // A replicated database has a pool per host: one row per (database, user) all
    // the same, as PgBouncer shows a multi-host database (tools key rows on those
    // two columns); SHOW HOSTS has the split per host.
    let mut merged: BTreeMap<(String, String), (PoolCounts, Arc<Pool>)> = BTreeMap::new();
    for p in ctx.console.router().pools() {
        let c = p.counts();
        let k = p.key();
        merged
            .entry((k.database.to_string(), k.user.to_string()))
            .and_modify(|(sum, _)| *sum = sum.combine(&c))
            .or_insert((c, p));
    }
    let mut rows: Vec<(String, String, Vec<Cell>)> = Vec::new();
    for ((database, user), (c, p)) in merged {
        rows.push((
            database.clone(),
            user.clone(),
            vec![
                database.into(),
                user.into(),
                c.cl_active.into(),
                c.cl_waiting.into(),
                0i32.into(),
                0i32.into(),
                c.sv_active.into(),
                0i32.into(),
                0i32.into(),
                c.sv_idle.into(),
                0i32.into(),
                c.sv_tested.into(),
                c.sv_login.into(),
                (c.maxwait_us / 1_000_000).into(),
                (c.maxwait_us % 1_000_000).into(),
                p.settings().mode.as_str().into(),
                Cell::Null,
            ],
        ));
    }
    let admin = ctx.console.admin_clients().len();
    rows.push((
        ADMIN_DB.into(),
        ADMIN_DB.into(),
        vec![
            ADMIN_DB.into(),
            ADMIN_DB.into(),
            admin.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            0i32.into(),
            "statement".into(),
            Cell::Null,
        ],
    ));
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    for (_, _, r) in rows {
        rs.push(r);
    }
    rs
}

/// SHOW PEERS: the configured `[peers]`.
fn peers(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("peer_id", Int4),
        ("host", Text),
        ("port", Int4),
        ("pool_size", Int4),
    ]);
    let cfg = ctx.console.config();
    for (id, p) in &cfg.peers {
        let id = id.trim().parse::<u16>().unwrap_or(0);
        rs.push(vec![
            usize::from(id).into(),
            p.host.as_str().into(),
            usize::from(p.port).into(),
            cfg.peer_pool_size(id).into(),
        ]);
    }
    rs
}

/// SHOW USERS.
fn users(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("name", Text),
        ("pool_size", Text),
        ("reserve_pool_size", Text),
        ("pool_mode", Text),
        ("max_user_connections", Int4),
        ("current_connections", Int4),
        ("max_user_client_connections", Int4),
        ("current_client_connections", Int4),
    ]);
    let cfg = ctx.console.config();
    let mut names: std::collections::BTreeSet<String> = cfg.users.keys().cloned().collect();
    names.extend(cfg.databases.values().filter_map(|d| d.user.clone()));
    names.insert(ADMIN_DB.into());
    let pools = ctx.console.router().pools();
    let mut clients_by_user: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pools {
        for c in p.clients() {
            *clients_by_user.entry(c.user.to_string()).or_default() += 1;
        }
    }
    for c in ctx.console.admin_clients().snapshot() {
        *clients_by_user.entry(c.user.to_string()).or_default() += 1;
    }
    for name in names {
        let u = cfg.users.get(&name);
        let servers: usize = match ctx.console.router().user_group_of(&name) {
            Some(g) => g.open(),
            None => pools
                .iter()
                .filter(|p| *p.key().user == *name)
                .map(|p| p.server_count())
                .sum(),
        };
        rs.push(vec![
            name.as_str().into(),
            u.and_then(|u| u.pool_size)
                .map(|n| n.to_string())
                .unwrap_or_default()
                .into(),
            u.and_then(|u| u.reserve_pool_size)
                .map(|n| n.to_string())
                .unwrap_or_default()
                .into(),
            u.and_then(|u| u.pool_mode).map(|m| m.as_str()).into(),
            cfg.max_user_connections(&name).into(),
            servers.into(),
            cfg.max_user_client_connections(&name).into(),
            clients_by_user.get(&name).copied().unwrap_or(0).into(),
        ]);
    }
    rs
}

/// SHOW LISTS.
fn lists(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&[("list", Text), ("items", Int4)]);
    let cfg = ctx.console.config();
    let pools = ctx.console.router().pools();
    let clients: usize =
        pools.iter().map(|p| p.client_count()).sum::<usize>() + ctx.console.admin_clients().len();
    let servers: usize = pools.iter().map(|p| p.servers().len()).sum();
    let login = ctx.console.client_counts().tasks.saturating_sub(clients);
    let users = users(ctx).rows().len();
    for (name, n) in [
        ("databases", cfg.databases.len() + 1),
        ("users", users),
        ("peers", cfg.peers.len()),
        ("pools", pools.len() + 1),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", clients),
        ("login_clients", login),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        rs.push(vec![name.into(), n.into()]);
    }
    rs
}

/// SHOW STATE.
fn state(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&[("key", Text), ("value", Text)]);
    let c = ctx.console.router().db_flags();
    let yes = |b: bool| Cell::from(if b { "yes" } else { "no" });
    rs.push(vec!["active".into(), yes(!c.paused_all && !c.suspended)]);
    rs.push(vec!["paused".into(), yes(c.paused_all && !c.suspended)]);
    rs.push(vec!["suspended".into(), yes(c.suspended)]);
    rs
}

/// SHOW MEM: pgsluice has no slab caches; it reports its per-connection records.
fn mem(ctx: &Ctx<'_>) -> ResultSet {
    let mut rs = ResultSet::new(&[
        ("name", Text),
        ("size", Int4),
        ("used", Int4),
        ("free", Int4),
        ("memtotal", Int4),
    ]);
    let pools = ctx.console.router().pools();
    let clients: usize =
        pools.iter().map(|p| p.client_count()).sum::<usize>() + ctx.console.admin_clients().len();
    let servers: usize = pools.iter().map(|p| p.servers().len()).sum();
    for (name, size, used) in [
        ("client_info", std::mem::size_of::<ClientInfo>(), clients),
        ("server_info", std::mem::size_of::<ServerInfo>(), servers),
        ("pool", std::mem::size_of::<Pool>(), pools.len()),
        ("relay_buffers", 2 * crate::server::RELAY_BUF, servers),
    ] {
        rs.push(vec![
            name.into(),
            size.into(),
            used.into(),
            0i32.into(),
            (size * used).into(),
        ]);
    }
    rs
}
