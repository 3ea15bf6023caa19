//! The relay's timeouts (query_timeout, idle_transaction_timeout, client_idle_timeout,
//! transaction_timeout): one timer re-armed when the relay's phase changes, and one for
//! the whole transaction. A child of the relay module, so that it reaches the relay's
//! fields.
//!
//! query_timeout is counted per query. Its clock starts when a request goes out with
//! nothing else in flight, and starts afresh each time the server finishes a query
//! (CommandComplete, EmptyQueryResponse, ErrorResponse, PortalSuspended or
//! ReadyForQuery, see [`WireState::server_tag`](super::WireState::server_tag)): from
//! then the server works on the next query of the pipeline. A pipeline of many short
//! queries is not cancelled for its total; one slow query inside it is.
//!
//! Moving the deadline costs no timer operation: the new deadline is later than the
//! one the timer is registered for, so it is only stored, and the timer, when it fires
//! early, is re-armed for it.

use std::future::Future;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::{Phase, Relay, RelayEnd, RelayIo};

impl<C: RelayIo, S: RelayIo> Relay<'_, C, S> {
    /// Arms, moves or disarms the timer when the phase changes or a query of a
    /// pipeline ends; Ready when it fired.
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
        if self.phase != Some(phase) {
            self.phase = Some(phase);
            self.clock_finished = self.flow.finished;
            let limit = match phase {
                Phase::Busy => t.query,
                Phase::IdleInTransaction => t.idle_in_transaction,
                Phase::Idle if !self.release_at_idle => t.client_idle,
                Phase::Idle => None,
            };
            self.deadline = limit.map(|d| Instant::now() + d);
        } else if phase == Phase::Busy && self.clock_finished != self.flow.finished {
            // A query of the pipeline finished: the next one has its own clock.
            self.clock_finished = self.flow.finished;
            self.deadline = t.query.map(|d| Instant::now() + d);
        }
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        let timer = match &mut self.timer {
            Some(timer) => {
                // Registered for later than the deadline, or already fired: reset.
                // Registered for earlier: it fires first and is re-armed below.
                if timer.deadline() > deadline || timer.is_elapsed() {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if timer.deadline() >= deadline {
                break;
            }
            // Fired for an earlier deadline than the phase's current one.
            timer.as_mut().reset(deadline);
        }
        Poll::Ready(match phase {
            Phase::Busy => RelayEnd::QueryTimeout,
            Phase::IdleInTransaction => RelayEnd::IdleInTransactionTimeout,
            Phase::Idle => RelayEnd::ClientIdleTimeout,
        })
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
            let deadline = Instant::now() + limit;
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
