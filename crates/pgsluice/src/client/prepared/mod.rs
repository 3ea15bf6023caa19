//! Named prepared statements across transaction pooling.
//!
//! A client's `Parse("s1", sql, types)` is remembered in its [`ClientStatements`]; the
//! statement itself is interned once in the [`StatementRegistry`] by its full identity
//! (text and parameter types, compared in full, never by hash alone) and given one
//! server-side name, `PGSLUICE_<id>`. Each server connection knows which statements it
//! holds ([`ServerStatements`], an LRU bounded like PgBouncer's max_prepared_statements).
//! When a client binds or describes `s1` on a connection that lacks it, a Parse is
//! injected first and its ParseComplete swallowed; when a client parses a statement the
//! connection already has, nothing is sent and ParseComplete is synthesised in order.
//! Client Close of a statement only forgets the client's name (CloseComplete is
//! synthesised); the server copy stays cached for other clients.
//!
//! [`Rewriter`] holds the per-connection protocol bookkeeping this needs: a queue of
//! the responses expected from the server, so that dropped and synthesised messages land
//! exactly where PostgreSQL would have put them, including after errors (PostgreSQL
//! skips to the next Sync, and so does the queue).
//!
//! SQL-level `PREPARE` / `EXECUTE` / `DEALLOCATE` in simple queries are carried the same
//! way, under server names of their own ([`sql`]).
//!
//! State is recorded only when the server confirms it ([`book`]): a Parse counts once its
//! ParseComplete arrives, a Close once its CloseComplete does, and a message skipped in
//! an error window (ErrorResponse to the next Sync's ReadyForQuery) counts as never
//! sent. Until then the message is *planned*, which is what later messages of the same
//! Sync window may rely on: if the plan fails, PostgreSQL skips them too.

mod book;
#[cfg(test)]
mod pipeline_tests;
mod replies;
mod rewrite;
mod rewriting;
mod server;
mod sql;
#[cfg(test)]
mod sql_model;
mod sql_parse;
mod sql_query;
#[cfg(test)]
mod sql_tests;

use super::handover_image::{PreparedImage, SqlPreparedImage};
use crate::sync::LockExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

pub use book::PreparedCounts;
pub use rewriting::{ClientPass, ReadPath, Rewriter};
pub use server::ServerStatements;

/// Default bound on statements cached per server connection (PgBouncer's default).
pub const DEFAULT_MAX_PREPARED: usize = 200;

/// Full identity of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StmtKey {
    query: Box<[u8]>,
    types: Box<[u32]>,
}

/// An interned statement.
#[derive(Debug)]
pub struct Stmt {
    /// Registry id.
    pub id: u64,
    /// The text, in the client's encoding.
    pub(super) query: Box<[u8]>,
    pub(super) types: Box<[u32]>,
    /// Name used on server connections.
    pub server_name: Box<str>,
    /// Some server accepted its Parse: a client's Parse of it can be answered without one.
    pub(super) verified: std::sync::atomic::AtomicBool,
    /// The SQL-level statement its text runs (`EXECUTE pgsluice_sql_<n>` in a Parse),
    /// with the client's name for it: made present on a connection before the statement
    /// is parsed, bound or described there, as long as the name still stands for it.
    pub(super) needs: Option<Need>,
}

/// A client's SQL-level name and the statement it stood for when a Parse named it.
pub(super) type Need = (Arc<str>, Arc<Stmt>);

#[cfg(test)]
impl Stmt {
    /// Marks the statement as accepted by a server (what a ParseComplete does).
    pub(crate) fn mark_verified(&self) {
        self.verified.store(true, Relaxed);
    }
}

/// Counters for the admin console.
#[derive(Debug, Default)]
pub struct PreparedStats {
    /// Client Parse/Bind found the statement on the server already.
    pub hits: AtomicU64,
    /// A Parse had to be sent (client's own or injected).
    pub misses: AtomicU64,
    /// Statements closed on a server to respect the bound.
    pub evictions: AtomicU64,
}

/// All distinct statements in use by any client.
#[derive(Debug, Default)]
pub struct StatementRegistry {
    map: Mutex<HashMap<StmtKey, Weak<Stmt>>>,
    next_id: AtomicU64,
    /// Counters.
    pub stats: PreparedStats,
    /// The generation in force, for the session-state rules that depend on the
    /// configuration (`track_extra_parameters`); None in unit tests (no extras).
    live: Option<crate::generation::Live>,
}

impl StatementRegistry {
    /// A registry whose session-state rules follow the generation in force.
    pub fn new(live: crate::generation::Live) -> Self {
        StatementRegistry {
            live: Some(live),
            ..StatementRegistry::default()
        }
    }

    /// `track_extra_parameters` in force (lower-case names); read only when a
    /// statement sets a parameter that is not tracked anyway.
    pub(super) fn tracked_extra(&self) -> Option<Arc<Vec<String>>> {
        self.live.as_ref()?.load().tracked_extra.clone()
    }

    /// The statement for this text and types, shared with every client using it.
    pub fn intern(&self, query: &[u8], types: &[u32]) -> Arc<Stmt> {
        self.intern_needing(query, types, None)
    }

    /// [`StatementRegistry::intern`] for a text that runs the SQL-level statement
    /// `needs` (its server name is in the text, so the text says which one).
    pub(super) fn intern_needing(
        &self,
        query: &[u8],
        types: &[u32],
        needs: Option<Need>,
    ) -> Arc<Stmt> {
        let key = StmtKey {
            query: query.into(),
            types: types.into(),
        };
        let mut map = self.map.locked();
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let stmt = Arc::new(Stmt {
            id,
            query: key.query.clone(),
            types: key.types.clone(),
            server_name: format!("PGSLUICE_{id}").into(),
            verified: Default::default(),
            needs,
        });
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        map.insert(key, Arc::downgrade(&stmt));
        stmt
    }

    /// The statement for this text and types if a server has already accepted it.
    pub fn verified(&self, query: &[u8], types: &[u32]) -> Option<Arc<Stmt>> {
        let key = StmtKey {
            query: query.into(),
            types: types.into(),
        };
        let found = self
            .map
            .locked()
            .get(&key)
            .and_then(Weak::upgrade)
            .filter(|s| s.verified.load(Relaxed) && s.needs.is_none())?;
        // A text that EXECUTEs a SQL-level statement means what the client's names say:
        // its Parse goes through the rewriting path (`sql_parse::plan_parse`).
        let analysis = crate::classify::session::analyze(query);
        (!sql::has_effects(&analysis)).then_some(found)
    }

    /// A new statement for a client's SQL-level `PREPARE`: `definition` is the text
    /// after the name (parameter types and `AS` query). Never shared: its server name,
    /// `pgsluice_sql_<id>`, is unique, so no two clients (and no protocol-level
    /// statement, named `PGSLUICE_<id>`) can meet on it.
    pub(super) fn fresh_sql(&self, definition: &[u8]) -> Arc<Stmt> {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        Arc::new(Stmt {
            id,
            query: definition.into(),
            types: Box::new([]),
            server_name: format!("{}{id}", sql::SERVER_PREFIX).into(),
            verified: Default::default(),
            needs: None,
        })
    }

    /// Statements some client still holds.
    pub fn live(&self) -> usize {
        self.map
            .locked()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// A client's named statements, as PostgreSQL would hold them: only names whose Parse
/// (or SQL `PREPARE`) was confirmed (and not closed since). The maps are allocated with
/// the first one: most clients never name a statement, and this sits in every idle
/// session.
#[derive(Debug, Default)]
pub struct ClientStatements {
    names: Option<Box<Names>>,
}

/// The two kinds of names a client gives statements.
#[derive(Debug, Default)]
struct Names {
    /// Protocol-level (Parse) names.
    protocol: HashMap<Arc<str>, Arc<Stmt>>,
    /// SQL-level (`PREPARE`) names; their statements hold the definition text.
    sql: HashMap<Arc<str>, Arc<Stmt>>,
}

impl ClientStatements {
    /// True when the client has a statement of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.names
            .as_ref()
            .is_some_and(|m| m.protocol.contains_key(name))
    }

    /// The name as stored (shared, for error renaming) and its statement.
    pub(super) fn get(&self, name: &str) -> Option<(&Arc<str>, &Arc<Stmt>)> {
        self.names.as_ref()?.protocol.get_key_value(name)
    }

    /// Records a statement under a client name.
    pub fn insert(&mut self, name: &str, stmt: Arc<Stmt>) {
        self.insert_shared(name.into(), stmt);
    }

    pub(super) fn insert_shared(&mut self, name: Arc<str>, stmt: Arc<Stmt>) {
        self.names
            .get_or_insert_default()
            .protocol
            .insert(name, stmt);
    }

    /// Forgets a client name.
    pub(super) fn remove(&mut self, name: &str) {
        if let Some(m) = self.names.as_mut() {
            m.protocol.remove(name);
        }
    }

    /// Number of named statements.
    pub fn len(&self) -> usize {
        self.names.as_ref().map_or(0, |m| m.protocol.len())
    }

    /// True when the client has none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The SQL-level statement of this name (as stored) and its statement.
    pub(super) fn sql_get(&self, name: &str) -> Option<(&Arc<str>, &Arc<Stmt>)> {
        self.names.as_ref()?.sql.get_key_value(name)
    }

    /// Records a SQL-level statement (the server confirmed its `PREPARE`).
    pub(super) fn sql_insert(&mut self, name: Arc<str>, stmt: Arc<Stmt>) {
        self.names.get_or_insert_default().sql.insert(name, stmt);
    }

    /// Forgets a SQL-level name (the server confirmed its `DEALLOCATE`).
    pub(super) fn sql_remove(&mut self, name: &str) {
        if let Some(m) = self.names.as_mut() {
            m.sql.remove(name);
        }
    }

    /// Number of SQL-level statements.
    pub fn sql_len(&self) -> usize {
        self.names.as_ref().map_or(0, |m| m.sql.len())
    }

    /// Whether [`Self::export`] can carry the statements.
    pub(in crate::client) fn portable(&self) -> bool {
        self.names
            .as_ref()
            .is_none_or(|n| n.protocol.values().all(|s| s.needs.is_none()))
    }

    /// The statements as plain data, for an upgrade's handover: protocol-level ones
    /// (name, text, types) and SQL-level ones (name, definition). `None` when one runs
    /// a SQL-level statement (an `EXECUTE` in a Parse: its text names the statement's
    /// server name, which is this process's): such a client stays.
    pub(in crate::client) fn export(&self) -> Option<(Vec<PreparedImage>, Vec<SqlPreparedImage>)> {
        let Some(names) = self.names.as_ref() else {
            return Some(Default::default());
        };
        let mut protocol = Vec::with_capacity(names.protocol.len());
        for (name, stmt) in &names.protocol {
            if stmt.needs.is_some() {
                return None;
            }
            protocol.push(PreparedImage {
                name: name.to_string(),
                query: stmt.query.to_vec(),
                types: stmt.types.to_vec(),
            });
        }
        let sql = names
            .sql
            .iter()
            .map(|(name, stmt)| SqlPreparedImage {
                name: name.to_string(),
                definition: stmt.query.to_vec(),
            })
            .collect();
        Some((protocol, sql))
    }

    /// The statements of a client handed over by another process ([`Self::export`]),
    /// interned in this process's registry: server connections here prepare them when
    /// the client first uses them.
    pub(in crate::client) fn import(
        registry: &StatementRegistry,
        protocol: &[PreparedImage],
        sql: &[SqlPreparedImage],
    ) -> ClientStatements {
        let mut stmts = ClientStatements::default();
        for p in protocol {
            stmts.insert(&p.name, registry.intern(&p.query, &p.types));
        }
        for p in sql {
            stmts.sql_insert(p.name.as_str().into(), registry.fresh_sql(&p.definition));
        }
        stmts
    }

    /// `DEALLOCATE ALL` ran: PostgreSQL drops every prepared statement of the
    /// session, SQL-level and protocol-level alike.
    pub(super) fn forget_all(&mut self) {
        self.names = None;
    }

    /// `DISCARD ALL` ran: the SQL-level names are gone. (Protocol-level names stay:
    /// pgsluice carries them and prepares them again where needed.)
    pub(super) fn forget_sql(&mut self) {
        if let Some(m) = self.names.as_mut() {
            m.sql.clear();
        }
    }
}
