//! Limits shared by several pools: `max_db_connections` (every pool of a client-side
//! database) and `max_user_connections` (every pool of a server-side user), and the
//! client counts of a database (`max_db_client_connections`) and of a user
//! (`max_user_client_connections`: the clients logged in under that name).
//!
//! A [`GroupLimit`] counts the server connections of its pools, open or being opened.
//! Its count changes only when a pool opens or closes a connection, never when one is
//! checked out or returned, so the hot path does not touch it. Its lock is held for a
//! few integer and pointer moves and never across an `.await`; lock order is always a
//! pool's state lock, then the database group, then the user group.
//!
//! A pool refused by a full group is recorded as *blocked*; when the group's count goes
//! down (or its cap goes up), blocked pools are woken in FIFO order and retry for their
//! waiting clients.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::Pool;
use crate::sync::LockExt;

/// What a group limits: the server connections of a database's or a user's pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// Every pool of one client-side database (`max_db_connections`).
    Database,
    /// Every pool of one server-side user (`max_user_connections`).
    User,
}

impl GroupKind {
    /// The setting that caps this kind of group.
    pub fn setting(self) -> &'static str {
        match self {
            GroupKind::Database => "max_db_connections",
            GroupKind::User => "max_user_connections",
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Server connections open or being opened by the group's pools.
    open: usize,
    /// Pools with clients waiting because the group was full (FIFO).
    blocked: VecDeque<Weak<Pool>>,
    /// Every pool of the group (for eviction of idle connections).
    members: Vec<Weak<Pool>>,
}

/// A cap on the server connections of a group of pools, with its count.
pub struct GroupLimit {
    kind: GroupKind,
    name: Arc<str>,
    /// 0 = unlimited.
    max: AtomicUsize,
    inner: Mutex<Inner>,
    /// `!inner.blocked.is_empty()`, readable without the lock.
    has_blocked: AtomicBool,
    /// Clients of the group: of a database (`max_db_client_connections`), or logged in
    /// as a user (`max_user_client_connections`).
    clients: Arc<AtomicUsize>,
}

impl std::fmt::Debug for GroupLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupLimit")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("max", &self.max())
            .field("open", &self.open())
            .finish_non_exhaustive()
    }
}

impl GroupLimit {
    /// A group named `name` capped at `max` server connections (0 = unlimited).
    pub fn new(kind: GroupKind, name: &str, max: usize) -> Arc<GroupLimit> {
        Arc::new(GroupLimit {
            kind,
            name: name.into(),
            max: AtomicUsize::new(max),
            inner: Mutex::new(Inner::default()),
            has_blocked: AtomicBool::new(false),
            clients: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.locked()
    }

    /// Database or user group.
    pub fn kind(&self) -> GroupKind {
        self.kind
    }

    /// The database or user name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cap (0 = unlimited).
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Server connections open or being opened in the group.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// Clients holding a [`ClientSlot`] of this group.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Changes the cap (reload). A higher cap lets blocked pools open connections now.
    pub fn set_max(&self, max: usize) {
        let old = self.max.swap(max, Ordering::Relaxed);
        if max == 0 || (old != 0 && max > old) {
            self.wake();
        }
    }

    /// Adds a pool to the group (kept as a weak reference).
    pub(super) fn add_member(&self, pool: &Arc<Pool>) {
        let mut inner = self.lock();
        inner.members.retain(|w| w.strong_count() > 0);
        inner.members.push(Arc::downgrade(pool));
    }

    fn full(&self, inner: &Inner) -> bool {
        let max = self.max();
        max != 0 && inner.open >= max
    }

    /// Records `pool` as blocked (once).
    fn block(&self, inner: &mut Inner, pool: &Arc<Pool>) {
        let me = Arc::downgrade(pool);
        if !inner.blocked.iter().any(|w| w.ptr_eq(&me)) {
            inner.blocked.push_back(me);
        }
        self.has_blocked.store(true, Ordering::Relaxed);
    }

    /// Whether a pool other than `pool` waits for room in this group. Lock-free when
    /// nobody waits.
    #[inline]
    pub(super) fn others_blocked(&self, pool: &Arc<Pool>) -> bool {
        if !self.has_blocked.load(Ordering::Relaxed) {
            return false;
        }
        self.others_blocked_slow(pool)
    }

    #[cold]
    fn others_blocked_slow(&self, pool: &Arc<Pool>) -> bool {
        let me = Arc::downgrade(pool);
        self.lock()
            .blocked
            .iter()
            .any(|w| !w.ptr_eq(&me) && w.strong_count() > 0)
    }

    /// `n` connections of the group closed (or were never opened).
    pub(super) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        {
            let mut inner = self.lock();
            inner.open = inner.open.saturating_sub(n);
        }
        self.wake();
    }

    /// Lets the blocked pools retry, first blocked first. Called without any lock held.
    fn wake(&self) {
        let woken: Vec<Weak<Pool>> = {
            let mut inner = self.lock();
            if inner.blocked.is_empty() || self.full(&inner) {
                return;
            }
            self.has_blocked.store(false, Ordering::Relaxed);
            inner.blocked.drain(..).collect()
        };
        for w in woken {
            if let Some(pool) = w.upgrade() {
                // Re-registers itself as blocked if the group is full again.
                pool.grant_waiters();
            }
        }
    }

    /// Closes one idle connection of another pool of the group, so that a client of
    /// `asking` can open one. Returns whether one was closed.
    pub(super) fn evict_idle(&self, asking: &Arc<Pool>) -> bool {
        let members: Vec<Arc<Pool>> = self
            .lock()
            .members
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        members
            .iter()
            .filter(|p| !Arc::ptr_eq(p, asking))
            .any(|p| p.evict_one_idle(self.kind))
    }

    /// Takes one client place (0 = unlimited), or None when `max` are taken.
    pub fn try_add_client(&self, max: usize) -> Option<ClientSlot> {
        let taken = self
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            });
        taken.ok().map(|_| ClientSlot {
            clients: self.clients.clone(),
        })
    }
}

/// A client's place in a database's or a user's client count; given back on drop.
#[derive(Debug)]
pub struct ClientSlot {
    clients: Arc<AtomicUsize>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The groups a pool belongs to: its database's and its server user's.
#[derive(Debug, Clone)]
pub struct Groups {
    /// The client-side database's group.
    pub db: Arc<GroupLimit>,
    /// The server-side user's group.
    pub user: Arc<GroupLimit>,
}

impl Groups {
    /// Unlimited groups of one pool only (tests, tools).
    pub fn standalone(database: &str, user: &str) -> Groups {
        Groups {
            db: GroupLimit::new(GroupKind::Database, database, 0),
            user: GroupLimit::new(GroupKind::User, user, 0),
        }
    }

    /// Counts one new connection in both groups, or in neither. When a group is full,
    /// `pool` is recorded as blocked on it if `block`, and the full group is returned.
    pub(super) fn try_acquire(&self, pool: &Arc<Pool>, block: bool) -> Result<(), Arc<GroupLimit>> {
        let mut db = self.db.lock();
        if self.db.full(&db) {
            if block {
                self.db.block(&mut db, pool);
            }
            return Err(self.db.clone());
        }
        let mut user = self.user.lock();
        if self.user.full(&user) {
            if block {
                self.user.block(&mut user, pool);
            }
            return Err(self.user.clone());
        }
        db.open += 1;
        user.open += 1;
        Ok(())
    }

    /// `n` connections closed (or never opened).
    pub(super) fn release(&self, n: usize) {
        self.db.release(n);
        self.user.release(n);
    }

    /// Whether another pool of either group is waiting for room (every give-back
    /// asks: two relaxed loads, inline, when nobody waits).
    #[inline]
    pub(super) fn others_blocked(&self, pool: &Arc<Pool>) -> bool {
        self.db.others_blocked(pool) || self.user.others_blocked(pool)
    }

    /// Whether either group has a cap.
    pub fn limited(&self) -> bool {
        self.db.max() != 0 || self.user.max() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(db: &str, user: &str, groups: Groups) -> Arc<Pool> {
        crate::pool::test_support::pool(db, user, groups, |_| {})
    }

    #[test]
    fn counts_in_both_groups_or_neither() {
        let db = GroupLimit::new(GroupKind::Database, "app", 3);
        let alice = GroupLimit::new(GroupKind::User, "alice", 2);
        let bob = GroupLimit::new(GroupKind::User, "bob", 0);
        let ga = Groups {
            db: db.clone(),
            user: alice.clone(),
        };
        let gb = Groups {
            db: db.clone(),
            user: bob.clone(),
        };
        let (pa, pb) = (
            pool("app", "alice", ga.clone()),
            pool("app", "bob", gb.clone()),
        );
        assert!(ga.try_acquire(&pa, true).is_ok());
        assert!(ga.try_acquire(&pa, true).is_ok());
        // alice's cap is reached: refused by the user group, the database count unchanged.
        let refused = ga.try_acquire(&pa, true).unwrap_err();
        assert_eq!(refused.kind(), GroupKind::User);
        assert_eq!((db.open(), alice.open()), (2, 2));
        // bob has no cap of his own, but the database has one left.
        assert!(gb.try_acquire(&pb, true).is_ok());
        let refused = gb.try_acquire(&pb, true).unwrap_err();
        assert_eq!(refused.kind(), GroupKind::Database);
        assert_eq!((db.open(), alice.open(), bob.open()), (3, 2, 1));
        // alice's pool sees bob's blocked on the database; bob's sees only itself
        // (alice's is blocked on her own user group).
        assert!(ga.others_blocked(&pa));
        assert!(!gb.others_blocked(&pb));
        assert!(alice.has_blocked.load(Ordering::Relaxed));
        // A release wakes the blocked pools (they have no waiters: nothing is taken).
        ga.release(1);
        assert_eq!((db.open(), alice.open()), (2, 1));
        assert!(!ga.others_blocked(&pa) && !gb.others_blocked(&pb));
        assert!(gb.try_acquire(&pb, true).is_ok());
        assert_eq!((db.open(), bob.open()), (3, 2));
    }

    #[test]
    fn unlimited_counts_and_cap_changes() {
        let g = Groups::standalone("app", "u");
        let p = pool("app", "u", g.clone());
        for _ in 0..100 {
            g.try_acquire(&p, false).unwrap();
        }
        assert_eq!(g.db.open(), 100);
        assert!(!g.limited());
        g.db.set_max(100);
        assert!(g.limited());
        // Not blocking: refused without being recorded.
        assert!(g.try_acquire(&p, false).is_err());
        assert!(!g.db.has_blocked.load(Ordering::Relaxed));
        g.db.set_max(101);
        assert!(g.try_acquire(&p, true).is_ok());
        g.release(101);
        assert_eq!((g.db.open(), g.user.open()), (0, 0));
        // More releases than acquisitions never wrap around.
        g.release(1);
        assert_eq!(g.db.open(), 0);
    }

    #[test]
    fn client_slots_are_capped_and_given_back() {
        let g = GroupLimit::new(GroupKind::Database, "app", 0);
        let a = g.try_add_client(2).unwrap();
        let _b = g.try_add_client(2).unwrap();
        assert!(g.try_add_client(2).is_none());
        assert_eq!(g.clients(), 2);
        drop(a);
        assert_eq!(g.clients(), 1);
        let _c = g.try_add_client(2).unwrap();
        // 0 = unlimited.
        let more: Vec<_> = (0..10).map(|_| g.try_add_client(0).unwrap()).collect();
        assert_eq!(g.clients(), 12);
        drop(more);
        assert_eq!(g.clients(), 2);
    }

    #[test]
    fn members_are_weak_and_eviction_skips_the_asker() {
        let g = Groups::standalone("app", "u");
        let p = pool("app", "u", g.clone());
        let q = pool(
            "app",
            "v",
            Groups {
                db: g.db.clone(),
                user: GroupLimit::new(GroupKind::User, "v", 0),
            },
        );
        // No idle connection anywhere: nothing to evict.
        assert!(!g.db.evict_idle(&p));
        assert_eq!(g.db.lock().members.len(), 2);
        drop(q);
        let _r = pool(
            "app",
            "w",
            Groups {
                db: g.db.clone(),
                user: GroupLimit::new(GroupKind::User, "w", 0),
            },
        );
        // The dropped pool's entry was pruned when the next one joined.
        assert_eq!(g.db.lock().members.len(), 2);
        drop(p);
    }
}
