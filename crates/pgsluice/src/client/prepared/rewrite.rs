//! The client-to-server side of the rewriting path: named statements are mapped to
//! their server names (and injected where a connection lacks them), client Close of a
//! statement is answered locally, SQL-level prepared statements are renamed
//! ([`super::sql`]), and session-state SQL that cannot be carried is refused.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::frontend::{self, tag as ft};
use pgsluice_protocol::ProtocolError;

use super::book::{Book, Expect, Named, Plain, Rename, Synth, HARMLESS_TEXT};
use super::server::Presence;
use super::sql;
use super::sql_parse;
use super::sql_query::SqlQuery;
use super::{ClientStatements, Need, StatementRegistry, Stmt};
use crate::classify::session::{analyze, Effect};
use crate::client::state_guard;

/// What a handler did with one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Emit {
    /// Nothing: the message goes to the server unchanged (the caller sends it).
    Same,
    /// Handled: what replaces it, if anything, is in the out buffer.
    Done,
}

/// What the session-state guard made of a SQL text.
enum Guarded {
    /// It goes as it is.
    Same,
    /// It is replaced by this statement, which raises the refusal.
    Refused(String),
    /// It is rewritten for SQL-level prepared statements.
    Sql(Vec<u8>, SqlQuery),
    /// (A Parse) its text is this one, which runs this SQL-level statement.
    Renamed(Vec<u8>, Option<Need>),
}

/// A Bind or Describe of `r`, whose SQL-level statement is no longer the client's, goes
/// to a statement no server has: 26000 under the client's name for `r`.
fn stale(r: Rename) -> Rename {
    Rename {
        stmt: sql_parse::absent(),
        name: r.name,
    }
}

/// The client-to-server rewriting context for one chunk.
pub(super) struct Rewrite<'x> {
    out: &'x mut BytesMut,
    pub(super) s2c_out: &'x mut BytesMut,
    pub(super) book: &'x mut Book,
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
        book: &'x mut Book,
        client: &'x mut ClientStatements,
        registry: &'x StatementRegistry,
        src: &'x [u8],
    ) -> Self {
        Rewrite {
            out,
            s2c_out,
            book,
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

    /// Reads a SQL text's session effects (`client::state_guard`): records the settings
    /// it changes, or returns the SQL that refuses it. SQL-level prepared statements
    /// are renamed: all three in a simple query (`simple`), EXECUTE in a Parse
    /// (PREPARE and DEALLOCATE are refused there).
    fn guard(&mut self, sql: &[u8], simple: bool) -> Guarded {
        // What `analyze` finds depends on the text alone, and a pooled application
        // repeats its statements: the last harmless text of this connection is known.
        if self.book.harmless == sql {
            return Guarded::Same;
        }
        let analysis = analyze(sql);
        if analysis.is_empty() {
            if sql.len() <= HARMLESS_TEXT {
                self.book.harmless.clear();
                self.book.harmless.extend_from_slice(sql);
            }
            return Guarded::Same;
        }
        // The configuration is read only for a SET of a parameter not tracked anyway.
        let untracked = analysis
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Set(n) if crate::params::ParamSet::index(n).is_none()));
        let extra = if untracked {
            self.registry.tracked_extra()
        } else {
            None
        };
        let extra = extra.as_deref().map_or(&[][..], Vec::as_slice);
        let judged = state_guard::judge(&analysis, extra, true);
        let planned = judged.and_then(|carry| {
            let guarded = if simple {
                match sql::plan(sql, &analysis, self.book, self.client, self.registry)? {
                    Some((text, q)) => Guarded::Sql(text, q),
                    None => Guarded::Same,
                }
            } else {
                match sql_parse::plan_parse(sql, &analysis, self.book, self.client)? {
                    Some((text, needs)) => Guarded::Renamed(text, needs),
                    None => Guarded::Same,
                }
            };
            Ok((carry, guarded))
        });
        match planned {
            Ok((carry, guarded)) => {
                self.book.carry.merge(carry);
                guarded
            }
            Err(r) => {
                tracing::info!(what = %r.what, "refused session state in transaction mode");
                Guarded::Refused(state_guard::refusal_sql(&r))
            }
        }
    }

    /// A named statement changes the session each time it runs, not only in the run
    /// that brought its Parse: a Bind of one that sets or resets a carried parameter
    /// (a driver's cached `select set_config('app.x', $1, false)`) records it again,
    /// so that the value is read back after this run too. Without this the server
    /// connection would hold a value pgsluice does not know of: the client's own
    /// value lost on its next connection, or handed to the next client.
    fn carry_again(&mut self, stmt: &Stmt) {
        let analysis = analyze(&stmt.query);
        if analysis.is_empty() {
            return;
        }
        let extra = self.registry.tracked_extra();
        let extra = extra.as_deref().map_or(&[][..], Vec::as_slice);
        // A text the guard refuses never reaches a server under this name (its Parse
        // sent the refusal instead), so only the carried effects matter here.
        if let Ok(carry) = state_guard::judge(&analysis, extra, true) {
            self.book.carry.merge(carry);
        }
    }

    /// For a statement whose text EXECUTEs a SQL-level one: true when the client's name
    /// still stands for that one and it is (made) present here, false when not.
    fn needs_met(&mut self, stmt: &Stmt) -> bool {
        let Some((name, dep)) = &stmt.needs else {
            return true;
        };
        match sql_parse::current(self.book, self.client, name) {
            Some((_, now)) if Arc::ptr_eq(&now, dep) => self.ensure_sql(dep),
            _ => false,
        }
    }

    /// Makes the SQL-level statement `stmt` present on the server for the next message
    /// (a Parse, Bind or Describe of a text that EXECUTEs it), with a simple query of
    /// pgsluice's own whose answer is swallowed. Only where a query can go in without
    /// changing the client's transaction (nothing in flight, no extended-protocol
    /// message since the last Sync). Returns false when it is not present and cannot be
    /// made so: the caller makes the message fail rather than have the server parse the
    /// text without the statement (it would describe it as returning no rows).
    fn ensure_sql(&mut self, stmt: &Arc<Stmt>) -> bool {
        let presence = self.book.presence(stmt);
        if presence == Presence::Present {
            self.registry.stats.hits.fetch_add(1, Relaxed);
            return true;
        }
        if !self.book.can_put_query() {
            return false;
        }
        self.registry.stats.misses.fetch_add(1, Relaxed);
        self.book.counts.server_parses += 1;
        let (text, q) = sql_parse::put_in(stmt, presence);
        self.sql_query(&text, q);
        true
    }

    /// Sends a simple query rewritten for SQL-level prepared statements, after the
    /// Closes it needs.
    fn sql_query(&mut self, text: &[u8], q: SqlQuery) {
        let clears = q.clears.len();
        // None: the server skips it (an error earlier in the pipeline), nothing planned.
        if let Some(closes) = self.book.push_sql(q) {
            let evicted = closes.len().saturating_sub(clears) as u64;
            self.registry.stats.evictions.fetch_add(evicted, Relaxed);
            for name in closes {
                frontend::target_message(self.out(), ft::CLOSE, b'S', &name);
            }
        }
        let out = self.out();
        out.put_u8(ft::QUERY);
        out.put_u32(text.len() as u32 + 5);
        out.extend_from_slice(text);
        out.put_u8(0);
    }

    pub(super) fn expect_for(&mut self, tag: u8) {
        match tag {
            ft::EXECUTE => self.book.push_plain(Plain::Execute),
            ft::SYNC => self.book.push_plain(Plain::Sync),
            ft::QUERY => self.book.push_plain(Plain::Query),
            ft::FUNCTION_CALL => self.book.push(Expect::FunctionCall),
            _ => {}
        }
    }

    /// A reply made up for a client message, sent in its turn (at once when nothing is
    /// in flight).
    fn synth(&mut self, s: Synth) {
        self.book.push(Expect::Synth(s));
        if self.book.queued().len() == 1 && !self.book.counting() {
            self.book.drain_synth(self.s2c_out, self.client);
        }
    }

    /// Sends a Parse of `stmt` under its server name (`query` is the text to send:
    /// the client's, or the interned one), queued as `e`; closes what the bound asks.
    fn send_parse(&mut self, stmt: &Stmt, query: &[u8], types: &[u32], e: Expect) {
        self.book.counts.server_parses += 1;
        frontend::parse(self.out(), &stmt.server_name, query, types);
        self.book.push(e);
        if let Some((id, victim)) = self.book.stmts.victim() {
            self.registry.stats.evictions.fetch_add(1, Relaxed);
            frontend::target_message(self.out(), ft::CLOSE, b'S', &victim);
            self.book.push(Expect::Close {
                forward: false,
                evict: Some(id),
            });
        }
    }

    /// Prepares for a Parse of `stmt` that creates it: when an earlier Sync window's
    /// Parse of it is still unanswered, the server may or may not hold it, so it is
    /// closed first (Close of a missing statement is no error) and parsed again.
    fn clear_uncertain(&mut self, stmt: &Stmt, presence: Presence) {
        if presence == Presence::Uncertain {
            frontend::target_message(self.out(), ft::CLOSE, b'S', &stmt.server_name);
            self.book.push(Expect::Close {
                forward: false,
                evict: Some(stmt.id),
            });
        }
    }

    /// Makes sure the server holds `stmt` for the next message, injecting a Parse
    /// (reply swallowed) if not.
    fn ensure(&mut self, stmt: &Arc<Stmt>) {
        let presence = self.book.presence(stmt);
        if presence == Presence::Present {
            self.registry.stats.hits.fetch_add(1, Relaxed);
            return;
        }
        self.registry.stats.misses.fetch_add(1, Relaxed);
        self.clear_uncertain(stmt, presence);
        let e = Expect::Parse {
            forward: false,
            stmt: Some(stmt.clone()),
            client: None,
            creates: true,
            tied: false,
        };
        self.send_parse(stmt, &stmt.query, &stmt.types, e);
    }

    /// The statement a Bind or Describe names, made present on the server when the
    /// name is sure to exist. A name resting on an unanswered Parse of an earlier Sync
    /// window is not: its server statement exists exactly when that Parse succeeded,
    /// as the name does in PostgreSQL, so nothing is injected for it.
    fn target(&mut self, name: &str) -> Option<Rename> {
        match self.book.named(self.client, name) {
            Named::Unknown | Named::Closing { prior: None } => None,
            Named::Known { rename, certain } => {
                if !self.needs_met(&rename.stmt) {
                    return Some(stale(rename));
                }
                if certain {
                    self.ensure(&rename.stmt);
                }
                Some(rename)
            }
            // Should that Close be skipped, the name still exists (PostgreSQL skips
            // it with the rest); if not, this may succeed where PostgreSQL refuses.
            Named::Closing {
                prior: Some(rename),
            } => {
                if !self.needs_met(&rename.stmt) {
                    return Some(stale(rename));
                }
                self.ensure(&rename.stmt);
                Some(rename)
            }
        }
    }

    /// Handles a whole client message (any type but Bind and Terminate).
    pub(super) fn whole(&mut self, tag: u8, body: &[u8]) -> Result<Emit, ProtocolError> {
        match tag {
            ft::PARSE => self.parse(body),
            ft::DESCRIBE => {
                let (kind, name) = frontend::parse_target(body)?;
                if kind != b'S' {
                    self.book.push_plain(Plain::DescribePortal);
                    return Ok(Emit::Same);
                }
                match self.target(name) {
                    Some(r) => {
                        let server_name = r.stmt.server_name.clone();
                        self.book.push(Expect::DescribeStatement(Some(r)));
                        frontend::target_message(self.out(), ft::DESCRIBE, b'S', &server_name);
                        Ok(Emit::Done)
                    }
                    // Unnamed, or a name the client does not have: the server answers
                    // (26000 under the client's own name, as PostgreSQL would).
                    None => {
                        self.book.push_plain(Plain::DescribeStatement);
                        Ok(Emit::Same)
                    }
                }
            }
            ft::CLOSE => {
                let (kind, name) = frontend::parse_target(body)?;
                if kind == b'S' && !name.is_empty() {
                    let prior = self.book.before_close(self.client, name);
                    let name = name.into();
                    self.synth(Synth::Closed { name, prior });
                    return Ok(Emit::Done);
                }
                self.book.push_plain(Plain::Close);
                Ok(Emit::Same)
            }
            ft::QUERY => {
                let sql = frontend::parse_query(body)?;
                match self.guard(sql, true) {
                    Guarded::Same | Guarded::Renamed(..) => {
                        self.expect_for(tag);
                        Ok(Emit::Same)
                    }
                    Guarded::Refused(refusal) => {
                        self.expect_for(tag);
                        frontend::query(self.out(), &refusal);
                        Ok(Emit::Done)
                    }
                    Guarded::Sql(text, q) => {
                        self.sql_query(&text, q);
                        Ok(Emit::Done)
                    }
                }
            }
            _ => {
                self.expect_for(tag);
                Ok(Emit::Same)
            }
        }
    }

    fn parse(&mut self, body: &[u8]) -> Result<Emit, ProtocolError> {
        let mut p = frontend::parse_parse(body)?;
        let guarded = self.guard(p.query, false);
        let (mut refused, mut renamed, mut needs) = match guarded {
            Guarded::Refused(sql) => (Some(sql), None, None),
            Guarded::Renamed(text, needs) => (None, Some(text), needs),
            Guarded::Same | Guarded::Sql(..) => (None, None, None),
        };
        if let Some((_, dep)) = &needs {
            if !self.ensure_sql(dep) {
                refused = Some(state_guard::refusal_sql(&sql_parse::pipelined_refusal()));
                (renamed, needs) = (None, None);
                p.param_types.clear();
            }
        }
        if let Some(text) = &renamed {
            p.query = text;
        }
        if let Some(sql) = &refused {
            p.query = sql.as_bytes();
            p.param_types.clear();
        }
        if p.name.is_empty() {
            self.book.push_plain(Plain::Parse);
            if refused.is_none() && renamed.is_none() {
                return Ok(Emit::Same);
            }
            frontend::parse(self.out(), "", p.query, &p.param_types);
            return Ok(Emit::Done);
        }
        self.book.counts.client_parses += 1;
        let (named, exact) = self.book.look_up(self.client, p.name);
        let rename = match named {
            Named::Known { rename, certain } => Some((rename, certain)),
            // Should that Close be skipped, PostgreSQL refuses this Parse (42P05).
            Named::Closing { prior } => {
                if prior.is_some() {
                    self.book.mark_inexact();
                }
                None
            }
            Named::Unknown => None,
        };
        if let Some((rename, certain)) = rename {
            if !certain && exact {
                // The name rests on its own Parse of an earlier Sync window, not
                // answered yet, and exists exactly when the server statement does.
                let stmt = self
                    .registry
                    .intern_needing(p.query, &p.param_types, needs.clone());
                if Arc::ptr_eq(&stmt, &rename.stmt) {
                    // The same statement: parse it again. The server refuses it (42P05,
                    // under the client's name) exactly when the earlier one succeeded.
                    let e = Expect::Parse {
                        forward: true,
                        stmt: Some(stmt.clone()),
                        client: Some(rename.name),
                        creates: true,
                        tied: true,
                    };
                    self.send_parse(&stmt, p.query, &p.param_types, e);
                    return Ok(Emit::Done);
                }
            }
            if !certain {
                // If the earlier Parse fails, PostgreSQL would accept this one.
                self.book.mark_inexact();
            }
            // PostgreSQL answers a duplicate name with 42P05 and skips to Sync; let the
            // server do exactly that on its own copy, then show the client's name.
            self.ensure(&rename.stmt);
            self.book.counts.server_parses += 1;
            frontend::parse(
                self.out(),
                &rename.stmt.server_name,
                p.query,
                &p.param_types,
            );
            self.book.push(Expect::Parse {
                forward: true,
                stmt: Some(rename.stmt),
                client: Some(rename.name),
                creates: false,
                tied: false,
            });
            return Ok(Emit::Done);
        }
        let stmt = self.registry.intern_needing(p.query, &p.param_types, needs);
        // A Close of the name earlier in this window may be skipped yet: then the name
        // keeps its statement even if this Parse is skipped.
        let prior = self.book.before_close(self.client, p.name);
        let name: Arc<str> = p.name.into();
        let mut presence = self.book.presence(&stmt);
        if presence == Presence::Present {
            self.registry.stats.hits.fetch_add(1, Relaxed);
            if self.book.idle() {
                self.synth(Synth::Parsed { name, stmt });
                return Ok(Emit::Done);
            }
            // In a pipeline, an error before this Parse would have PostgreSQL skip it,
            // and nothing later in the pipeline could tell whether the name exists: the
            // server parses it again (after a Close), so the name lives exactly when
            // the statement does, as without a pooler.
            presence = Presence::Uncertain;
        } else {
            self.registry.stats.misses.fetch_add(1, Relaxed);
        }
        self.clear_uncertain(&stmt, presence);
        let e = Expect::Parse {
            forward: true,
            stmt: Some(stmt.clone()),
            client: Some(name),
            creates: true,
            tied: presence == Presence::Absent && prior.is_none(),
        };
        self.send_parse(&stmt, p.query, &p.param_types, e);
        Ok(Emit::Done)
    }

    /// Handles a Bind from its declared length and the front of its body (at least the
    /// portal and statement names when they are short; the rest follows unchanged).
    pub(super) fn bind(&mut self, len: u32, prefix: &[u8]) -> Result<Emit, ProtocolError> {
        if let Some((portal, name, used)) = frontend::bind_names(prefix)? {
            if !name.is_empty() {
                self.book.counts.binds += 1;
            }
            if let Some(r) = self.target(name) {
                self.carry_again(&r.stmt);
                let server_name = &r.stmt.server_name;
                let new_len = len as usize - name.len() + server_name.len();
                let out = self.out();
                out.put_u8(ft::BIND);
                out.put_u32(new_len as u32);
                out.extend_from_slice(portal.as_bytes());
                out.put_u8(0);
                out.extend_from_slice(server_name.as_bytes());
                out.put_u8(0);
                out.extend_from_slice(&prefix[used..]);
                self.book.push(Expect::Bind(Some(r)));
                return Ok(Emit::Done);
            }
        }
        self.book.push_plain(Plain::Bind);
        Ok(Emit::Same)
    }
}
