//! The listener task of one hub: owns the listener connection, runs the LISTEN and
//! UNLISTEN statements the hub asks for one at a time, and hands every notification
//! it receives to the hub. When the connection fails it reconnects (backoff from
//! 0.1 s doubling to 5 s) and the hub re-LISTENs every channel. It ends at shutdown,
//! or when no channel has been wanted for [`LINGER`].

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgsluice_protocol::backend::{self, tag};
use pgsluice_protocol::frame::parse_header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::hub::{Failure, Op};
use super::NotifyHub;
use crate::error::ServerError;
use crate::server::ServerConn;
use crate::shutdown::ShutdownWatch;

/// First wait after a failed connect.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between connects.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long an unused listener connection stays open (a client that LISTENs and
/// UNLISTENs in turn does not open one each time).
pub(super) const LINGER: Duration = Duration::from_secs(10);
/// Largest message accepted on the listener connection (a notification is at most
/// 8000 bytes of payload plus the channel name).
const MAX_MESSAGE: u32 = 1 << 16;

/// How serving a connection ended.
enum Ended {
    /// Nothing left to listen to.
    Idle,
    /// Shutdown.
    Shutdown,
    /// The connection failed.
    Lost(ServerError),
}

/// Runs the listener of `hub` until shutdown or until it has nothing to do.
pub(super) async fn run(hub: Arc<NotifyHub>) {
    let mut shutdown = hub.shutdown.clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        if stop_if_idle(&hub) {
            return;
        }
        let attempt = tokio::select! {
            r = hub.connector.connect() => r,
            _ = shutdown.requested() => return shut(&hub),
        };
        let mut conn = match attempt {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(pool = %hub.label, error = %e, "notification listener: cannot connect");
                let settled = hub
                    .lock()
                    .hub
                    .fail_waiters(&Failure::Unreachable(e.to_string()));
                NotifyHub::settle(settled);
                if stop_if_idle(&hub) {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.requested() => return shut(&hub),
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        tracing::info!(pool = %hub.label, server = %conn.id, "notification listener connected");
        hub.lock().hub.connected();
        match serve(&hub, &mut conn, &mut shutdown).await {
            Ended::Idle => {
                tracing::info!(pool = %hub.label, "notification listener closed: no channel left");
                return conn.close().await;
            }
            Ended::Shutdown => {
                shut(&hub);
                return conn.close().await;
            }
            Ended::Lost(e) => {
                tracing::warn!(pool = %hub.label, error = %e, "notification listener connection lost; reconnecting");
                hub.lock().hub.lost();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.requested() => return shut(&hub),
                }
            }
        }
    }
}

/// Ends the task when the hub has nothing for it (decided under the hub's lock, so
/// that a LISTEN coming now starts a new task).
fn stop_if_idle(hub: &NotifyHub) -> bool {
    let mut inner = hub.lock();
    if inner.hub.is_idle() {
        inner.task = false;
        return true;
    }
    false
}

/// Shutdown: waiters fail, no task starts again.
fn shut(hub: &NotifyHub) {
    let settled = {
        let mut inner = hub.lock();
        inner.closed = true;
        inner.task = false;
        inner.hub.fail_waiters(&Failure::ShuttingDown)
    };
    NotifyHub::settle(settled);
}

/// Serves one connection until it fails, shutdown, or it lingered unused.
async fn serve(hub: &NotifyHub, conn: &mut ServerConn, shutdown: &mut ShutdownWatch) -> Ended {
    let mut buf = BytesMut::with_capacity(4096);
    let mut in_flight = false;
    // The error of the statement in flight, until its ReadyForQuery.
    let mut failure: Option<Failure> = None;
    let mut linger: Option<tokio::time::Instant> = None;
    loop {
        if !in_flight {
            let (op, idle) = {
                let mut inner = hub.lock();
                (inner.hub.next_op(), inner.hub.is_idle())
            };
            if let Some(op) = op {
                if let Err(e) = send(conn, &op).await {
                    return Ended::Lost(e);
                }
                in_flight = true;
            }
            linger = match (idle, linger) {
                (false, _) => None,
                (true, None) => Some(tokio::time::Instant::now() + LINGER),
                (true, l) => l,
            };
        }
        tokio::select! {
            r = conn.stream.read_buf(&mut buf) => match r {
                Ok(0) => return Ended::Lost(ServerError::Closed),
                Ok(_) => {}
                Err(e) => return Ended::Lost(e.into()),
            },
            _ = hub.kick.notified() => continue,
            _ = shutdown.requested() => return Ended::Shutdown,
            _ = sleep_until(linger) => {
                if stop_if_idle(hub) {
                    return Ended::Idle;
                }
                linger = None;
                continue;
            }
        }
        loop {
            let h = match parse_header(&buf, MAX_MESSAGE) {
                Ok(Some(h)) if buf.len() >= h.total_len() => h,
                Ok(_) => break,
                Err(e) => return Ended::Lost(e.into()),
            };
            let msg = buf.split_to(h.total_len()).freeze();
            let body = &msg[5..];
            match h.tag {
                tag::NOTIFICATION_RESPONSE => {
                    let channel = match backend::parse_notification(body) {
                        Ok((_, ch, _)) => String::from_utf8_lossy(ch),
                        Err(e) => return Ended::Lost(e.into()),
                    };
                    let fan = hub.lock().hub.deliver(&channel, &msg);
                    NotifyHub::wake(fan.wake);
                    for m in fan.overflow {
                        tracing::warn!(pool = %hub.label, client = m.id(), "notification queue full; disconnecting the client");
                        m.overflowed();
                    }
                }
                tag::ERROR_RESPONSE => {
                    let f = match backend::parse_error_fields(body) {
                        Ok(f) => f,
                        Err(e) => return Ended::Lost(e.into()),
                    };
                    if f.severity == "FATAL" || f.severity == "PANIC" || !in_flight {
                        return Ended::Lost(ServerError::Rejected {
                            code: f.code.to_owned(),
                            message: f.message.to_owned(),
                            fatal: true,
                        });
                    }
                    failure.get_or_insert(Failure::Rejected {
                        code: f.code.to_owned(),
                        message: f.message.to_owned(),
                    });
                }
                tag::READY_FOR_QUERY if in_flight => {
                    in_flight = false;
                    let outcome = failure.take().map_or(Ok(()), Err);
                    let (settled, woken) = hub.lock().hub.op_done(outcome);
                    NotifyHub::settle(settled);
                    NotifyHub::wake(woken);
                }
                // CommandComplete, ParameterStatus, NoticeResponse: nothing to do.
                _ => {}
            }
        }
    }
}

/// Sends `op` as a simple query.
async fn send(conn: &mut ServerConn, op: &Op) -> Result<(), ServerError> {
    let mut out = BytesMut::new();
    pgsluice_protocol::frontend::query(&mut out, &op.sql());
    conn.stream.write_all(&out).await?;
    Ok(())
}

/// Sleeps until `at`; forever when `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
