//! How a pool decides whether it may open one more server connection: its size, the
//! reserve pool (reserve_pool_size after reserve_pool_timeout), its database and user
//! groups (max_db_connections, max_user_connections, with eviction of idle connections
//! of other pools), and server_login_retry after a failed login.

use std::sync::Arc;
use std::time::Instant;

use super::{checkout, Grant, GroupKind, Open, Pool, PoolSettings, State};
use crate::error::ClientNotice;
use crate::sync::LockExt;

impl Pool {
    /// Grants slots to waiters, FIFO: as many as room allows, or one from the reserve.
    pub(super) fn grant(self: &Arc<Self>, reserve: bool) -> usize {
        let mut granted = 0;
        loop {
            let waiter = {
                let mut st = self.lock();
                while st.waiters.front().is_some_and(|w| w.is_closed()) {
                    st.waiters.pop_front();
                }
                if st.waiters.is_empty() {
                    return granted;
                }
                let settings = self.settings.load();
                let limit = if reserve {
                    settings.max_total()
                } else {
                    settings.size
                };
                match self.may_open(&mut st, limit) {
                    Open::Yes => {}
                    Open::Full | Open::Group(_) => return granted,
                }
                st.waiters.pop_front().expect("checked non-empty")
            };
            granted += 1;
            // A dead waiter hands the slot on through Slot's Drop.
            let _ = waiter.send(Grant::Slot(checkout::Slot::new(self.clone())));
            if reserve {
                return granted;
            }
        }
    }

    /// Counts one more connection if the pool is below `limit` and its groups below
    /// their caps. Called with the pool's lock held.
    pub(super) fn may_open(self: &Arc<Self>, st: &mut State, limit: usize) -> Open {
        if st.closed || st.paused || st.total >= limit {
            return Open::Full;
        }
        match self.groups.try_acquire(self, true) {
            Ok(()) => {
                st.total += 1;
                Open::Yes
            }
            Err(g) => Open::Group(g),
        }
    }

    /// Closes the longest-idle connection, for a pool of the same group blocked by
    /// `kind`'s cap. Returns whether there was one.
    pub(super) fn evict_one_idle(&self, kind: GroupKind) -> bool {
        let m = {
            let mut st = self.lock();
            if st.idle.is_empty() {
                return false;
            }
            st.total -= 1;
            st.idle.remove(0)
        };
        let reason = match kind {
            GroupKind::Database => "evicted: max_db_connections reached",
            GroupKind::User => "evicted: max_user_connections reached",
        };
        self.close_members(vec![m], reason);
        true
    }

    /// The error of the last failed login while server_login_retry has not passed at
    /// `now`.
    pub(super) fn login_failing(
        &self,
        settings: &PoolSettings,
        now: Instant,
    ) -> Option<ClientNotice> {
        let retry = settings.login_retry?;
        let failure = self.login_failure.locked();
        let (at, notice) = failure.as_ref()?;
        (now.saturating_duration_since(*at) < retry).then(|| notice.clone())
    }

    /// Records a connect or login that failed at `now` (server_login_retry).
    pub(super) fn login_failed(&self, e: &crate::error::ServerError, now: Instant) {
        let mut notice = e.to_notice();
        notice
            .message
            .push_str(" (server_login_retry: not retrying yet)");
        *self.login_failure.locked() = Some((now, notice));
    }

    /// Forgets a failed login: the next client tries again.
    pub(crate) fn clear_login_failure(&self) {
        *self.login_failure.locked() = None;
    }
}
