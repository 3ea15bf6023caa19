//! Helpers for the relay's unit tests: a relay over in-memory pipes, driven one poll at
//! a time, and the peers' view of what went through it.
//!
//! Nothing here waits for anything: [`step`] polls the relay once (it runs until both
//! directions would block), [`available`] takes what a peer has been sent so far. A
//! test is a fixed sequence of writes, steps and exact byte comparisons.
//!
//! The whole test runs in one poll of its task, so each helper runs unconstrained by
//! tokio's cooperative budget: an exhausted budget would make a pipe answer Pending
//! where bytes are there, and a step would stop short of what it should do.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::task::unconstrained;

use super::{
    ClientStatements, Relay, RelayEnd, RewriteCx, Rewriter, StatementGate, StatementRegistry,
};
use crate::params::ParamSet;

/// Largest message the relay under test accepts from the client.
pub(crate) const MAX_MESSAGE: u32 = 1 << 20;

/// Which relay path a test drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// Session mode: bytes scanned and passed on (no rewriting context).
    Plain,
    /// Transaction mode: the prepared-statement rewriting path.
    Rewriting,
    /// Statement mode: the rewriting path with the one-request gate.
    Statement,
}

/// The paths that share the release-point logic of transaction pooling.
pub(crate) const POOLED_PATHS: [Path; 2] = [Path::Plain, Path::Rewriting];

/// The relay's side of both pipes, its buffers and its state.
pub(crate) struct Ends {
    client: DuplexStream,
    server: DuplexStream,
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    /// The bytes the client sent before the relay started.
    prefix: Vec<u8>,
    /// The client's parameters as the relay leaves them.
    pub client_params: ParamSet,
    /// The server connection's parameters as the relay leaves them.
    pub server_params: ParamSet,
    state: Rewriter,
    stmts: ClientStatements,
    registry: StatementRegistry,
}

/// The far side of both pipes: what the test plays as the client and as the server.
pub(crate) struct Peers {
    /// Plays the client.
    pub client: DuplexStream,
    /// Plays the server.
    pub server: DuplexStream,
}

/// Two pipes that hold `pipe` bytes each way, and relay buffers of `buf` bytes.
pub(crate) fn ends(pipe: usize, buf: usize) -> (Ends, Peers) {
    let (client, client_peer) = tokio::io::duplex(pipe);
    let (server, server_peer) = tokio::io::duplex(pipe);
    let ends = Ends {
        client,
        server,
        c2s: vec![0; buf],
        s2c: vec![0; buf],
        prefix: Vec::new(),
        client_params: ParamSet::default(),
        server_params: ParamSet::default(),
        state: Rewriter::new(MAX_MESSAGE, 10),
        stmts: ClientStatements::default(),
        registry: StatementRegistry::default(),
    };
    let peers = Peers {
        client: client_peer,
        server: server_peer,
    };
    (ends, peers)
}

/// Roomy pipes and buffers: no write is ever partial.
pub(crate) fn roomy() -> (Ends, Peers) {
    ends(64 * 1024, 1024)
}

impl Ends {
    /// A relay on `path` starting with `prefix` from the client, ending at the first
    /// release point.
    pub(crate) fn relay(
        &mut self,
        path: Path,
        prefix: &[u8],
    ) -> Relay<'_, DuplexStream, DuplexStream> {
        let mut relay = self.relay_no_release(path, prefix);
        relay.release_at_idle(true);
        relay
    }

    /// A relay on `path` starting with `prefix`, running until the client or the
    /// server ends it (session mode).
    pub(crate) fn relay_no_release(
        &mut self,
        path: Path,
        prefix: &[u8],
    ) -> Relay<'_, DuplexStream, DuplexStream> {
        self.prefix = prefix.to_vec();
        let ext = match path {
            Path::Plain => None,
            Path::Rewriting | Path::Statement => Some(RewriteCx {
                state: &mut self.state,
                client: &mut self.stmts,
                registry: &self.registry,
                gate: (path == Path::Statement).then(StatementGate::new),
            }),
        };
        let mut relay = Relay::new(
            &mut self.client,
            &mut self.server,
            &mut self.c2s,
            &mut self.s2c,
            MAX_MESSAGE,
            &mut self.client_params,
            &mut self.server_params,
            ext,
        );
        if let Err(end) = relay.begin(&self.prefix) {
            panic!("the relay refused its prefix: {end:?}");
        }
        relay
    }
}

/// Polls the relay once: it moves every byte it can, then either ends or waits.
pub(crate) async fn step(relay: &mut Relay<'_, DuplexStream, DuplexStream>) -> Poll<RelayEnd> {
    unconstrained(poll_fn(|cx| Poll::Ready(relay.poll_relay(cx)))).await
}

/// Polls the relay once and expects it to wait.
#[track_caller]
pub(crate) fn expect_pending(p: Poll<RelayEnd>) {
    if let Poll::Ready(end) = p {
        panic!("the relay ended early: {end:?}");
    }
}

/// Polls the relay once and expects it to end.
#[track_caller]
pub(crate) fn expect_end(p: Poll<RelayEnd>) -> RelayEnd {
    match p {
        Poll::Ready(end) => end,
        Poll::Pending => panic!("the relay is still waiting"),
    }
}

/// Everything a peer has been sent so far, without waiting for more (empty at EOF).
pub(crate) async fn available(peer: &mut DuplexStream) -> Vec<u8> {
    unconstrained(poll_fn(|cx| {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut *peer).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    got.extend_from_slice(rb.filled())
                }
                Poll::Ready(Ok(())) | Poll::Pending => return Poll::Ready(got),
                Poll::Ready(Err(e)) => panic!("peer read failed: {e}"),
            }
        }
    }))
    .await
}

/// Writes `bytes` to a peer's pipe, which must have room for them: a test that fills
/// a pipe the relay does not drain fails here instead of hanging.
pub(crate) async fn send(peer: &mut DuplexStream, bytes: &[u8]) {
    let mut rest = bytes;
    unconstrained(poll_fn(|cx| {
        while !rest.is_empty() {
            match Pin::new(&mut *peer).poll_write(cx, rest) {
                Poll::Ready(Ok(n)) if n > 0 => rest = &rest[n..],
                Poll::Ready(r) => panic!("peer write failed: {r:?}"),
                Poll::Pending => panic!("the pipe is full: {} bytes not sent", rest.len()),
            }
        }
        Poll::Ready(())
    }))
    .await;
}

/// One protocol message: tag, length, body.
pub(crate) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A simple Query.
pub(crate) fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    msg(b'Q', &body)
}

/// ReadyForQuery with status `status` (`b'I'`, `b'T'` or `b'E'`).
pub(crate) fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

/// CommandComplete with `tag`.
pub(crate) fn complete(tag: &str) -> Vec<u8> {
    let mut body = tag.as_bytes().to_vec();
    body.push(0);
    msg(b'C', &body)
}

/// ErrorResponse with severity ERROR, SQLSTATE `code` and `message`.
pub(crate) fn error(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', "ERROR"), (b'C', code), (b'M', message)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    msg(b'E', &body)
}

/// Parse, Bind, Execute, Sync of `sql` on the unnamed statement and portal.
pub(crate) fn extended(sql: &str) -> Vec<u8> {
    let mut parse = vec![0];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    [
        msg(b'P', &parse),
        msg(b'B', b"\0\0\0\0\0\0\0\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]
    .concat()
}

/// The server's answer to [`extended`]: ParseComplete, BindComplete, CommandComplete,
/// ReadyForQuery with `status`.
pub(crate) fn extended_reply(status: u8) -> Vec<u8> {
    [
        msg(b'1', b""),
        msg(b'2', b""),
        complete("SELECT 1"),
        ready(status),
    ]
    .concat()
}
