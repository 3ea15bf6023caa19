//! Parked clients: a logged-in client with nothing to do holds no task and no reactor
//! registration, only its session state and its socket in a shared epoll set.
//!
//! Most of what an idle client costs is its task (a tokio cell of about 1.4 KiB: the
//! request's state is inline, see `task.rs`) and its socket's registration with
//! tokio's reactor (a cache-padded 256-byte allocation). A parked client gives both
//! back: its socket leaves tokio's reactor for the lot's own epoll set (mio's, the
//! one tokio is built on), and its [`Opened`] state waits in a slab. One task, the
//! keeper, watches that set through [`AsyncFd`] (an epoll descriptor is itself
//! pollable). When a parked socket turns readable (a request, or the client
//! closing), when the client is killed, when
//! notifications are queued for it ([`crate::notify`]), when a shutdown starts, or
//! when its client_idle_timeout passes, the keeper takes the client out and starts a
//! fresh session for it ([`live`]): on a relay lane ([`crate::lane`]) when the process
//! has lanes, its socket then in the lane's epoll set, else as a tokio task. A readiness wake-up that finds nothing to
//! read (a spurious one) leaves the client parked: no task is started for it.
//!
//! Clients park right after login (when no bytes came with it), and after one to two
//! seconds idle: the keeper's once-a-second sweep asks them to
//! ([`crate::pool::listing::ClientInfo::sweep`]). A client under TLS never parks
//! (rustls's state lives with the tokio stream), and nothing parks once a shutdown has
//! started.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use tokio::io::unix::AsyncFd;

use super::context::ClientContext;
use super::task::{live, Opened, Resume};
use crate::lane::{Lane, Lanes, Sock};
use crate::net::Stream;
use crate::sync::LockExt;

#[path = "park_handover.rs"]
mod handover;

/// A parked client's socket, out of tokio's reactor.
#[derive(Debug)]
enum ParkedStream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl ParkedStream {
    fn fd(&self) -> RawFd {
        match self {
            ParkedStream::Tcp(s) => s.as_raw_fd(),
            ParkedStream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// Into `lane`'s epoll set.
    fn resume_on(self, lane: &Lane) -> io::Result<Stream> {
        let sock = match self {
            ParkedStream::Tcp(s) => Sock::Tcp(s),
            ParkedStream::Unix(s) => Sock::Unix(s),
        };
        lane.adopt(sock).map(Stream::Lane)
    }

    /// Back under tokio's reactor (must run inside the runtime).
    fn resume(self) -> io::Result<Stream> {
        Ok(match self {
            ParkedStream::Tcp(s) => Stream::Tcp(tokio::net::TcpStream::from_std(s)?),
            ParkedStream::Unix(s) => Stream::Unix(tokio::net::UnixStream::from_std(s)?),
        })
    }

    /// Reads what the client sent without waiting (the socket is non-blocking).
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ParkedStream::Tcp(s) => s.read(buf),
            ParkedStream::Unix(s) => s.read(buf),
        }
    }

    /// What a readable wake-up brought: the bytes the client sent (up to `limit`),
    /// its close, or nothing at all.
    fn take_input(&mut self, limit: usize) -> Woken {
        let mut buf = BytesMut::zeroed(limit);
        loop {
            return match self.read_now(&mut buf) {
                Ok(0) => Woken::Closed,
                Ok(n) => {
                    buf.truncate(n);
                    Woken::Bytes(buf)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Woken::Spurious,
                Err(_) => Woken::Failed,
            };
        }
    }
}

/// What a parked socket had when the epoll set said it was readable.
#[derive(Debug)]
enum Woken {
    /// A request (or part of one): the client goes back to a session task with it.
    Bytes(BytesMut),
    /// The client closed the connection.
    Closed,
    /// A read error: the connection is gone.
    Failed,
    /// Nothing to read after all (a spurious wake-up): the client stays parked.
    Spurious,
}

/// A client in the lot: everything its task held, the socket out of the reactor.
#[derive(Debug)]
pub(super) struct Parked {
    opened: Opened<ParkedStream>,
    /// Since when the client is idle: client_idle_timeout (as configured now, so a
    /// reload applies to parked clients too) counts from here.
    idle_since: Instant,
}

impl Parked {
    /// The client, ready for its session task again: back under the reactor, with
    /// `input` (what it sent, read when it was woken by readiness: no extra round
    /// through the reactor). `None` when the client is gone (logged out here).
    fn resume(self, input: Option<BytesMut>, lane: Option<&Lane>) -> Option<Opened> {
        let Parked { mut opened, .. } = self;
        if let Some(buf) = input {
            opened.session.set_pending(buf);
        }
        let resumed = opened.map_stream(|s| match lane {
            Some(lane) => s.resume_on(lane),
            None => s.resume(),
        });
        match resumed {
            Ok(o) => Some(o),
            Err((o, e)) => {
                tracing::warn!(client = o.held.reg.info().id, error = %e, "could not take a parked client back");
                o.logout("client connection error");
                None
            }
        }
    }
}

/// What the keeper found on a wake-up.
#[derive(Default)]
struct Found {
    /// Tokens of parked sockets that turned readable.
    ready: Vec<usize>,
    /// The bell rang: a parked client may be killed, or a shutdown started.
    bell: bool,
    /// A second passed: sweep and enforce idle timeouts.
    tick: bool,
}

/// The slab of parked clients (an index is the socket's token in the epoll set).
#[derive(Debug, Default)]
struct Slots {
    entries: Vec<Option<Box<Parked>>>,
    free: Vec<usize>,
    /// Whether the keeper runs (parking is refused otherwise).
    open: bool,
}

impl Slots {
    fn insert(&mut self, p: Box<Parked>) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some(p);
                i
            }
            None => {
                self.entries.push(Some(p));
                self.entries.len() - 1
            }
        }
    }

    fn take(&mut self, i: usize) -> Option<Box<Parked>> {
        let p = self.entries.get_mut(i)?.take()?;
        self.free.push(i);
        Some(p)
    }

    /// Takes every parked client `pick` chooses.
    // Boxes kept: a parked client moves from the slab to its new task as one pointer.
    #[allow(clippy::vec_box)]
    fn take_where(&mut self, mut pick: impl FnMut(&Parked) -> bool) -> Vec<Box<Parked>> {
        let mut out = Vec::new();
        for i in 0..self.entries.len() {
            if self.entries[i].as_deref().is_some_and(&mut pick) {
                out.extend(self.take(i));
            }
        }
        out
    }
}

/// Rung by a parked client's stop waker (KILL, shutdown): wakes the keeper, which
/// then looks for killed clients. One bell serves every parked client, so parking
/// allocates no waker.
#[derive(Debug, Default)]
struct Bell {
    rang: AtomicBool,
    keeper: Mutex<Option<Waker>>,
}

impl Wake for Bell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.rang.store(true, Ordering::SeqCst);
        if let Some(w) = &*self.keeper.locked() {
            w.wake_by_ref();
        }
    }
}

/// The lot: the epoll set of parked sockets and the slab of their sessions.
#[derive(Debug)]
pub struct ParkingLot {
    registry: mio::Registry,
    /// The epoll set itself, taken by the keeper when it starts.
    poll: Mutex<Option<mio::Poll>>,
    slots: Mutex<Slots>,
    bell: Arc<Bell>,
    bell_waker: Waker,
    /// Where unparked clients' sessions run (`None`: as tokio tasks).
    lanes: Option<Lanes>,
}

impl ParkingLot {
    /// An empty lot; parking starts when the keeper (`keep`) runs. `None` when the system gives
    /// no epoll descriptor (clients then simply never park).
    pub fn new(lanes: Option<Lanes>) -> Option<ParkingLot> {
        let poll = mio::Poll::new()
            .inspect_err(|e| tracing::warn!(error = %e, "no epoll set for parked clients"))
            .ok()?;
        let registry = poll.registry().try_clone().ok()?;
        let bell = Arc::new(Bell::default());
        Some(ParkingLot {
            registry,
            poll: Mutex::new(Some(poll)),
            slots: Mutex::default(),
            bell_waker: Waker::from(bell.clone()),
            bell,
            lanes,
        })
    }

    /// The relay lanes unparked clients run on.
    pub fn lanes(&self) -> Option<&Lanes> {
        self.lanes.as_ref()
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.locked()
    }

    /// How many clients are parked.
    pub fn len(&self) -> usize {
        let s = self.slots();
        s.entries.len() - s.free.len()
    }

    /// Whether no client is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes the keeper to look at the parked clients' stop conditions.
    pub fn ring(&self) {
        self.bell_waker.wake_by_ref();
    }

    /// Parks a client whose task is about to end. Gives it back when it cannot park
    /// (TLS, a shutdown started, no keeper). When its socket is lost on the way, the
    /// client is logged out (and `Ok`).
    // The `Err` is the client itself, handed back whole (once per refused park).
    #[allow(clippy::result_large_err)]
    pub(super) fn park(
        &self,
        ctx: &ClientContext,
        opened: Opened,
        idle_since: Instant,
    ) -> Result<(), Opened> {
        if !matches!(
            opened.stream,
            Stream::Tcp(_) | Stream::Unix(_) | Stream::Lane(_)
        ) || ctx.shutdown_requested()
            || !self.slots().open
        {
            return Err(opened);
        }
        let info = opened.held.reg.info().clone();
        // First, so that a KILL from now on rings the bell (the task's own waker is
        // about to go); if it came before, the check at the end rings it.
        info.register_stop_waker(&self.bell_waker);
        info.parked();
        let opened = match opened.map_stream(|s| match s {
            Stream::Tcp(t) => t.into_std().map(ParkedStream::Tcp),
            Stream::Unix(u) => u.into_std().map(ParkedStream::Unix),
            Stream::Lane(l) => Ok(match l.into_sock() {
                Sock::Tcp(t) => ParkedStream::Tcp(t),
                Sock::Unix(u) => ParkedStream::Unix(u),
            }),
            _ => Err(io::ErrorKind::Unsupported.into()),
        }) {
            Ok(o) => o,
            Err((o, e)) => {
                tracing::warn!(client = info.id, error = %e, "could not park a client");
                o.logout("client connection error");
                return Ok(());
            }
        };
        let fd = opened.stream.fd();
        let mut slots = self.slots();
        if !slots.open {
            drop(slots);
            return self.give_back(opened);
        }
        let i = slots.insert(Box::new(Parked { opened, idle_since }));
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
        {
            tracing::warn!(client = info.id, error = %e, "could not park a client");
            let parked = slots.take(i).map(|p| p.opened);
            drop(slots);
            return parked.map_or(Ok(()), |o| self.give_back(o));
        }
        drop(slots);
        if info.is_killed() || info.has_mail() || ctx.shutdown_requested() {
            self.ring();
        }
        Ok(())
    }

    /// A client that got as far as leaving the reactor, but may not park after all.
    #[allow(clippy::result_large_err)]
    fn give_back(&self, opened: Opened<ParkedStream>) -> Result<(), Opened> {
        match opened.map_stream(ParkedStream::resume) {
            Ok(o) => Err(o),
            Err((o, e)) => {
                tracing::warn!(client = o.held.reg.info().id, error = %e, "could not take a client back");
                o.logout("client connection error");
                Ok(())
            }
        }
    }

    /// Takes a client out of the lot and starts its session task. The socket goes
    /// back under the reactor here, not in the new task: the task's future is then
    /// exactly the session's (an enclosing block would make its cell 128 bytes larger).
    fn unpark(&self, p: Parked, why: Resume) {
        self.unpark_with(p, why, None);
    }

    fn unpark_with(&self, p: Parked, why: Resume, input: Option<BytesMut>) {
        let _ = self
            .registry
            .deregister(&mut SourceFd(&p.opened.stream.fd()));
        // Its session runs on a relay lane when there are lanes, else as a tokio task.
        let lane = self.lanes.as_ref().map(Lanes::pick);
        if let Some(o) = p.resume(input, lane) {
            match lane {
                Some(lane) => lane.spawn(live(o, why)),
                None => drop(tokio::spawn(live(o, why))),
            }
        }
    }

    /// A parked socket (taken from slot `slot`) turned readable: the client goes back
    /// to a session task with what it sent, or is logged out when it closed; when
    /// there was nothing to read after all, it stays parked (no task started, its
    /// socket still in the epoll set, which reports the next data again).
    fn readable(&self, mut p: Box<Parked>, slot: usize) {
        match p.opened.stream.take_input(super::session::IDLE_READ) {
            Woken::Bytes(buf) => self.unpark_with(*p, Resume::Readable, Some(buf)),
            Woken::Spurious => self.repark(p, slot),
            gone @ (Woken::Closed | Woken::Failed) => {
                let _ = self
                    .registry
                    .deregister(&mut SourceFd(&p.opened.stream.fd()));
                p.opened.logout(if matches!(gone, Woken::Closed) {
                    "client closed"
                } else {
                    "client connection error"
                });
            }
        }
    }

    /// Puts back a client taken from slot `slot` whose socket is still in the epoll
    /// set, under its new slot's token.
    fn repark(&self, p: Box<Parked>, slot: usize) {
        let fd = p.opened.stream.fd();
        let mut slots = self.slots();
        let i = slots.insert(p);
        if i == slot {
            return;
        }
        if let Err(e) = self
            .registry
            .reregister(&mut SourceFd(&fd), Token(i), Interest::READABLE)
        {
            tracing::warn!(error = %e, "could not keep a client parked");
            let taken = slots.take(i);
            drop(slots);
            if let Some(p) = taken {
                self.unpark(*p, Resume::Readable);
            }
        }
    }
}

/// Closes the lot when the keeper ends: no more parking, and every parked client goes
/// back to a session task (or, with no runtime left, is just closed).
struct Closing<'a>(&'a ParkingLot);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        let left = {
            let mut slots = self.0.slots();
            slots.open = false;
            slots.take_where(|_| true)
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            for p in left {
                self.0.unpark(*p, Resume::Stop);
            }
        }
    }
}

/// The keeper: runs for the server's life (until a shutdown has emptied the lot).
/// Wakes when parked sockets turn readable, when the bell rings, and once a second.
pub(crate) async fn keep(ctx: Arc<ClientContext>) {
    let Some(lot) = ctx.parking.as_ref() else {
        return;
    };
    let Some(poll) = lot.poll.locked().take() else {
        return;
    };
    #[allow(unsafe_code)]
    // SAFETY: `poll` owns its epoll descriptor (an `OwnedFd` inside mio), so
    // `as_raw_fd` names the same open descriptor until `poll` is dropped, and the
    // `AsyncFd` owns `poll` from here on: the descriptor outlives its registration.
    let set = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) };
    let mut set = match set {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "parked clients: cannot watch the epoll set; clients will not park");
            return;
        }
    };
    lot.slots().open = true;
    // Whatever ends the keeper (a shutdown, the runtime dropping it, a panic), parking
    // stops and no client stays behind in the lot.
    let _closing = Closing(lot);
    let mut events = Events::with_capacity(256);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let found = std::future::poll_fn(|cx| {
            let mut found = Found::default();
            {
                let mut w = lot.bell.keeper.locked();
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
            }
            found.bell = lot.bell.rang.swap(false, Ordering::SeqCst);
            found.tick = tick.poll_tick(cx).is_ready();
            while let Poll::Ready(r) = set.poll_read_ready_mut(cx) {
                let Ok(mut guard) = r else { break };
                events.clear();
                if let Err(e) = guard
                    .get_inner_mut()
                    .poll(&mut events, Some(Duration::ZERO))
                {
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // Readiness stays set: the next tick tries again.
                    tracing::warn!(error = %e, "parked clients: epoll failed");
                    break;
                }
                if events.is_empty() {
                    guard.clear_ready();
                    continue;
                }
                // Readiness stays set: the next round polls the set again.
                found.ready.extend(events.iter().map(|e| e.token().0));
                break;
            }
            if found.bell || found.tick || !found.ready.is_empty() {
                Poll::Ready(found)
            } else {
                Poll::Pending
            }
        })
        .await;
        for i in found.ready {
            let taken = lot.slots().take(i);
            if let Some(p) = taken {
                lot.readable(p, i);
            }
        }
        if found.bell || found.tick {
            if ctx.shutdown_requested() {
                // Every parked client goes back to its session, which tells it (see
                // `Closing`).
                return;
            }
            if ctx.handover.begun() {
                lot.hand_over(&ctx);
            }
            let killed = lot
                .slots()
                .take_where(|p| p.opened.held.reg.info().is_killed());
            for p in killed {
                lot.unpark(*p, Resume::Stop);
            }
            // Notifications for a parked client: its session delivers them (and
            // parks it again).
            let notified = lot
                .slots()
                .take_where(|p| p.opened.held.reg.info().has_mail());
            for p in notified {
                lot.unpark(*p, Resume::Notified);
            }
        }
        if found.tick {
            if let Some(limit) = ctx.live.client_idle_timeout() {
                let now = Instant::now();
                let expired = lot
                    .slots()
                    .take_where(|p| now.saturating_duration_since(p.idle_since) >= limit);
                for p in expired {
                    lot.unpark(*p, Resume::IdleTimeout);
                }
            }
            for pool in ctx.router.pools() {
                pool.sweep_clients();
            }
        }
    }
}

#[cfg(test)]
#[path = "park_tests.rs"]
mod tests;
