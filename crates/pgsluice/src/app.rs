//! The running server: shared state (configuration, pools, cancel keys, shutdown) owned
//! by one [`App`] passed to every task.
//!
//! The listeners, accept loops and [`Server`] live in the `listen` submodule, hot reload
//! ([`App::reload`]) in `reload`; the database flags that PAUSE,
//! DISABLE and friends set live in [`DbControl`].

mod hot;
mod listen;
mod reload;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pgsluice_protocol::SqlState;
use tokio::sync::{watch, Semaphore};

use crate::cancel::CancelRegistry;
use crate::client::auth::Secrets;
use crate::client::auth_query::AuthQuery;
use crate::client::prepared::StatementRegistry;
use crate::client::ParkingLot;
use crate::config::{AuthType, Config, ConfigError, DatabaseConfig};
use crate::error::ClientNotice;
use crate::logging::LogControl;
use crate::pool::registry::InfoList;
use crate::pool::{
    ClientInfo, ClientSlot, GroupKind, GroupLimit, Groups, IdGen, Pool, PoolKey, PoolSettings,
};
use crate::server::{self, ServerTarget};
use crate::shutdown::{Shutdown, ShutdownKind, ShutdownWatch, TaskTracker};
use crate::sync::LockExt;
use crate::tls::{ServerTls, TlsState};

pub use listen::Server;
pub use reload::ReloadReport;

/// Produces a fresh configuration for RELOAD and SIGHUP (re-reading the file and
/// applying the environment and command-line overrides again).
pub type Reloader = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Options of [`Server::start_with`] beyond the configuration.
#[derive(Default)]
pub struct ServerOptions {
    /// How RELOAD gets the new configuration; default: re-read [`Config::source`] with
    /// the `PGSLUICE_*` environment (no file: the configuration in force, unchanged).
    pub reloader: Option<Reloader>,
    /// Lets RELOAD change the log level.
    pub log: Option<LogControl>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("reloader", &self.reloader.is_some())
            .field("log", &self.log)
            .finish()
    }
}

/// How the admin console asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// SHUTDOWN: close everything now.
    Immediate,
    /// SHUTDOWN WAIT_FOR_SERVERS: the graceful shutdown (as SIGTERM/SIGINT).
    WaitForServers,
    /// SHUTDOWN WAIT_FOR_CLIENTS: stop accepting, wait until every client has left.
    WaitForClients,
}

/// Paused and disabled databases (PAUSE, SUSPEND, KILL, DISABLE).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DbControl {
    /// PAUSE without a database (or SIGUSR1): every pool is paused.
    pub paused_all: bool,
    /// SUSPEND: like `paused_all`, reported as suspended.
    pub suspended: bool,
    /// Databases paused by PAUSE db or KILL db.
    pub paused: BTreeSet<String>,
    /// Databases refusing new clients (DISABLE db).
    pub disabled: BTreeSet<String>,
}

impl DbControl {
    /// Whether new work on `db` must wait.
    pub fn is_paused(&self, db: &str) -> bool {
        self.paused_all || self.suspended || self.paused.contains(db)
    }
}

/// State shared by every task of one pgsluice server.
pub struct App {
    config: ArcSwap<Config>,
    /// What every transaction reads of `config`, as plain atomics.
    hot: hot::HotConfig,
    secrets: ArcSwap<Secrets>,
    /// TLS material, replaced on reload.
    tls: ArcSwap<TlsState>,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    /// Pools of databases or users removed by a reload, closed once their clients left.
    retired: Mutex<Vec<Arc<Pool>>>,
    /// max_db_connections / max_db_client_connections groups, by client-side database.
    db_groups: Mutex<HashMap<String, Arc<GroupLimit>>>,
    /// max_user_connections groups, by server-side user.
    user_groups: Mutex<HashMap<String, Arc<GroupLimit>>>,
    control: Mutex<DbControl>,
    /// Cancel keys issued to clients.
    pub cancel: Arc<CancelRegistry>,
    shutdown: Shutdown,
    /// Live client tasks.
    pub tracker: TaskTracker,
    /// Background tasks of the pools (upkeep, opening, resetting and closing server
    /// connections), waited for briefly at shutdown.
    pub background: TaskTracker,
    ids: Arc<IdGen>,
    client_slots: Arc<Semaphore>,
    /// Named prepared statements of every client (transaction mode).
    pub statements: StatementRegistry,
    client_limit: AtomicUsize,
    /// Clients of the admin console.
    pub admin_clients: Arc<InfoList<ClientInfo>>,
    /// auth_query's secret cache and lookup connections.
    pub auth_query: AuthQuery,
    reloader: Reloader,
    log: Option<LogControl>,
    stop: watch::Sender<Option<StopRequest>>,
    listen: Mutex<Vec<SocketAddr>>,
    metrics_addr: Mutex<Option<SocketAddr>>,
    started: Instant,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Idle clients without a task (`None` when the system gave no epoll set).
    pub parking: Option<ParkingLot>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// Builds the shared state for a validated configuration.
    pub fn new(config: Config) -> Arc<App> {
        Self::with_options(config, ServerOptions::default())
    }

    /// [`App::new`] with a reloader and log control.
    pub fn with_options(config: Config, opts: ServerOptions) -> Arc<App> {
        let secrets = Secrets::from_config(&config);
        let tls = TlsState::load(&config.general).unwrap_or_else(|e| {
            tracing::error!(error = %e, "TLS settings unusable: TLS is off, and connections that require it are refused");
            TlsState::refusing(&config.general)
        });
        let max_clients = config.general.max_client_conn;
        let reloader = opts.reloader.unwrap_or_else(|| default_reloader(&config));
        let ids = Arc::new(IdGen::default());
        Arc::new(App {
            hot: hot::HotConfig::new(&config.general),
            config: ArcSwap::from_pointee(config),
            secrets: ArcSwap::from_pointee(secrets),
            tls: ArcSwap::from_pointee(tls),
            pools: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            db_groups: Mutex::new(HashMap::new()),
            user_groups: Mutex::new(HashMap::new()),
            control: Mutex::new(DbControl::default()),
            cancel: Arc::new(CancelRegistry::default()),
            shutdown: Shutdown::new(),
            tracker: TaskTracker::default(),
            background: TaskTracker::default(),
            ids: ids.clone(),
            client_slots: Arc::new(Semaphore::new(max_clients)),
            statements: StatementRegistry::default(),
            client_limit: AtomicUsize::new(max_clients),
            admin_clients: Arc::default(),
            auth_query: AuthQuery::new(ids.clone()),
            reloader,
            log: opts.log,
            stop: watch::Sender::new(None),
            listen: Mutex::new(Vec::new()),
            metrics_addr: Mutex::new(None),
            started: Instant::now(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            parking: ParkingLot::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The configuration in force, without touching its reference count: for the
    /// per-transaction path, where the value is read and dropped at once.
    pub(crate) fn config_guard(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The per-transaction settings of the configuration in force.
    pub(crate) fn hot(&self) -> &hot::HotConfig {
        &self.hot
    }

    /// Client secrets for the configuration in force.
    pub fn secrets(&self) -> Arc<Secrets> {
        self.secrets.load_full()
    }

    /// The TLS material in force.
    pub fn tls(&self) -> Arc<TlsState> {
        self.tls.load_full()
    }

    /// A shutdown handle for a task.
    pub fn shutdown_watch(&self) -> ShutdownWatch {
        self.shutdown.watch()
    }

    /// True once a shutdown was requested (one atomic load, for hot paths).
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.is_requested()
    }

    /// Starts a shutdown of the given kind.
    pub fn trigger_shutdown(&self, kind: ShutdownKind) {
        self.shutdown.trigger(kind);
        // Parked clients go back to their sessions, which tell them.
        if let Some(lot) = &self.parking {
            lot.ring();
        }
        // Sessions poll the shutdown state when their task wakes: wake every one.
        for pool in self.pools() {
            for c in pool.clients() {
                c.wake_stop();
            }
        }
    }

    /// Asks the process to stop (admin SHUTDOWN); see [`App::stop_requested`].
    pub fn request_stop(&self, how: StopRequest) {
        self.stop.send_replace(Some(how));
    }

    /// Resolves when the admin console asked the process to stop.
    pub async fn stop_requested(&self) -> StopRequest {
        let mut rx = self.stop.subscribe();
        let r = rx.wait_for(Option::is_some).await.map(|v| *v);
        match r {
            Ok(v) => v.unwrap_or(StopRequest::Immediate),
            Err(_) => std::future::pending().await,
        }
    }

    /// Every pool that exists now (retired ones included), sorted by key.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<_> = self.lock_pools().values().cloned().collect();
        v.extend(self.retired.locked().iter().cloned());
        v.sort_by(|a, b| a.key().cmp(b.key()));
        v
    }

    fn lock_pools(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Arc<Pool>>> {
        self.pools.locked()
    }

    /// Reads or changes the database flags. `f` also gets the current pools, and runs
    /// with pool creation blocked, so a pool created concurrently sees the new flags.
    pub fn control<R>(&self, f: impl FnOnce(&mut DbControl, &[Arc<Pool>]) -> R) -> R {
        let pools = self.lock_pools();
        let mut all: Vec<Arc<Pool>> = pools.values().cloned().collect();
        all.extend(self.retired.locked().iter().cloned());
        let mut c = self.control.locked();
        f(&mut c, &all)
    }

    /// A copy of the database flags.
    pub fn db_control(&self) -> DbControl {
        self.control.locked().clone()
    }

    /// The pool serving `user` on `database`, created on first use.
    pub fn pool_for(
        self: &Arc<Self>,
        database: &str,
        user: &str,
    ) -> Result<Arc<Pool>, ClientNotice> {
        let cfg = self.config();
        let db = cfg.database(database).ok_or_else(|| {
            ClientNotice::fatal(
                SqlState::INVALID_CATALOG_NAME,
                format!("no such database: {database}"),
            )
        })?;
        if self.control.locked().disabled.contains(database) {
            return Err(ClientNotice::fatal(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("database \"{database}\" does not allow connections (DISABLE)"),
            ));
        }
        let server_user = db.user.clone().unwrap_or_else(|| user.to_owned());
        let key = PoolKey {
            database: database.into(),
            user: server_user.as_str().into(),
        };
        if let Some(p) = self.lock_pools().get(&key) {
            return Ok(p.clone());
        }
        let target = server_target(
            &cfg,
            &db,
            self.tls().servers.clone(),
            database,
            &server_user,
        );
        let settings = pool_settings(&cfg, database, &server_user);
        let groups = Groups {
            db: self.db_group(&cfg, database),
            user: self.user_group(&cfg, &server_user),
        };
        let mut pools = self.lock_pools();
        let pool = pools
            .entry(key.clone())
            .or_insert_with(|| {
                let p = Pool::new(
                    key,
                    target,
                    settings,
                    self.ids.clone(),
                    groups,
                    self.background.clone(),
                );
                if self.control.locked().is_paused(database) {
                    p.pause();
                }
                p.start_maintenance(self.shutdown.watch());
                p
            })
            .clone();
        Ok(pool)
    }

    /// The group of client-side database `database`, created on first use.
    fn db_group(&self, cfg: &Config, database: &str) -> Arc<GroupLimit> {
        self.db_groups
            .locked()
            .entry(database.to_owned())
            .or_insert_with(|| {
                GroupLimit::new(
                    GroupKind::Database,
                    database,
                    cfg.max_db_connections(database),
                )
            })
            .clone()
    }

    /// The group of server-side user `user`, created on first use.
    fn user_group(&self, cfg: &Config, user: &str) -> Arc<GroupLimit> {
        self.user_groups
            .locked()
            .entry(user.to_owned())
            .or_insert_with(|| {
                GroupLimit::new(GroupKind::User, user, cfg.max_user_connections(user))
            })
            .clone()
    }

    /// The group of database `database`, if one of its pools was ever used.
    pub fn database_group(&self, database: &str) -> Option<Arc<GroupLimit>> {
        self.db_groups.locked().get(database).cloned()
    }

    /// The group of server user `user`, if one of its pools was ever used.
    pub fn user_group_of(&self, user: &str) -> Option<Arc<GroupLimit>> {
        self.user_groups.locked().get(user).cloned()
    }

    /// A logged-in client's place under max_db_client_connections of `database`; the
    /// FATAL 53300 PgBouncer sends when it is full.
    pub fn admit_db_client(&self, database: &str) -> Result<ClientSlot, ClientNotice> {
        let cfg = self.config_guard();
        let max = cfg.max_db_client_connections(database);
        self.db_group(&cfg, database)
            .try_add_client(max)
            .ok_or_else(|| {
                ClientNotice::fatal(
                    SqlState::TOO_MANY_CONNECTIONS,
                    "no more connections allowed (max_db_client_connections)",
                )
            })
    }

    /// Applies the configuration's caps to the existing groups (reload).
    fn update_groups(&self, cfg: &Config) {
        for (name, g) in self.db_groups.locked().clone() {
            g.set_max(cfg.max_db_connections(&name));
        }
        for (name, g) in self.user_groups.locked().clone() {
            g.set_max(cfg.max_user_connections(&name));
        }
    }

    /// Forwards a client's CancelRequest to the server connection it is using, if any,
    /// giving up after cancel_wait_timeout.
    pub async fn forward_cancel(&self, pid: i32, secret: &[u8]) {
        match self.cancel.lookup(pid, secret) {
            Some(t) => {
                tracing::info!(
                    client = pid,
                    backend_pid = t.key.pid,
                    "forwarding cancel request"
                );
                let limit = self.config_guard().general.cancel_wait_timeout.non_zero();
                if let Err(e) = server::send_cancel_within(&t.target, &t.key, limit).await {
                    tracing::warn!(error = %e, "could not forward cancel request");
                }
            }
            None => tracing::debug!(client = pid, "cancel request for no running query; ignored"),
        }
    }

    /// Closes every pool's idle connections.
    pub fn close_pools(&self) {
        for p in self.pools() {
            p.close();
        }
    }

    /// The addresses the server listens on.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen.locked().clone()
    }

    /// The bound address of the metrics endpoint, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        *self.metrics_addr.locked()
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Reloads that succeeded and failed so far.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }

    /// One round of background upkeep: closes retired pools whose clients left.
    fn janitor_tick(&self) {
        let done: Vec<Arc<Pool>> = {
            let mut retired = self.retired.locked();
            let (done, keep) = retired
                .drain(..)
                .partition(|p: &Arc<Pool>| p.client_count() == 0);
            *retired = keep;
            done
        };
        for p in done {
            tracing::info!(pool = %p.key(), "closing the pool of a removed database or user");
            p.close();
        }
    }

    /// Closes a stats period of every pool (SHOW STATS averages).
    fn stats_tick(&self, period: Duration) {
        for p in self.pools() {
            p.stats.advance_window(period);
        }
    }
}

/// The reloader used when none is given: re-read the file the configuration came from,
/// with the process's `PGSLUICE_*` variables; without a file, the configuration itself.
fn default_reloader(config: &Config) -> Reloader {
    let fallback = config.clone();
    Arc::new(move || match &fallback.source {
        Some(path) => crate::config::env_vars().and_then(|env| crate::config::load_file(path, env)),
        None => Ok(fallback.clone()),
    })
}

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
fn server_target(
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
