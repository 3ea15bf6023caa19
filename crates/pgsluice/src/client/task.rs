//! A client's tasks: [`serve`] runs the startup and login; after login the client
//! parks, and each time it has work a session task ([`live`]) runs it until it parks
//! again or leaves. What the client holds in between ([`Opened`]) moves from task to
//! lot to task, or, in an upgrade, to another process ([`Opened::depart`]).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::context::ClientContext;
use super::handover_image::Departing;
use super::{open, session, Admission};
use crate::admin::Console;
use crate::net::Stream;
use crate::pool::ClientReg;
use crate::shutdown::TaskToken;

/// A pool client after login: what its task keeps while the session runs (or the
/// parking lot while it is parked, its socket then out of the reactor).
#[derive(Debug)]
pub(super) struct Opened<S = Stream> {
    pub(super) session: session::Session,
    pub(super) stream: S,
    /// Boxed: it is only touched at login and logout, and inline it would add 40
    /// bytes to every session task.
    pub(super) held: Box<Held>,
}

/// What a client holds for as long as it is connected, whatever it does.
#[derive(Debug)]
pub(super) struct Held {
    /// The client's entry in the admin views (its login time included), removed when
    /// it leaves.
    pub(super) reg: ClientReg,
    /// Places under max_client_conn, max_db_client_connections and
    /// max_user_client_connections, held until it leaves.
    pub(super) _admission: Admission,
    pub(super) _slots: [crate::pool::ClientSlot; 2],
    /// Counts the client in the graceful shutdown's wait: dropped last.
    pub(super) _token: TaskToken,
}

impl<S> Opened<S> {
    /// The same client over another form of its socket; on failure the socket is
    /// gone and the client is given back without one.
    pub(super) fn map_stream<T>(
        self,
        f: impl FnOnce(S) -> std::io::Result<T>,
    ) -> Result<Opened<T>, (Opened<()>, std::io::Error)> {
        let Opened {
            session,
            stream,
            held,
        } = self;
        match f(stream) {
            Ok(stream) => Ok(Opened {
                session,
                stream,
                held,
            }),
            Err(e) => Err((
                Opened {
                    session,
                    stream: (),
                    held,
                },
                e,
            )),
        }
    }

    /// The logout line (unless `log_disconnections` is off); then the client leaves the
    /// admin views and its places, and last its task counts as finished (the fields drop
    /// in that order).
    pub(super) fn logout(self, reason: &'static str) {
        let summary = self.session.summary(reason);
        if !self
            .session
            .ctx()
            .live
            .load()
            .config
            .general
            .log_disconnections
        {
            return;
        }
        let info = self.held.reg.info();
        tracing::info!(
            client = info.id,
            peer = %info.remote,
            duration_ms = crate::clock::wall_us_now().saturating_sub(info.connect_time_us) / 1000,
            bytes_in = summary.bytes_in,
            bytes_out = summary.bytes_out,
            transactions = summary.transactions,
            reason = summary.reason,
            "client logout"
        );
    }
}

/// A client's socket as an upgrade's handover sees it: whether it can cross to
/// another process, and its descriptor when it does.
pub(super) trait ClientSocket {
    /// A plain TCP or Unix socket (a TLS session's state cannot cross).
    fn can_move(&self) -> bool;
    /// The socket out of this process's reactor, non-blocking, as a descriptor.
    fn into_fd(self) -> std::io::Result<OwnedFd>;
}

impl ClientSocket for Stream {
    fn can_move(&self) -> bool {
        matches!(self, Stream::Tcp(_) | Stream::Unix(_) | Stream::Lane(_))
    }

    fn into_fd(self) -> std::io::Result<OwnedFd> {
        // tokio's into_std leaves the socket non-blocking.
        match self {
            Stream::Tcp(t) => Ok(t.into_std()?.into()),
            Stream::Unix(u) => Ok(u.into_std()?.into()),
            Stream::Lane(l) => Ok(match l.into_sock() {
                crate::lane::Sock::Tcp(t) => t.into(),
                crate::lane::Sock::Unix(u) => u.into(),
            }),
            _ => Err(std::io::ErrorKind::Unsupported.into()),
        }
    }
}

impl<S: ClientSocket> Opened<S> {
    /// An upgrade's handover: the idle client leaves for the new process (its socket
    /// and image go to the handover's sink), and quietly leaves this one (its cancel
    /// key, its admin entry and its places go; no logout line). Given back when it
    /// cannot move (TLS, LISTEN, a sharded database, or no sink any more).
    // The `Err` is the client itself, handed back whole.
    #[allow(clippy::result_large_err)]
    pub(super) fn depart(self, ctx: &ClientContext) -> Result<(), Opened<S>> {
        let Some(sink) = ctx.handover.sink() else {
            return Err(self);
        };
        if !self.stream.can_move() {
            return Err(self);
        }
        let Some(image) = self.session.image(self.held.reg.info()) else {
            return Err(self);
        };
        let info = self.held.reg.info().clone();
        let o = match self.map_stream(ClientSocket::into_fd) {
            Ok(o) => o,
            Err((o, e)) => {
                tracing::warn!(client = info.id, error = %e, "could not hand a client over");
                o.logout("client connection error");
                return Ok(());
            }
        };
        // It leaves this process first (cancel key, admin entry, places): by the time
        // the new process serves it, nothing of it is left here. Its task count goes
        // last, once it is in the queue: the upgrade stops when the count is zero and
        // the queue empty, and the queue may be read on another thread (a relay lane
        // hands clients over beside the tokio worker that forwards them).
        let Opened {
            stream: fd,
            session,
            held,
        } = o;
        drop(session);
        let Held {
            reg,
            _admission,
            _slots,
            _token,
        } = *held;
        drop((reg, _admission, _slots));
        let sent = sink.send(Departing { fd, image });
        drop(_token);
        if sent.is_err() {
            // The receiving side went away just now: the socket is closed with it.
            tracing::warn!(client = info.id, "handover channel closed: client lost");
            return Ok(());
        }
        tracing::info!(
            client = info.id,
            peer = %info.remote,
            db = %info.database,
            user = %info.user,
            "client handed over"
        );
        Ok(())
    }
}

/// Why a client's session task starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resume {
    /// Just logged in, or not parked after all.
    Fresh,
    /// Its parked socket turned readable.
    Readable,
    /// Parked and killed, or a shutdown started (or the lot closed).
    Stop,
    /// Parked, and notifications were queued for it.
    Notified,
    /// Parked past client_idle_timeout.
    IdleTimeout,
}

/// Serves one client connection from accept to close.
///
/// The startup, TLS handshake and login run in a boxed future (this task); a logged-in
/// client then parks (`park.rs`) until it sends something, and its session runs in a
/// task of its own (`live`), so that an idle client costs neither.
pub fn serve(
    stream: Stream,
    peer: String,
    ctx: Arc<ClientContext>,
    console: Arc<dyn Console>,
    admission: Admission,
    token: TaskToken,
) -> impl std::future::Future<Output = ()> + Send {
    let opening = Box::pin(open(stream, peer, ctx, console, admission, token));
    async move {
        let Some(o) = opening.await else {
            return;
        };
        if o.session.has_pending() {
            tokio::spawn(live(o, Resume::Fresh));
            return;
        }
        let ctx = o.session.ctx().clone();
        if let Err(o) = park_client(&ctx, o, std::time::Instant::now()) {
            tokio::spawn(live(o, Resume::Fresh));
        }
    }
}

/// Parks `o` in the parking lot (or, once an upgrade's handover has begun, sends it to
/// the new process), or gives it back.
#[allow(clippy::result_large_err)] // the client itself, handed back whole
pub(super) fn park_client(
    ctx: &ClientContext,
    o: Opened,
    idle_since: std::time::Instant,
) -> Result<(), Opened> {
    let o = if ctx.handover.begun() {
        match o.depart(ctx) {
            Ok(()) => return Ok(()),
            Err(o) => {
                o.held.reg.info().stay();
                o
            }
        }
    } else {
        o
    };
    match &ctx.parking {
        Some(lot) => lot.park(ctx, o, idle_since),
        None => Err(o),
    }
}

/// A logged-in client's session task: runs the session until the client leaves, or
/// until it parks (the task then ends; the lot starts a new one when the client is
/// back).
///
/// This future is what every client with work in flight costs, so it is kept small
/// (see [`session::Session::run`]).
// Not `async fn`, on purpose: an `async fn` keeps its by-value arguments beside the
// locals they move into (measured: 408 bytes against 280).
#[allow(clippy::manual_async_fn)]
pub(super) fn live(mut o: Opened, mut why: Resume) -> impl std::future::Future<Output = ()> + Send {
    async move {
        loop {
            let ran = if why == Resume::IdleTimeout {
                session::Ran::Ended(Box::pin(o.session.idle_timed_out(&mut o.stream)).await)
            } else {
                o.session.run(&mut o.stream, o.held.reg.info()).await
            };
            match ran {
                session::Ran::Ended(reason) => return o.logout(reason),
                session::Ran::Park(since) => {
                    let ctx = o.session.ctx().clone();
                    match park_client(&ctx, o, since) {
                        Ok(()) => return,
                        Err(back) => {
                            // It may not park (TLS, shutdown): the sweep leaves it be.
                            back.held.reg.info().never_park();
                            o = back;
                            why = Resume::Fresh;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client with work costs mostly its session task (a parked one has none): tokio
    /// puts the task's future in a cell of about 104 bytes more, rounded up to a
    /// multiple of 128 (a lane boxes the future as it is). The request's state is
    /// inline since December 8, 2026: a transaction then allocates nothing (a boxed
    /// request cost a malloc, a free and a 1,000-byte copy, ~200 instructions per
    /// `select 1`), for about 1 KiB more per client with work; idle plain clients park
    /// and hold no task (docs/performance.md, "No allocation per transaction"). At
    /// 1,264 bytes the cell is 1,408; grow this future only on purpose. Unoptimised
    /// builds (the test profile) lay it out 8 bytes larger than release builds.
    const LIVE_FUTURE_BUDGET: usize = if cfg!(debug_assertions) { 1264 } else { 1256 };

    /// The size of what `f` returns (a future type cannot be named, but it can be
    /// measured without building one).
    fn returned_size<A, B, R>(_f: fn(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn the_client_task_fits_its_memory_budget() {
        let size = returned_size(live);
        assert!(
            size <= LIVE_FUTURE_BUDGET,
            "the session task's future is {size} bytes, over its {LIVE_FUTURE_BUDGET}-byte budget"
        );
    }
}
