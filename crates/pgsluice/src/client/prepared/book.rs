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
use super::{ClientStatements, Stmt};

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
    pub(super) queue: VecDeque<Expect>,
    pub(super) stmts: ServerStatements,
    names: HashMap<Arc<str>, NamePlan>,
    /// Sync window of the next client message: one more per Sync sent.
    pub(super) epoch: u64,
    /// The server is skipping messages after an error and no Sync is on its way yet:
    /// what the client sends until its next Sync will get no reply and do nothing.
    skipping: bool,
    pub(super) counts: PreparedCounts,
    /// Session settings the statements of this checkout changed, read back at its
    /// end (`client::state_guard`).
    pub(super) carry: crate::client::state_guard::Carry,
    /// Set when a message took a path whose outcome may differ from PostgreSQL's (see
    /// docs/prepared-statements.md); the differential tests stop comparing there.
    #[cfg(test)]
    pub(super) inexact: bool,
}

impl Book {
    pub(super) fn new(max_prepared: usize) -> Self {
        Book {
            queue: VecDeque::new(),
            stmts: ServerStatements::new(max_prepared),
            names: HashMap::new(),
            epoch: 0,
            skipping: false,
            counts: PreparedCounts::default(),
            carry: Default::default(),
            #[cfg(test)]
            inexact: false,
        }
    }

    /// Nothing in flight.
    pub(super) fn settled(&self) -> bool {
        self.queue.is_empty() && self.names.is_empty() && self.stmts.settled()
    }

    /// Called when a client takes the connection.
    pub(super) fn begin_checkout(&mut self) {
        debug_assert!(
            self.names.is_empty(),
            "name plans left from the last checkout"
        );
        self.names.clear();
        self.stmts.begin_checkout();
    }

    /// Queues the answer expected for a message sent (or to be answered locally), and
    /// records what it plans.
    pub(super) fn push(&mut self, e: Expect) {
        if self.skipping {
            if !matches!(e, Expect::Sync) {
                return;
            }
            self.skipping = false;
        }
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
            _ => {}
        }
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
        while let Some(Expect::Synth(s)) = self.queue.front() {
            out.extend_from_slice(&[s.tag(), 0, 0, 0, 4]);
            self.finish(true, client);
        }
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
}
