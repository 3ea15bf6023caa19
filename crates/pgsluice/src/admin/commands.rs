//! Admin commands that act on the process (PAUSE, RESUME, SUSPEND, DISABLE, ENABLE,
//! RECONNECT, KILL, KILL_CLIENT, WAIT_CLOSE, SHUTDOWN, RELOAD) and SET.

use std::sync::Arc;

use bytes::BytesMut;
use pgsluice_protocol::backend;
use pgsluice_protocol::SqlState;

use super::console::StopRequest;
use super::show::{general_settings, is_fake_param, FIXED_KEYS};
use super::{is_admin_db, notice, AdminError, Ctx, Flow};
use crate::config::pgbouncer_show::{self, SetError};
use crate::config::Config;
use crate::pool::Pool;
use crate::router::Router;

const COMMANDS: [&str; 12] = [
    "pause",
    "resume",
    "suspend",
    "disable",
    "enable",
    "reconnect",
    "kill",
    "kill_client",
    "wait_close",
    "shutdown",
    "reload",
    "select",
];

fn err(code: SqlState, msg: impl Into<String>) -> AdminError {
    AdminError::new(code, msg)
}

fn already_paused() -> AdminError {
    err(
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        "already suspended/paused",
    )
}

/// Checks that `db` is a configured database (not the admin console).
fn known_db(ctx: &Ctx<'_>, db: &str, what: &str) -> Result<(), AdminError> {
    if is_admin_db(db) {
        return Err(err(
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("cannot {what} admin db: {db}"),
        ));
    }
    if !ctx.console.config().databases.contains_key(db) {
        return Err(err(
            SqlState::INVALID_CATALOG_NAME,
            format!("no such database: {db}"),
        ));
    }
    Ok(())
}

fn pools_of(pools: &[Arc<Pool>], db: Option<&str>) -> Vec<Arc<Pool>> {
    pools
        .iter()
        .filter(|p| db.is_none_or(|d| *p.key().database == *d))
        .cloned()
        .collect()
}

/// Waits until every pool in `pools` satisfies `done`.
async fn wait_all(pools: &[Arc<Pool>], done: impl Fn(&Pool) -> bool + Copy) {
    for p in pools {
        p.wait_until(done).await;
    }
}

/// PAUSE (also SIGUSR1): pauses every pool; returns them, to wait for their server
/// connections to close.
pub fn pause_all(router: &Router) -> Result<Vec<Arc<Pool>>, AdminError> {
    router.flags(|c, pools| {
        if c.paused_all || c.suspended {
            return Err(already_paused());
        }
        c.paused_all = true;
        pools.iter().for_each(|p| p.pause());
        Ok(pools.to_vec())
    })
}

/// RESUME (also SIGUSR2): ends PAUSE or SUSPEND; databases paused one by one stay so.
pub fn resume_all(router: &Router) -> Result<(), AdminError> {
    router.flags(|c, pools| {
        if !c.paused_all && !c.suspended {
            return Err(err(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "pooler is not paused/suspended",
            ));
        }
        c.paused_all = false;
        c.suspended = false;
        for p in pools {
            if !c.is_paused(&p.key().database) {
                p.resume();
            }
        }
        Ok(())
    })
}

/// Runs a command word with its optional argument.
pub(super) async fn action(
    ctx: &Ctx<'_>,
    word: &str,
    arg: Option<&str>,
    out: &mut BytesMut,
) -> Result<Flow, AdminError> {
    if !COMMANDS.contains(&word) {
        let text = match arg {
            Some(a) => format!("{} {a}", word.to_uppercase()),
            None => word.to_uppercase(),
        };
        return Err(err(
            SqlState::SYNTAX_ERROR,
            format!("invalid command '{text}', use SHOW HELP;"),
        ));
    }
    if matches!(word, "reload" | "suspend") && arg.is_some() {
        return Err(err(
            SqlState::SYNTAX_ERROR,
            format!("{} takes no argument", word.to_uppercase()),
        ));
    }
    ctx.require_admin()?;
    let router = ctx.console.router();
    let mut flow = Flow::Continue;
    match (word, arg) {
        ("pause", None) => {
            tracing::info!("PAUSE command issued");
            let pools = pause_all(router)?;
            wait_all(&pools, |p| p.server_count() == 0).await;
        }
        ("pause", Some(db)) => {
            known_db(ctx, db, "pause")?;
            tracing::info!(db, "PAUSE db command issued");
            let pools = router.flags(|c, pools| {
                if c.paused_all || c.suspended {
                    return Err(already_paused());
                }
                c.paused.insert(db.to_owned());
                let mine = pools_of(pools, Some(db));
                mine.iter().for_each(|p| p.pause());
                Ok(mine)
            })?;
            wait_all(&pools, |p| p.server_count() == 0).await;
        }
        ("suspend", _) => {
            tracing::info!("SUSPEND command issued");
            let pools = router.flags(|c, pools| {
                if c.paused_all || c.suspended {
                    return Err(already_paused());
                }
                if !c.paused.is_empty() {
                    return Err(err(
                        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        "cannot suspend with paused databases",
                    ));
                }
                c.suspended = true;
                pools.iter().for_each(|p| p.pause());
                Ok(pools.to_vec())
            })?;
            wait_all(&pools, |p| p.server_count() == 0).await;
        }
        ("resume", None) => {
            tracing::info!("RESUME command issued");
            resume_all(router)?;
        }
        ("resume", Some(db)) => {
            tracing::info!(db, "RESUME db command issued");
            if !ctx.console.config().databases.contains_key(db) {
                return Err(err(
                    SqlState::INVALID_CATALOG_NAME,
                    format!("no such database: {db}"),
                ));
            }
            router.flags(|c, pools| {
                if !c.paused.remove(db) {
                    return Err(err(
                        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        format!("database {db} is not paused"),
                    ));
                }
                if !c.is_paused(db) {
                    pools_of(pools, Some(db)).iter().for_each(|p| p.resume());
                }
                Ok(())
            })?;
        }
        ("disable" | "enable", None) => {
            return Err(err(SqlState::SYNTAX_ERROR, "a database is required"));
        }
        ("disable", Some(db)) => {
            known_db(ctx, db, "disable")?;
            tracing::info!(db, "DISABLE command issued");
            router.flags(|c, _| c.disabled.insert(db.to_owned()));
        }
        ("enable", Some(db)) => {
            known_db(ctx, db, "enable")?;
            tracing::info!(db, "ENABLE command issued");
            router.flags(|c, _| c.disabled.remove(db));
        }
        ("reconnect", db) => {
            if let Some(db) = db {
                known_db(ctx, db, "reconnect")?;
            }
            tracing::info!(db, "RECONNECT command issued");
            pools_of(&router.pools(), db)
                .iter()
                .for_each(|p| p.reconnect());
        }
        ("kill", db) => {
            if let Some(db) = db {
                known_db(ctx, db, "kill")?;
            }
            tracing::info!(db, "KILL command issued");
            let cfg = ctx.console.config();
            router.flags(|c, pools| {
                if c.paused_all || c.suspended {
                    return Err(already_paused());
                }
                match db {
                    Some(db) => {
                        c.paused.insert(db.to_owned());
                    }
                    None => c.paused.extend(cfg.databases.keys().cloned()),
                }
                pools_of(pools, db).iter().for_each(|p| p.kill());
                Ok(())
            })?;
        }
        ("kill_client", None) => {
            return Err(err(SqlState::SYNTAX_ERROR, "a client id is required"));
        }
        ("kill_client", Some(id)) => {
            let id: u64 = id.parse().map_err(|_| {
                err(
                    SqlState::INVALID_PARAMETER_VALUE,
                    format!("invalid client id: {id}"),
                )
            })?;
            let client = router
                .pools()
                .iter()
                .flat_map(|p| p.clients())
                .chain(ctx.console.admin_clients().snapshot())
                .find(|c| c.id == id)
                .ok_or_else(|| err(SqlState::UNDEFINED_OBJECT, "client not found"))?;
            tracing::info!(client = id, user = %client.user, db = %client.database, "KILL_CLIENT command issued");
            client.kill();
        }
        ("wait_close", db) => {
            if let Some(db) = db {
                known_db(ctx, db, "wait in")?;
            }
            tracing::info!(db, "WAIT_CLOSE command issued");
            let pools = pools_of(&router.pools(), db);
            wait_all(&pools, |p| p.close_needed_count() == 0).await;
        }
        ("shutdown", mode) => {
            let how = match mode.map(str::to_ascii_lowercase).as_deref() {
                None => StopRequest::Immediate,
                Some("wait_for_servers") => StopRequest::WaitForServers,
                Some("wait_for_clients") => StopRequest::WaitForClients,
                Some(other) => {
                    return Err(err(
                        SqlState::SYNTAX_ERROR,
                        format!("invalid command 'SHUTDOWN {other}', use SHOW HELP;"),
                    ))
                }
            };
            tracing::info!(mode = ?how, "SHUTDOWN command issued");
            ctx.console.request_stop(how);
            if how == StopRequest::Immediate {
                flow = Flow::Close;
            }
        }
        ("reload", _) => {
            tracing::info!("RELOAD command issued");
            ctx.console
                .reload()
                .await
                .map_err(|e| err(SqlState::CONFIG_FILE_ERROR, format!("RELOAD failed: {e}")))?;
        }
        _ => {
            return Err(err(
                SqlState::SYNTAX_ERROR,
                format!("invalid command '{word}', use SHOW HELP;"),
            ))
        }
    }
    backend::command_complete(out, &word.to_uppercase());
    Ok(flow)
}

/// SET key = value: changes a setting at run time through the same path as a reload
/// (validated as a whole; a later RELOAD re-reads the file). PgBouncer's keys are
/// parsed as the pgbouncer.ini loader parses them; pgsluice's own `[general]` keys
/// as in its TOML file.
pub(super) async fn set(
    ctx: &Ctx<'_>,
    key: &str,
    value: &str,
    out: &mut BytesMut,
) -> Result<(), AdminError> {
    if is_fake_param(key) {
        notice(out, "SET ignored", None);
        backend::command_complete(out, "SET");
        return Ok(());
    }
    ctx.require_admin()?;
    let cfg = ctx.console.config();
    let invalid = |m: String| err(SqlState::INVALID_PARAMETER_VALUE, format!("SET {key}: {m}"));
    let fixed = || {
        err(
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("{key} cannot be changed while running"),
        )
    };
    let lower = key.to_ascii_lowercase();
    let new = match pgbouncer_show::set(&cfg, &lower, value) {
        Some(Ok(done)) => {
            if let Some(n) = &done.notice {
                tracing::warn!(key = lower, "SET: {n}");
                notice(out, n, None);
            }
            done.config
        }
        Some(Err(SetError::Fixed)) => return Err(fixed()),
        Some(Err(SetError::Invalid(m))) => return Err(invalid(m)),
        None => {
            if !general_settings(&cfg).contains_key(key) {
                return Err(err(
                    SqlState::UNDEFINED_OBJECT,
                    format!("unknown configuration parameter: {key}"),
                ));
            }
            if FIXED_KEYS.contains(&key) {
                return Err(fixed());
            }
            with_general_key(&cfg, key, value).map_err(invalid)?
        }
    };
    ctx.console.apply_config(new).await.map_err(invalid)?;
    tracing::info!(key, value, "SET command issued");
    backend::command_complete(out, &format!("SET {key}={value}"));
    Ok(())
}

/// A copy of `cfg` with `[general] key` set from its text form.
fn with_general_key(cfg: &Config, key: &str, value: &str) -> Result<Config, String> {
    let names = |v: &str| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut new = cfg.clone();
    match key {
        "admin_users" => new.general.admin_users = names(value),
        "stats_users" => new.general.stats_users = names(value),
        "stats_period" => new.general.stats_period = value.parse().map_err(|e| format!("{e}"))?,
        _ => {
            use crate::config::load::{apply_overrides, to_table, Override};
            use toml::Value;
            let table = to_table(cfg);
            let old = table
                .get("general")
                .and_then(|g| g.get(key))
                .cloned()
                .unwrap_or(Value::String(String::new()));
            let v = match old {
                // Durations are integers (seconds) or strings with a unit.
                Value::Integer(_) => value
                    .parse::<i64>()
                    .map_or_else(|_| Value::String(value.to_owned()), Value::Integer),
                Value::Boolean(_) => Value::Boolean(parse_bool(value)?),
                _ => Value::String(value.to_owned()),
            };
            let mut applied = apply_overrides(
                cfg.clone(),
                vec![Override::flag("SET", &["general", key], v)],
            )
            .map_err(|e| e.to_string())?;
            // Keys the TOML round trip does not carry.
            let g = &cfg.general;
            applied.general.admin_users.clone_from(&g.admin_users);
            applied.general.stats_users.clone_from(&g.stats_users);
            applied.general.metrics_listen = g.metrics_listen;
            applied.general.stats_period = g.stats_period;
            new = applied;
        }
    }
    Ok(new)
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(format!("`{v}` is not a boolean")),
    }
}
