//! Pools for unit tests: a server target nobody listens on, settings to adjust.

use std::sync::Arc;
use std::time::Duration;

use super::{Groups, IdGen, Pool, PoolKey, PoolSettings};
use crate::config::PoolMode;
use crate::server::ServerTarget;

/// A transaction-mode pool of 5 for `db`/`user` whose server is unreachable, with
/// `adjust` applied to its settings.
pub(crate) fn pool(
    db: &str,
    user: &str,
    groups: Groups,
    adjust: impl FnOnce(&mut PoolSettings),
) -> Arc<Pool> {
    let target = ServerTarget {
        host: "127.0.0.1".into(),
        port: 1,
        database: db.into(),
        user: user.into(),
        password: None,
        application_name: None,
        tls: None,
        passthrough: None,
        scram_keys: Default::default(),
    };
    let mut settings = PoolSettings {
        size: 5,
        min_size: 0,
        mode: PoolMode::Transaction,
        wait_timeout: None,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: None,
        lifetime: None,
        reset_query: None,
        reset_query_always: false,
        reserve_size: 0,
        reserve_timeout: None,
        login_retry: None,
    };
    adjust(&mut settings);
    let key = PoolKey {
        database: db.into(),
        user: user.into(),
    };
    Pool::new(key, target, settings, Arc::new(IdGen::default()), groups)
}
