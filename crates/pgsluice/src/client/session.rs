//! A logged-in client: waits for work, checks a server connection out, relays until
//! the release point, gives the connection back clean. The state lives in plain locals
//! of one loop: *idle* (no server), *active* (relaying with a [`Checkout`]).

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use pgsluice_protocol::SqlState;
use tokio::io::AsyncWriteExt;

use self::buffers::{idle_read_buffer, recycle_read_buffer};
use super::conclude::{conclude, Next};
use super::context::{ClientContext, RelaySettings};
use super::param_request::{self, FirstWord};
use super::prepared::{ClientStatements, Rewriter};
use super::queue_notice::wait_notifying;
use super::relay::{Relay, RelayCounts, RelayEnd, RewriteCx};
use super::send_fatal;
use super::statement::StatementGate;
use super::stop::{stop_notice, Stop, StopSignal};
use crate::cancel::CancelHandle;
use crate::config::PoolMode;
use crate::error::ClientNotice;
use crate::error::PoolError;
use crate::net::Stream;
use crate::params::ParamSet;
use crate::pool::listing::ClientInfo;
use crate::pool::{Checkout, Start};
use crate::router::{Access, Route, Target, Work};

#[path = "session_buffers.rs"]
mod buffers;
#[path = "session_carry.rs"]
mod carry;
#[path = "session_handover.rs"]
mod handover;
#[path = "session_notify.rs"]
mod listen;
#[path = "session_local.rs"]
mod local;
#[path = "session_params.rs"]
mod params;
#[path = "session_route.rs"]
mod route;
#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

/// How much an idle client may send before a server connection is attached.
/// Small enough for the allocator's per-thread cache (glibc's tcache takes up to
/// 1 KiB): this buffer is allocated once per request. Longer requests are read on by
/// the relay.
pub(super) const IDLE_READ: usize = 1024;

/// Hosts of a replicated database one request may find unreachable before the client
/// gets the error.
const MAX_HOST_FAILURES: u32 = 3;

/// A client after login.
#[derive(Debug)]
pub struct Session {
    ctx: Arc<ClientContext>,
    route: Route,
    params: ParamSet,
    cancel: CancelHandle,
    /// Bytes already read, served first: what came with the login, or what a parked
    /// client sent (boxed: usually there are none).
    pending: Option<Box<BytesMut>>,
    stmts: ClientStatements,
    /// What the session moved so far (kept across parkings, for the logout line).
    traffic: Traffic,
    /// Still setting up: every request so far was a parameter request (see
    /// [`param_request`]).
    setting_up: bool,
    /// It LISTENed through a notification hub of its route's pools (transaction and
    /// statement mode): it is unsubscribed there when the session is dropped. A flag,
    /// not a guard holding the hub: it fits in this struct's padding, and the session
    /// sits in every idle client's task.
    listening: bool,
}

/// How [`Session::run`] ended.
pub(super) enum Ran {
    /// The session is over, for this reason.
    Ended(&'static str),
    /// The client is idle and asked to park; idle since then (for client_idle_timeout).
    Park(std::time::Instant),
}

/// What the logout line reports.
#[derive(Debug, Default)]
pub(super) struct SessionSummary {
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// Server connection checkouts.
    pub transactions: u64,
    /// Why it ended.
    pub reason: &'static str,
}

/// What a session counts while it runs (kept in the session, so that it survives
/// parking).
#[derive(Debug, Default)]
struct Traffic {
    bytes_in: u64,
    bytes_out: u64,
    transactions: u64,
}

/// What an idle wait brought.
enum Idle {
    Data(BytesMut),
    /// Notifications were queued for the client: deliver them.
    Notify,
    /// Asked to park; idle since then.
    Park(std::time::Instant),
    End(IdleEnd),
}

/// How an idle wait ended the session.
enum IdleEnd {
    Closed,
    Stopped(Stop),
    Timeout,
}

/// The FATAL to send for an idle wait that ended the session, if any, and the reason.
fn idle_end(end: IdleEnd) -> (Option<ClientNotice>, &'static str) {
    match end {
        IdleEnd::Closed => (None, "client closed"),
        IdleEnd::Stopped(why) => {
            let (n, reason) = stop_notice(why);
            (Some(n), reason)
        }
        IdleEnd::Timeout => (
            Some(ClientNotice::fatal(
                SqlState::IDLE_SESSION_TIMEOUT,
                "terminating connection due to client_idle_timeout",
            )),
            "client_idle_timeout",
        ),
    }
}

impl Session {
    pub(super) fn new(
        ctx: Arc<ClientContext>,
        route: Route,
        params: ParamSet,
        cancel: CancelHandle,
        pending: &[u8],
    ) -> Self {
        Session {
            ctx,
            route,
            params,
            cancel,
            // A copy, not a split of the login buffer: a split would keep the whole
            // buffer alive for the session.
            pending: (!pending.is_empty()).then(|| Box::new(BytesMut::from(pending))),
            stmts: ClientStatements::default(),
            traffic: Traffic::default(),
            setting_up: true,
            listening: false,
        }
    }

    /// What the client may use of the process.
    pub(super) fn ctx(&self) -> &Arc<ClientContext> {
        &self.ctx
    }

    /// Whether bytes wait to be served before the next read.
    pub(super) fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Bytes the client sent that were read before the session's next run (a parked
    /// client's request).
    pub(super) fn set_pending(&mut self, bytes: BytesMut) {
        self.pending = Some(Box::new(bytes));
    }

    /// What the logout line reports.
    pub(super) fn summary(&self, reason: &'static str) -> SessionSummary {
        SessionSummary {
            bytes_in: self.traffic.bytes_in,
            bytes_out: self.traffic.bytes_out,
            transactions: self.traffic.transactions,
            reason,
        }
    }

    /// Ends a session whose client_idle_timeout passed while it was parked.
    pub(super) async fn idle_timed_out(&mut self, stream: &mut Stream) -> &'static str {
        let (notice, reason) = idle_end(IdleEnd::Timeout);
        if let Some(n) = notice {
            send_fatal(stream, &n).await;
        }
        reason
    }

    /// The client's tracked parameters.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The client's cancel key.
    pub fn cancel_key(&self) -> (i32, i32) {
        self.cancel.key()
    }

    /// Runs the session until the client leaves or is sent away. `info` is the client's
    /// entry in the admin views; KILL / KILL_CLIENT end the session through it.
    ///
    /// This future is what a client with work costs (an idle one parks and has no
    /// task). The request's state (checkout, parameter sync, relay) is inline, so a
    /// transaction allocates nothing; the rarer branches (LISTEN, parameter requests,
    /// waits, carries) stay boxed inside it. The parts come in by reference (an
    /// `async fn` keeps by-value arguments beside its moved-in locals).
    // Not `async fn`, on purpose (see above): clippy's suggestion would add 24 bytes.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run<'a>(
        &'a mut self,
        stream: &'a mut Stream,
        info: &'a Arc<ClientInfo>,
    ) -> impl Future<Output = Ran> + 'a {
        // An async block, not an `async fn`: the references are kept once, as the
        // block's captures (an `async fn` also copies its arguments into locals).
        async move {
            let mut stop = StopSignal {
                ctx: self.ctx.clone(),
                info: info.clone(),
                registered: false,
                fired: self.ctx.shutdown_requested().then_some(Stop::Shutdown),
            };
            let (fatal, reason) = loop {
                // Tested, not matched: a match's scrutinee would stay in this future across
                // the wait.
                let woke = if self.pending.is_some() || stop.fired.is_some() {
                    self.ready_work(stop.fired)
                } else {
                    self.wait_for_work(stream, &mut stop).await
                };
                let prefix = match woke {
                    Idle::Data(prefix) => prefix,
                    Idle::Notify => match Box::pin(self.deliver(stream, &mut stop)).await {
                        Ok(()) => continue,
                        Err(end) => break idle_end(end),
                    },
                    Idle::Park(since) => return Ran::Park(since),
                    Idle::End(end) => break idle_end(end),
                };
                // Inline: no allocation per transaction (task.rs, LIVE_FUTURE_BUDGET). Named
                // first: ~70 instructions fewer than awaiting the call in the `match`.
                let request = self.request(stream, info, prefix, &mut stop);
                match request.await {
                    Next::Continue => {}
                    Next::End(notice, reason) => break (notice, reason),
                }
            };
            // Boxed and owning the notice: nothing of it sits in the idle future.
            if let Some(send) = fatal.map(|n| Box::pin(async move { send_fatal(stream, &n).await }))
            {
                send.await;
            }
            Ran::Ended(reason)
        }
    }

    /// Serves one request from an idle client: answers it locally, or checks a server
    /// connection out, syncs parameters and relays until the release point.
    async fn request(
        &mut self,
        stream: &mut Stream,
        info: &Arc<ClientInfo>,
        prefix: BytesMut,
        stop: &mut StopSignal,
    ) -> Next {
        if prefix.first() == Some(&b'X') {
            return Next::End(None, "client terminated");
        }
        if self.route.shards().is_some() {
            return Box::pin(self.sharded(stream, info, prefix)).await;
        }
        let mode = self.route.mode();
        // Read once: it decides the paths below.
        let word = param_request::first_word(&prefix);
        if mode.shares_servers() {
            if let Some(reply) = self.answer_locally(&prefix) {
                if stream.write_all(&reply).await.is_err() {
                    return Next::End(None, "client connection error");
                }
                return Next::Continue;
            }
            let listen_word = matches!(word, FirstWord::Listen | FirstWord::Unlisten);
            if let Some((cmd, shape)) = listen_word
                .then(|| listen::listen_command(&prefix))
                .flatten()
            {
                let run = self.listen_request(stream, info, &prefix, cmd, shape);
                return Box::pin(run).await;
            }
            if let Some(step) = listen::listen_step(&prefix, self.listening) {
                let run = self.listen_step_request(stream, info, &prefix, step);
                if let Some(next) = Box::pin(run).await {
                    return next;
                }
            }
        }
        let changes = self.param_plan(&prefix, mode, word);
        let mut prefix = prefix;
        let access = if self.route.splits() {
            if route::read_first_message(stream, &mut prefix)
                .await
                .is_err()
            {
                return Next::End(None, "client connection error");
            }
            self.classify(&prefix)
        } else {
            Access::Write
        };
        let mut now = crate::clock::now();
        let mut failures = 0;
        let (pool, co, waited) = loop {
            let work = Work {
                request: &prefix,
                access,
                now,
            };
            // The router picks the pool; the session's own route is cloned (one
            // reference count) so that the session stays free to change while the
            // request runs.
            let pool = match self.route.target(work) {
                Target::One(pool) => pool.clone(),
                Target::Unavailable(what) => {
                    match Box::pin(self.wait_for_host(&prefix, access, what)).await {
                        Ok(()) => {
                            now = crate::clock::now();
                            continue;
                        }
                        Err(n) => return Next::End(Some(n), "no eligible server host"),
                    }
                }
                #[allow(unreachable_patterns)]
                _ => {
                    let n = ClientNotice::fatal(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "this request needs several server connections at once, which this client path does not support",
                    );
                    return Next::End(Some(n), "unsupported route");
                }
            };
            // Synchronous unless the pool has no idle connection; then a small wait in
            // the queue, and opening a connection boxed.
            let (co, waited) = match pool.start_checkout(Some(info), now) {
                Ok(Start::Ready(c)) => (Ok(c), false),
                Ok(Start::Wait(w)) => match self.ctx.live.query_wait_notify() {
                    None => (pool.wait_for(w, Some(info.clone())).await, true),
                    Some(after) => {
                        let wait = wait_notifying(&pool, stream, w, info, after);
                        (Box::pin(wait).await, true)
                    }
                },
                Ok(Start::Open(slot, t)) => {
                    let open = pool.open_with(slot, t, Some(info.clone()));
                    (Box::pin(open).await, true)
                }
                Err(e) => (Err(e), true),
            };
            match co {
                Ok(c) => break (pool, c, waited),
                // A host of a replicated database that cannot be reached is left out;
                // the work goes to another one (or waits for one).
                Err(PoolError::Server(e))
                    if failures < MAX_HOST_FAILURES
                        && self.route.report_failure(&pool, e.to_string()) =>
                {
                    tracing::warn!(pool = %pool.key(), server = %pool.target().display_addr(), error = %e, "server host failed; trying another");
                    failures += 1;
                }
                Err(e) => {
                    tracing::warn!(pool = %pool.key(), error = %e, "no server connection for client");
                    return Next::End(Some(e.to_notice()), "no server connection");
                }
            }
        };
        let mut co = co;
        // On a relay lane the server connection relays over the lane's epoll set.
        co.conn().stream.join_current_lane();
        // The clock read before the checkout when a connection was idle; waiting
        // clients are timed from when they got one.
        let held_since = if waited { crate::clock::now() } else { now };
        match self.params.sync_sql(&co.conn().params) {
            Some(sql) => {
                if let Err(e) = Box::pin(self.sync_params(&mut co, sql)).await {
                    tracing::warn!(server = %co.conn().id, error = %e, "could not apply client parameters");
                    return Next::End(Some(e.to_notice()), "parameter sync failed");
                }
            }
            // Equal values, maybe in two copies: one copy from now on, so the next
            // check is a pointer comparison (callgrind: ~350 instructions a transaction).
            None => self.params.share_if_equal(&mut co.conn().params),
        }
        self.traffic.transactions += 1;
        if let Some(changes) = changes {
            let run = self.param_request(stream, co, &prefix, &changes, held_since, stop);
            return Box::pin(run).await;
        }
        let (end, counts, queries, busy, held) =
            self.relay_once(stream, &mut co, &prefix, mode, stop).await;
        // Session settings the client's statements changed (transaction pooling).
        let carry = co
            .conn()
            .ext
            .get_mut::<Rewriter>()
            .map(Rewriter::take_carry);
        let end = match carry {
            Some(carry) if !carry.is_empty() => {
                Box::pin(self.carry_after(&mut co, &carry, end)).await
            }
            _ => end,
        };
        // Statement mode: what the client sent after the request starts its next one.
        if let Some(held) = held {
            self.pending = Some(Box::new(held));
        }
        self.cancel.detach();
        recycle_read_buffer(prefix);
        self.traffic.bytes_in += counts.bytes_in;
        self.traffic.bytes_out += counts.bytes_out;
        // One reading for the statistics and the connection's idle time.
        let done = crate::clock::now();
        co.done_at(done);
        pool.stats.add_xact(
            queries,
            counts.bytes_in,
            counts.bytes_out,
            done.saturating_duration_since(held_since),
        );
        if let Some(ext) = co.conn().ext.get_mut::<Rewriter>() {
            pool.stats.add_prepared(ext.take_counts());
            let on_server = ext.statements();
            co.set_prepared_statements(on_server);
        }
        info.set_prepared_statements(self.stmts.len());
        self.route.work_done(access);
        conclude(end, co, mode, busy, stop.fired, &self.ctx.background)
    }

    /// One relay run over a checked-out connection: until the release point, or the end.
    async fn relay_once(
        &mut self,
        stream: &mut Stream,
        co: &mut Checkout,
        prefix: &[u8],
        mode: PoolMode,
        stop: &mut StopSignal,
    ) -> (RelayEnd, RelayCounts, u64, bool, Option<BytesMut>) {
        let RelaySettings {
            max_message,
            max_prepared,
            timeouts,
        } = RelaySettings::of(&self.ctx.live.relay_values());
        let conn = co.conn();
        self.cancel.attach(&conn.target, &conn.key);
        let buffers = &mut conn.buffers;
        let ext = match mode {
            PoolMode::Transaction | PoolMode::Statement => Some(RewriteCx {
                state: conn
                    .ext
                    .get_or_insert_with(|| Rewriter::new(max_message, max_prepared)),
                client: &mut self.stmts,
                registry: &self.ctx.statements,
                gate: (mode == PoolMode::Statement).then(StatementGate::new),
            }),
            PoolMode::Session => None,
        };
        let mut relay = Relay::new(
            stream,
            &mut conn.stream,
            &mut buffers.c2s,
            &mut buffers.s2c,
            max_message,
            &mut self.params,
            &mut conn.params,
            ext,
        );
        if let Err(end) = relay.begin(prefix) {
            return (end, RelayCounts::default(), 0, false, None);
        }
        relay.release_at_idle(mode.shares_servers() || stop.fired.is_some());
        relay.set_timeouts(timeouts);
        // The relay first, then the stop signal (a poll function: no select state).
        let end = poll_fn(|cx| loop {
            if let Poll::Ready(end) = relay.poll_relay(cx) {
                return Poll::Ready(end);
            }
            if stop.fired.is_none() {
                if let Poll::Ready(why) = std::pin::Pin::new(&mut *stop).poll(cx) {
                    stop.fired = Some(why);
                    match why {
                        // Finish the transaction, then stop at its release point.
                        Stop::Shutdown => {
                            relay.release_at_idle(true);
                            continue;
                        }
                        Stop::Killed | Stop::Overflow => return Poll::Ready(RelayEnd::Killed),
                    }
                }
            }
            return Poll::Pending;
        })
        .await;
        let held = relay.take_held();
        (end, relay.counts, relay.queries(), relay.busy(), held)
    }

    /// What the idle client has for the session without waiting: bytes that came with
    /// the login, else the stop already requested (the caller checked there is one).
    fn ready_work(&mut self, stopped: Option<Stop>) -> Idle {
        match (self.pending.take(), stopped) {
            (Some(pending), _) => Idle::Data(*pending),
            (None, Some(why)) => Idle::End(IdleEnd::Stopped(why)),
            (None, None) => Idle::End(IdleEnd::Closed),
        }
    }

    /// Waits, holding no server connection and no buffer, until the client sends bytes.
    ///
    /// A poll function rather than an `async fn` or a select over futures: it keeps
    /// three references and the optional timer, and this state is what an idle
    /// client's task holds.
    fn wait_for_work<'a>(
        &self,
        stream: &'a mut Stream,
        stop: &'a mut StopSignal,
    ) -> impl Future<Output = Idle> + 'a {
        let idle_limit = self.ctx.live.client_idle_timeout();
        // Boxed only when configured: an idle client keeps no timer otherwise.
        let mut idle_timer = idle_limit.map(|d| Box::pin(tokio::time::sleep(d)));
        poll_fn(move |cx| loop {
            // Stop first: a client told to stop (KILL) before its next request arrived
            // is stopped, whatever order the wake-ups come in.
            if let Poll::Ready(why) = std::pin::Pin::new(&mut *stop).poll(cx) {
                stop.fired = Some(why);
                return Poll::Ready(Idle::End(IdleEnd::Stopped(why)));
            }
            // Notifications go out before anything else the client does.
            if stop.info.has_mail() {
                return Poll::Ready(Idle::Notify);
            }
            // The parking sweep woke the task: it parks unless it can read already.
            let park = stop.info.park_requested();
            match stream.poll_read_ready(cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(Idle::End(IdleEnd::Closed)),
                Poll::Ready(Ok(())) => {
                    // The buffer is taken only once there is something to read.
                    let mut buf = idle_read_buffer();
                    return match stream.try_read_buf(&mut buf) {
                        Ok(0) => Poll::Ready(Idle::End(IdleEnd::Closed)),
                        Ok(_) => Poll::Ready(Idle::Data(buf)),
                        // Readiness was stale and is cleared now: wait again.
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            recycle_read_buffer(buf);
                            continue;
                        }
                        Err(_) => Poll::Ready(Idle::End(IdleEnd::Closed)),
                    };
                }
                Poll::Pending => {}
            }
            if let Some(t) = idle_timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Idle::End(IdleEnd::Timeout));
                }
            }
            if park {
                // Idle since its timer started when it has one; else for at least the
                // sweep's second.
                let now = std::time::Instant::now();
                let since = idle_timer
                    .as_ref()
                    .and_then(|t| {
                        let limit = stop.ctx.live.client_idle_timeout()?;
                        t.deadline().into_std().checked_sub(limit)
                    })
                    .filter(|s| *s <= now)
                    .unwrap_or_else(|| now - std::time::Duration::from_secs(1));
                return Poll::Ready(Idle::Park(since));
            }
            return Poll::Pending;
        })
    }
}
