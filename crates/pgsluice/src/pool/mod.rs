//! Pools of server connections keyed by (database, user).
//!
//! A pool hands out [`Checkout`] guards. Dropping a guard returns the connection: to the
//! first waiting client (FIFO), else to the idle stack (LIFO, so hot connections stay
//! hot). A guard is only put back as-is when the client side marked it clean; otherwise
//! it is reset or closed. The pool lock is a `std::sync::Mutex` held for a few pointer
//! moves and never across an `.await`; waiters park on a oneshot channel, and their
//! deadlines (query_wait_timeout, reserve_pool_timeout) are checked by the pool's
//! once-a-second upkeep, not by a timer per wait.

mod checkout;
pub mod group;
mod handback;
mod limits;
mod listen_hub;
pub mod listing;
mod maintain;
mod manage;
mod queue;
mod stats;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

pub use checkout::{Checkout, ReturnAs};
pub use group::{ClientSlot, GroupKind, GroupLimit, Groups};
pub use listing::{ClientInfo, ClientReg, ClientState, ServerInfo, ServerState};
pub use manage::PoolCounts;
use queue::Waiter;
pub(crate) use queue::{Queued, Start};
pub use stats::{PoolStats, PoolStatsSnapshot};

use crate::config::PoolMode;
use crate::error::{ClientNotice, PoolError};
use crate::params::ParamSet;
use crate::server::{PassThrough, ServerConn, ServerId, ServerTarget};
use crate::shutdown::TaskTracker;
use crate::sync::LockExt;
use listing::{InfoList, ServerReg};

/// Identity of a pool: the database name clients use and the client user name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// Database name as clients know it.
    pub database: Arc<str>,
    /// User name as clients log in.
    pub user: Arc<str>,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.database, self.user)
    }
}

/// Settings a pool runs with (replaceable at reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most server connections open at once.
    pub size: usize,
    /// Server connections kept open even when idle.
    pub min_size: usize,
    /// Session, transaction or statement pooling.
    pub mode: PoolMode,
    /// How long a client waits for a connection; None = forever.
    pub wait_timeout: Option<Duration>,
    /// How long connecting and logging in may take.
    pub connect_timeout: Duration,
    /// Close connections idle longer than this (beyond min_size); None = never.
    pub idle_timeout: Option<Duration>,
    /// Close connections older than this when they come back; None = never.
    pub lifetime: Option<Duration>,
    /// Query that cleans a connection a session-mode client used; None = none.
    pub reset_query: Option<String>,
    /// Run the reset query in transaction mode too.
    pub reset_query_always: bool,
    /// Connections beyond `size` for clients that waited `reserve_timeout`.
    pub reserve_size: usize,
    /// How long a client waits before the reserve is used; None = no reserve.
    pub reserve_timeout: Option<Duration>,
    /// After a failed connect or login, new connections fail at once this long.
    pub login_retry: Option<Duration>,
}

/// The number a pool mode is stored as in [`HotSettings`] (read back by `Pool::mode`).
fn mode_index(mode: PoolMode) -> u8 {
    match mode {
        PoolMode::Session => 0,
        PoolMode::Transaction => 1,
        PoolMode::Statement => 2,
    }
}

/// What every transaction reads of a pool's settings, mirrored as plain atomics
/// (written with the settings): one load each instead of an `ArcSwap` guard.
#[derive(Debug, Default)]
struct HotSettings {
    /// The pool mode, as [`mode_index`] numbers it.
    mode: AtomicU8,
    /// A reset query is set, and it runs in transaction mode too.
    reset: AtomicBool,
    reset_always: AtomicBool,
    max_total: AtomicUsize,
    size: AtomicUsize,
    /// server_lifetime in nanoseconds, 0 = none.
    lifetime: AtomicU64,
}

impl HotSettings {
    fn set(&self, s: &PoolSettings) {
        use std::sync::atomic::Ordering::Relaxed;
        self.mode.store(mode_index(s.mode), Relaxed);
        self.reset.store(s.reset_query.is_some(), Relaxed);
        self.reset_always.store(s.reset_query_always, Relaxed);
        self.max_total.store(s.max_total(), Relaxed);
        self.size.store(s.size, Relaxed);
        let lifetime = s
            .lifetime
            .map_or(0, |l| l.as_nanos().clamp(1, u64::MAX as u128));
        self.lifetime.store(lifetime as u64, Relaxed);
    }

    fn lifetime(&self) -> Option<Duration> {
        match self.lifetime.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
}

impl PoolSettings {
    /// The most connections the pool may hold, reserve included.
    fn max_total(&self) -> usize {
        self.size + self.reserve().map_or(0, |(n, _)| n)
    }

    /// The reserve size and wait, when the reserve is on.
    fn reserve(&self) -> Option<(usize, Duration)> {
        match (self.reserve_size, self.reserve_timeout) {
            (0, _) | (_, None) => None,
            (n, Some(t)) => Some((n, t)),
        }
    }
}

/// Whether the pool may open one more connection, and if not, why.
enum Open {
    /// Counted in the pool and its groups: open it.
    Yes,
    /// The pool is at its size (or paused or closed).
    Full,
    /// A database or user group is at its cap (the pool is recorded as blocked on it).
    Group(Arc<GroupLimit>),
}

/// Allocates server connection ids (shared by every pool of one server).
#[derive(Debug, Default)]
pub struct IdGen(AtomicU64);

impl IdGen {
    /// The next id.
    pub fn next(&self) -> ServerId {
        ServerId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// What clients learn at login: the ParameterStatus list of a real server connection.
#[derive(Debug, Clone, Default)]
pub struct StartupInfo {
    /// Every parameter PostgreSQL reported.
    pub params: Vec<(String, String)>,
    /// The tracked subset, as defaults for clients that set nothing.
    pub tracked: ParamSet,
}

pub(crate) enum Grant {
    /// A clean idle connection.
    Conn(Checkout),
    /// Permission to open a new connection.
    Slot(checkout::Slot),
    /// The wait passed query_wait_timeout.
    Expired,
}

/// A server connection owned by a pool, with its entry in the pool's server list (the
/// entry goes when the connection is dropped or closed).
#[derive(Debug)]
pub(crate) struct Member {
    /// Boxed so that hand-offs move a pointer, not the whole connection.
    pub(crate) conn: Box<ServerConn>,
    pub(crate) reg: ServerReg,
}

impl Member {
    fn info(&self) -> &Arc<ServerInfo> {
        &self.reg.info
    }
}

#[derive(Default)]
struct State {
    idle: Vec<Member>,
    /// idle + checked out + being reset + being opened.
    total: usize,
    waiters: VecDeque<Waiter>,
    closed: bool,
    /// PAUSE/KILL: no new assignments; returned connections are closed.
    paused: bool,
}

/// A pool of server connections for one (database, user).
pub struct Pool {
    key: PoolKey,
    target: ArcSwap<ServerTarget>,
    /// A credential passed through from a client's login (auth_query users...).
    passthrough: arc_swap::ArcSwapOption<PassThrough>,
    settings: ArcSwap<PoolSettings>,
    hot: HotSettings,
    state: Mutex<State>,
    ids: Arc<IdGen>,
    startup: Mutex<Option<Arc<StartupInfo>>>,
    /// The last client parameter set that differed from the defaults, shared with
    /// clients logging in with the same one (see [`Pool::share_params`]).
    recent_params: Mutex<ParamSet>,
    /// The last failed connect or login, until server_login_retry has passed.
    login_failure: Mutex<Option<(Instant, ClientNotice)>>,
    /// The database and user groups (max_db_connections, max_user_connections).
    groups: Groups,
    /// Counters for the admin console and metrics.
    pub stats: PoolStats,
    clients: Arc<InfoList<ClientInfo>>,
    servers: Arc<InfoList<ServerInfo>>,
    /// Connections opened in an older epoch are closed when released (RECONNECT).
    epoch: AtomicU64,
    /// Set when the pool's database or user left the configuration (RELOAD).
    retired: AtomicBool,
    /// Woken whenever a server connection is closed or released.
    changed: Notify,
    /// Tasks in [`Pool::wait_until`]: the hot path skips `changed` when there are none
    /// (waking no one still takes the Notify's lock).
    watchers: std::sync::atomic::AtomicUsize,
    /// Every task the pool spawns (upkeep, opening min_pool_size connections, resets,
    /// closes, KILL's cancels), so that shutdown can wait for them.
    background: TaskTracker,
    /// LISTEN/NOTIFY of its clients in transaction and statement mode, made at the
    /// first LISTEN.
    notify: std::sync::OnceLock<Arc<crate::notify::NotifyHub>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A point-in-time view of a pool, for logs and the admin console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections idle in the pool.
    pub idle: usize,
    /// Connections open or being opened.
    pub total: usize,
    /// Clients waiting for a connection.
    pub waiting: usize,
}

impl Pool {
    /// A new pool; call [`Pool::start_maintenance`] to keep it warm and trimmed. Every
    /// task the pool spawns is counted in `background`.
    pub fn new(
        key: PoolKey,
        target: ServerTarget,
        settings: PoolSettings,
        ids: Arc<IdGen>,
        groups: Groups,
        background: TaskTracker,
    ) -> Arc<Pool> {
        let hot = HotSettings::default();
        hot.set(&settings);
        let pool = Arc::new(Pool {
            hot,
            key,
            target: ArcSwap::from_pointee(target),
            passthrough: arc_swap::ArcSwapOption::empty(),
            settings: ArcSwap::from_pointee(settings),
            state: Mutex::new(State::default()),
            ids,
            startup: Mutex::new(None),
            recent_params: Mutex::new(ParamSet::default()),
            login_failure: Mutex::new(None),
            groups,
            stats: PoolStats::default(),
            clients: Arc::default(),
            servers: Arc::default(),
            epoch: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            changed: Notify::new(),
            watchers: std::sync::atomic::AtomicUsize::new(0),
            background,
            notify: std::sync::OnceLock::new(),
        });
        pool.groups.db.add_member(&pool);
        pool.groups.user.add_member(&pool);
        pool
    }

    /// The database and user groups the pool counts its connections in.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// The pool's identity.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// Where new connections go.
    pub fn target(&self) -> Arc<ServerTarget> {
        self.target.load_full()
    }

    /// The pool mode in force (one atomic load).
    pub(crate) fn mode(&self) -> PoolMode {
        match self.hot.mode.load(Ordering::Relaxed) {
            1 => PoolMode::Transaction,
            2 => PoolMode::Statement,
            _ => PoolMode::Session,
        }
    }

    /// Whether a connection returned `how` gets the reset query first.
    pub(crate) fn wants_reset(&self, how: ReturnAs) -> bool {
        self.hot.reset.load(Ordering::Relaxed)
            && match how {
                ReturnAs::Reset => true,
                ReturnAs::Clean | ReturnAs::Rollback => {
                    self.hot.reset_always.load(Ordering::Relaxed)
                }
                ReturnAs::Close => false,
            }
    }

    /// Current settings (an owned handle).
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counts half-updated in a way
        // worse than losing the pool; keep serving rather than poisoning every client.
        self.state.locked()
    }

    /// Counts right now.
    pub fn status(&self) -> PoolStatus {
        let st = self.lock();
        PoolStatus {
            idle: st.idle.len(),
            total: st.total,
            waiting: st.waiters.iter().filter(|w| !w.is_closed()).count(),
        }
    }

    /// The most recently used idle connection that is still usable (none while the
    /// pool is paused); unusable ones on the way are taken out of the count into
    /// `stale`, for the caller to close once the lock is released.
    fn pop_usable(&self, st: &mut State, stale: &mut Vec<Member>, now: Instant) -> Option<Member> {
        let lifetime = self.hot.lifetime();
        while !st.paused {
            let m = st.idle.pop()?;
            if self.usable(&m, lifetime, now) {
                return Some(m);
            }
            st.total -= 1;
            stale.push(m);
        }
        None
    }

    fn usable(&self, m: &Member, lifetime: Option<Duration>, now: Instant) -> bool {
        if lifetime.is_some_and(|l| m.conn.age_at(now) >= l) {
            return false;
        }
        if m.info().epoch < self.epoch.load(Ordering::Relaxed) {
            return false;
        }
        !m.conn.stream.is_closed_or_dirty()
    }

    /// Registers a newly opened connection in the server list.
    fn register(&self, conn: ServerConn) -> Member {
        let (remote, local, fd) = listing::socket_endpoints(&conn.stream);
        let mut info = ServerInfo::new(
            conn.id.0,
            remote,
            local,
            fd,
            self.epoch.load(Ordering::Relaxed),
            conn.target.clone(),
            conn.key.clone(),
        );
        if let Some(tls) = conn.stream.tls_state() {
            info.tls = crate::tls::label::TlsLabel::of(tls);
        }
        Member {
            conn: Box::new(conn),
            reg: ServerReg::new(info, self.servers.clone()),
        }
    }

    /// The parameters clients are told at login, learning them from a server connection
    /// the first time.
    pub async fn startup_info(self: &Arc<Self>) -> Result<Arc<StartupInfo>, PoolError> {
        if let Some(info) = self.startup.locked().clone() {
            return Ok(info);
        }
        let mut guard = self.checkout(None).await?;
        let conn = guard.conn();
        let mut tracked = ParamSet::default();
        for (k, v) in &conn.startup_params {
            tracked.set(k, v);
        }
        let info = Arc::new(StartupInfo {
            params: conn.startup_params.clone(),
            tracked,
        });
        guard.return_as(ReturnAs::Clean);
        *self.startup.locked() = Some(info.clone());
        Ok(info)
    }

    /// A set equal to `params` that other clients already hold, when there is one:
    /// the server's defaults, or the set the previous client logged in with. Clients
    /// of one application mostly log in alike, so they end up sharing one copy.
    pub fn share_params(&self, params: ParamSet, defaults: &ParamSet) -> ParamSet {
        if params == *defaults {
            return defaults.clone();
        }
        let mut recent = self.recent_params.locked();
        if *recent == params {
            return recent.clone();
        }
        recent.clone_from(&params);
        params
    }

    /// Closes idle connections and refuses new checkouts; used when a database is
    /// removed or the server stops. Checked-out connections close when returned.
    pub fn close(&self) {
        let idle = {
            let mut st = self.lock();
            st.closed = true;
            st.waiters.clear();
            let idle = std::mem::take(&mut st.idle);
            st.total -= idle.len();
            idle
        };
        self.close_members(idle, "pool closed");
    }
}

impl Pool {
    /// Sends Terminate and closes `m` in a background task (ends within the second
    /// [`ServerConn::close`] allows). Without a runtime the socket is just dropped.
    fn spawn_close(&self, m: Member) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.background.spawn_on(&rt, async move {
                let Member { conn, reg } = m;
                conn.close().await;
                drop(reg);
            });
        }
    }

    /// The tracker of the pool's background tasks.
    pub fn background(&self) -> &TaskTracker {
        &self.background
    }
}
