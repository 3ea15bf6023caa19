//! The bookkeeping of one server connection's conversation: the queue of answers
//! expected from the server, one entry per message sent (or answered locally), and the
//! plans those messages make for statement names, on the server and the client's.
//!
//! Every entry leaves the queue through [`Book::finish`], either *applied* (the server
//! answered it: ParseComplete, CloseComplete, or its turn came for a reply pgsluice makes
//! up) or not (it failed, or PostgreSQL skipped it after an error until the next Sync).
//! Only an applied entry changes what the connection or the client holds, so a Parse
//! injected, forwarded or answered locally inside an error window leaves no trace, and
//! neither does a Close there.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;

use super::server::{Presence, ServerStatements};
use super::sql_query::{Action, SqlQuery};
use super::{ClientStatements, Stmt};

#[path = "book_plain.rs"]
mod plain;
use plain::Held;
pub(super) use plain::Plain;

/// A client name and the statement it stands for: errors the server raises about the
/// statement are shown to the client under the name.
#[derive(Debug, Clone)]
pub(super) struct Rename {
    pub(super) stmt: Arc<Stmt>,
    pub(super) name: Arc<str>,
}

/// A reply pgsluice makes up, sent when its turn comes.
#[derive(Debug)]
pub(super) enum Synth {
    /// ParseComplete for a client Parse of a statement the server holds: records the name.
    Parsed { name: Arc<str>, stmt: Arc<Stmt> },
    /// CloseComplete for a client Close of a named statement: forgets the name. `prior`
    /// is what the name stood for when the Close was sent.
    Closed {
        name: Arc<str>,
        prior: Option<Arc<Stmt>>,
    },
}

impl Synth {
    fn tag(&self) -> u8 {
        match self {
            Synth::Parsed { .. } => b'1',
            Synth::Closed { .. } => b'3',
        }
    }
}

/// What the server will send next, per message sent to it.
#[derive(Debug)]
pub(super) enum Expect {
    Parse {
        /// ParseComplete goes to the client (false: pgsluice injected the Parse).
        forward: bool,
        /// The statement parsed (None: unnamed).
        stmt: Option<Arc<Stmt>>,
        /// The client's name for it, recorded when the server confirms.
        client: Option<Arc<str>>,
        /// The Parse creates `stmt` on the server. False for a client Parse of a name it
        /// already has: that one is sent only for the server to refuse it (42P05).
        creates: bool,
        /// Should this Parse fail or be skipped, the server does not hold `stmt` (it
        /// was absent, and no Close of ours precedes the Parse): the client's name then
        /// exists exactly when the statement does.
        tied: bool,
    },
    Bind(Option<Rename>),
    DescribeStatement(Option<Rename>),
    DescribePortal,
    Execute,
    Close {
        /// CloseComplete goes to the client (false: pgsluice's own Close).
        forward: bool,
        /// The statement pgsluice closes on the server.
        evict: Option<u64>,
    },
    Sync,
    Query,
    /// A simple query rewritten for SQL-level prepared statements ([`super::sql`]).
    SqlQuery(Box<SqlQuery>),
    FunctionCall,
    Synth(Synth),
}

impl Expect {
    /// The client name to show in an error about this message, if it names one.
    pub(super) fn rename(&self) -> Option<Rename> {
        match self {
            Expect::Parse {
                stmt: Some(stmt),
                client: Some(name),
                ..
            } => Some(Rename {
                stmt: stmt.clone(),
                name: name.clone(),
            }),
            Expect::Bind(r) | Expect::DescribeStatement(r) => r.clone(),
            _ => None,
        }
    }
}

pub use crate::stats::PreparedCounts;

/// A client name with messages in flight; `stmt` is what the last one makes it
/// (None: closed). `tied`: that message is a Parse sent to the server, so the name
/// exists exactly when the server statement does.
#[derive(Debug)]
struct NamePlan {
    stmt: Option<Arc<Stmt>>,
    /// For a Close: what the name stood for before it.
    prior: Option<Arc<Stmt>>,
    tied: bool,
    epoch: u64,
    inflight: u32,
}

/// What a client name stands for when the next message reaches the server.
#[derive(Debug)]
pub(super) enum Named {
    /// No such statement (never parsed, closed, or its Parse is planned to be closed).
    Unknown,
    /// The statement, and whether the name is sure to exist then: `certain` is false
    /// when it rests on a Parse of an earlier Sync window that is not answered yet.
    Known { rename: Rename, certain: bool },
    /// A Close of the name is planned in an earlier Sync window, not answered yet: the
    /// name still stands for `prior` unless that Close is carried out.
    Closing { prior: Option<Rename> },
}

/// The queue and the plans of one server connection.
#[derive(Debug)]
pub(super) struct Book {
    queue: VecDeque<Expect>,
    /// Requests in flight that are only counted, not queued: each a simple query or a
    /// Sync window whose every reply goes to the client as the server sends it and
    /// changes nothing here (see [`Book::end_read`]). They were sent before anything
    /// in the queue, so their replies come first: while this is above zero the queue's
    /// front is not yet the server's turn.
    plain: u32,
    /// Plain entries of the client read being handled, not queued yet (always empty
    /// between reads).
    held: Held,
    pub(super) stmts: ServerStatements,
    names: HashMap<Arc<str>, NamePlan>,
    /// SQL-level names with a PREPARE or DEALLOCATE in flight: what the last one makes
    /// them, and how many are in flight.
    sql_names: HashMap<Arc<str>, (Option<Arc<Stmt>>, u32)>,
    /// Sync window of the next client message: one more per Sync sent.
    pub(super) epoch: u64,
    /// The server is skipping messages after an error and no Sync is on its way yet:
    /// what the client sends until its next Sync will get no reply and do nothing.
    skipping: bool,
    /// An extended-protocol message was queued since the last Sync: a Query put in now
    /// would end the implicit transaction it runs in.
    open_extended: bool,
    pub(super) counts: PreparedCounts,
    /// Session settings the statements of this checkout changed, read back at its
    /// end (`client::state_guard`).
    pub(super) carry: crate::client::state_guard::Carry,
    /// The last SQL text the session-state guard found harmless on this connection (up
    /// to [`HARMLESS_TEXT`] bytes): the same text again needs no scan.
    pub(super) harmless: Vec<u8>,
    /// Set when a message took a path whose outcome may differ from PostgreSQL's (see
    /// docs/prepared-statements.md); the differential tests stop comparing there.
    #[cfg(test)]
    pub(super) inexact: bool,
}

/// Longest SQL text [`Book::harmless`] keeps.
pub(super) const HARMLESS_TEXT: usize = 256;

impl Book {
    pub(super) fn new(max_prepared: usize) -> Self {
        Book {
            queue: VecDeque::new(),
            plain: 0,
            held: Held::EMPTY,
            stmts: ServerStatements::new(max_prepared),
            names: HashMap::new(),
            sql_names: HashMap::new(),
            epoch: 0,
            skipping: false,
            open_extended: false,
            counts: PreparedCounts::default(),
            carry: Default::default(),
            harmless: Vec::new(),
            #[cfg(test)]
            inexact: false,
        }
    }

    /// Nothing in flight.
    pub(super) fn settled(&self) -> bool {
        self.idle() && self.names.is_empty() && self.sql_names.is_empty() && self.stmts.settled()
    }

    /// Called when a client takes the connection.
    pub(super) fn begin_checkout(&mut self) {
        debug_assert!(
            self.names.is_empty(),
            "name plans left from the last checkout"
        );
        self.names.clear();
        self.sql_names.clear();
        self.stmts.begin_checkout();
    }

    /// Queues the answer expected for a message sent (or to be answered locally), and
    /// records what it plans.
    pub(super) fn push(&mut self, e: Expect) {
        if let Some(kind) = Plain::of(&e) {
            self.push_plain(kind);
            return;
        }
        if self.skipping {
            if !matches!(e, Expect::Sync) {
                return;
            }
            self.skipping = false;
        }
        self.open_extended = match &e {
            Expect::Sync => false,
            Expect::Query | Expect::SqlQuery(_) | Expect::FunctionCall => self.open_extended,
            _ => true,
        };
        self.queue_held();
        let epoch = self.epoch;
        match &e {
            Expect::Parse {
                creates: true,
                stmt: Some(s),
                client,
                tied,
                ..
            } => {
                self.stmts.plan(s.id, true, epoch);
                if let Some(name) = client {
                    self.plan_name(name, Some(s.clone()), None, *tied);
                }
            }
            Expect::Close {
                evict: Some(id), ..
            } => self.stmts.plan(*id, false, epoch),
            Expect::Synth(Synth::Parsed { name, stmt }) => {
                self.plan_name(name, Some(stmt.clone()), None, false)
            }
            Expect::Synth(Synth::Closed { name, prior }) => {
                self.plan_name(name, None, prior.clone(), false)
            }
            Expect::Sync => self.epoch += 1,
            _ => {}
        }
        self.queue.push_back(e);
    }

    fn plan_name(
        &mut self,
        name: &Arc<str>,
        stmt: Option<Arc<Stmt>>,
        prior: Option<Arc<Stmt>>,
        tied: bool,
    ) {
        let epoch = self.epoch;
        let p = self.names.entry(name.clone()).or_insert(NamePlan {
            stmt: None,
            prior: None,
            tied,
            epoch,
            inflight: 0,
        });
        p.stmt = stmt;
        p.prior = prior;
        p.tied = tied;
        p.epoch = epoch;
        p.inflight += 1;
    }

    fn unplan_name(&mut self, name: &str) {
        if let Some(p) = self.names.get_mut(name) {
            p.inflight -= 1;
            if p.inflight == 0 {
                self.names.remove(name);
            }
        }
    }

    /// Notes a path whose outcome may differ from PostgreSQL's (tests only).
    pub(super) fn mark_inexact(&mut self) {
        #[cfg(test)]
        {
            self.inexact = true;
        }
    }

    /// What `name` stands for when the next client message reaches the server.
    pub(super) fn named(&mut self, client: &ClientStatements, name: &str) -> Named {
        let (named, exact) = self.look_up(client, name);
        if !exact {
            self.mark_inexact();
        }
        named
    }

    /// [`Book::named`], and whether what follows from it is sure to be PostgreSQL's
    /// outcome (see docs/prepared-statements.md for the cases that are not).
    pub(super) fn look_up(&self, client: &ClientStatements, name: &str) -> (Named, bool) {
        if name.is_empty() {
            return (Named::Unknown, true);
        }
        if let Some((key, p)) = self.names.get_key_value(name) {
            let certain = p.epoch == self.epoch;
            let rename = |stmt: &Arc<Stmt>| Rename {
                stmt: stmt.clone(),
                name: key.clone(),
            };
            let Some(stmt) = &p.stmt else {
                if certain {
                    return (Named::Unknown, true);
                }
                let prior = p.prior.as_ref().map(rename);
                let exact = prior.is_none();
                return (Named::Closing { prior }, exact);
            };
            // Uncertain, the name's fate may not be the server statement's: a locally
            // answered Parse (skipped or not, the statement exists), or the statement
            // parsed again since for another name.
            let exact = certain || (p.tied && self.stmts.last_parse_in(stmt.id, p.epoch));
            let known = Named::Known {
                rename: rename(stmt),
                certain,
            };
            return (known, exact);
        }
        match client.get(name) {
            Some((key, stmt)) => {
                let rename = Rename {
                    stmt: stmt.clone(),
                    name: key.clone(),
                };
                let known = Named::Known {
                    rename,
                    certain: true,
                };
                (known, true)
            }
            None => (Named::Unknown, true),
        }
    }

    /// What `name` stands for should a Close of it sent now be skipped: the statement
    /// of its last Parse, or, after another Close, what that one found (if the earlier
    /// Close was carried out, the name is gone either way).
    pub(super) fn before_close(&self, client: &ClientStatements, name: &str) -> Option<Arc<Stmt>> {
        match self.names.get(name) {
            Some(p) => p.stmt.clone().or_else(|| p.prior.clone()),
            None => client.get(name).map(|(_, s)| s.clone()),
        }
    }

    /// Where `stmt` will be for the next client message (see [`ServerStatements::view`]).
    pub(super) fn presence(&mut self, stmt: &Stmt) -> Presence {
        let epoch = self.epoch;
        self.stmts.view(stmt.id, epoch)
    }

    /// Takes the front entry out of the queue; `applied` says whether the server carried
    /// it out (see the module header).
    pub(super) fn finish(&mut self, applied: bool, client: &mut ClientStatements) {
        let Some(e) = self.queue.pop_front() else {
            return;
        };
        match e {
            Expect::Parse {
                stmt: Some(s),
                client: name,
                creates: true,
                ..
            } => {
                if applied {
                    s.verified.store(true, Relaxed);
                    self.stmts.confirm_parse(&s);
                    if let Some(name) = &name {
                        client.insert_shared(name.clone(), s.clone());
                    }
                }
                self.stmts.unplan(s.id);
                if let Some(name) = name {
                    self.unplan_name(&name);
                }
            }
            Expect::Close {
                evict: Some(id), ..
            } => {
                if applied {
                    self.stmts.confirm_close(id);
                }
                self.stmts.unplan(id);
            }
            Expect::Synth(Synth::Parsed { name, stmt }) => {
                if applied {
                    client.insert_shared(name.clone(), stmt);
                }
                self.unplan_name(&name);
            }
            Expect::Synth(Synth::Closed { name, .. }) => {
                if applied {
                    client.remove(&name);
                }
                self.unplan_name(&name);
            }
            // What the query did not reach did nothing.
            Expect::SqlQuery(mut q) => {
                while let Some(a) = q.actions.pop_front() {
                    self.unplan_action(&a);
                }
            }
            _ => {}
        }
    }

    /// True when a simple query can be put in here: nothing in flight, no
    /// extended-protocol message since the last Sync, no error being skipped.
    pub(super) fn can_put_query(&self) -> bool {
        self.idle() && !self.open_extended && !self.skipping
    }

    /// Queues a rewritten simple query and plans its actions; returns the server names
    /// to close before it (uncertain ones, then those the bound evicts), or None when
    /// the server is skipping to a Sync and will ignore the query.
    pub(super) fn push_sql(&mut self, q: SqlQuery) -> Option<Vec<Box<str>>> {
        if self.skipping {
            return None;
        }
        self.queue_held();
        let epoch = self.epoch;
        let mut closes = Vec::new();
        for stmt in &q.clears {
            self.stmts.plan(stmt.id, false, epoch);
            self.queue.push_back(Expect::Close {
                forward: false,
                evict: Some(stmt.id),
            });
            closes.push(stmt.server_name.clone());
        }
        for a in &q.actions {
            match a {
                Action::Prepare { stmt, client } => {
                    self.stmts.plan(stmt.id, true, epoch);
                    if let Some(name) = client {
                        self.plan_sql_name(name, Some(stmt.clone()));
                    }
                }
                Action::Deallocate { stmt, client } => {
                    self.stmts.plan(stmt.id, false, epoch);
                    self.plan_sql_name(client, None);
                }
                Action::Passed | Action::DeallocateAll => {}
            }
        }
        while let Some((id, victim)) = self.stmts.victim() {
            self.stmts.plan(id, false, epoch);
            self.queue.push_back(Expect::Close {
                forward: false,
                evict: Some(id),
            });
            closes.push(victim);
        }
        self.queue.push_back(Expect::SqlQuery(Box::new(q)));
        Some(closes)
    }

    fn plan_sql_name(&mut self, name: &Arc<str>, stmt: Option<Arc<Stmt>>) {
        let e = self.sql_names.entry(name.clone()).or_insert((None, 0));
        e.0 = stmt;
        e.1 += 1;
    }

    fn unplan_action(&mut self, a: &Action) {
        let (id, name) = match a {
            Action::Prepare { stmt, client } => (stmt.id, client.as_ref()),
            Action::Deallocate { stmt, client } => (stmt.id, Some(client)),
            Action::Passed | Action::DeallocateAll => return,
        };
        self.stmts.unplan(id);
        if let Some(name) = name {
            if let Some(e) = self.sql_names.get_mut(&**name) {
                e.1 -= 1;
                if e.1 == 0 {
                    self.sql_names.remove(&**name);
                }
            }
        }
    }

    /// What a SQL-level name stands for once the messages in flight are carried out,
    /// if any are: Some(None) when the last one deallocates it.
    pub(super) fn sql_name_plan(&self, name: &str) -> Option<Option<(Arc<str>, Arc<Stmt>)>> {
        let (key, (stmt, _)) = self.sql_names.get_key_value(name)?;
        Some(stmt.as_ref().map(|s| (key.clone(), s.clone())))
    }

    /// A CommandComplete of the rewritten query at the front of the queue with this
    /// tag: applies the action it answers. Returns false when the message is pgsluice's
    /// own (a PREPARE it put in) and must not reach the client.
    pub(super) fn sql_tag(&mut self, tag: &[u8], client: &mut ClientStatements) -> bool {
        if self.plain > 0 {
            return true;
        }
        let Some(Expect::SqlQuery(q)) = self.queue.front_mut() else {
            return true;
        };
        let Some(a) = q.take_action(tag) else {
            return true;
        };
        let forward = !matches!(a, Action::Prepare { client: None, .. });
        match &a {
            Action::Prepare { stmt, client: name } => {
                self.stmts.confirm_parse(stmt);
                if let Some(name) = name {
                    client.sql_insert(name.clone(), stmt.clone());
                }
            }
            Action::Deallocate { stmt, client: name } => {
                self.stmts.confirm_close(stmt.id);
                client.sql_remove(name);
            }
            Action::DeallocateAll => client.forget_all(),
            Action::Passed => {}
        }
        self.unplan_action(&a);
        forward
    }

    /// After an error: PostgreSQL skips every message up to the next Sync, whose
    /// ReadyForQuery ends the skipping (a Flush does not).
    pub(super) fn skip_to_sync(&mut self, client: &mut ClientStatements) {
        while self
            .queue
            .front()
            .is_some_and(|e| !matches!(e, Expect::Sync))
        {
            self.finish(false, client);
        }
        self.skipping = self.queue.is_empty();
    }

    /// Appends the made-up replies due now (at the front of the queue).
    pub(super) fn drain_synth(&mut self, out: &mut BytesMut, client: &mut ClientStatements) {
        while let Some(Expect::Synth(s)) = self.front() {
            out.extend_from_slice(&[s.tag(), 0, 0, 0, 4]);
            self.finish(true, client);
        }
    }

    /// Drops the last `n` Sync entries: PostgreSQL ignored those Syncs in copy-in mode.
    pub(super) fn forget_syncs(&mut self, mut n: u32) {
        self.queue_held();
        let mut i = self.queue.len();
        while n > 0 && i > 0 {
            i -= 1;
            if matches!(self.queue[i], Expect::Sync) {
                self.queue.remove(i);
                n -= 1;
            }
        }
        // The rest were counted (sent before anything queued).
        self.plain = self.plain.saturating_sub(n);
    }
}
