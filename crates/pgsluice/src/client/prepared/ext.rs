//! The rewriting relay path of transaction mode: a queue of the responses expected from
//! the server, and the client-to-server rewriting of named statements (see the parent
//! module for the design).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::framer::{Framer, Mode, Piece};
use pgsluice_protocol::frontend::{self, tag as ft};
use pgsluice_protocol::ProtocolError;

use super::{ClientStatements, ServerStatements, StatementRegistry, Stmt};
use crate::client::relay::Flow;
use crate::client::state_guard;
use crate::params::ParamSet;

/// Messages up to this size are handled whole on the server-to-client path.
const SMALL_MESSAGE: u32 = 64 * 1024;
/// Simple queries up to this size are checked for session state (larger ones stream).
const GUARDED_QUERY: u32 = 1 << 20;
/// Most bytes read to find the names at the front of a Bind.
const BIND_PREFIX_LIMIT: usize = 16 * 1024;

/// What the server will send next, per message sent to it.
#[derive(Debug)]
enum Expect {
    Parse {
        forward: bool,
        client_name: Option<Box<str>>,
        stmt: Option<Arc<Stmt>>,
        rename: Option<(Box<str>, Box<str>)>,
    },
    Bind,
    DescribeStatement,
    DescribePortal,
    Execute,
    Close {
        forward: bool,
    },
    Sync,
    Query,
    FunctionCall,
    /// A response pgsluice makes up (ParseComplete, CloseComplete) when its turn comes.
    Synth(u8),
}

/// Per-server-connection state for the rewriting relay path.
#[derive(Debug)]
pub struct ExtState {
    /// Statements on this connection.
    pub stmts: ServerStatements,
    queue: VecDeque<Expect>,
    c2s: Framer,
    s2c: Framer,
    /// Bytes ready for the server.
    pub c2s_out: BytesMut,
    /// Bytes ready for the client.
    pub s2c_out: BytesMut,
}

/// What the client-side pass found.
#[derive(Debug, Default)]
pub struct ClientPass {
    /// The client sent Terminate (bytes after it are dropped).
    pub terminated: bool,
}

impl ExtState {
    /// Fresh state for a new server connection.
    pub fn new(max_message: u32, max_prepared: usize) -> Self {
        ExtState {
            stmts: ServerStatements::new(max_prepared),
            queue: VecDeque::new(),
            c2s: Framer::new(max_message),
            s2c: Framer::new(u32::MAX),
            c2s_out: BytesMut::new(),
            s2c_out: BytesMut::new(),
        }
    }

    /// Called when a client takes the connection.
    pub fn begin_checkout(&mut self) {
        self.stmts.checkout_tick = self.stmts.tick + 1;
    }

    /// Nothing buffered, nothing expected: the connection is between messages.
    pub fn quiescent(&self) -> bool {
        self.queue.is_empty()
            && self.c2s_out.is_empty()
            && self.s2c_out.is_empty()
            && self.c2s.at_boundary()
            && self.s2c.at_boundary()
    }

    /// Releases buffer memory of an idle connection.
    pub fn shrink(&mut self) {
        self.c2s.shrink();
        self.s2c.shrink();
        if self.c2s_out.capacity() > 64 * 1024 {
            self.c2s_out = BytesMut::new();
        }
        if self.s2c_out.capacity() > 64 * 1024 {
            self.s2c_out = BytesMut::new();
        }
    }

    /// Rewrites client bytes into `c2s_out` (and synthesised replies into `s2c_out`).
    pub fn client_bytes(
        &mut self,
        data: &[u8],
        registry: &StatementRegistry,
        client: &mut ClientStatements,
        flow: &mut Flow,
    ) -> Result<ClientPass, ProtocolError> {
        let mut pass = ClientPass::default();
        let ExtState {
            stmts,
            queue,
            c2s,
            c2s_out,
            s2c_out,
            ..
        } = self;
        let mut cx = Rewrite {
            out: c2s_out,
            s2c_out,
            queue,
            stmts,
            client,
            registry,
        };
        c2s.feed::<ProtocolError>(
            data,
            |tag, len| match tag {
                ft::PARSE
                | ft::DESCRIBE
                | ft::CLOSE
                | ft::TERMINATE
                | ft::SYNC
                | ft::FLUSH
                | ft::EXECUTE => Mode::Whole,
                ft::BIND => Mode::Prefix {
                    limit: BIND_PREFIX_LIMIT,
                },
                ft::QUERY if len <= GUARDED_QUERY => Mode::Whole,
                _ => Mode::Stream,
            },
            |_, prefix| prefix.iter().filter(|&&b| b == 0).count() >= 2,
            |piece| {
                if pass.terminated {
                    return Ok(());
                }
                match piece {
                    Piece::Whole { tag, body } => {
                        tracing::trace!(tag = %(tag as char), queue = ?cx.queue, "c2s whole");
                        if tag == ft::TERMINATE {
                            pass.terminated = true;
                            return Ok(());
                        }
                        flow.client_tag(tag)?;
                        cx.whole(tag, body)
                    }
                    Piece::Prefix { tag, len, prefix } => {
                        flow.client_tag(tag)?;
                        cx.bind(len, prefix)
                    }
                    Piece::Start { tag, len } => {
                        if tag == ft::COPY_DONE || tag == ft::COPY_FAIL {
                            cx.forget_syncs(flow.syncs_ignored_by_copy());
                        }
                        flow.client_tag(tag)?;
                        cx.expect_for(tag);
                        cx.out.put_u8(tag);
                        cx.out.put_u32(len);
                        Ok(())
                    }
                    Piece::Body(b) => {
                        cx.out.extend_from_slice(b);
                        Ok(())
                    }
                }
            },
        )?;
        Ok(pass)
    }

    /// Processes server bytes into `s2c_out`, dropping and adding replies as queued.
    pub fn server_bytes(
        &mut self,
        data: &[u8],
        flow: &mut Flow,
        client: &mut ClientStatements,
        client_params: &mut ParamSet,
        server_params: &mut ParamSet,
    ) -> Result<(), ProtocolError> {
        let ExtState {
            stmts,
            queue,
            s2c,
            s2c_out,
            ..
        } = self;
        let mut m = MessageCx {
            queue,
            stmts,
            flow,
            client,
            client_params,
            server_params,
        };
        s2c.feed::<ProtocolError>(
            data,
            |_, len| {
                if len <= SMALL_MESSAGE {
                    Mode::Whole
                } else {
                    Mode::Stream
                }
            },
            |_, _| false,
            |piece| match piece {
                Piece::Whole { tag, body } => {
                    tracing::trace!(tag = %(tag as char), queue = ?m.queue, "s2c whole");
                    let forward = m.on_message(tag, Some(body))?;
                    match forward {
                        Forward::Yes => put_message(s2c_out, tag, body),
                        Forward::No => {}
                        Forward::Renamed(from, to) => {
                            let text = String::from_utf8_lossy(body).replace(&*from, &to);
                            put_message(s2c_out, tag, text.as_bytes());
                        }
                    }
                    drain_synth(m.queue, s2c_out);
                    Ok(())
                }
                Piece::Start { tag, len } => {
                    m.on_message(tag, None)?;
                    s2c_out.put_u8(tag);
                    s2c_out.put_u32(len);
                    drain_synth(m.queue, s2c_out);
                    Ok(())
                }
                Piece::Body(b) => {
                    s2c_out.extend_from_slice(b);
                    Ok(())
                }
                Piece::Prefix { .. } => Ok(()),
            },
        )
    }
}

fn put_message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(body.len() as u32 + 4);
    out.extend_from_slice(body);
}

fn drain_synth(queue: &mut VecDeque<Expect>, out: &mut BytesMut) {
    while let Some(Expect::Synth(tag)) = queue.front() {
        out.extend_from_slice(&[*tag, 0, 0, 0, 4]);
        queue.pop_front();
    }
}

enum Forward {
    Yes,
    No,
    Renamed(Box<str>, Box<str>),
}

/// Matches one server message against the queue. `body` is None for streamed messages.
struct MessageCx<'x> {
    queue: &'x mut VecDeque<Expect>,
    stmts: &'x mut ServerStatements,
    flow: &'x mut Flow,
    client: &'x mut ClientStatements,
    client_params: &'x mut ParamSet,
    server_params: &'x mut ParamSet,
}

impl MessageCx<'_> {
    fn on_message(&mut self, tag: u8, body: Option<&[u8]>) -> Result<Forward, ProtocolError> {
        let MessageCx {
            queue,
            stmts,
            flow,
            client,
            client_params,
            server_params,
        } = self;
        use pgsluice_protocol::backend::{parse_parameter_status, TxStatus};
        let mut forward = Forward::Yes;
        match tag {
            b'1' => {
                if let Some(Expect::Parse {
                    forward: f, stmt, ..
                }) = queue.front()
                {
                    if let Some(s) = stmt {
                        s.verified.store(true, Relaxed);
                    }
                    if !f {
                        forward = Forward::No;
                    }
                    queue.pop_front();
                }
            }
            b'2' => {
                if matches!(queue.front(), Some(Expect::Bind)) {
                    queue.pop_front();
                }
            }
            b'n' => {
                if matches!(
                    queue.front(),
                    Some(Expect::DescribeStatement | Expect::DescribePortal)
                ) {
                    queue.pop_front();
                }
            }
            b'I' | b's' => {
                if matches!(queue.front(), Some(Expect::Execute)) {
                    queue.pop_front();
                }
            }
            b'3' => {
                if let Some(Expect::Close { forward: f }) = queue.front() {
                    if !f {
                        forward = Forward::No;
                    }
                    queue.pop_front();
                }
            }
            b'T' => {
                if matches!(
                    queue.front(),
                    Some(Expect::DescribeStatement | Expect::DescribePortal)
                ) {
                    queue.pop_front();
                }
            }
            b'C' => {
                if let Some(b) = body {
                    let tag_text = b.strip_suffix(b"\0").unwrap_or(b);
                    if tag_text == b"DISCARD ALL" || tag_text == b"DEALLOCATE ALL" {
                        stmts.present.clear();
                    }
                }
                if matches!(queue.front(), Some(Expect::Execute)) {
                    queue.pop_front();
                }
            }
            b'Z' => {
                let status = body
                    .and_then(|b| b.first().copied())
                    .and_then(TxStatus::from_byte)
                    .ok_or(ProtocolError::Malformed("ReadyForQuery"))?;
                flow.server_ready(status);
                if matches!(
                    queue.front(),
                    Some(Expect::Sync | Expect::Query | Expect::FunctionCall)
                ) {
                    queue.pop_front();
                }
            }
            b'S' => {
                if let Some(b) = body {
                    let (name, value) = parse_parameter_status(b)?;
                    server_params.set(name, value);
                    client_params.set(name, value);
                }
            }
            b'E' => match queue.front() {
                Some(Expect::Query | Expect::FunctionCall) | None => {}
                Some(_) => {
                    if let Some(Expect::Parse {
                        client_name,
                        stmt,
                        rename,
                        ..
                    }) = queue.front_mut()
                    {
                        if let Some((from, to)) = rename.take() {
                            forward = Forward::Renamed(
                                format!("\"{from}\"").into(),
                                format!("\"{to}\"").into(),
                            );
                        } else if let Some(failed) = stmt {
                            let id = failed.id;
                            stmts.present.remove(&id);
                            // A failed Parse leaves nothing behind: the client name goes too.
                            if let Some(name) = client_name {
                                if client.get(name).is_some_and(|s| s.id == id) {
                                    client.remove(name);
                                }
                            }
                        }
                    }
                    // PostgreSQL skips everything up to the next Sync; so does the queue.
                    while let Some(e) = queue.front() {
                        if matches!(e, Expect::Sync) {
                            break;
                        }
                        queue.pop_front();
                    }
                }
            },
            _ => {}
        }
        Ok(forward)
    }
}

/// The client-to-server rewriting context for one chunk.
struct Rewrite<'x> {
    out: &'x mut BytesMut,
    s2c_out: &'x mut BytesMut,
    queue: &'x mut VecDeque<Expect>,
    stmts: &'x mut ServerStatements,
    client: &'x mut ClientStatements,
    registry: &'x StatementRegistry,
}

impl Rewrite<'_> {
    fn expect_for(&mut self, tag: u8) {
        let e = match tag {
            ft::EXECUTE => Expect::Execute,
            ft::SYNC => Expect::Sync,
            ft::QUERY => Expect::Query,
            ft::FUNCTION_CALL => Expect::FunctionCall,
            _ => return,
        };
        self.queue.push_back(e);
    }

    /// Drops the last `n` Sync entries: PostgreSQL ignored those Syncs in copy-in mode.
    fn forget_syncs(&mut self, mut n: u32) {
        let mut i = self.queue.len();
        while n > 0 && i > 0 {
            i -= 1;
            if matches!(self.queue[i], Expect::Sync) {
                self.queue.remove(i);
                n -= 1;
            }
        }
    }

    fn synth(&mut self, tag: u8) {
        if self.queue.is_empty() {
            self.s2c_out.extend_from_slice(&[tag, 0, 0, 0, 4]);
        } else {
            self.queue.push_back(Expect::Synth(tag));
        }
    }

    /// Makes sure the server holds `stmt`, injecting a Parse (reply swallowed) if not.
    fn ensure(&mut self, stmt: &Arc<Stmt>) {
        if self.stmts.has(stmt.id) {
            self.registry.stats.hits.fetch_add(1, Relaxed);
            return;
        }
        self.registry.stats.misses.fetch_add(1, Relaxed);
        self.evict_for(stmt);
        frontend::parse(self.out, &stmt.server_name, &stmt.query, &stmt.types);
        self.queue.push_back(Expect::Parse {
            forward: false,
            client_name: None,
            stmt: Some(stmt.clone()),
            rename: None,
        });
    }

    fn evict_for(&mut self, stmt: &Stmt) {
        if let Some(victim) = self.stmts.insert(stmt) {
            self.registry.stats.evictions.fetch_add(1, Relaxed);
            frontend::target_message(self.out, ft::CLOSE, b'S', &victim);
            self.queue.push_back(Expect::Close { forward: false });
        }
    }

    fn whole(&mut self, tag: u8, body: &[u8]) -> Result<(), ProtocolError> {
        match tag {
            ft::PARSE => self.parse(body),
            ft::DESCRIBE => {
                let (kind, name) = frontend::parse_target(body)?;
                if kind == b'S' {
                    if let Some(stmt) = self.lookup(name) {
                        self.ensure(&stmt);
                        self.queue.push_back(Expect::DescribeStatement);
                        frontend::target_message(self.out, ft::DESCRIBE, b'S', &stmt.server_name);
                        return Ok(());
                    }
                    self.queue.push_back(Expect::DescribeStatement);
                } else {
                    self.queue.push_back(Expect::DescribePortal);
                }
                put_message(self.out, tag, body);
                Ok(())
            }
            ft::CLOSE => {
                let (kind, name) = frontend::parse_target(body)?;
                if kind == b'S' && !name.is_empty() {
                    self.client.remove(name);
                    self.synth(b'3');
                    return Ok(());
                }
                self.queue.push_back(Expect::Close { forward: true });
                put_message(self.out, tag, body);
                Ok(())
            }
            ft::QUERY => {
                self.expect_for(tag);
                let sql = frontend::parse_query(body)?;
                match state_guard::check(sql) {
                    Some(refusal) => {
                        tracing::info!(what = %refusal.what, "refused session state in transaction mode");
                        frontend::query(self.out, &state_guard::refusal_sql(&refusal));
                    }
                    None => put_message(self.out, tag, body),
                }
                Ok(())
            }
            _ => {
                self.expect_for(tag);
                put_message(self.out, tag, body);
                Ok(())
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<Arc<Stmt>> {
        if name.is_empty() {
            return None;
        }
        self.client.get(name).cloned()
    }

    fn parse(&mut self, body: &[u8]) -> Result<(), ProtocolError> {
        let mut p = frontend::parse_parse(body)?;
        let refused;
        if let Some(r) = state_guard::check(p.query) {
            tracing::info!(what = %r.what, "refused session state in transaction mode");
            refused = state_guard::refusal_sql(&r);
            p.query = &refused;
            p.param_types.clear();
            let mut rewritten = BytesMut::new();
            frontend::parse(&mut rewritten, p.name, p.query, &[]);
            if p.name.is_empty() {
                self.queue.push_back(Expect::Parse {
                    forward: true,
                    client_name: None,
                    stmt: None,
                    rename: None,
                });
                self.out.extend_from_slice(&rewritten);
                return Ok(());
            }
        }
        if p.name.is_empty() {
            self.queue.push_back(Expect::Parse {
                forward: true,
                client_name: None,
                stmt: None,
                rename: None,
            });
            put_message(self.out, ft::PARSE, body);
            return Ok(());
        }
        if let Some(existing) = self.lookup(p.name) {
            // PostgreSQL answers a duplicate name with 42P05 and skips to Sync; let the
            // server do exactly that on its own copy, then show the client's name.
            self.ensure(&existing);
            frontend::parse(self.out, &existing.server_name, p.query, &p.param_types);
            self.queue.push_back(Expect::Parse {
                forward: true,
                client_name: None,
                stmt: None,
                rename: Some((existing.server_name.clone(), p.name.into())),
            });
            return Ok(());
        }
        let stmt = self.registry.intern(p.query, &p.param_types);
        self.client.insert(p.name, stmt.clone());
        if self.stmts.has(stmt.id) {
            self.registry.stats.hits.fetch_add(1, Relaxed);
            self.synth(b'1');
            return Ok(());
        }
        self.registry.stats.misses.fetch_add(1, Relaxed);
        self.evict_for(&stmt);
        frontend::parse(self.out, &stmt.server_name, p.query, &p.param_types);
        self.queue.push_back(Expect::Parse {
            forward: true,
            client_name: Some(p.name.into()),
            stmt: Some(stmt.clone()),
            rename: None,
        });
        Ok(())
    }

    fn bind(&mut self, len: u32, prefix: &[u8]) -> Result<(), ProtocolError> {
        if let Some((portal, name, used)) = frontend::bind_names(prefix)? {
            if let Some(stmt) = self.lookup(name) {
                self.ensure(&stmt);
                let new_len = len as usize - name.len() + stmt.server_name.len();
                self.out.put_u8(ft::BIND);
                self.out.put_u32(new_len as u32);
                self.out.extend_from_slice(portal.as_bytes());
                self.out.put_u8(0);
                self.out.extend_from_slice(stmt.server_name.as_bytes());
                self.out.put_u8(0);
                self.out.extend_from_slice(&prefix[used..]);
                self.queue.push_back(Expect::Bind);
                return Ok(());
            }
        }
        self.out.put_u8(ft::BIND);
        self.out.put_u32(len);
        self.out.extend_from_slice(prefix);
        self.queue.push_back(Expect::Bind);
        Ok(())
    }
}
