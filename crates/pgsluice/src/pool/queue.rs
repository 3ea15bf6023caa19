//! Checking a connection out: an idle one at once, a place in the FIFO queue, or
//! permission to open one; and the queue's deadlines (query_wait_timeout,
//! reserve_pool_timeout), checked by the pool's upkeep rather than by a timer per wait.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{checkout, Checkout, ClientInfo, Grant, Open, Pool, PoolSettings};
use crate::error::PoolError;
use crate::server;

/// What [`Pool::start_checkout`] found.
pub(crate) enum Start {
    /// A connection, at once.
    Ready(Checkout),
    /// A place in the queue.
    Wait(Queued),
    /// Permission to open a connection (and when the request started).
    Open(checkout::Slot, Instant),
}

/// A place in a pool's wait queue.
pub(crate) struct Queued {
    rx: oneshot::Receiver<Grant>,
    started: Instant,
}

#[cfg(test)]
impl Queued {
    /// What the queue granted so far, without waiting: None while still waiting.
    pub(super) fn granted(&mut self) -> Option<Grant> {
        self.rx.try_recv().ok()
    }
}

/// A client waiting for a connection.
pub(super) struct Waiter {
    pub(super) tx: oneshot::Sender<Grant>,
    /// When it started waiting (waiters queue in this order).
    pub(super) since: Instant,
}

impl Waiter {
    pub(super) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub(super) fn send(self, grant: Grant) -> Result<(), Grant> {
        self.tx.send(grant)
    }
}

/// A checkout that failed leaves its client idle (it was marked waiting).
fn gave_up(client: Option<&Arc<ClientInfo>>, e: PoolError) -> PoolError {
    if let Some(c) = client {
        c.set_idle();
    }
    e
}

impl Pool {
    /// Waits for a connection: an idle one, a new one if below size, or the next one
    /// returned (FIFO) within the wait timeout. While the pool is paused every request
    /// waits. `client` (the admin view of the client asking) is marked waiting, then
    /// linked to the connection.
    pub async fn checkout(
        self: &Arc<Self>,
        client: Option<Arc<ClientInfo>>,
    ) -> Result<Checkout, PoolError> {
        match self.start_checkout(client.as_ref(), Instant::now())? {
            Start::Ready(c) => Ok(c),
            Start::Wait(w) => self.wait_for(w, client).await,
            Start::Open(slot, started) => self.open_with(slot, started, client).await,
        }
    }

    /// The part of a checkout that needs no waiting: an idle connection, a place in
    /// the queue, or permission to open a connection. `client` is marked waiting unless
    /// it got a connection, and idle again if the wait or the open fails.
    pub(crate) fn start_checkout(
        self: &Arc<Self>,
        client: Option<&Arc<ClientInfo>>,
        started: Instant,
    ) -> Result<Start, PoolError> {
        let mut stale = Vec::new();
        let queued = {
            let mut st = self.lock();
            if st.closed {
                return Err(PoolError::Closed);
            }
            if let Some(m) = self.pop_usable(&mut st, &mut stale, started) {
                drop(st);
                self.close_members(stale, "stale");
                self.stats.add_wait(Duration::ZERO);
                let mut co = Checkout::new(m, self.clone());
                co.attach(client.cloned());
                return Ok(Start::Ready(co));
            }
            if let Some(c) = client {
                c.set_waiting();
            }
            // Waiters first: a new client does not overtake queued ones.
            let open = if st.waiters.iter().any(|w| !w.is_closed()) {
                Open::Full
            } else {
                self.may_open(&mut st, self.hot.size.load(Ordering::Relaxed))
            };
            match open {
                Open::Yes => None,
                open => {
                    let (tx, rx) = oneshot::channel();
                    if st.waiters.len() > 64 && st.waiters.len().is_power_of_two() {
                        st.waiters.retain(|w| !w.is_closed());
                    }
                    st.waiters.push_back(Waiter { tx, since: started });
                    Some((rx, open))
                }
            }
        };
        self.close_members(stale, "stale");
        match queued {
            None => Ok(Start::Open(checkout::Slot::new(self.clone()), started)),
            Some((rx, open)) => {
                if let Open::Group(g) = open {
                    // Blocked only by the database or user cap: free an idle
                    // connection of another pool of the group, if there is one.
                    g.evict_idle(self);
                }
                Ok(Start::Wait(Queued { rx, started }))
            }
        }
    }

    /// Waits in the queue (see [`Pool::start_checkout`]) for a connection, or for
    /// permission to open one (the open is boxed: the wait itself stays small).
    pub(crate) async fn wait_for(
        self: &Arc<Self>,
        w: Queued,
        client: Option<Arc<ClientInfo>>,
    ) -> Result<Checkout, PoolError> {
        match w.rx.await {
            Ok(Grant::Conn(mut c)) => {
                self.stats.add_wait(w.started.elapsed());
                c.attach(client);
                Ok(c)
            }
            Ok(Grant::Slot(slot)) => Box::pin(self.open_with(slot, w.started, client)).await,
            Ok(Grant::Expired) => Err(gave_up(
                client.as_ref(),
                PoolError::WaitTimeout(self.settings.load().wait_timeout.unwrap_or_default()),
            )),
            Err(_) => Err(gave_up(client.as_ref(), PoolError::Closed)),
        }
    }

    /// Opens a new server connection in `slot` for `client`.
    pub(crate) async fn open_with(
        self: &Arc<Self>,
        slot: checkout::Slot,
        started: Instant,
        client: Option<Arc<ClientInfo>>,
    ) -> Result<Checkout, PoolError> {
        let settings = self.settings.load_full();
        if let Some(notice) = self.login_failing(&settings, Instant::now()) {
            // server_login_retry: fail at once, without another attempt.
            return Err(gave_up(client.as_ref(), PoolError::LoginRetry(notice)));
        }
        let conn = Box::pin(server::connect(
            self.connect_target(),
            self.ids.next(),
            settings.connect_timeout,
        ))
        .await
        .map_err(|e| {
            self.login_failed(&e, Instant::now());
            gave_up(client.as_ref(), e.into())
        })?;
        self.stats.add_wait(started.elapsed());
        let mut co = slot.fill(conn);
        co.attach(client);
        Ok(co)
    }

    /// Ends the waits that passed query_wait_timeout and, once the oldest waiter has
    /// waited reserve_pool_timeout, lets waiters open reserve connections. Run by the
    /// upkeep every second: a wait ends up to a second after its limit, and waiting
    /// costs no timer.
    pub(super) fn expire_waits(self: &Arc<Self>, settings: &PoolSettings, now: Instant) {
        let expired: Vec<Waiter> = {
            let mut st = self.lock();
            let mut expired = Vec::new();
            while let Some(w) = st.waiters.front() {
                let overdue = settings
                    .wait_timeout
                    .is_some_and(|l| now.saturating_duration_since(w.since) >= l);
                if !(w.is_closed() || overdue) {
                    break;
                }
                expired.extend(st.waiters.pop_front().filter(|w| !w.is_closed()));
            }
            expired
        };
        for w in expired {
            let _ = w.send(Grant::Expired);
        }
        if let Some((_, after)) = settings.reserve() {
            while self.oldest_wait(now).is_some_and(|waited| waited >= after) {
                if self.grant(true) == 0 {
                    break;
                }
                tracing::info!(pool = %self.key, "taking a connection from the reserve pool");
            }
        }
    }

    /// How long the first live waiter has waited.
    fn oldest_wait(&self, now: Instant) -> Option<Duration> {
        let st = self.lock();
        let w = st.waiters.iter().find(|w| !w.is_closed())?;
        Some(now.saturating_duration_since(w.since))
    }
}
