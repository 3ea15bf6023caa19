//! What a configuration says about one pool: where its server is and how it pools.
//! Pure functions of the configuration, so a reload can derive every pool's part of a
//! new generation before anything is published.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{AuthType, Config, DatabaseConfig, HostConfig};
use crate::pool::PoolSettings;
use crate::server::ServerTarget;
use crate::tls::ServerTls;

/// Where the pool of (`database`, server user `user`) connects, or None when the
/// configuration has no such pool any more (database gone, other forced user, user
/// gone while a password is required).
pub fn pool_spec(
    cfg: &Config,
    tls: Option<Arc<ServerTls>>,
    database: &str,
    user: &str,
) -> Option<(ServerTarget, PoolSettings)> {
    // `database` may be served by the `*` fallback entry.
    let db = cfg.database(database)?;
    match &db.user {
        Some(forced) if forced != user => return None,
        Some(_) => {}
        // With `hba`, trust/peer rules may let users in that no file knows.
        None if !matches!(
            cfg.general.auth_type,
            AuthType::Trust | AuthType::Cert | AuthType::Hba
        ) && !cfg.users.contains_key(user)
            && cfg.auth_lookup(database).is_none() =>
        {
            return None
        }
        None => {}
    }
    Some((
        server_target(cfg, &db, tls, database, user),
        pool_settings(cfg, database, user),
    ))
}

/// The server target of database `database` for server user `user`.
pub(super) fn server_target(
    cfg: &Config,
    db: &DatabaseConfig,
    tls: Option<Arc<ServerTls>>,
    database: &str,
    user: &str,
) -> ServerTarget {
    let password = match &db.user {
        Some(forced) => db
            .password
            .clone()
            .or_else(|| cfg.users.get(forced).and_then(|u| u.password.clone())),
        None => cfg.users.get(user).and_then(|u| u.password.clone()),
    };
    ServerTarget {
        host: db.host.clone(),
        port: db.port,
        database: db.dbname.clone().unwrap_or_else(|| database.to_owned()),
        user: user.to_owned(),
        password,
        application_name: db.application_name.clone(),
        tls,
        passthrough: None,
        scram_keys: Default::default(),
    }
}

/// The server target of host `host` of replicated database `database`.
pub(super) fn host_target(
    cfg: &Config,
    db: &DatabaseConfig,
    tls: Option<Arc<ServerTls>>,
    database: &str,
    user: &str,
    host: &HostConfig,
) -> ServerTarget {
    ServerTarget {
        host: host.host.clone(),
        port: host.port,
        ..server_target(cfg, db, tls, database, user)
    }
}

/// The effective pool settings for a (database, user) pair.
pub fn pool_settings(cfg: &Config, database: &str, user: &str) -> PoolSettings {
    let g = &cfg.general;
    let opt = |d: Duration| (!d.is_zero()).then_some(d);
    let mode = cfg.pool_mode(database, user);
    PoolSettings {
        size: cfg.pool_size(database, user),
        min_size: cfg.effective_min_pool_size(database, user),
        mode,
        wait_timeout: opt(g.query_wait_timeout.0),
        connect_timeout: g.server_connect_timeout.0,
        idle_timeout: opt(g.server_idle_timeout.0),
        lifetime: opt(g.server_lifetime.0),
        reset_query: Some(g.server_reset_query.clone()).filter(|q| !q.trim().is_empty()),
        reset_query_always: g.server_reset_query_always,
        reserve_size: cfg.reserve_pool_size(database, user),
        reserve_timeout: opt(g.reserve_pool_timeout.0),
        login_retry: opt(g.server_login_retry.0),
    }
}
