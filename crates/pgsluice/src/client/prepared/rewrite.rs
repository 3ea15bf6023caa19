//! The client-to-server side of the rewriting path: named statements are mapped to
//! their server names (and injected where a connection lacks them), client Close of a
//! statement is answered locally, and session-state SQL is refused.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::frontend::{self, tag as ft};
use pgsluice_protocol::ProtocolError;

use super::ext::Expect;
use super::{ClientStatements, ServerStatements, StatementRegistry, Stmt};
use crate::client::state_guard;

/// What a handler did with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Emit {
    /// Nothing: the message goes to the server unchanged (the caller sends it).
    Same,
    /// Handled: what replaces it, if anything, is in the out buffer.
    Done,
}

/// The client-to-server rewriting context for one chunk.
pub(super) struct Rewrite<'x> {
    out: &'x mut BytesMut,
    pub(super) s2c_out: &'x mut BytesMut,
    pub(super) queue: &'x mut VecDeque<Expect>,
    pub(super) stmts: &'x mut ServerStatements,
    pub(super) client: &'x mut ClientStatements,
    pub(super) registry: &'x StatementRegistry,
    /// The bytes read, when they are handled in place (see [`Rewrite::pass_run`]).
    src: &'x [u8],
    /// The stretch of `src` (start, end) that goes on unchanged and is not in `out` yet.
    run: Option<(usize, usize)>,
}

impl<'x> Rewrite<'x> {
    pub(super) fn new(
        out: &'x mut BytesMut,
        s2c_out: &'x mut BytesMut,
        queue: &'x mut VecDeque<Expect>,
        stmts: &'x mut ServerStatements,
        client: &'x mut ClientStatements,
        registry: &'x StatementRegistry,
        src: &'x [u8],
    ) -> Self {
        Rewrite {
            out,
            s2c_out,
            queue,
            stmts,
            client,
            registry,
            src,
            run: None,
        }
    }

    /// The out buffer, after the pending run of unchanged bytes: every write goes
    /// through here, so output keeps the order of the input.
    pub(super) fn out(&mut self) -> &mut BytesMut {
        if let Some((a, b)) = self.run.take() {
            self.out.extend_from_slice(&self.src[a..b]);
        }
        self.out
    }

    /// Marks `src[start..end]` (one message) as going on unchanged, extending the run.
    pub(super) fn pass_run(&mut self, start: usize, end: usize) {
        self.run = Some((self.run.map_or(start, |(a, _)| a), end));
    }

    /// True when all of `src` goes on unchanged and nothing was written: the caller
    /// may send the bytes as read.
    pub(super) fn all_unchanged(&self) -> bool {
        self.out.is_empty() && self.run == Some((0, self.src.len()))
    }

    pub(super) fn expect_for(&mut self, tag: u8) {
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
    pub(super) fn forget_syncs(&mut self, mut n: u32) {
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
        frontend::parse(self.out(), &stmt.server_name, &stmt.query, &stmt.types);
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
            frontend::target_message(self.out(), ft::CLOSE, b'S', &victim);
            self.queue.push_back(Expect::Close { forward: false });
        }
    }

    /// Handles a whole client message (any type but Bind and Terminate).
    pub(super) fn whole(&mut self, tag: u8, body: &[u8]) -> Result<Emit, ProtocolError> {
        match tag {
            ft::PARSE => self.parse(body),
            ft::DESCRIBE => {
                let (kind, name) = frontend::parse_target(body)?;
                if kind == b'S' {
                    if let Some(stmt) = self.lookup(name) {
                        self.ensure(&stmt);
                        self.queue.push_back(Expect::DescribeStatement);
                        let name = &stmt.server_name;
                        frontend::target_message(self.out(), ft::DESCRIBE, b'S', name);
                        return Ok(Emit::Done);
                    }
                    self.queue.push_back(Expect::DescribeStatement);
                } else {
                    self.queue.push_back(Expect::DescribePortal);
                }
                Ok(Emit::Same)
            }
            ft::CLOSE => {
                let (kind, name) = frontend::parse_target(body)?;
                if kind == b'S' && !name.is_empty() {
                    self.client.remove(name);
                    self.synth(b'3');
                    return Ok(Emit::Done);
                }
                self.queue.push_back(Expect::Close { forward: true });
                Ok(Emit::Same)
            }
            ft::QUERY => {
                self.expect_for(tag);
                let sql = frontend::parse_query(body)?;
                match state_guard::check(sql) {
                    Some(refusal) => {
                        tracing::info!(what = %refusal.what, "refused session state in transaction mode");
                        frontend::query(self.out(), &state_guard::refusal_sql(&refusal));
                        Ok(Emit::Done)
                    }
                    None => Ok(Emit::Same),
                }
            }
            _ => {
                self.expect_for(tag);
                Ok(Emit::Same)
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<Arc<Stmt>> {
        if name.is_empty() {
            return None;
        }
        self.client.get(name).cloned()
    }

    fn parse(&mut self, body: &[u8]) -> Result<Emit, ProtocolError> {
        let mut p = frontend::parse_parse(body)?;
        let refused = state_guard::check(p.query).map(|r| {
            tracing::info!(what = %r.what, "refused session state in transaction mode");
            state_guard::refusal_sql(&r)
        });
        if let Some(sql) = &refused {
            p.query = sql.as_bytes();
            p.param_types.clear();
        }
        if p.name.is_empty() {
            self.queue.push_back(Expect::Parse {
                forward: true,
                client_name: None,
                stmt: None,
                rename: None,
            });
            if refused.is_none() {
                return Ok(Emit::Same);
            }
            frontend::parse(self.out(), "", p.query, &[]);
            return Ok(Emit::Done);
        }
        if let Some(existing) = self.lookup(p.name) {
            // PostgreSQL answers a duplicate name with 42P05 and skips to Sync; let the
            // server do exactly that on its own copy, then show the client's name.
            self.ensure(&existing);
            frontend::parse(self.out(), &existing.server_name, p.query, &p.param_types);
            self.queue.push_back(Expect::Parse {
                forward: true,
                client_name: None,
                stmt: None,
                rename: Some((existing.server_name.clone(), p.name.into())),
            });
            return Ok(Emit::Done);
        }
        let stmt = self.registry.intern(p.query, &p.param_types);
        self.client.insert(p.name, stmt.clone());
        if self.stmts.has(stmt.id) {
            self.registry.stats.hits.fetch_add(1, Relaxed);
            self.synth(b'1');
            return Ok(Emit::Done);
        }
        self.registry.stats.misses.fetch_add(1, Relaxed);
        self.evict_for(&stmt);
        frontend::parse(self.out(), &stmt.server_name, p.query, &p.param_types);
        self.queue.push_back(Expect::Parse {
            forward: true,
            client_name: Some(p.name.into()),
            stmt: Some(stmt.clone()),
            rename: None,
        });
        Ok(Emit::Done)
    }

    /// Handles a Bind from its declared length and the front of its body (at least the
    /// portal and statement names when they are short; the rest follows unchanged).
    pub(super) fn bind(&mut self, len: u32, prefix: &[u8]) -> Result<Emit, ProtocolError> {
        if let Some((portal, name, used)) = frontend::bind_names(prefix)? {
            if let Some(stmt) = self.lookup(name) {
                self.ensure(&stmt);
                let new_len = len as usize - name.len() + stmt.server_name.len();
                let out = self.out();
                out.put_u8(ft::BIND);
                out.put_u32(new_len as u32);
                out.extend_from_slice(portal.as_bytes());
                out.put_u8(0);
                out.extend_from_slice(stmt.server_name.as_bytes());
                out.put_u8(0);
                out.extend_from_slice(&prefix[used..]);
                self.queue.push_back(Expect::Bind);
                return Ok(Emit::Done);
            }
        }
        self.queue.push_back(Expect::Bind);
        Ok(Emit::Same)
    }
}
