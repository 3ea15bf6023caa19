//! The health checker of a replicated database: one task per host that keeps a
//! connection of its own open and asks, every `health_check_interval`, whether the
//! host is in recovery and where its WAL is. A host that does not answer within
//! `health_check_timeout` (connect and query) is banned ([`super::hosts`]).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgsluice_protocol::backend::{self, tag};
use pgsluice_protocol::frame::split_message;

use super::cluster::Cluster;
use super::hosts::{parse_lsn, Observation};
use crate::error::ServerError;
use crate::pool::IdGen;
use crate::server::{self, ServerConn};
use crate::shutdown::{ShutdownWatch, TaskTracker};

/// What a check asks: recovery state, the LSN that matters for the role, and a
/// standby's time since its last replayed transaction.
pub(super) const CHECK_QUERY: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
     CASE WHEN pg_is_in_recovery() THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END";

/// Largest answer a check accepts.
const MAX_ANSWER: usize = 4096;

/// Starts one checker task per host of `cluster`, counted in `tracker`; each ends at
/// shutdown or when the cluster is retired or dropped.
pub(super) fn start(
    cluster: &Arc<Cluster>,
    ids: Arc<IdGen>,
    shutdown: ShutdownWatch,
    tracker: &TaskTracker,
) {
    for i in 0..cluster.pools().len() {
        let weak = Arc::downgrade(cluster);
        let ids = ids.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(check_host(weak, i, ids, shutdown));
    }
}

async fn check_host(
    cluster: Weak<Cluster>,
    i: usize,
    ids: Arc<IdGen>,
    mut shutdown: ShutdownWatch,
) {
    let mut conn: Option<ServerConn> = None;
    loop {
        let Some(c) = cluster.upgrade() else { return };
        if c.is_retired() || shutdown.is_requested() {
            return;
        }
        let policy = c.policy().clone();
        let target = c.pools()[i].connect_target();
        let hosts = c.hosts().clone();
        // Not held across the wait: a dropped cluster ends the task.
        drop(c);
        let check = async {
            let mut live = match conn.take() {
                Some(live) => live,
                None => server::connect(target, ids.next(), policy.check_timeout).await?,
            };
            let o = observe(&mut live).await?;
            Ok::<_, ServerError>((live, o))
        };
        let result = tokio::select! {
            r = tokio::time::timeout(policy.check_timeout, check) => r,
            _ = shutdown.requested() => return,
        };
        let now = Instant::now();
        let outcome = match result {
            Ok(Ok((live, o))) => {
                conn = Some(live);
                Ok(o)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "health check timed out after {:?}",
                policy.check_timeout
            )),
        };
        if let Err(why) = &outcome {
            let was_up = hosts.view().get(i).is_some_and(|h| h.up);
            if was_up {
                let host = hosts.config(i);
                tracing::warn!(host = %host.label(), error = %why, "replica host failed its health check; banned");
            }
            // Its pooled connections went to a host that is gone (or too slow).
            if let Some(c) = cluster.upgrade() {
                if was_up {
                    c.pools()[i].reconnect();
                }
            }
        }
        let before = hosts.view().get(i).map(|h| h.role);
        hosts.record(i, now, outcome, policy.ban_time);
        let after = hosts.view().get(i).map(|h| h.role);
        if before != after {
            if let Some(role) = after {
                tracing::info!(host = %hosts.config(i).label(), role = role.as_str(), "host role discovered");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(policy.check_interval) => {}
            _ = shutdown.requested() => return,
        }
    }
}

/// Runs [`CHECK_QUERY`] on `conn`.
async fn observe(conn: &mut ServerConn) -> Result<Observation, ServerError> {
    let mut out = BytesMut::with_capacity(CHECK_QUERY.len() + 6);
    pgsluice_protocol::frontend::query(&mut out, CHECK_QUERY);
    let mut answer = BytesMut::with_capacity(256);
    let answered = conn.run_for_client(&out, &mut answer, MAX_ANSWER).await?;
    let bad =
        |why: &'static str| ServerError::Protocol(pgsluice_protocol::ProtocolError::Malformed(why));
    if answered.failed {
        return Err(bad("the health check query failed"));
    }
    while let Some(msg) = split_message(&mut answer, MAX_ANSWER as u32)? {
        if msg.tag != tag::DATA_ROW {
            continue;
        }
        let row = backend::parse_data_row(&msg.body)?;
        let text = |k: usize| {
            row.get(k)
                .copied()
                .flatten()
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        let in_recovery = match text(0) {
            Some("t") => true,
            Some("f") => false,
            _ => return Err(bad("pg_is_in_recovery() gave no boolean")),
        };
        let lsn = text(1).and_then(parse_lsn).unwrap_or(0);
        let replay_age = text(2)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite())
            .map(|s| Duration::from_secs_f64(s.max(0.0)));
        return Ok(Observation {
            in_recovery,
            lsn,
            replay_age,
        });
    }
    Err(bad("the health check query returned no row"))
}
