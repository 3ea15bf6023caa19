//! Connections coming back to a pool: handed to the first waiter or pushed on the idle
//! stack, closed when the pool no longer wants them, and the slots they free.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{checkout, Checkout, Grant, Member, Pool, ServerState};

impl Pool {
    /// Returns a clean connection at `now`: to the first live waiter, else to the idle
    /// stack (its idle time counts from `now`). Closed instead when the pool is paused
    /// or closed, the connection is marked for reconnect, or the pool holds more
    /// connections than its (reloaded) size.
    pub(super) fn put_back(self: &Arc<Self>, mut m: Member, now: Instant) {
        m.conn.last_used = now;
        let size = self.hot.max_total.load(Ordering::Relaxed);
        loop {
            let waiter = {
                let mut st = self.lock();
                let reason = if st.closed {
                    Some("pool closed")
                } else if st.paused {
                    Some("pool paused")
                } else if m.info().epoch < self.epoch.load(Ordering::Relaxed) {
                    Some("reconnect requested")
                } else if st.total > size {
                    Some("pool size reduced")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    st.total -= 1;
                    drop(st);
                    self.close_members(vec![m], reason);
                    return;
                }
                match st.waiters.pop_front() {
                    Some(w) => w,
                    None if self.groups.others_blocked(self) => {
                        // Another pool of the database or user waits for room under
                        // max_db_connections / max_user_connections: make it.
                        st.total -= 1;
                        drop(st);
                        self.close_members(vec![m], "connection limit: room for another pool");
                        return;
                    }
                    None => {
                        m.info().unlink(ServerState::Idle);
                        st.idle.push(m);
                        drop(st);
                        if self.watchers.load(Ordering::SeqCst) > 0 {
                            self.changed.notify_waiters();
                        }
                        return;
                    }
                }
            };
            match waiter.send(Grant::Conn(Checkout::new(m, self.clone()))) {
                Ok(()) => return,
                Err(Grant::Conn(mut c)) => m = c.take(),
                Err(Grant::Slot(_) | Grant::Expired) => unreachable!("sent a connection"),
            }
        }
    }

    /// A connection slot freed (connection closed or never opened): let a waiter open
    /// one, unless the pool is paused, closed or above its size.
    pub(super) fn release_slot(self: &Arc<Self>) {
        let size = self.settings.load().size;
        let waiter = {
            let mut st = self.lock();
            let w = if !st.closed && !st.paused && st.total <= size {
                st.waiters.pop_front()
            } else {
                None
            };
            match w {
                Some(w) => w,
                None => {
                    st.total -= 1;
                    drop(st);
                    self.groups.release(1);
                    self.changed.notify_waiters();
                    return;
                }
            }
        };
        // If the waiter is gone the slot comes back through Slot's Drop: next waiter.
        let _ = waiter.send(Grant::Slot(checkout::Slot::new(self.clone())));
    }

    /// Lets waiters open connections while the pool is below its size and its groups
    /// below their caps (after RESUME, a larger pool size, or room in a group).
    pub(crate) fn grant_waiters(self: &Arc<Self>) {
        self.grant(false);
    }

    /// Closes a connection that will not be reused, and frees its slot.
    pub(super) fn discard(self: &Arc<Self>, m: Member, reason: &'static str) {
        tracing::info!(server = %m.conn.id, pool = %self.key, reason, "server connection closed");
        m.info().unlink(ServerState::Closing);
        self.release_slot();
        self.spawn_close(m);
    }

    /// Closes connections already taken out of the count.
    #[inline]
    pub(super) fn close_members(&self, members: Vec<Member>, reason: &'static str) {
        // Inline, for the common case (every checkout passes an empty list of stale
        // connections): no call, and an empty Vec's drop is nothing.
        if !members.is_empty() {
            self.close_members_now(members, reason);
        }
    }

    #[cold]
    fn close_members_now(&self, members: Vec<Member>, reason: &'static str) {
        self.groups.release(members.len());
        for m in members {
            tracing::info!(server = %m.conn.id, pool = %self.key, reason, "server connection closed");
            m.info().unlink(ServerState::Closing);
            self.spawn_close(m);
        }
        self.changed.notify_waiters();
    }
}
