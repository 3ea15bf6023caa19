//! Per-pool state lists for the admin console and metrics: one [`ClientInfo`] per
//! logged-in client and one [`ServerInfo`] per open server connection.
//!
//! The entries are shared (`Arc`) between the task that owns the connection and the
//! pool's list; their changing parts are atomics written at state changes only (a
//! checkout, a release), never per message. A server entry leaves its list when its
//! `ServerReg` guard drops, i.e. when the connection is closed, whatever the path.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use std::task::Waker;

use crate::server::{BackendKey, ServerTarget};
use crate::sync::LockExt;

/// A socket address split for display: address and port (0 for Unix sockets). Kept
/// as an address, not text, so that every client does not carry two strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// IP address; `None` for a Unix-domain socket.
    pub ip: Option<std::net::IpAddr>,
    /// Port (0 when not TCP).
    pub port: u16,
}

impl Endpoint {
    /// From a socket address.
    pub fn from_socket(a: std::net::SocketAddr) -> Endpoint {
        Endpoint {
            ip: Some(a.ip()),
            port: a.port(),
        }
    }

    /// The endpoint of a Unix-domain socket.
    pub fn unix() -> Endpoint {
        Endpoint { ip: None, port: 0 }
    }

    /// The address as the admin console shows it: the IP, or `unix`.
    pub fn addr(&self) -> String {
        self.ip
            .map_or_else(|| "unix".to_owned(), |ip| ip.to_string())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            Some(ip) => write!(f, "{}", std::net::SocketAddr::new(ip, self.port)),
            None => f.write_str("unix"),
        }
    }
}

/// What a client is doing, as SHOW CLIENTS and SHOW POOLS count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Logged in, holding no server connection.
    Idle,
    /// Linked to a server connection.
    Active,
    /// Sent a request and waits for a server connection.
    Waiting,
}

impl ClientState {
    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }
}

/// [`ClientInfo`]'s `park` states: not seen idle by a sweep yet, seen idle once,
/// asked to park, never to be parked, asked to move to a new process at its next
/// idle point (an upgrade's handover: it stays asked until it leaves).
const PARK_NONE: u8 = 0;
const PARK_SEEN: u8 = 1;
const PARK_ASKED: u8 = 2;
const PARK_NEVER: u8 = 3;
const PARK_MOVE: u8 = 4;

/// One logged-in client.
#[derive(Debug)]
pub struct ClientInfo {
    /// Unique id (the pid of the client's cancel key); KILL_CLIENT takes it.
    pub id: u64,
    /// User name the client logged in as (shared with the session).
    pub user: Arc<str>,
    /// Database name the client asked for (shared with the session and pool key).
    pub database: Arc<str>,
    /// The client's address.
    pub remote: Endpoint,
    /// Our end of the connection.
    pub local: Endpoint,
    /// `application_name` from the startup packet (None when empty), shared with the
    /// client's parameter set when it holds the same value.
    pub application_name: Option<Arc<str>>,
    /// Socket file descriptor (-1 when unknown).
    pub fd: i32,
    /// Login time, µs since the epoch.
    pub connect_time_us: u64,
    state: AtomicU8,
    request_time_us: AtomicU64,
    wait_since_us: AtomicU64,
    link: AtomicU64,
    killed: AtomicBool,
    /// Its notification queue overflowed: it is killed for that (see
    /// [`crate::notify`]).
    overflowed: AtomicBool,
    /// Notifications wait in its queue (set by the hub, cleared by the session).
    mail: AtomicBool,
    /// Where the client is on the way to being parked (see [`ClientInfo::sweep`]).
    park: AtomicU8,
    /// Named prepared statements it has (SHOW CLIENTS), as of its last transaction.
    prepared: AtomicU32,
    /// Its TLS session's description (SHOW CLIENTS `tls`), one byte.
    pub tls: crate::tls::label::TlsLabel,
    /// The waker of the task serving the client, woken by KILL and by shutdown.
    stop_waker: Mutex<Option<Waker>>,
}

impl ClientInfo {
    /// A new entry in the idle state.
    pub fn new(
        id: u64,
        user: Arc<str>,
        database: Arc<str>,
        remote: Endpoint,
        local: Endpoint,
        application_name: Option<Arc<str>>,
        fd: i32,
    ) -> ClientInfo {
        let now = crate::clock::wall_us_now();
        ClientInfo {
            id,
            user,
            database,
            remote,
            local,
            application_name,
            fd,
            connect_time_us: now,
            state: AtomicU8::new(0),
            request_time_us: AtomicU64::new(now),
            wait_since_us: AtomicU64::new(0),
            link: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            mail: AtomicBool::new(false),
            park: AtomicU8::new(PARK_NONE),
            prepared: AtomicU32::new(0),
            tls: crate::tls::label::TlsLabel::NONE,
            stop_waker: Mutex::new(None),
        }
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Relaxed))
    }

    /// Last request time, µs since the epoch.
    pub fn request_time_us(&self) -> u64 {
        self.request_time_us.load(Relaxed)
    }

    /// Named prepared statements the client has, as of its last transaction.
    pub fn prepared_statements(&self) -> u32 {
        self.prepared.load(Relaxed)
    }

    /// Records how many named prepared statements the client has.
    pub(crate) fn set_prepared_statements(&self, n: usize) {
        self.prepared
            .store(u32::try_from(n).unwrap_or(u32::MAX), Relaxed);
    }

    /// Since when it waits for a server (µs since the epoch), if it does.
    pub fn wait_since_us(&self) -> Option<u64> {
        match self.wait_since_us.load(Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// The server connection it is linked to (a [`crate::server::ServerId`] value).
    pub fn link(&self) -> Option<u64> {
        match self.link.load(Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// A request arrived and the client waits for a server connection.
    pub(crate) fn set_waiting(&self) {
        let now = crate::clock::wall_us();
        self.request_time_us.store(now, Relaxed);
        self.wait_since_us.store(now, Relaxed);
        self.state.store(2, Relaxed);
    }

    /// The client got server connection `server`.
    pub(crate) fn set_active(&self, server: u64) {
        self.wait_since_us.store(0, Relaxed);
        self.link.store(server, Relaxed);
        self.state.store(1, Relaxed);
    }

    /// The client gave its server connection back (or stopped waiting).
    pub(crate) fn set_idle(&self) {
        // Idle from now on: the sweeps count from here.
        if !matches!(self.park.load(Relaxed), PARK_NEVER | PARK_MOVE) {
            self.park.store(PARK_NONE, Relaxed);
        }
        self.wait_since_us.store(0, Relaxed);
        self.link.store(0, Relaxed);
        self.state.store(0, Relaxed);
    }

    /// Asks the client's task to close the connection (KILL, KILL_CLIENT).
    pub fn kill(&self) {
        self.killed.store(true, Relaxed);
        self.wake_stop();
    }

    /// Wakes the client's task so that it looks at its stop conditions (KILL, shutdown).
    pub fn wake_stop(&self) {
        let slot = self.stop_waker.locked();
        if let Some(w) = &*slot {
            w.wake_by_ref();
        }
    }

    /// Registers the waker [`ClientInfo::wake_stop`] wakes (it is kept after a wake).
    /// A task's waker stays the same for its whole life, so the serving task needs to
    /// register only once.
    pub fn register_stop_waker(&self, w: &Waker) {
        let mut slot = self.stop_waker.locked();
        match &*slot {
            Some(old) if old.will_wake(w) => {}
            _ => *slot = Some(w.clone()),
        }
    }

    /// One pass of the parking sweep (once a second): an idle client seen idle by two
    /// passes in a row, with no request between them, is asked to park (its task is
    /// woken and finds [`ClientInfo::park_requested`]). So a client parks after one
    /// to two seconds idle.
    pub(crate) fn sweep(&self) {
        if self.state() != ClientState::Idle {
            return;
        }
        match self.park.load(Relaxed) {
            PARK_NONE => self.park.store(PARK_SEEN, Relaxed),
            PARK_SEEN => {
                self.park.store(PARK_ASKED, Relaxed);
                self.wake_stop();
            }
            _ => {}
        }
    }

    /// Whether the sweep asked the client to park, or the handover to move (its task
    /// then stops at the idle point, as for parking, and moves if it can).
    pub(crate) fn park_requested(&self) -> bool {
        matches!(self.park.load(Relaxed), PARK_ASKED | PARK_MOVE)
    }

    /// The client is parked: the sweep leaves it alone until its next request ends.
    pub(crate) fn parked(&self) {
        if !matches!(self.park.load(Relaxed), PARK_NEVER | PARK_MOVE) {
            self.park.store(PARK_ASKED, Relaxed);
        }
    }

    /// An upgrade's handover began: the client's task is woken and, at its next idle
    /// point (now, if idle), stops there as for parking; it moves if it can. A client
    /// that never parks (TLS) is left alone.
    pub(crate) fn ask_to_move(&self) {
        let asked = self
            .park
            .fetch_update(Relaxed, Relaxed, |p| (p != PARK_NEVER).then_some(PARK_MOVE));
        if asked.is_ok() {
            self.wake_stop();
        }
    }

    /// The client cannot move (or nothing receives it): it parks as it did before,
    /// after a sweep's second, not at every idle point.
    pub(crate) fn stay(&self) {
        let _ = self
            .park
            .compare_exchange(PARK_MOVE, PARK_NONE, Relaxed, Relaxed);
    }

    /// The client cannot park (its stream is TLS): the sweep leaves it alone.
    pub(crate) fn never_park(&self) {
        self.park.store(PARK_NEVER, Relaxed);
    }

    /// Whether [`ClientInfo::kill`] was called, or its notification queue overflowed.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Relaxed) || self.overflowed.load(Relaxed)
    }

    /// Whether the client was killed because its notification queue overflowed.
    pub fn notify_overflowed(&self) -> bool {
        self.overflowed.load(Relaxed)
    }

    /// Whether notifications wait for the client.
    pub fn has_mail(&self) -> bool {
        self.mail.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Clears [`ClientInfo::has_mail`] before the session takes the queue (a message
    /// queued after that sets it again).
    pub fn take_mail(&self) -> bool {
        self.mail.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once [`ClientInfo::kill`] is called (at once if it already was).
    pub async fn killed(&self) {
        std::future::poll_fn(|cx| {
            self.register_stop_waker(cx.waker());
            if self.is_killed() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }
}

impl crate::notify::Mailbox for ClientInfo {
    fn mail(&self) {
        self.mail.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake_stop();
    }

    fn overflowed(&self) {
        self.overflowed.store(true, Relaxed);
        self.wake_stop();
    }

    fn id(&self) -> u64 {
        self.id
    }
}

/// What a server connection is doing, as SHOW SERVERS and SHOW POOLS count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// In the idle stack, ready for a client.
    Idle,
    /// Checked out by a client.
    Active,
    /// Running the reset query before going back to the pool.
    Tested,
    /// Being closed; not counted any more.
    Closing,
}

impl ServerState {
    fn from_u8(v: u8) -> ServerState {
        match v {
            1 => ServerState::Active,
            2 => ServerState::Tested,
            3 => ServerState::Closing,
            _ => ServerState::Idle,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            ServerState::Idle => 0,
            ServerState::Active => 1,
            ServerState::Tested => 2,
            ServerState::Closing => 3,
        }
    }
}

/// One open server connection.
#[derive(Debug)]
pub struct ServerInfo {
    /// The connection's id ([`crate::server::ServerId`] value).
    pub id: u64,
    /// PostgreSQL's address.
    pub remote: Endpoint,
    /// Our end of the connection.
    pub local: Endpoint,
    /// Backend process id (from BackendKeyData).
    pub remote_pid: i32,
    /// Socket file descriptor (-1 when unknown).
    pub fd: i32,
    /// Connect time, µs since the epoch.
    pub connect_time_us: u64,
    /// The pool's reconnect epoch when it was opened; older than the pool's current
    /// epoch means "close when released" (RECONNECT, changed target on RELOAD).
    pub epoch: u64,
    /// Where cancel requests for it go.
    pub target: Arc<ServerTarget>,
    /// Its cancel key.
    pub key: Arc<BackendKey>,
    state: AtomicU8,
    request_time_us: AtomicU64,
    link: AtomicU64,
    /// Statements prepared on the server (SHOW SERVERS), as of its last transaction.
    prepared: AtomicU32,
    /// Its TLS session's description (SHOW SERVERS `tls`), one byte.
    pub tls: crate::tls::label::TlsLabel,
}

impl ServerInfo {
    /// A new entry (state idle).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        remote: Endpoint,
        local: Endpoint,
        fd: i32,
        epoch: u64,
        target: Arc<ServerTarget>,
        key: Arc<BackendKey>,
    ) -> ServerInfo {
        let now = crate::clock::wall_us_now();
        ServerInfo {
            id,
            remote,
            local,
            remote_pid: key.pid,
            fd,
            connect_time_us: now,
            epoch,
            target,
            key,
            state: AtomicU8::new(0),
            request_time_us: AtomicU64::new(now),
            link: AtomicU64::new(0),
            prepared: AtomicU32::new(0),
            tls: crate::tls::label::TlsLabel::NONE,
        }
    }

    /// Statements prepared on the server connection, as of its last transaction.
    pub fn prepared_statements(&self) -> u32 {
        self.prepared.load(Relaxed)
    }

    /// Records how many statements are prepared on the server connection.
    pub(crate) fn set_prepared_statements(&self, n: usize) {
        self.prepared
            .store(u32::try_from(n).unwrap_or(u32::MAX), Relaxed);
    }

    /// Current state.
    pub fn state(&self) -> ServerState {
        ServerState::from_u8(self.state.load(Relaxed))
    }

    /// Last time it was handed to a client, µs since the epoch.
    pub fn request_time_us(&self) -> u64 {
        self.request_time_us.load(Relaxed)
    }

    /// The client it serves now (a [`ClientInfo::id`]).
    pub fn link(&self) -> Option<u64> {
        match self.link.load(Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    pub(crate) fn set_state(&self, s: ServerState) {
        self.state.store(s.as_u8(), Relaxed);
    }

    pub(crate) fn set_active(&self, client: u64) {
        // The relay lane's reading for this turn (no clock read of its own).
        self.request_time_us.store(crate::clock::wall_us(), Relaxed);
        self.link.store(client, Relaxed);
        self.set_state(ServerState::Active);
    }

    pub(crate) fn unlink(&self, s: ServerState) {
        self.link.store(0, Relaxed);
        self.set_state(s);
    }
}

#[path = "listing_regs.rs"]
mod regs;
pub(crate) use regs::ServerReg;
pub use regs::{ClientReg, InfoList};

/// The peer and local endpoints and the file descriptor of a connected socket.
pub fn socket_endpoints(stream: &crate::net::Stream) -> (Endpoint, Endpoint, i32) {
    use std::os::fd::AsRawFd;
    match stream.tcp() {
        Some(s) => (
            s.peer_addr().map(Endpoint::from_socket).unwrap_or_default(),
            s.local_addr()
                .map(Endpoint::from_socket)
                .unwrap_or_default(),
            s.as_raw_fd(),
        ),
        None => match stream {
            crate::net::Stream::Unix(s) => (Endpoint::unix(), Endpoint::unix(), s.as_raw_fd()),
            crate::net::Stream::Lane(s) => match s.get_ref() {
                crate::lane::Sock::Tcp(t) => (
                    t.peer_addr().map(Endpoint::from_socket).unwrap_or_default(),
                    t.local_addr()
                        .map(Endpoint::from_socket)
                        .unwrap_or_default(),
                    t.as_raw_fd(),
                ),
                crate::lane::Sock::Unix(u) => (Endpoint::unix(), Endpoint::unix(), u.as_raw_fd()),
            },
            _ => (Endpoint::default(), Endpoint::default(), -1),
        },
    }
}
