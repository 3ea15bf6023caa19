//! Why and how a session is asked to stop: KILL / KILL_CLIENT and shutdown, the
//! signal the session's selects poll, and what the client is told.

use std::sync::Arc;

use pgsluice_protocol::SqlState;

use super::context::ClientContext;
use crate::error::ClientNotice;
use crate::pool::listing::ClientInfo;

/// PostgreSQL's message for 57P01.
const ADMIN_SHUTDOWN_MSG: &str = "terminating connection due to administrator command";

/// Why a session is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Graceful shutdown: at the next release point.
    Shutdown,
    /// KILL / KILL_CLIENT: now.
    Killed,
    /// Its notification queue overflowed (it does not read): now.
    Overflow,
}

/// Resolves when the session is asked to stop: KILL / KILL_CLIENT (through the
/// client's admin entry) or a shutdown. Every select of the session polls it, so a poll
/// is two atomic loads; the task's waker is registered once with the client's entry,
/// which KILL and a shutdown wake.
pub(super) struct StopSignal {
    pub(super) ctx: Arc<ClientContext>,
    pub(super) info: Arc<ClientInfo>,
    pub(super) registered: bool,
    /// The stop seen, once seen (kept here: it packs beside `registered`).
    pub(super) fired: Option<Stop>,
}

impl std::future::Future for StopSignal {
    type Output = Stop;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Stop> {
        if !self.registered {
            // Before the checks: a stop between them and the registration still wakes.
            self.info.register_stop_waker(cx.waker());
            self.registered = true;
        }
        if self.info.is_killed() {
            std::task::Poll::Ready(if self.info.notify_overflowed() {
                Stop::Overflow
            } else {
                Stop::Killed
            })
        } else if self.ctx.shutdown_requested() {
            std::task::Poll::Ready(Stop::Shutdown)
        } else {
            std::task::Poll::Pending
        }
    }
}

/// What the client is told when it is stopped, and the logout reason.
pub(super) fn stop_notice(why: Stop) -> (ClientNotice, &'static str) {
    match why {
        Stop::Shutdown => (
            ClientNotice::fatal(SqlState::ADMIN_SHUTDOWN, ADMIN_SHUTDOWN_MSG),
            "shutdown",
        ),
        Stop::Killed => (
            ClientNotice::fatal(SqlState::ADMIN_SHUTDOWN, "admin forced disconnect"),
            "killed by admin command",
        ),
        Stop::Overflow => (
            ClientNotice::fatal(
                SqlState::OUT_OF_MEMORY,
                format!(
                    "notification queue full ({} messages): the client does not read its notifications",
                    crate::notify::QUEUE_BOUND.messages
                ),
            ),
            "notification queue full",
        ),
    }
}
