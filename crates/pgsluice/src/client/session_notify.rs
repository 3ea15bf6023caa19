//! LISTEN / UNLISTEN of a client whose pool shares server connections, answered
//! through the pool's notification hub ([`crate::notify`]), and the delivery of what
//! the hub queued for the client while it is idle.
//!
//! Only a request that is exactly one such statement, outside a transaction block,
//! comes here (a Query message, or the unnamed statement's Parse/Bind/[Describe]/
//! Execute/Sync); anything else with a LISTEN in it takes the ordinary path, where
//! the state guard refuses it.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use pg_query::NodeEnum;
use pgsluice_protocol::backend::{self, ErrorNotice, TxStatus};
use pgsluice_protocol::SqlState;
use tokio::io::AsyncWrite;

use super::param_request::{single_text, Shape};
use super::Next;
use super::StopSignal;
use super::{IdleEnd, Session};
use crate::net::Stream;
use crate::notify::{Failure, Mailbox, NotifyHub};
use crate::pool::listing::ClientInfo;
use crate::router::{Target, Work};

/// A LISTEN-family statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ListenCmd {
    /// `LISTEN channel`.
    Listen(String),
    /// `UNLISTEN channel`.
    Unlisten(String),
    /// `UNLISTEN *`.
    UnlistenAll,
}

impl ListenCmd {
    fn tag(&self) -> &'static str {
        match self {
            ListenCmd::Listen(_) => "LISTEN",
            ListenCmd::Unlisten(_) | ListenCmd::UnlistenAll => "UNLISTEN",
        }
    }
}

/// The LISTEN or UNLISTEN `request` is made of, when it is exactly one such statement
/// (PostgreSQL's parser decides), and how it came.
pub(super) fn listen_command(request: &[u8]) -> Option<(ListenCmd, Shape)> {
    let (sql, shape) = single_text(request, &[b"listen", b"unlisten"])?;
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).ok()?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    let cmd = match raw.stmt.as_ref()?.node.as_ref()? {
        NodeEnum::ListenStmt(l) => ListenCmd::Listen(l.conditionname.clone()),
        // An empty name is `*`.
        NodeEnum::UnlistenStmt(u) if u.conditionname.is_empty() => ListenCmd::UnlistenAll,
        NodeEnum::UnlistenStmt(u) => ListenCmd::Unlisten(u.conditionname.clone()),
        _ => return None,
    };
    Some((cmd, shape))
}

/// What PostgreSQL answers to the statement: the extended protocol's steps, then
/// CommandComplete (or the error), then ReadyForQuery (idle).
pub(super) fn answer(cmd: &ListenCmd, shape: Shape, error: Option<ErrorNotice<'_>>) -> BytesMut {
    let mut out = BytesMut::with_capacity(64);
    if let Shape::Extended { describe } = shape {
        backend::parse_complete(&mut out);
        backend::bind_complete(&mut out);
        match describe {
            Some(b'S') => {
                backend::parameter_description(&mut out, &[]);
                backend::no_data(&mut out);
            }
            Some(_) => backend::no_data(&mut out),
            None => {}
        }
    }
    match error {
        Some(e) => e.write(&mut out),
        None => backend::command_complete(&mut out, cmd.tag()),
    }
    backend::ready_for_query(&mut out, TxStatus::Idle);
    out
}

/// What the client is told when its LISTEN could not be done.
fn failure_text(f: &Failure) -> (SqlState, String) {
    match f {
        Failure::Rejected { code, message } => (
            crate::error::sqlstate_or(code, SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
            format!("LISTEN failed on the server ({code}): {message}"),
        ),
        Failure::Unreachable(why) => (
            SqlState::UNABLE_TO_CONNECT,
            format!(
                "could not LISTEN: pgsluice's notification listener cannot reach the server: {why}"
            ),
        ),
        Failure::ShuttingDown => (
            SqlState::ADMIN_SHUTDOWN,
            "could not LISTEN: pgsluice is shutting down".to_owned(),
        ),
    }
}

impl Session {
    /// Runs a LISTEN / UNLISTEN request on the hub and answers it; the client stays
    /// connected whatever the outcome (unless writing to it fails).
    pub(super) async fn listen_request(
        &mut self,
        stream: &mut Stream,
        info: &Arc<ClientInfo>,
        request: &[u8],
        cmd: ListenCmd,
        shape: Shape,
    ) -> Next {
        let failure = match &cmd {
            ListenCmd::Listen(ch) => match self.hub_for_listen(request) {
                Ok(hub) => {
                    self.listening = true;
                    let mailbox = || info.clone() as Arc<dyn Mailbox>;
                    hub.listen(info.id, mailbox, ch).await.err()
                }
                Err(f) => Some(f),
            },
            ListenCmd::Unlisten(ch) => {
                self.each_hub(|hub, id| hub.unlisten(id, ch));
                None
            }
            ListenCmd::UnlistenAll => {
                self.each_hub(|hub, id| hub.unlisten_all(id));
                None
            }
        };
        let text = failure.as_ref().map(failure_text);
        let error = text
            .as_ref()
            .map(|(code, msg)| ErrorNotice::error(*code, msg));
        let reply = answer(&cmd, shape, error);
        self.traffic.bytes_in += request.len() as u64;
        self.traffic.bytes_out += reply.len() as u64;
        match tokio::io::AsyncWriteExt::write_all(stream, &reply).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::End(None, "client connection error"),
        }
    }

    /// The hub a LISTEN goes to: that of the pool a write would go to (the primary of
    /// a replicated database).
    fn hub_for_listen(&self, request: &[u8]) -> Result<Arc<NotifyHub>, Failure> {
        match self.route.target(Work::unclassified(request)) {
            Target::One(pool) => Ok(pool.notify_hub(&self.ctx.shutdown)),
            #[allow(unreachable_patterns)]
            _ => Err(Failure::Unreachable(
                "no primary host is available".to_owned(),
            )),
        }
    }

    /// Calls `f` with every hub the client may be subscribed to (those of its route's
    /// pools; one, but for a replicated database whose primary moved) and its id.
    fn each_hub(&self, mut f: impl FnMut(&NotifyHub, u64)) {
        if !self.listening {
            return;
        }
        let id = self.client_id();
        for pool in self.route.pools() {
            if let Some(hub) = pool.notify_hub_if_any() {
                f(hub, id);
            }
        }
    }

    /// The client's id (that of its admin entry: its cancel key's process id).
    fn client_id(&self) -> u64 {
        self.cancel_key().0 as u64
    }

    /// The session ends: the client leaves every hub it subscribed in.
    pub(super) fn leave_hubs(&mut self) {
        self.each_hub(|hub, id| hub.remove(id));
        self.listening = false;
    }

    /// Writes what the hub queued for the idle client. Stops (with why) when the client
    /// is stopped meanwhile (a client that does not read is killed when its queue
    /// overflows) or its connection fails.
    pub(super) async fn deliver(
        &mut self,
        stream: &mut Stream,
        stop: &mut StopSignal,
    ) -> Result<(), IdleEnd> {
        stop.info.take_mail();
        let mut out = BytesMut::new();
        let mut n = 0;
        self.each_hub(|hub, id| n += hub.drain(id, &mut out));
        if n == 0 {
            return Ok(());
        }
        self.traffic.bytes_out += out.len() as u64;
        let mut written = 0;
        poll_fn(|cx| {
            if let Poll::Ready(why) = std::pin::Pin::new(&mut *stop).poll(cx) {
                stop.fired = Some(why);
                return Poll::Ready(Err(IdleEnd::Stopped(why)));
            }
            while written < out.len() {
                match std::pin::Pin::new(&mut *stream).poll_write(cx, &out[written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(IdleEnd::Closed))
                    }
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsluice_protocol::frontend;

    fn query(sql: &str) -> BytesMut {
        let mut b = BytesMut::new();
        frontend::query(&mut b, sql);
        b
    }

    /// Parse/Bind/[Describe]/Execute/Sync of the unnamed statement.
    fn extended(sql: &str, describe: Option<u8>) -> BytesMut {
        let mut b = BytesMut::new();
        let mut msg = |tag: u8, body: &[u8]| {
            b.extend_from_slice(&[tag]);
            b.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            b.extend_from_slice(body);
        };
        let mut parse = vec![0];
        parse.extend_from_slice(sql.as_bytes());
        parse.extend_from_slice(&[0, 0, 0]);
        msg(b'P', &parse);
        msg(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]);
        if let Some(d) = describe {
            msg(b'D', &[d, 0]);
        }
        msg(b'E', &[0, 0, 0, 0, 0]);
        msg(b'S', &[]);
        b
    }

    #[test]
    fn recognises_exactly_one_listen_statement() {
        let l = |s: &str| listen_command(&query(s)).map(|(c, _)| c);
        assert_eq!(l("LISTEN foo"), Some(ListenCmd::Listen("foo".into())));
        assert_eq!(
            l("  listen \"Foo Bar\";"),
            Some(ListenCmd::Listen("Foo Bar".into()))
        );
        assert_eq!(l("unlisten foo"), Some(ListenCmd::Unlisten("foo".into())));
        assert_eq!(l("UNLISTEN *"), Some(ListenCmd::UnlistenAll));
        assert_eq!(l("listen a; listen b"), None);
        assert_eq!(l("listen a; select 1"), None);
        assert_eq!(l("listenx a"), None);
        assert_eq!(l("select 1"), None);
        assert_eq!(l("listen"), None);
        // Followed by more bytes than the one message: not this path.
        let mut two = query("listen a");
        two.extend_from_slice(&query("select 1"));
        assert_eq!(listen_command(&two), None);
    }

    #[test]
    fn recognises_the_extended_shapes() {
        for d in [None, Some(b'S'), Some(b'P')] {
            let (cmd, shape) = listen_command(&extended("LISTEN x", d)).unwrap();
            assert_eq!(cmd, ListenCmd::Listen("x".into()));
            assert_eq!(shape, Shape::Extended { describe: d });
        }
    }

    /// The message tags of `bytes`.
    fn tags(bytes: &[u8]) -> String {
        let mut b = BytesMut::from(bytes);
        let mut out = String::new();
        while let Some(m) = pgsluice_protocol::frame::split_message(&mut b, 1 << 20).unwrap() {
            out.push(m.tag as char);
        }
        out
    }

    #[test]
    fn answers_as_postgresql_does() {
        let l = ListenCmd::Listen("x".into());
        assert_eq!(tags(&answer(&l, Shape::Simple, None)), "CZ");
        let ext = |d| Shape::Extended { describe: d };
        assert_eq!(tags(&answer(&l, ext(None), None)), "12CZ");
        assert_eq!(tags(&answer(&l, ext(Some(b'P')), None)), "12nCZ");
        assert_eq!(tags(&answer(&l, ext(Some(b'S')), None)), "12tnCZ");
        let e = ErrorNotice::error(SqlState::UNABLE_TO_CONNECT, "no");
        assert_eq!(tags(&answer(&l, Shape::Simple, Some(e))), "EZ");
        let done = answer(&ListenCmd::UnlistenAll, Shape::Simple, None);
        assert!(done.windows(9).any(|w| w == b"UNLISTEN\0"));
        assert!(done.ends_with(b"Z\0\0\0\x05I"));
    }
}
