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

use super::param_request::{single_text, starts_with_word, Shape};
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
    let (sql, shape) = single_text(request, LISTEN_WORDS)?;
    Some((parse_command(sql)?, shape))
}

/// The first words of the statements handled here.
const LISTEN_WORDS: &[&[u8]] = &[b"listen", b"unlisten"];

/// `sql` as one LISTEN-family statement, if it is exactly that.
fn parse_command(sql: &str) -> Option<ListenCmd> {
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
    Some(cmd)
}

/// A LISTEN-family statement run in two requests through a named prepared statement
/// (drivers that prepare every statement: asyncpg's `fetch`, which `add_listener`
/// uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// `Parse(name, sql) [Describe(S, name)] Sync` (or Flush: then no ReadyForQuery,
    /// asyncpg's way).
    Prepare {
        name: String,
        sql: String,
        describe: bool,
        sync: bool,
    },
    /// `Bind("", name) [Describe(P, "")] Execute("") Sync` of such a statement.
    Execute { name: String, describe: bool },
    /// `Close(S, name) Sync` of such a statement.
    Close { name: String },
}

/// The messages of `request` (tag, body), when it is made of whole ones only.
fn messages(request: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::with_capacity(4);
    let mut rest = request;
    while !rest.is_empty() {
        let h = pgsluice_protocol::frame::parse_header(rest, u32::MAX).ok()??;
        out.push((h.tag, rest.get(5..h.total_len())?));
        rest = &rest[h.total_len()..];
    }
    Some(out)
}

/// The two NUL-terminated strings at the start of `body` (a Bind's portal and
/// statement names, a Close's kind-prefixed name).
fn two_cstrs(body: &[u8]) -> Option<(&str, &str)> {
    let a = body.iter().position(|&b| b == 0)?;
    let rest = &body[a + 1..];
    let b = rest.iter().position(|&b| b == 0)?;
    Some((
        std::str::from_utf8(&body[..a]).ok()?,
        std::str::from_utf8(&rest[..b]).ok()?,
    ))
}

/// The step `request` is, when it is one: a Prepare whose text is one LISTEN-family
/// statement, or, for a client that prepared one (`listening`), an Execute / Close of
/// a named statement (the caller checks that the name is one such statement). Cheap
/// for every other request: a look at its first bytes.
pub(super) fn listen_step(request: &[u8], listening: bool) -> Option<Step> {
    match request.first()? {
        // The text starts after the header and the (non-empty) name.
        b'P' => {
            let name_end = request.get(5..)?.iter().position(|&b| b == 0)? + 5;
            let text = request.get(name_end + 1..)?;
            if name_end == 5 || !LISTEN_WORDS.iter().any(|w| starts_with_word(text, w)) {
                return None;
            }
        }
        b'B' | b'C' if listening => {}
        _ => return None,
    }
    let msgs = messages(request)?;
    match msgs.as_slice() {
        [(b'P', parse), rest @ .., (end @ (b'S' | b'H'), [])] => {
            let p = pgsluice_protocol::frontend::parse_parse(parse).ok()?;
            let describe = match rest {
                [] => false,
                [(b'D', [b'S', d @ ..])] if d.strip_suffix(&[0]) == Some(p.name.as_bytes()) => true,
                _ => return None,
            };
            let sql = std::str::from_utf8(p.query).ok()?;
            parse_command(sql)?;
            Some(Step::Prepare {
                name: p.name.to_owned(),
                sql: sql.to_owned(),
                describe,
                sync: *end == b'S',
            })
        }
        [(b'B', bind), rest @ .., (b'E', [0, ..]), (b'S', [])] => {
            let (portal, name) = two_cstrs(bind)?;
            let describe = match rest {
                [] => false,
                [(b'D', [b'P', 0])] => true,
                _ => return None,
            };
            (portal.is_empty() && !name.is_empty()).then(|| Step::Execute {
                name: name.to_owned(),
                describe,
            })
        }
        [(b'C', [b'S', name @ ..]), (b'S', [])] => {
            let name = std::str::from_utf8(name.strip_suffix(&[0])?).ok()?;
            Some(Step::Close {
                name: name.to_owned(),
            })
        }
        _ => None,
    }
}

/// What PostgreSQL answers to the statement: the extended protocol's steps, then
/// CommandComplete (or the error), then ReadyForQuery (idle).
pub(super) fn answer(cmd: &ListenCmd, shape: Shape, failure: Option<&Failure>) -> BytesMut {
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
    match failure.map(failure_text) {
        Some((code, msg)) => ErrorNotice::error(code, &msg).write(&mut out),
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
        let failure = self.run_command(info, request, &cmd).await;
        self.reply(stream, request, answer(&cmd, shape, failure.as_ref()))
            .await
    }

    /// A step of a LISTEN-family statement run through a named prepared statement;
    /// `None` when `request` is no such step (the ordinary path takes it).
    pub(super) async fn listen_step_request(
        &mut self,
        stream: &mut Stream,
        info: &Arc<ClientInfo>,
        request: &[u8],
        step: Step,
    ) -> Option<Next> {
        let mut out = BytesMut::with_capacity(64);
        match step {
            Step::Prepare {
                name,
                sql,
                describe,
                sync,
            } => {
                let hub = match self.hub_for_listen(request) {
                    Ok(hub) => hub,
                    Err(_) => return None,
                };
                self.listening = true;
                hub.remember_statement(info.id, &name, &sql);
                backend::parse_complete(&mut out);
                if describe {
                    backend::parameter_description(&mut out, &[]);
                    backend::no_data(&mut out);
                }
                if !sync {
                    return Some(self.reply(stream, request, out).await);
                }
            }
            Step::Execute { name, describe } => {
                let sql = self.find_statement(&name)?;
                let cmd = parse_command(&sql)?;
                let failure = self.run_command(info, request, &cmd).await;
                backend::bind_complete(&mut out);
                if describe {
                    backend::no_data(&mut out);
                }
                match failure.as_ref().map(failure_text) {
                    Some((code, msg)) => ErrorNotice::error(code, &msg).write(&mut out),
                    None => backend::command_complete(&mut out, cmd.tag()),
                }
            }
            Step::Close { name } => {
                let mut found = false;
                self.each_hub(|hub, id| found |= hub.forget_statement(id, &name));
                if !found {
                    return None;
                }
                out.extend_from_slice(&[b'3', 0, 0, 0, 4]);
            }
        }
        backend::ready_for_query(&mut out, TxStatus::Idle);
        Some(self.reply(stream, request, out).await)
    }

    /// The text of the client's LISTEN-family statement `name`, if it prepared one here.
    fn find_statement(&self, name: &str) -> Option<String> {
        let mut found = None;
        self.each_hub(|hub, id| {
            if found.is_none() {
                found = hub.statement(id, name);
            }
        });
        found
    }

    /// Sends `reply` for `request`.
    async fn reply(&mut self, stream: &mut Stream, request: &[u8], reply: BytesMut) -> Next {
        self.traffic.bytes_in += request.len() as u64;
        self.traffic.bytes_out += reply.len() as u64;
        match tokio::io::AsyncWriteExt::write_all(stream, &reply).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::End(None, "client connection error"),
        }
    }

    /// Runs `cmd` on the hub; why it failed, if it did.
    async fn run_command(
        &mut self,
        info: &Arc<ClientInfo>,
        request: &[u8],
        cmd: &ListenCmd,
    ) -> Option<Failure> {
        match cmd {
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

    /// The client's DISCARD ALL ran: as in PostgreSQL, it unlistens everything.
    pub(super) fn unlisten_after_discard(&self) {
        self.each_hub(|hub, id| hub.unlisten_all(id));
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

impl Drop for Session {
    /// The session is the client's guard in the notification hubs: when it ends, the
    /// client leaves every hub it subscribed in (its channels, queue and statements).
    fn drop(&mut self) {
        self.each_hub(|hub, id| hub.remove(id));
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

    #[test]
    fn recognises_the_steps_of_a_named_statement() {
        // What asyncpg's fetch('LISTEN "apg"') sends first: Parse, Describe, Flush.
        let prepare = b"P\0\0\0&__asyncpg_stmt_1__\0LISTEN \"apg\"\0\0\0D\0\0\0\x18S__asyncpg_stmt_1__\0H\0\0\0\x04";
        assert_eq!(
            listen_step(prepare, false),
            Some(Step::Prepare {
                name: "__asyncpg_stmt_1__".into(),
                sql: "LISTEN \"apg\"".into(),
                describe: true,
                sync: false,
            })
        );
        let mut bind = BytesMut::new();
        let mut msg = |tag: u8, body: &[u8]| {
            bind.extend_from_slice(&[tag]);
            bind.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            bind.extend_from_slice(body);
        };
        msg(b'B', b"\0s1\0\0\0\0\0\0\0");
        msg(b'E', &[0, 0, 0, 0, 0]);
        msg(b'S', &[]);
        let exec = Step::Execute {
            name: "s1".into(),
            describe: false,
        };
        assert_eq!(listen_step(&bind, true), Some(exec));
        // Only for a client that prepared one.
        assert_eq!(listen_step(&bind, false), None);
        // Other texts, unnamed statements: not this path.
        assert_eq!(listen_step(&extended("LISTEN x", None), true), None);
        assert_eq!(listen_step(&query("LISTEN x"), true), None);
    }

    #[test]
    fn an_overflowing_client_is_told_why_it_is_dropped() {
        let (n, reason) = super::super::stop_notice(super::super::Stop::Overflow);
        assert_eq!(n.code, SqlState::OUT_OF_MEMORY);
        assert_eq!(n.severity, pgsluice_protocol::backend::Severity::Fatal);
        assert!(
            n.message.contains("notification queue full"),
            "{}",
            n.message
        );
        assert_eq!(reason, "notification queue full");
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
        let e = Failure::Unreachable("no".into());
        assert_eq!(tags(&answer(&l, Shape::Simple, Some(&e))), "EZ");
        let done = answer(&ListenCmd::UnlistenAll, Shape::Simple, None);
        assert!(done.windows(9).any(|w| w == b"UNLISTEN\0"));
        assert!(done.ends_with(b"Z\0\0\0\x05I"));
    }
}
