//! How a relay run ends a request: the server connection goes back clean, is reset, or
//! is closed (a running query cancelled first), and the session either waits for the
//! next request or ends with what the client is told.

use pgsluice_protocol::SqlState;

use super::relay::RelayEnd;
use super::statement;
use super::stop::{stop_notice, Stop};
use crate::config::PoolMode;
use crate::error::ClientNotice;
use crate::pool::{Checkout, ReturnAs};
use crate::server;
use crate::shutdown::TaskTracker;

/// What the session does after a relay run.
pub(super) enum Next {
    /// Wait for the client's next request.
    Continue,
    /// Tell the client (if anything) and end the session, for this reason.
    End(Option<ClientNotice>, &'static str),
}

/// Returns the server connection as the way the relay ended allows, and says what the
/// client is told. Only an idle release point returns it for reuse.
pub(super) fn conclude(
    end: RelayEnd,
    mut co: Checkout,
    mode: PoolMode,
    busy: bool,
    stopped: Option<Stop>,
    tasks: &TaskTracker,
) -> Next {
    let clean = if mode.shares_servers() {
        ReturnAs::Clean
    } else {
        ReturnAs::Reset
    };
    let fatal = |code, msg: &str| Some(ClientNotice::fatal(code, msg));
    match end {
        RelayEnd::Idle => {
            co.return_as(clean);
            if stopped.is_some() || mode == PoolMode::Session {
                let (n, reason) = stop_notice(stopped.unwrap_or(Stop::Shutdown));
                return Next::End(Some(n), reason);
            }
            Next::Continue
        }
        RelayEnd::TransactionBlock { server_quiet } => {
            tracing::info!(
                server = %co.conn().id,
                "transaction block in statement mode: closing the client, rolling back its server connection"
            );
            co.return_as(if server_quiet {
                ReturnAs::Rollback
            } else {
                ReturnAs::Close
            });
            Next::End(
                fatal(SqlState::PROTOCOL_VIOLATION, statement::REFUSAL),
                "transaction block in statement mode",
            )
        }
        RelayEnd::Killed => {
            if busy {
                cancel_running(&mut co, tasks);
            }
            let (n, reason) = stop_notice(match stopped {
                Some(Stop::Overflow) => Stop::Overflow,
                _ => Stop::Killed,
            });
            Next::End(Some(n), reason)
        }
        RelayEnd::Terminated { server_idle } => {
            co.return_as(if server_idle { clean } else { ReturnAs::Close });
            Next::End(None, "client terminated")
        }
        RelayEnd::ClientGone { server_idle, error } => {
            if server_idle {
                co.return_as(clean);
            } else {
                tracing::info!(
                    server = %co.conn().id,
                    "client left in the middle of a transaction; closing its server connection"
                );
                if busy {
                    // Stop the running query before the connection closes, so the
                    // backend notices at once and rolls back.
                    cancel_running(&mut co, tasks);
                }
            }
            let reason = if error.is_some() {
                "client connection error"
            } else {
                "client closed"
            };
            Next::End(None, reason)
        }
        RelayEnd::ServerGone(e) => {
            tracing::warn!(server = %co.conn().id, error = ?e, "server connection lost while in use");
            let msg = "server closed the connection unexpectedly";
            Next::End(
                fatal(SqlState::CONNECTION_FAILURE, msg),
                "server connection lost",
            )
        }
        RelayEnd::ClientProtocol(e) => {
            let msg = format!("invalid message: {e}");
            Next::End(
                fatal(SqlState::PROTOCOL_VIOLATION, &msg),
                "client protocol violation",
            )
        }
        RelayEnd::ServerProtocol(e) => {
            tracing::warn!(server = %co.conn().id, error = %e, "server protocol violation");
            let msg = "server protocol violation";
            Next::End(
                fatal(SqlState::PROTOCOL_VIOLATION, msg),
                "server protocol violation",
            )
        }
        RelayEnd::QueryTimeout => {
            tracing::info!(server = %co.conn().id, "query_timeout: cancelling and closing");
            cancel_running(&mut co, tasks);
            let msg = "query_timeout: query ran too long";
            Next::End(fatal(SqlState::QUERY_CANCELED, msg), "query_timeout")
        }
        RelayEnd::IdleInTransactionTimeout => {
            let msg = "terminating connection due to idle_transaction_timeout";
            Next::End(
                fatal(SqlState::IDLE_IN_TRANSACTION_TIMEOUT, msg),
                "idle_transaction_timeout",
            )
        }
        RelayEnd::TransactionTimeout => {
            tracing::info!(server = %co.conn().id, "transaction_timeout: closing the server connection");
            if busy {
                // Stop the running statement so that the backend rolls back at once.
                cancel_running(&mut co, tasks);
            }
            let msg = "terminating connection due to transaction timeout";
            Next::End(
                fatal(SqlState::TRANSACTION_TIMEOUT, msg),
                "transaction_timeout",
            )
        }
        RelayEnd::ClientIdleTimeout => {
            co.return_as(clean);
            let msg = "terminating connection due to client_idle_timeout";
            Next::End(
                fatal(SqlState::IDLE_SESSION_TIMEOUT, msg),
                "client_idle_timeout",
            )
        }
    }
}

/// Sends PostgreSQL a CancelRequest for what runs on `co` (over a new connection), in
/// a task of `tasks` (bounded: `send_cancel` gives up after 5 s).
fn cancel_running(co: &mut Checkout, tasks: &TaskTracker) {
    let conn = co.conn();
    let (target, key) = (conn.target.clone(), conn.key.clone());
    tasks.spawn(async move {
        let _ = server::send_cancel(&target, &key).await;
    });
}

#[cfg(test)]
#[path = "conclude_tests.rs"]
mod tests;
