//! The RAII guard for a checked-out server connection, and the slot permit used while a
//! new connection is being opened. No code path can forget to give either back.

use std::sync::Arc;
use std::time::Instant;

use super::listing::{ClientInfo, ServerState};
use super::{Member, Pool};
use crate::server::ServerConn;

/// How a guard returns its connection when dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnAs {
    /// Idle, no transaction, nothing pending: reuse as it is.
    Clean,
    /// Idle but carrying session state: run the reset query first.
    Reset,
    /// Inside a transaction block with nothing in flight (statement mode refused the
    /// block): ROLLBACK first, then as `Clean`.
    Rollback,
    /// Unknown or dirty state: close it.
    Close,
}

/// A server connection checked out of a pool. Dropping it returns the connection
/// according to [`ReturnAs`]; the default is `Close`, so forgetting to mark a
/// connection clean can cost a reconnect but never leak state to another client.
#[derive(Debug)]
pub struct Checkout {
    conn: Option<Member>,
    pool: Arc<Pool>,
    return_as: ReturnAs,
    client: Option<Arc<ClientInfo>>,
    /// When the holder was done with it, if it read the clock already (the idle period
    /// of the connection starts there); else dropping the guard reads it.
    done_at: Option<Instant>,
}

impl Checkout {
    pub(super) fn new(m: Member, pool: Arc<Pool>) -> Self {
        Checkout {
            conn: Some(m),
            pool,
            return_as: ReturnAs::Close,
            client: None,
            done_at: None,
        }
    }

    /// Links the connection and the client it is handed to (for the admin views).
    pub(super) fn attach(&mut self, client: Option<Arc<ClientInfo>>) {
        let Some(m) = &self.conn else { return };
        let client_id = client.as_ref().map_or(0, |c| c.id);
        m.reg.info.set_active(client_id);
        if let Some(c) = &client {
            c.set_active(m.reg.info.id);
        }
        self.client = client;
    }

    /// The connection.
    pub fn conn(&mut self) -> &mut ServerConn {
        &mut self
            .conn
            .as_mut()
            .expect("connection present until drop")
            .conn
    }

    /// Records, for SHOW SERVERS, how many statements are prepared on the connection.
    pub fn set_prepared_statements(&self, n: usize) {
        if let Some(m) = &self.conn {
            m.reg.info.set_prepared_statements(n);
        }
    }

    /// The pool it belongs to.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Records when the holder was done with the connection, so that giving it back
    /// reads no clock of its own.
    pub fn done_at(&mut self, now: Instant) {
        self.done_at = Some(now);
    }

    /// Sets how the connection goes back.
    pub fn return_as(&mut self, how: ReturnAs) {
        self.return_as = how;
    }

    /// Takes the connection out without returning it (the caller re-homes it).
    pub(super) fn take(&mut self) -> Member {
        self.return_as = ReturnAs::Close;
        if let Some(c) = self.client.take() {
            c.set_idle();
        }
        self.conn.take().expect("connection present until drop")
    }
}

impl Checkout {
    /// Returns the connection as `how` says at `now` (the time its idle period starts
    /// from), as dropping the guard does at the current time.
    #[cfg(test)]
    pub(super) fn release_at(mut self, how: ReturnAs, now: Instant) {
        self.return_as = how;
        self.give_back(now);
    }

    /// Returns the connection according to `return_as`; a reset or ROLLBACK runs in a
    /// task of the pool's background tracker, bounded by server_connect_timeout.
    fn give_back(&mut self, now: Instant) {
        if let Some(c) = self.client.take() {
            c.set_idle();
        }
        let Some(m) = self.conn.take() else {
            return;
        };
        // Decide without cloning anything: the common case (Clean, no reset) must not
        // allocate or touch a reference count.
        let reset = if self.pool.wants_reset(self.return_as) {
            let settings = self.pool.settings();
            settings.reset_query.clone().map(|q| (q, settings))
        } else {
            None
        };
        let rollback = self.return_as == ReturnAs::Rollback;
        match (self.return_as, reset) {
            (ReturnAs::Close, _) => self.pool.discard(m, "not clean"),
            (_, None) if !rollback => self.pool.put_back(m, now),
            (_, reset) => {
                let pool = self.pool.clone();
                let limit = match &reset {
                    Some((_, settings)) => settings.connect_timeout,
                    None => self.pool.settings().connect_timeout,
                };
                let reset = reset.map(|(sql, _)| sql);
                m.reg.info.unlink(ServerState::Tested);
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        // Ends after one round trip, or at `limit`.
                        self.pool.background.spawn_on(&rt, async move {
                            let mut m = m;
                            let cleaned = tokio::time::timeout(limit, async {
                                if rollback {
                                    m.conn.run_discarding("ROLLBACK").await?;
                                }
                                match &reset {
                                    Some(sql) => m.conn.run_discarding(sql).await,
                                    None => Ok(()),
                                }
                            })
                            .await;
                            match cleaned {
                                Ok(Ok(())) => pool.put_back(m, Instant::now()),
                                _ => pool.discard(m, "reset query failed"),
                            }
                        });
                    }
                    Err(_) => pool.discard(m, "no runtime for reset"),
                }
            }
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let now = self.done_at.unwrap_or_else(Instant::now);
        self.give_back(now);
    }
}

/// Permission to open one new connection (counted in the pool's total). Dropped
/// without being filled, it frees the count and passes the chance to a waiter.
#[derive(Debug)]
pub(crate) struct Slot {
    pool: Option<Arc<Pool>>,
}

impl Slot {
    pub(super) fn new(pool: Arc<Pool>) -> Self {
        Slot { pool: Some(pool) }
    }

    /// Turns the slot into a checkout of the connection just opened.
    pub(super) fn fill(mut self, conn: ServerConn) -> Checkout {
        let pool = self.pool.take().expect("slot used once");
        pool.stats.server_opened();
        let m = pool.register(conn);
        Checkout::new(m, pool)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.release_slot();
        }
    }
}
