//! The statements of one server connection: those the server confirmed (ParseComplete,
//! and no CloseComplete since), in LRU order, and over them the plans of Parse and Close
//! messages sent but not answered yet.
//!
//! A plan is what later messages of the same Sync window may rely on: should the Parse
//! fail or be skipped, PostgreSQL skips them as well. A message of a later window may
//! not: an error in between ends the skipping at the Sync, so the plan is *uncertain*
//! there. Nothing here is changed by sending alone; [`super::book`] confirms or drops
//! each plan when the server's answer (or the skip) comes.

use std::collections::HashMap;

use super::Stmt;

/// Whether the server will hold a statement when the next message reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    /// Confirmed, or planned in the current Sync window.
    Present,
    /// Parsed or closed in an earlier Sync window whose outcome is not known yet.
    Uncertain,
    /// A Close of it is planned in the current Sync window: gone for the next message,
    /// but still there should an error before the Close have it skipped.
    Closing,
    /// Not there, and nothing in flight for it.
    Absent,
}

/// Messages in flight for one statement; `parsed` says what the last one does.
#[derive(Debug)]
struct Plan {
    parsed: bool,
    epoch: u64,
    inflight: u32,
}

/// Statements present on one server connection, with LRU order.
#[derive(Debug)]
pub struct ServerStatements {
    /// Confirmed by the server: id -> (last use tick, server name).
    present: HashMap<u64, (u64, Box<str>)>,
    /// Parse/Close sent and not answered.
    planned: HashMap<u64, Plan>,
    tick: u64,
    /// Tick at the start of the current checkout: statements used since are not evicted.
    checkout_tick: u64,
    cap: usize,
}

impl ServerStatements {
    pub(super) fn new(cap: usize) -> Self {
        ServerStatements {
            present: HashMap::new(),
            planned: HashMap::new(),
            tick: 0,
            checkout_tick: 0,
            cap: cap.max(1),
        }
    }

    /// Number of statements the server confirmed and still holds.
    pub fn len(&self) -> usize {
        self.present.len()
    }

    /// True when none are cached.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }

    /// True when nothing is in flight.
    pub(super) fn settled(&self) -> bool {
        self.planned.is_empty()
    }

    /// Called when a client takes the connection (nothing is in flight then).
    pub(super) fn begin_checkout(&mut self) {
        debug_assert!(self.planned.is_empty(), "plans left from the last checkout");
        self.planned.clear();
        self.checkout_tick = self.tick + 1;
    }

    /// Where statement `id` will be for a message of Sync window `epoch`; a confirmed
    /// one counts as used now.
    pub(super) fn view(&mut self, id: u64, epoch: u64) -> Presence {
        self.tick += 1;
        match self.planned.get(&id) {
            // A Close of an earlier window may be skipped too: uncertain as well.
            Some(p) if p.epoch != epoch => Presence::Uncertain,
            Some(p) if p.parsed => Presence::Present,
            Some(_) => Presence::Closing,
            None => match self.present.get_mut(&id) {
                Some(e) => {
                    e.0 = self.tick;
                    Presence::Present
                }
                None => Presence::Absent,
            },
        }
    }

    /// True when the last message in flight for `id` is a Parse of window `epoch`.
    pub(super) fn last_parse_in(&self, id: u64, epoch: u64) -> bool {
        self.planned
            .get(&id)
            .is_some_and(|p| p.parsed && p.epoch == epoch)
    }

    /// A Parse (`parsed`) or Close of `id` is sent in window `epoch`.
    pub(super) fn plan(&mut self, id: u64, parsed: bool, epoch: u64) {
        let p = self.planned.entry(id).or_insert(Plan {
            parsed,
            epoch,
            inflight: 0,
        });
        p.parsed = parsed;
        p.epoch = epoch;
        p.inflight += 1;
    }

    /// One message planned for `id` was answered or skipped.
    pub(super) fn unplan(&mut self, id: u64) {
        if let Some(p) = self.planned.get_mut(&id) {
            p.inflight -= 1;
            if p.inflight == 0 {
                self.planned.remove(&id);
            }
        }
    }

    /// The server confirmed a Parse (ParseComplete).
    pub(super) fn confirm_parse(&mut self, stmt: &Stmt) {
        self.tick += 1;
        self.present
            .insert(stmt.id, (self.tick, stmt.server_name.clone()));
    }

    /// The server confirmed a Close (CloseComplete).
    pub(super) fn confirm_close(&mut self, id: u64) {
        self.present.remove(&id);
    }

    /// The server dropped every statement (DISCARD ALL, DEALLOCATE ALL).
    pub(super) fn clear_confirmed(&mut self) {
        self.present.clear();
    }

    /// How many statements the server will hold once everything in flight succeeds.
    fn expected_len(&self) -> usize {
        let mut n = self.present.len();
        for (id, p) in &self.planned {
            match (p.parsed, self.present.contains_key(id)) {
                (true, false) => n += 1,
                (false, true) => n -= 1,
                _ => {}
            }
        }
        n
    }

    /// A statement to close to stay within the bound, if over it: the least recently
    /// used confirmed one that nothing in flight touches and that was not used in this
    /// checkout. The caller sends the Close and plans it.
    pub(super) fn victim(&self) -> Option<(u64, Box<str>)> {
        if self.present.len() + self.planned.len() <= self.cap || self.expected_len() <= self.cap {
            return None;
        }
        self.present
            .iter()
            .filter(|(id, (t, _))| *t < self.checkout_tick && !self.planned.contains_key(id))
            .min_by_key(|(_, (t, _))| *t)
            .map(|(id, (_, name))| (*id, name.clone()))
    }
}
