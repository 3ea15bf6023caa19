//! The relay: forwards bytes both ways between a client and its server connection,
//! unchanged, while a [`Scanner`] per direction walks the message headers.
//!
//! It is one hand-written future that polls both directions, so a full socket buffer on
//! one side never stops the other side from draining (a client pipelining queries while
//! PostgreSQL streams results cannot deadlock it), and it reads once and writes once per
//! chunk. It stops at the first *release point*: every Query/Sync sent has had its
//! ReadyForQuery, that status is idle, no extended-protocol message awaits a Sync, and
//! both directions sit at a message boundary with nothing buffered.

use std::io;

use bytes::{Buf, BytesMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use pgsluice_protocol::backend::{self, TxStatus};
use pgsluice_protocol::scan::{ScanEvent, Scanner, TagSet};
use pgsluice_protocol::ProtocolError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::prepared::{ClientStatements, ReadPath, Rewriter, StatementRegistry};
use super::statement::StatementGate;
pub use super::wire_state::WireState;
use crate::params::ParamSet;

/// Largest ParameterStatus body pgsluice keeps track of.
const CAPTURE_LIMIT: usize = 8 * 1024;

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// A release point was reached (transaction mode, or a stop was requested).
    Idle,
    /// The client sent Terminate.
    Terminated {
        /// The server is at an idle release point.
        server_idle: bool,
    },
    /// The client closed its socket or it failed.
    ClientGone {
        /// The server is at an idle release point.
        server_idle: bool,
        /// The failure, if it was not a clean close.
        error: Option<io::Error>,
    },
    /// The server closed its socket or it failed.
    ServerGone(Option<io::Error>),
    /// The client broke the framing.
    ClientProtocol(ProtocolError),
    /// The server broke the framing.
    ServerProtocol(ProtocolError),
    /// A query ran longer than query_timeout.
    QueryTimeout,
    /// The client sat idle inside a transaction longer than idle_transaction_timeout.
    IdleInTransactionTimeout,
    /// A session-mode client sat idle longer than client_idle_timeout.
    ClientIdleTimeout,
    /// A transaction lasted longer than transaction_timeout.
    TransactionTimeout,
    /// An admin command (KILL, KILL_CLIENT) ended the client; the relay was abandoned
    /// wherever it was, so the server connection is not reusable.
    Killed,
    /// Statement mode: the server reported a transaction block, which the client is
    /// refused (see [`super::statement`]).
    TransactionBlock {
        /// Nothing is in flight: a ROLLBACK makes the connection clean again.
        server_quiet: bool,
    },
}

/// Timeouts a relay enforces (None = off, the default for each).
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayTimeouts {
    /// query_timeout: each query of a request in flight, from when the server can
    /// start it (the request sent, or the query before it in the pipeline finished)
    /// until it finishes.
    pub query: Option<std::time::Duration>,
    /// idle_transaction_timeout: the client silent inside a transaction block.
    pub idle_in_transaction: Option<std::time::Duration>,
    /// client_idle_timeout: the client silent outside a transaction (session mode).
    pub client_idle: Option<std::time::Duration>,
    /// transaction_timeout: from a transaction's first request to its end.
    pub transaction: Option<std::time::Duration>,
}

/// What the relay is waiting for, for the timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request is in flight.
    Busy,
    /// Idle inside a transaction block, waiting for the client.
    IdleInTransaction,
    /// Idle outside a transaction, waiting for the client.
    Idle,
}

/// Counters for one relay run.
#[derive(Debug, Default, Clone, Copy)]
pub struct RelayCounts {
    /// Bytes client to server.
    pub bytes_in: u64,
    /// Bytes server to client.
    pub bytes_out: u64,
}

struct Dir<'b> {
    buf: &'b mut [u8],
    start: usize,
    end: usize,
    scanner: Scanner,
}

impl Dir<'_> {
    fn flushed(&self) -> bool {
        self.start == self.end
    }
}

/// The prepared-statement rewriting context (transaction and statement modes).
pub struct RewriteCx<'a> {
    /// Per-connection rewriting state.
    pub state: &'a mut Rewriter,
    /// The client's named statements.
    pub client: &'a mut ClientStatements,
    /// All statements.
    pub registry: &'a StatementRegistry,
    /// Statement mode: one request at a time (None in transaction mode).
    pub gate: Option<StatementGate>,
}

/// A byte stream the relay reads and writes: a socket ([`crate::net::Stream`]) in
/// service, an in-memory pipe in tests. The relay is generic over it, so each stream
/// type gets its own compiled relay and the hot path makes no dynamic calls.
pub trait RelayIo: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin + ?Sized> RelayIo for T {}

/// One relay run between a client stream `C` and a server connection `S`.
pub struct Relay<'a, C, S> {
    client: &'a mut C,
    server: &'a mut S,
    c2s: Dir<'a>,
    /// Client bytes read before the relay started that did not fit `c2s` (session
    /// mode): fed through `c2s` before anything more is read from the client.
    backlog: &'a [u8],
    s2c: Dir<'a>,
    flow: WireState,
    release_at_idle: bool,
    terminated: bool,
    client_params: &'a mut ParamSet,
    server_params: &'a mut ParamSet,
    ext: Option<RewriteCx<'a>>,
    timeouts: RelayTimeouts,
    /// The phase the timer was last armed for; None before the first arming.
    phase: Option<Phase>,
    /// The phase's timer. It may be registered for an earlier instant than `deadline`
    /// (the deadline moved later): it is re-armed when it fires early.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the phase's limit is reached; None when the phase has none.
    deadline: Option<tokio::time::Instant>,
    /// `flow.finished` when query_timeout's clock last started.
    clock_finished: u32,
    /// transaction_timeout's timer, armed while a transaction runs.
    tx_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    tx_armed: bool,
    /// Counters.
    pub counts: RelayCounts,
}

impl<'a, C: RelayIo, S: RelayIo> Relay<'a, C, S> {
    /// A relay over a server connection that is idle; [`Relay::begin`] gives it the
    /// bytes already read from the client before it is polled.
    ///
    /// Infallible, and the prefix handled apart, so that the relay is built where it
    /// stays: returned in a `Result` it was copied twice (callgrind: ~150 instructions
    /// a transaction).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: &'a mut C,
        server: &'a mut S,
        c2s_buf: &'a mut [u8],
        s2c_buf: &'a mut [u8],
        max_message: u32,
        client_params: &'a mut ParamSet,
        server_params: &'a mut ParamSet,
        ext: Option<RewriteCx<'a>>,
    ) -> Self {
        Relay {
            client,
            server,
            c2s: Dir {
                buf: c2s_buf,
                start: 0,
                end: 0,
                scanner: Scanner::new(max_message, TagSet::EMPTY, 0),
            },
            backlog: &[],
            s2c: Dir {
                buf: s2c_buf,
                start: 0,
                end: 0,
                scanner: Scanner::new(u32::MAX, TagSet::of(b"ZS"), CAPTURE_LIMIT),
            },
            flow: WireState::new(),
            release_at_idle: false,
            terminated: false,
            client_params,
            server_params,
            ext,
            timeouts: RelayTimeouts::default(),
            phase: None,
            timer: None,
            deadline: None,
            clock_finished: 0,
            tx_timer: None,
            tx_armed: false,
            counts: RelayCounts::default(),
        }
    }

    /// Starts the relay with `prefix`, bytes already read from the client, of any
    /// length: what does not fit the client buffer goes out after it, before the client
    /// is read again. Called once, before the first poll.
    pub fn begin(&mut self, prefix: &'a [u8]) -> Result<(), RelayEnd> {
        if let Some(ext) = self.ext.as_mut() {
            ext.state.begin_checkout();
            let prefix = statement_mode::admit_prefix(ext.gate.as_mut(), prefix);
            let pass = ext
                .state
                .client_bytes(prefix, ext.registry, ext.client, &mut self.flow)
                .map_err(RelayEnd::ClientProtocol)?;
            self.terminated = pass.terminated;
            if pass.path == ReadPath::AsRead {
                match self.c2s.buf.get_mut(..prefix.len()) {
                    Some(buf) => {
                        buf.copy_from_slice(prefix);
                        self.c2s.end = prefix.len();
                    }
                    // Longer than the buffer: the (empty) out buffer takes it.
                    None => ext.state.c2s_out.extend_from_slice(prefix),
                }
            }
            return Ok(());
        }
        self.backlog = prefix;
        self.feed_backlog().map_err(RelayEnd::ClientProtocol)
    }

    /// Moves the next chunk of the backlog into the (flushed) client buffer and scans it.
    fn feed_backlog(&mut self) -> Result<(), ProtocolError> {
        let n = self.backlog.len().min(self.c2s.buf.len());
        let (chunk, rest) = self.backlog.split_at(n);
        self.c2s.buf[..n].copy_from_slice(chunk);
        self.c2s.end = n;
        self.backlog = rest;
        self.scan_c2s()
    }

    /// Enforces these timeouts from now on.
    pub fn set_timeouts(&mut self, timeouts: RelayTimeouts) {
        self.timeouts = timeouts;
        // Re-armed at the next poll, for the phase the relay is in then.
        self.phase = None;
    }

    fn phase_now(&self) -> Phase {
        if self.flow.pending > 0 {
            Phase::Busy
        } else if self.flow.status != TxStatus::Idle || self.flow.unsynced {
            Phase::IdleInTransaction
        } else {
            Phase::Idle
        }
    }

    /// Ends the relay at the next release point (transaction mode, or shutdown).
    pub fn release_at_idle(&mut self, on: bool) {
        self.release_at_idle = on;
    }

    /// True when the server connection is idle with nothing in flight.
    pub fn server_idle(&self) -> bool {
        self.flow.idle() && self.server_quiet()
    }

    /// True when nothing is in flight on the server connection, whatever its
    /// transaction status.
    fn server_quiet(&self) -> bool {
        self.flow.pending == 0
            && !self.flow.unsynced
            && self.ext.as_ref().is_none_or(|e| e.state.quiescent())
            && self.c2s.flushed()
            && self.backlog.is_empty()
            && self.c2s.scanner.at_boundary()
            && self.s2c.flushed()
            && self.s2c.scanner.at_boundary()
    }

    /// Status in the last ReadyForQuery seen.
    pub fn status(&self) -> TxStatus {
        self.flow.status
    }

    /// True when a query is running or results are due on the server.
    pub fn busy(&self) -> bool {
        self.flow.pending > 0
    }

    /// Query/Sync/FunctionCall messages the client sent.
    pub fn queries(&self) -> u64 {
        self.flow.queries
    }

    /// Drives both directions until the relay ends.
    pub fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        // A direction that returned Pending has its waker registered and is not polled
        // again in this call: nothing the other direction does makes its socket ready.
        // Client-side progress can queue replies pgsluice makes up, though, so it
        // unblocks the server-to-client side.
        let (mut c2s_blocked, mut s2c_blocked) = (false, false);
        loop {
            if self.release_at_idle && !self.terminated && self.server_idle() {
                return Poll::Ready(RelayEnd::Idle);
            }
            if self.refused() {
                return self.poll_refusal(cx);
            }
            if !c2s_blocked {
                match self.poll_c2s(cx) {
                    Poll::Ready(Some(end)) => return Poll::Ready(end),
                    Poll::Ready(None) => s2c_blocked = false,
                    Poll::Pending => c2s_blocked = true,
                }
            }
            if !s2c_blocked {
                match self.poll_s2c(cx) {
                    Poll::Ready(Some(end)) => return Poll::Ready(end),
                    // Held client bytes may go once the server has answered.
                    Poll::Ready(None) => c2s_blocked &= !self.holding(),
                    Poll::Pending => s2c_blocked = true,
                }
            }
            if c2s_blocked && s2c_blocked {
                return self.poll_timeouts(cx);
            }
        }
    }

    fn poll_c2s(&mut self, cx: &mut Context<'_>) -> Poll<Option<RelayEnd>> {
        let out = self.ext.as_mut().map(|e| &mut e.state.c2s_out);
        match poll_send(
            &mut self.c2s,
            out,
            self.server,
            cx,
            &mut self.counts.bytes_in,
        ) {
            Poll::Ready(Ok(true)) => return Poll::Ready(None),
            Poll::Ready(Ok(false)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Some(RelayEnd::ServerGone(e))),
            Poll::Pending => return Poll::Pending,
        }
        if self.terminated {
            return Poll::Ready(Some(RelayEnd::Terminated {
                server_idle: self.server_idle(),
            }));
        }
        if !self.backlog.is_empty() {
            return Poll::Ready(self.feed_backlog().err().map(RelayEnd::ClientProtocol));
        }
        if self.holding() {
            return self.admit_held();
        }
        let mut rb = ReadBuf::new(self.c2s.buf);
        match Pin::new(&mut *self.client).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(RelayEnd::ClientGone {
                        server_idle: self.server_idle(),
                        error: None,
                    }));
                }
                let n = self.admit_read(n);
                if let Some(ext) = self.ext.as_mut() {
                    let data = &self.c2s.buf[..n];
                    return match ext.state.client_bytes(
                        data,
                        ext.registry,
                        ext.client,
                        &mut self.flow,
                    ) {
                        Ok(pass) => {
                            self.terminated |= pass.terminated;
                            if pass.path == ReadPath::AsRead {
                                self.c2s.end = n;
                            }
                            Poll::Ready(None)
                        }
                        Err(e) => Poll::Ready(Some(RelayEnd::ClientProtocol(e))),
                    };
                }
                self.c2s.end = n;
                match self.scan_c2s() {
                    Ok(()) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(RelayEnd::ClientProtocol(e))),
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(RelayEnd::ClientGone {
                server_idle: self.server_idle(),
                error: Some(e),
            })),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_s2c(&mut self, cx: &mut Context<'_>) -> Poll<Option<RelayEnd>> {
        let out = self.ext.as_mut().map(|e| &mut e.state.s2c_out);
        match poll_send(
            &mut self.s2c,
            out,
            self.client,
            cx,
            &mut self.counts.bytes_out,
        ) {
            Poll::Ready(Ok(true)) => return Poll::Ready(None),
            Poll::Ready(Ok(false)) => {}
            Poll::Ready(Err(error)) => {
                return Poll::Ready(Some(RelayEnd::ClientGone {
                    server_idle: false,
                    error,
                }))
            }
            Poll::Pending => return Poll::Pending,
        }
        let mut rb = ReadBuf::new(self.s2c.buf);
        match Pin::new(&mut *self.server).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(RelayEnd::ServerGone(None)));
                }
                if let Some(ext) = self.ext.as_mut() {
                    let data = &self.s2c.buf[..n];
                    let r = ext.state.server_bytes(
                        data,
                        &mut self.flow,
                        ext.client,
                        self.client_params,
                        self.server_params,
                    );
                    return match r {
                        Ok(path) => {
                            if path == ReadPath::AsRead {
                                self.s2c.end = n;
                            }
                            self.check_transaction_block(path);
                            Poll::Ready(None)
                        }
                        Err(e) => Poll::Ready(Some(RelayEnd::ServerProtocol(e))),
                    };
                }
                self.s2c.end = n;
                match self.scan_s2c() {
                    Ok(()) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(RelayEnd::ServerProtocol(e))),
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(RelayEnd::ServerGone(Some(e)))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Walks the client bytes just read. Terminate is cut out: it ends the client's
    /// session, never the pooled server connection.
    fn scan_c2s(&mut self) -> Result<(), ProtocolError> {
        let flow = &mut self.flow;
        let mut terminate_at = None;
        let d = &mut self.c2s;
        d.scanner.feed::<ProtocolError>(&d.buf[..d.end], |ev| {
            if let ScanEvent::Start { tag, at, .. } = ev {
                if tag == b'X' {
                    terminate_at.get_or_insert(at.unwrap_or(0));
                } else if terminate_at.is_none() {
                    flow.client_tag(tag)?;
                }
            }
            Ok(())
        })?;
        if let Some(at) = terminate_at {
            self.terminated = true;
            // Nothing after Terminate is meant for the server.
            self.backlog = &[];
            self.c2s.end = at.max(self.c2s.start);
        }
        Ok(())
    }

    /// Walks the server bytes just read, tracking ReadyForQuery and ParameterStatus.
    fn scan_s2c(&mut self) -> Result<(), ProtocolError> {
        let flow = &mut self.flow;
        let client_params = &mut *self.client_params;
        let server_params = &mut *self.server_params;
        let d = &mut self.s2c;
        d.scanner.feed::<ProtocolError>(&d.buf[..d.end], |ev| {
            if let ScanEvent::Start { tag, .. } = ev {
                flow.server_tag(tag);
            } else if let ScanEvent::Captured { tag, body } = ev {
                match tag {
                    b'Z' => {
                        let status = body
                            .first()
                            .and_then(|&b| TxStatus::from_byte(b))
                            .ok_or(ProtocolError::Malformed("ReadyForQuery"))?;
                        flow.server_ready(status);
                    }
                    b'S' => {
                        let (name, value) = backend::parse_parameter_status(body)?;
                        server_params.set(name, value);
                        client_params.set(name, value);
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }
}

/// Writes what one direction has pending to `to`: the bytes passed on as read first
/// (they came before anything in the out buffer), then the out buffer. `Ok(true)` when
/// something was written, `Ok(false)` when nothing is pending, `Err(None)` when the peer
/// closed.
///
/// Inlined into both directions: as a call it cost about 200 instructions a
/// transaction (callgrind, `scripts/profile instructions`).
#[inline(always)]
fn poll_send<W: RelayIo>(
    d: &mut Dir<'_>,
    out: Option<&mut BytesMut>,
    to: &mut W,
    cx: &mut Context<'_>,
    sent: &mut u64,
) -> Poll<Result<bool, Option<io::Error>>> {
    let as_read = !d.flushed();
    let bytes: &[u8] = match &out {
        _ if as_read => &d.buf[d.start..d.end],
        Some(o) if !o.is_empty() => o,
        _ => return Poll::Ready(Ok(false)),
    };
    let n = match std::task::ready!(Pin::new(to).poll_write(cx, bytes)) {
        Ok(0) => return Poll::Ready(Err(None)),
        Ok(n) => n,
        Err(e) => return Poll::Ready(Err(Some(e))),
    };
    *sent += n as u64;
    if as_read {
        d.start += n;
        if d.flushed() {
            d.start = 0;
            d.end = 0;
        }
    } else if let Some(o) = out {
        o.advance(n);
        if o.is_empty() {
            o.clear();
        }
    }
    Poll::Ready(Ok(true))
}

#[path = "relay_statement.rs"]
mod statement_mode;

#[path = "relay_timeouts.rs"]
mod timeouts;

#[cfg(test)]
#[path = "relay_testkit.rs"]
pub(crate) mod testkit;

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "relay_timeout_tests.rs"]
mod timeout_tests;
