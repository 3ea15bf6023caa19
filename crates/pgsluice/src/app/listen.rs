//! The started server: listeners (TCP and the unix socket), accept loops, the
//! janitor, warm-up of `min_pool_size`, and shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use std::os::fd::{AsFd, OwnedFd};

use super::upgrade::{self, InheritedListener};
use super::{App, InstanceOptions};
use crate::client::{self, Admission};
use crate::config::Config;
use crate::net::Stream;
use crate::shutdown::ShutdownKind;
use crate::sync::LockExt;
use crate::tls::TlsState;
use crate::upgrade::ListenerKind;

/// A running pgsluice instance: its parts built, listeners bound, accept loops started.
#[derive(Debug)]
pub struct Instance {
    app: Arc<App>,
    addrs: Vec<SocketAddr>,
    accept_tasks: Vec<JoinHandle<()>>,
    /// Copies of the listening sockets, for the upgrade control socket's task.
    handoff: Vec<InheritedListener>,
}

impl Instance {
    /// Binds every listen address and starts accepting. Must run inside a Tokio runtime.
    pub async fn start(config: Config) -> io::Result<Instance> {
        Self::start_with(config, InstanceOptions::default()).await
    }

    /// [`Instance::start`] with a reloader and log control (the binary's way), and for
    /// `--upgrade` the listening sockets of the process being upgraded.
    pub async fn start_with(config: Config, mut opts: InstanceOptions) -> io::Result<Instance> {
        TlsState::load(&config.general).map_err(io::Error::other)?;
        let inherited = opts.inherited.take();
        let upgrading = inherited.is_some();
        let app = App::with_options(config, opts);
        let mut inherited = match inherited {
            Some(up) => {
                // Before anyone is served: this process's keys clear of the old one's.
                app.clients.cancel.skip_pids_below(up.key_floor);
                up.listeners
            }
            None => Vec::new(),
        };
        let mut accept_tasks = Vec::new();
        let mut handoff = Vec::new();
        let listening = listen_all(&app, &mut inherited, &mut accept_tasks, &mut handoff).await;
        let addrs = match listening {
            Ok(addrs) => addrs,
            Err(e) => {
                if upgrading {
                    // The sockets (and the Unix socket's file) are still the old
                    // process's: stop using them, remove nothing.
                    app.handed_over.send_replace(true);
                }
                for t in &accept_tasks {
                    t.abort();
                }
                return Err(e);
            }
        };
        for l in inherited {
            tracing::info!(
                "upgrade: {} is not in the new configuration; it stops listening",
                l.addr
            );
        }
        app.background.spawn(janitor(app.clone()));
        app.background
            .spawn(client::park::keep(app.clients.clone()));
        app.router.warm_pools();
        let mut instance = Instance {
            app,
            addrs,
            accept_tasks,
            handoff,
        };
        if !upgrading {
            instance.serve_upgrades();
        }
        Ok(instance)
    }

    /// Opens the upgrade control socket (see [`crate::upgrade::control_path`]), once.
    fn serve_upgrades(&mut self) {
        let listeners = self.take_handoff();
        upgrade::serve_control(&self.app, listeners);
    }

    /// The copies of the listening sockets the control socket's task hands over.
    pub(super) fn take_handoff(&mut self) -> Vec<InheritedListener> {
        std::mem::take(&mut self.handoff)
    }

    /// The bound addresses (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The bound address of the metrics endpoint, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.app.metrics_addr()
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
        let started = Instant::now();
        self.app.trigger_shutdown(ShutdownKind::Graceful);
        for t in &self.accept_tasks {
            t.abort();
        }
        tracing::info!(
            clients = self.app.tracker.live(),
            "graceful shutdown started"
        );
        // Then the background tasks get what is left of the deadline, within bounds.
        let background = tokio::select! {
            _ = self.app.tracker.wait() => {
                tracing::info!("all clients finished");
                deadline.saturating_sub(started.elapsed())
            }
            _ = tokio::time::sleep(deadline) => {
                tracing::warn!(
                    clients = self.app.tracker.live(),
                    "shutdown_timeout reached; closing remaining clients"
                );
                Duration::ZERO
            }
            _ = immediate => {
                tracing::warn!("immediate shutdown requested");
                Duration::ZERO
            }
        };
        self.app.trigger_shutdown(ShutdownKind::Immediate);
        self.app.router.close_pools();
        self.app
            .wait_background(background.clamp(BACKGROUND_WAIT_MIN, BACKGROUND_WAIT))
            .await;
    }

    /// SHUTDOWN WAIT_FOR_CLIENTS: stop accepting, then wait (without disturbing them)
    /// until no pool has a client left, or until `immediate`; then close everything.
    pub async fn shutdown_wait_for_clients(self, immediate: impl std::future::Future<Output = ()>) {
        for t in &self.accept_tasks {
            t.abort();
        }
        tracing::info!("waiting for every client to disconnect before stopping");
        let router = self.app.router.clone();
        let clients_gone = async move {
            loop {
                if router.no_clients() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let background = tokio::select! {
            _ = clients_gone => {
                tracing::info!("all clients disconnected");
                BACKGROUND_WAIT
            }
            _ = immediate => {
                tracing::warn!("immediate shutdown requested");
                BACKGROUND_WAIT_MIN
            }
        };
        self.app.trigger_shutdown(ShutdownKind::Immediate);
        self.app.router.close_pools();
        self.app.wait_background(background).await;
    }
}

/// Binds (or takes from `inherited`) every listener of the configuration and starts
/// its accept loop; the bound TCP addresses. On error, what was started is in
/// `accept_tasks` for the caller to stop.
async fn listen_all(
    app: &Arc<App>,
    inherited: &mut Vec<InheritedListener>,
    accept_tasks: &mut Vec<JoinHandle<()>>,
    handoff: &mut Vec<InheritedListener>,
) -> io::Result<Vec<SocketAddr>> {
    let cfg = app.config();
    let mut addrs = Vec::new();
    for addr in &cfg.general.listen {
        let listener = match upgrade::take(inherited, ListenerKind::Tcp, &addr.to_string()) {
            Some(fd) => adopt_tcp(fd)?,
            None => bind_tcp(*addr, cfg.general.so_reuseport)?,
        };
        let local = listener.local_addr()?;
        tracing::info!("listening on {local}");
        addrs.push(local);
        handoff.push(InheritedListener {
            kind: ListenerKind::Tcp,
            addr: local.to_string(),
            fd: listener.as_fd().try_clone_to_owned()?,
        });
        accept_tasks.push(tokio::spawn(accept_loop(
            Listener::Tcp(listener),
            app.clone(),
        )));
    }
    if let Some(path) = unix_socket_path(&cfg.general) {
        let name = path.display().to_string();
        let listener = match upgrade::take(inherited, ListenerKind::Unix, &name) {
            Some(fd) => {
                let std = std::os::unix::net::UnixListener::from(fd);
                std.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(std)?
            }
            None => bind_unix(
                &path,
                cfg.general.unix_socket_mode,
                cfg.general.unix_socket_group.as_deref(),
            )?,
        };
        tracing::info!("listening on unix socket {name}");
        handoff.push(InheritedListener {
            kind: ListenerKind::Unix,
            addr: name,
            fd: listener.as_fd().try_clone_to_owned()?,
        });
        let kept = app.handed_over.subscribe();
        accept_tasks.push(tokio::spawn(accept_loop(
            Listener::Unix(listener, path, kept),
            app.clone(),
        )));
    }
    *app.listen.locked() = addrs.clone();
    if let Some(addr) = cfg.general.metrics_listen {
        let listener = match upgrade::take(inherited, ListenerKind::Metrics, &addr.to_string()) {
            Some(fd) => adopt_tcp(fd)?,
            None => TcpListener::bind(addr).await?,
        };
        let local = listener.local_addr()?;
        tracing::info!("metrics listening on http://{local}/metrics");
        tracing::info!("dashboard on http://{local}/");
        *app.metrics_addr.locked() = Some(local);
        handoff.push(InheritedListener {
            kind: ListenerKind::Metrics,
            addr: local.to_string(),
            fd: listener.as_fd().try_clone_to_owned()?,
        });
        let console: Arc<dyn crate::admin::Console> = app.clone();
        let serve = crate::metrics::serve(listener, console, app.background.clone());
        let mut handed_over = app.handed_over.subscribe();
        accept_tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = serve => {}
                _ = handed_over.wait_for(|h| *h) => {}
            }
        }));
    }
    Ok(addrs)
}

/// The longest shutdown waits for the pools' background tasks once clients are gone.
/// Each of them ends by itself within a bounded time (a reset within
/// server_connect_timeout, a close within a second), but the process does not wait
/// for the slowest.
const BACKGROUND_WAIT: Duration = Duration::from_secs(5);

/// The shortest such wait, even past shutdown_timeout: time to send Terminate to the
/// server connections just closed.
const BACKGROUND_WAIT_MIN: Duration = Duration::from_secs(1);

impl App {
    /// Waits up to `limit` for the pools' background tasks to end, and says how many
    /// are left.
    async fn wait_background(&self, limit: Duration) {
        self.wait_background_tasks(limit).await;
        self.stop_lanes(BACKGROUND_WAIT_MIN).await;
    }

    async fn wait_background_tasks(&self, limit: Duration) {
        let pending = self.background.live();
        if pending == 0 {
            return;
        }
        tracing::info!(tasks = pending, "waiting for background tasks");
        match tokio::time::timeout(limit, self.background.wait()).await {
            Ok(()) => tracing::info!("background tasks finished"),
            Err(_) => tracing::warn!(
                tasks = self.background.live(),
                "background tasks still running at exit"
            ),
        }
    }

    /// Ends the relay lanes, last (a background task may still use a server socket
    /// on a lane), and joins their threads; gives up after `limit`.
    async fn stop_lanes(&self, limit: Duration) {
        let Some(lanes) = self.clients.parking.as_ref().and_then(|p| p.lanes()) else {
            return;
        };
        lanes.close();
        let deadline = Instant::now() + limit;
        while !lanes.ended() {
            if Instant::now() >= deadline {
                tracing::warn!(tasks = lanes.tasks(), "relay lanes still running at exit");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Background upkeep of the server: retired pools, stats periods and the
/// `log_stats` line.
async fn janitor(app: Arc<App>) {
    let mut shutdown = app.shutdown.watch();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut period_start = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.requested() => return,
        }
        app.router.close_retired();
        let period = app
            .config()
            .general
            .stats_period
            .0
            .max(Duration::from_secs(1));
        let elapsed = period_start.elapsed();
        if elapsed + Duration::from_millis(100) >= period {
            app.router.advance_stats(elapsed);
            period_start = Instant::now();
            // PgBouncer's line, from the averages SHOW STATS now shows.
            if app.config().general.log_stats {
                tracing::info!("{}", app.router.stats_window().averages().log_line());
            }
        }
    }
}

/// A listening socket: TCP, or the unix socket `.s.PGSQL.<port>` (removed on drop,
/// unless an upgrade handed it to another process: the watch says so).
enum Listener {
    Tcp(TcpListener),
    Unix(
        tokio::net::UnixListener,
        std::path::PathBuf,
        tokio::sync::watch::Receiver<bool>,
    ),
}

impl Listener {
    async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => l
                .accept()
                .await
                .map(|(s, peer)| (Stream::from(s), peer.to_string())),
            Listener::Unix(l, path, _) => l
                .accept()
                .await
                .map(|(s, _)| (Stream::from(s), format!("unix:{}", path.display()))),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path, handed_over) = self {
            if !*handed_over.borrow() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Binds a TCP listener as `TcpListener::bind` does (SO_REUSEADDR, backlog 1024),
/// with SO_REUSEPORT too when `reuseport` (PgBouncer's so_reuseport: several processes
/// on one port, the kernel spreading connections over them).
fn bind_tcp(addr: SocketAddr, reuseport: bool) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A TCP listener received from the process being upgraded.
fn adopt_tcp(fd: OwnedFd) -> io::Result<TcpListener> {
    let std = std::net::TcpListener::from(fd);
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// `<unix_socket_dir>/.s.PGSQL.<port>`, with the port of the first TCP listen address
/// (PgBouncer's listen_port), when a directory is configured.
fn unix_socket_path(g: &crate::config::General) -> Option<std::path::PathBuf> {
    let dir = g.unix_socket_dir.as_deref().filter(|d| !d.is_empty())?;
    let port = g.listen.first().map_or(6432, |a| a.port());
    Some(std::path::Path::new(dir).join(format!(".s.PGSQL.{port}")))
}

/// Binds the unix socket, replacing a stale file but refusing one a live pooler uses;
/// then gives it `mode` and, if set, `group` (PgBouncer's unix_socket_group: the
/// process must be a member of the group, or root).
fn bind_unix(
    path: &std::path::Path,
    mode: u32,
    group: Option<&str>,
) -> io::Result<tokio::net::UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "unix socket {} is in use by another process",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    let owned = set_owner_and_mode(path, mode, group);
    if let Err(e) = owned {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// The group and mode of a freshly bound unix socket.
fn set_owner_and_mode(path: &std::path::Path, mode: u32, group: Option<&str>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(group) = group {
        let gid = crate::config::os_group::group_id(group).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("unix_socket_group: group `{group}` does not exist"),
            )
        })?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "unix_socket_group: cannot give {} to group `{group}`: {e}",
                    path.display()
                ),
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

async fn accept_loop(listener: Listener, app: Arc<App>) {
    let mut shutdown = app.shutdown.watch();
    let mut handed_over = app.handed_over.subscribe();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.requested() => return,
            _ = handed_over.wait_for(|h| *h) => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                let admission = match app.client_slots.clone().try_acquire_owned() {
                    Ok(p) => Admission::Admitted(p),
                    Err(_) => Admission::Full,
                };
                let token = app.tracker.token();
                let console: Arc<dyn crate::admin::Console> = app.clone();
                let fut = client::serve(sock, peer, app.clients.clone(), console, admission, token);
                tokio::spawn(fut);
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
