//! The running server: shared state (configuration, pools, cancel keys, shutdown) owned
//! by one [`App`] passed to every task, and the accept loops.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use pgsluice_protocol::SqlState;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::cancel::CancelRegistry;
use crate::client::prepared::StatementRegistry;
use crate::client::{self, auth::Secrets, Admission};
use crate::config::Config;
use crate::error::ClientNotice;
use crate::net::Stream;
use crate::pool::{IdGen, Pool, PoolKey, PoolSettings};
use crate::server::{self, ServerTarget};
use crate::shutdown::{Shutdown, ShutdownKind, ShutdownWatch, TaskTracker};

/// State shared by every task of one pgsluice server.
#[derive(Debug)]
pub struct App {
    config: ArcSwap<Config>,
    secrets: ArcSwap<Secrets>,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    /// Cancel keys issued to clients.
    pub cancel: Arc<CancelRegistry>,
    shutdown: Shutdown,
    /// Live client tasks.
    pub tracker: TaskTracker,
    ids: Arc<IdGen>,
    client_slots: Arc<Semaphore>,
    /// Named prepared statements of every client (transaction mode).
    pub statements: StatementRegistry,
}

impl App {
    /// Builds the shared state for a validated configuration.
    pub fn new(config: Config) -> Arc<App> {
        let secrets = Secrets::from_config(&config);
        let max_clients = config.general.max_client_conn;
        Arc::new(App {
            config: ArcSwap::from_pointee(config),
            secrets: ArcSwap::from_pointee(secrets),
            pools: Mutex::new(HashMap::new()),
            cancel: Arc::new(CancelRegistry::default()),
            shutdown: Shutdown::new(),
            tracker: TaskTracker::default(),
            ids: Arc::new(IdGen::default()),
            client_slots: Arc::new(Semaphore::new(max_clients)),
            statements: StatementRegistry::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Client secrets for the configuration in force.
    pub fn secrets(&self) -> Arc<Secrets> {
        self.secrets.load_full()
    }

    /// A shutdown handle for a task.
    pub fn shutdown_watch(&self) -> ShutdownWatch {
        self.shutdown.watch()
    }

    /// Starts a shutdown of the given kind.
    pub fn trigger_shutdown(&self, kind: ShutdownKind) {
        self.shutdown.trigger(kind);
    }

    /// Every pool that exists now.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<_> = self.lock_pools().values().cloned().collect();
        v.sort_by(|a, b| a.key().cmp(b.key()));
        v
    }

    fn lock_pools(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Arc<Pool>>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
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
        let server_user = db.user.clone().unwrap_or_else(|| user.to_owned());
        let key = PoolKey {
            database: database.into(),
            user: server_user.as_str().into(),
        };
        if let Some(p) = self.lock_pools().get(&key) {
            return Ok(p.clone());
        }
        let password = match &db.user {
            Some(forced) => db
                .password
                .clone()
                .or_else(|| cfg.users.get(forced).and_then(|u| u.password.clone())),
            None => cfg.users.get(user).and_then(|u| u.password.clone()),
        };
        let target = ServerTarget {
            host: db.host.clone(),
            port: db.port,
            database: db.dbname.clone().unwrap_or_else(|| database.to_owned()),
            user: server_user,
            password,
            application_name: db.application_name.clone(),
        };
        let settings = pool_settings(&cfg, database, user);
        let mut pools = self.lock_pools();
        let pool = pools
            .entry(key.clone())
            .or_insert_with(|| {
                let p = Pool::new(key, target, settings, self.ids.clone());
                p.start_maintenance(self.shutdown.watch());
                p
            })
            .clone();
        Ok(pool)
    }

    /// Forwards a client's CancelRequest to the server connection it is using, if any.
    pub async fn forward_cancel(&self, pid: i32, secret: &[u8]) {
        match self.cancel.lookup(pid, secret) {
            Some(t) => {
                tracing::info!(
                    client = pid,
                    backend_pid = t.key.pid,
                    "forwarding cancel request"
                );
                if let Err(e) = server::send_cancel(&t.target, &t.key).await {
                    tracing::warn!(error = %e, "could not forward cancel request");
                }
            }
            None => tracing::debug!(client = pid, "cancel request for no running query; ignored"),
        }
    }

    /// Closes every pool's idle connections.
    pub fn close_pools(&self) {
        for p in self.lock_pools().values() {
            p.close();
        }
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
    }
}

/// A started server: listeners bound, accept loops running.
#[derive(Debug)]
pub struct Server {
    app: Arc<App>,
    addrs: Vec<SocketAddr>,
    accept_tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds every listen address and starts accepting. Must run inside a Tokio runtime.
    pub async fn start(config: Config) -> io::Result<Server> {
        let app = App::new(config);
        let cfg = app.config();
        let mut addrs = Vec::new();
        let mut accept_tasks = Vec::new();
        for addr in &cfg.general.listen {
            let listener = TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            tracing::info!("listening on {local}");
            addrs.push(local);
            accept_tasks.push(tokio::spawn(accept_loop(listener, app.clone())));
        }
        // Pools with a forced user are known now: warm them if min_pool_size asks.
        for (name, db) in cfg.databases.iter().filter(|(n, _)| n.as_str() != "*") {
            if let Some(user) = &db.user {
                if cfg.min_pool_size(name) > 0 {
                    let _ = app.pool_for(name, user);
                }
            } else {
                for user in cfg.users.keys() {
                    if cfg.min_pool_size(name) > 0 {
                        let _ = app.pool_for(name, user);
                    }
                }
            }
        }
        Ok(Server {
            app,
            addrs,
            accept_tasks,
        })
    }

    /// The bound addresses (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The shared state.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Graceful shutdown: stop accepting, let transactions finish, close idle clients
    /// with 57P01; after `deadline`, or on `immediate`, close everything.
    pub async fn shutdown(
        self,
        deadline: Duration,
        immediate: impl std::future::Future<Output = ()>,
    ) {
        self.app.trigger_shutdown(ShutdownKind::Graceful);
        for t in &self.accept_tasks {
            t.abort();
        }
        tracing::info!(
            clients = self.app.tracker.live(),
            "graceful shutdown started"
        );
        tokio::select! {
            _ = self.app.tracker.wait() => tracing::info!("all clients finished"),
            _ = tokio::time::sleep(deadline) => tracing::warn!(
                clients = self.app.tracker.live(),
                "shutdown_timeout reached; closing remaining clients"
            ),
            _ = immediate => tracing::warn!("immediate shutdown requested"),
        }
        self.app.trigger_shutdown(ShutdownKind::Immediate);
        self.app.close_pools();
    }
}

async fn accept_loop(listener: TcpListener, app: Arc<App>) {
    let mut shutdown = app.shutdown_watch();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.requested() => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                let admission = match app.client_slots.clone().try_acquire_owned() {
                    Ok(p) => Admission::Admitted(p),
                    Err(_) => Admission::Full,
                };
                let token = app.tracker.token();
                tokio::spawn(client::serve(
                    Stream::from(sock),
                    peer.to_string(),
                    app.clone(),
                    admission,
                    token,
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
