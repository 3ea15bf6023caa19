//! Background upkeep of one pool: close connections idle past server_idle_timeout or
//! older than server_lifetime, and keep min_pool_size connections open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{checkout::Slot, Pool, ReturnAs};
use crate::server;
use crate::shutdown::ShutdownWatch;

/// How often the upkeep runs.
const TICK: Duration = Duration::from_secs(1);

impl Pool {
    /// Spawns the upkeep task (in the pool's background tracker); it ends when
    /// shutdown starts or the pool is closed or dropped.
    pub fn start_maintenance(self: &Arc<Self>, mut shutdown: ShutdownWatch) {
        let weak = Arc::downgrade(self);
        self.background.spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.requested() => return,
                }
                let Some(pool) = weak.upgrade() else { return };
                if pool.is_closed() {
                    return;
                }
                pool.maintain(Instant::now());
            }
        });
    }

    /// One round of upkeep at time `now`.
    pub(crate) fn maintain(self: &Arc<Self>, now: Instant) {
        let settings = self.settings();
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Relaxed);
        let mut closing = Vec::new();
        let fill = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            let idle = std::mem::take(&mut st.idle);
            // idle is a stack: the bottom holds the longest-idle connections.
            for m in idle {
                let too_old = settings.lifetime.is_some_and(|l| m.conn.age_at(now) >= l);
                let too_idle = settings
                    .idle_timeout
                    .is_some_and(|t| now.saturating_duration_since(m.conn.last_used) >= t)
                    && st.total > settings.min_size;
                // A reload may have shrunk the pool: trim idle connections first.
                let too_many = st.total > settings.max_total();
                if too_old || too_idle || too_many || m.info().epoch < epoch {
                    st.total -= 1;
                    closing.push(m);
                } else {
                    st.idle.push(m);
                }
            }
            let blocked = self.login_failing(&settings, now).is_some();
            let mut need = if blocked || st.paused {
                0
            } else {
                settings.min_size.saturating_sub(st.total)
            };
            // Within the database and user caps only; never recorded as blocked.
            for i in 0..need {
                if self.groups.try_acquire(self, false).is_err() {
                    need = i;
                    break;
                }
            }
            st.total += need;
            need
        };
        self.close_members(closing, "idle timeout, lifetime or reconnect");
        self.expire_waits(&settings, now);
        for _ in 0..fill {
            let slot = Slot::new(self.clone());
            let pool = self.clone();
            let timeout = settings.connect_timeout;
            // Ends when the connect succeeds or fails, within server_connect_timeout.
            self.background.spawn(async move {
                match server::connect(pool.connect_target(), pool.ids.next(), timeout).await {
                    Ok(conn) => slot.fill(conn).return_as(ReturnAs::Clean),
                    Err(e) => {
                        tracing::warn!(pool = %pool.key, error = %e, "could not open min_pool_size connection");
                        pool.login_failed(&e, Instant::now());
                        drop(slot);
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::error::PoolError;
    use crate::pool::group::{GroupKind, GroupLimit, Groups};
    use crate::pool::test_support::pool;

    #[tokio::test]
    async fn waits_end_at_the_upkeep_after_query_wait_timeout() {
        let groups = Groups {
            db: GroupLimit::new(GroupKind::Database, "d", 0),
            user: GroupLimit::new(GroupKind::User, "u", 0),
        };
        // Size 0: every checkout waits.
        let p = pool("d", "u", groups, |s| {
            s.size = 0;
            s.wait_timeout = Some(Duration::from_secs(5));
        });
        let waiting = tokio::spawn({
            let p = p.clone();
            async move { p.checkout(None).await.map(|_| ()) }
        });
        while p.status().waiting == 0 {
            tokio::task::yield_now().await;
        }
        let settings = p.settings();
        let start = Instant::now();
        p.expire_waits(&settings, start + Duration::from_secs(4));
        assert_eq!(p.status().waiting, 1, "not yet due");
        p.expire_waits(&settings, start + Duration::from_secs(6));
        assert_eq!(p.status().waiting, 0);
        let r = waiting.await.unwrap();
        assert!(
            matches!(r, Err(PoolError::WaitTimeout(d)) if d == Duration::from_secs(5)),
            "{r:?}"
        );
    }
}
