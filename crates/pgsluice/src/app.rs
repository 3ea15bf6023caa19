//! The composition root: [`App`] builds the parts of a running pgsluice (the
//! configuration generation in force, the router and its pools, the client layer's
//! context, the trackers of every task) and wires them together; nothing below it
//! knows it. The admin console and the metrics endpoint see it through
//! [`admin::Console`]; clients through their [`ClientContext`].
//!
//! The listeners, accept loops and [`Instance`] live in the `listen` submodule, hot
//! reload ([`App::reload`]) in `reload`, both ends of the zero-downtime upgrade in
//! `upgrade`.

mod listen;
mod reload;
mod upgrade;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use crate::admin::{self, ClientCounts, Console, Reloading, StopRequest};
use crate::cancel::CancelRegistry;
use crate::client::auth_query::AuthQuery;
use crate::client::handover::{self, AdoptError, Departing, HandoverSink};
use crate::client::prepared::StatementRegistry;
use crate::client::{Admission, ClientContext, ParkingLot};
use crate::config::{Config, ConfigError};
use crate::generation::{Generation, Live};
use crate::lane::Lanes;
use crate::logging::LogControl;
use crate::pool::listing::InfoList;
use crate::pool::{ClientInfo, IdGen, Pool};
use crate::router::Router;
use crate::shutdown::{Shutdown, ShutdownKind, ShutdownWatch, TaskTracker};
use crate::sync::LockExt;

pub use crate::admin::ReloadReport;
pub use listen::Instance;
pub use upgrade::{Inherited, InheritedListener, Upgrade, UpgradeError};

/// Produces a fresh configuration for RELOAD and SIGHUP (re-reading the file and
/// applying the environment and command-line overrides again).
pub type Reloader = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Options of [`Instance::start_with`] beyond the configuration.
#[derive(Default)]
pub struct InstanceOptions {
    /// How RELOAD gets the new configuration; default: re-read [`Config::source`] with
    /// the `PGSLUICE_*` environment (no file: the configuration in force, unchanged).
    pub reloader: Option<Reloader>,
    /// Lets RELOAD change the log level and outputs, and reopen the log file.
    pub log: Option<LogControl>,
    /// `pgsluice --upgrade`: the listening sockets of the process being upgraded
    /// ([`Upgrade::connect`]), used instead of binding where the configuration names the
    /// same address; the control socket is then opened by [`Upgrade::ready`], not at
    /// start.
    pub inherited: Option<Inherited>,
}

impl std::fmt::Debug for InstanceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceOptions")
            .field("reloader", &self.reloader.is_some())
            .field("log", &self.log)
            .field("inherited", &self.inherited)
            .finish()
    }
}

/// One pgsluice server: its parts, built once.
pub struct App {
    live: Live,
    router: Arc<Router>,
    clients: Arc<ClientContext>,
    shutdown: Shutdown,
    /// Client tasks (login and session), which a graceful shutdown waits for.
    tracker: TaskTracker,
    /// Everything else spawned: pool upkeep and resets, cancels, scrapes, reload
    /// helpers; waited for (briefly) after the clients.
    background: TaskTracker,
    client_slots: Arc<Semaphore>,
    client_limit: AtomicUsize,
    reloader: Reloader,
    log: Option<LogControl>,
    stop: watch::Sender<Option<StopRequest>>,
    listen: Mutex<Vec<SocketAddr>>,
    /// True once an upgrade gave the listening sockets to a new process: the accept
    /// loops stop and the Unix socket file is left to it.
    handed_over: watch::Sender<bool>,
    metrics_addr: Mutex<Option<SocketAddr>>,
    started: Instant,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// One reload at a time (RELOAD, SIGHUP and SET may race).
    reloading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// Builds the parts for a validated configuration.
    pub fn new(config: Config) -> Arc<App> {
        Self::with_options(config, InstanceOptions::default())
    }

    /// [`App::new`] with a reloader and log control.
    pub fn with_options(config: Config, opts: InstanceOptions) -> Arc<App> {
        let max_clients = config.general.max_client_conn;
        // Outside a runtime (some unit tests) sessions simply stay on tokio.
        let lanes = tokio::runtime::Handle::try_current()
            .ok()
            .and_then(|rt| Lanes::start(config.general.relay_lanes(), rt));
        let reloader = opts.reloader.unwrap_or_else(|| default_reloader(&config));
        let live = Live::new(Generation::first(config));
        let shutdown = Shutdown::new();
        let background = TaskTracker::default();
        let ids = Arc::new(IdGen::default());
        let router = Arc::new(Router::new(
            live.clone(),
            ids.clone(),
            shutdown.watch(),
            background.clone(),
        ));
        let clients = Arc::new(ClientContext {
            router: router.clone(),
            live: live.clone(),
            cancel: Arc::new(CancelRegistry::default()),
            shutdown: shutdown.watch(),
            statements: StatementRegistry::new(live.clone()),
            auth_query: AuthQuery::new(ids),
            parking: ParkingLot::new(lanes),
            admin_clients: Arc::default(),
            background: background.clone(),
            handover: Default::default(),
        });
        Arc::new(App {
            live,
            router,
            clients,
            shutdown,
            tracker: TaskTracker::default(),
            background,
            client_slots: Arc::new(Semaphore::new(max_clients)),
            client_limit: AtomicUsize::new(max_clients),
            reloader,
            log: opts.log,
            stop: watch::Sender::new(None),
            listen: Mutex::new(Vec::new()),
            handed_over: watch::Sender::new(false),
            metrics_addr: Mutex::new(None),
            started: Instant::now(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.live.config()
    }

    /// The configuration generation in force.
    pub fn generation(&self) -> Arc<Generation> {
        self.live.current()
    }

    /// The router (pools, groups, database switches).
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// What clients use of the process.
    pub fn clients(&self) -> &Arc<ClientContext> {
        &self.clients
    }

    /// Every pool that exists now (retired ones included), sorted by key.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.router.pools()
    }

    /// Sessions running on the relay lanes now; `None` when there are no lanes
    /// (`relay_lanes = 0`).
    pub fn lane_tasks(&self) -> Option<usize> {
        self.clients
            .parking
            .as_ref()
            .and_then(|p| p.lanes())
            .map(Lanes::tasks)
    }

    /// Clients parked without a task.
    pub fn parked_clients(&self) -> usize {
        self.clients.parking.as_ref().map_or(0, |l| l.len())
    }

    /// Live client tasks.
    pub fn client_tasks(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Background tasks (pool upkeep, resets, cancels, scrapes).
    pub fn background_tasks(&self) -> &TaskTracker {
        &self.background
    }

    /// Starts a shutdown of the given kind.
    pub fn trigger_shutdown(&self, kind: ShutdownKind) {
        self.shutdown.trigger(kind);
        // Parked clients go back to their sessions, which tell them.
        if let Some(lot) = &self.clients.parking {
            lot.ring();
        }
        // Sessions poll the shutdown state when their task wakes: wake every one.
        for pool in self.router.pools() {
            for c in pool.clients() {
                c.wake_stop();
            }
        }
    }

    /// Upgrade, old process: from now on idle clients that can move go to `sink`
    /// (see [`crate::client::handover`]).
    pub fn begin_handover(&self, sink: HandoverSink) {
        handover::begin_handover(&self.clients, sink);
    }

    /// Upgrade, new process: takes on a client the old process handed over, under
    /// max_client_conn as the accept loop admits clients; it counts among the client
    /// tasks a graceful shutdown waits for.
    pub fn adopt_client(self: &Arc<Self>, departing: Departing) -> Result<(), AdoptError> {
        let admission = match self.client_slots.clone().try_acquire_owned() {
            Ok(p) => Admission::Admitted(p),
            Err(_) => Admission::Full,
        };
        let console: Arc<dyn Console> = self.clone();
        handover::adopt(
            &self.clients,
            console,
            departing,
            admission,
            self.tracker.token(),
        )
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

    /// Pauses every pool (SIGUSR1, as PAUSE).
    pub fn pause_all(&self) -> Result<(), String> {
        admin::pause_all(&self.router)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Resumes every pool (SIGUSR2, as RESUME).
    pub fn resume_all(&self) -> Result<(), String> {
        admin::resume_all(&self.router).map_err(|e| e.to_string())
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
}

impl Console for App {
    fn router(&self) -> &Router {
        &self.router
    }

    fn config(&self) -> Arc<Config> {
        App::config(self)
    }

    fn listen_addrs(&self) -> Vec<SocketAddr> {
        App::listen_addrs(self)
    }

    fn uptime(&self) -> Duration {
        App::uptime(self)
    }

    fn reload_counts(&self) -> (u64, u64) {
        App::reload_counts(self)
    }

    fn admin_clients(&self) -> &InfoList<ClientInfo> {
        &self.clients.admin_clients
    }

    fn client_counts(&self) -> ClientCounts {
        ClientCounts {
            tasks: self.tracker.live(),
            parked: self.parked_clients(),
        }
    }

    fn shutdown_watch(&self) -> ShutdownWatch {
        self.shutdown.watch()
    }

    fn request_stop(&self, how: StopRequest) {
        App::request_stop(self, how)
    }

    fn reload(&self) -> Reloading<'_> {
        Box::pin(App::reload(self))
    }

    fn apply_config(&self, new: Config) -> Reloading<'_> {
        Box::pin(App::apply_config(self, new))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_metrics_render_without_pools() {
        let app = App::new(Config::default());
        let text = crate::metrics::render(&*app);
        assert!(
            text.contains("# TYPE pgsluice_up gauge\npgsluice_up 1\n"),
            "{text}"
        );
        assert!(text.contains("pgsluice_config_reloads_total{result=\"failure\"} 0"));
    }

    #[tokio::test]
    async fn a_refused_reload_changes_nothing() {
        let app = App::new(Config::default());
        let before = app.generation();
        let mut bad = Config::default();
        bad.general.max_client_conn = 0;
        assert!(app.apply_config(bad).await.is_err());
        assert!(Arc::ptr_eq(&before, &app.generation()));
    }

    #[tokio::test]
    async fn an_applied_reload_publishes_one_new_generation() {
        let app = App::new(Config::default());
        let mut next = Config::default();
        next.general.query_timeout.0 = Duration::from_secs(9);
        app.apply_config(next).await.unwrap();
        let g = app.generation();
        assert_eq!(g.number, 2);
        assert_eq!(g.hot.relay.query_timeout, Some(Duration::from_secs(9)));
        assert_eq!(g.config.general.query_timeout.0, Duration::from_secs(9));
    }
}
