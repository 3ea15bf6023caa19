//! The relay's timeouts (query_timeout, idle_transaction_timeout, client_idle_timeout,
//! transaction_timeout): one timer re-armed when the relay's phase changes, and one for
//! the whole transaction. A child of the relay module, so that it reaches the relay's
//! fields.

use std::future::Future;
use std::task::{Context, Poll};

use super::{Phase, Relay, RelayEnd, RelayIo};

impl<C: RelayIo, S: RelayIo> Relay<'_, C, S> {
    /// Arms, moves or disarms the timer when the phase changes; Ready when it fired.
    pub(super) fn poll_timeouts(&mut self, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        let t = self.timeouts;
        if let Some(limit) = t.transaction {
            if self.poll_transaction_timeout(limit, cx) {
                return Poll::Ready(RelayEnd::TransactionTimeout);
            }
        }
        if t.query.is_none() && t.idle_in_transaction.is_none() && t.client_idle.is_none() {
            return Poll::Pending;
        }
        let phase = self.phase_now();
        if phase != self.phase || (self.timer.is_none() && !self.timer_armed) {
            self.phase = phase;
            let limit = match phase {
                Phase::Busy => t.query,
                Phase::IdleInTransaction => t.idle_in_transaction,
                Phase::Idle if !self.release_at_idle => t.client_idle,
                Phase::Idle => None,
            };
            self.timer_armed = limit.is_some();
            if let Some(d) = limit {
                let deadline = tokio::time::Instant::now() + d;
                match &mut self.timer {
                    Some(timer) => timer.as_mut().reset(deadline),
                    None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
            }
        }
        if !self.timer_armed {
            return Poll::Pending;
        }
        match self.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(match self.phase {
                Phase::Busy => RelayEnd::QueryTimeout,
                Phase::IdleInTransaction => RelayEnd::IdleInTransactionTimeout,
                Phase::Idle => RelayEnd::ClientIdleTimeout,
            }),
            _ => Poll::Pending,
        }
    }

    /// Arms transaction_timeout's timer when a transaction starts (a request in flight
    /// or a transaction block open), disarms it at its end; true when it fired.
    fn poll_transaction_timeout(
        &mut self,
        limit: std::time::Duration,
        cx: &mut Context<'_>,
    ) -> bool {
        if self.phase_now() == Phase::Idle {
            self.tx_armed = false;
            return false;
        }
        if !self.tx_armed {
            self.tx_armed = true;
            let deadline = tokio::time::Instant::now() + limit;
            match &mut self.tx_timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.tx_timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.tx_timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }
}
