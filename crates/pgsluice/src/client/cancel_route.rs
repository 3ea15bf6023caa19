//! A CancelRequest received: forwarded to the PostgreSQL backend the client with that
//! key is using, or, with peering, to the peer process that issued the key (PgBouncer's
//! `peer_id` / `[peers]`), bounded by `cancel_wait_timeout` either way. The decision
//! from the key is [`crate::cancel::route`]; this is its driver.

use std::sync::Arc;

use super::context::ClientContext;
use crate::cancel::CancelRoute;
use crate::server::{BackendKey, ServerTarget};

/// Forwards a client's CancelRequest where its key says, giving up after
/// cancel_wait_timeout. Nothing is answered: the requester only sees the connection
/// close, as with PostgreSQL.
pub(super) async fn forward_cancel(ctx: &ClientContext, pid: i32, secret: &[u8]) {
    // Not the generation guard itself: it is not held across the awaits below.
    let cfg = ctx.live.load().config.clone();
    let limit = ctx.live.hot().cancel_wait_timeout;
    match crate::cancel::route(cfg.general.peer_id, pid, secret) {
        CancelRoute::Local { secret } => {
            let targets = ctx.cancel.lookup(pid, &secret);
            if targets.is_empty() {
                tracing::debug!(client = pid, "cancel request for no running query; ignored");
            }
            // A client of a sharded database may have a query on several shards: each
            // gets the cancel, one after the other (each send is a connect and 16
            // bytes, bounded by cancel_wait_timeout).
            for t in targets {
                tracing::info!(
                    client = pid,
                    backend_pid = t.key.pid,
                    "forwarding cancel request"
                );
                if let Err(e) = crate::server::send_cancel_within(&t.target, &t.key, limit).await
                {
                    tracing::warn!(error = %e, "could not forward cancel request");
                }
            }
        }
        CancelRoute::Exhausted { peer_id } => tracing::warn!(
            peer_id,
            "cancel request for peer {peer_id} dropped: forwarded too many times already (TTL spent)"
        ),
        CancelRoute::Peer {
            peer_id,
            pid,
            secret,
        } => {
            let Some(peer) = cfg.peer(peer_id) else {
                tracing::warn!(
                    peer_id,
                    "cancel request for peer {peer_id} dropped: no such peer in [peers]"
                );
                return;
            };
            let slots = ctx
                .cancel
                .peer_slots(peer_id, cfg.peer_pool_size(peer_id));
            let target = peer_target(&peer.host, peer.port);
            let key = BackendKey {
                pid,
                secret: secret.to_vec(),
            };
            let send = async {
                let _permit = slots.acquire().await;
                tracing::info!(peer_id, peer = %target.display_addr(), "forwarding cancel request to peer");
                crate::server::send_cancel_within(&target, &key, None).await
            };
            let sent = match limit {
                Some(d) => tokio::time::timeout(d, send).await.unwrap_or_else(|_| {
                    Err(crate::error::ServerError::CancelTimeout(
                        target.display_addr(),
                    ))
                }),
                None => send.await,
            };
            if let Err(e) = sent {
                tracing::warn!(peer_id, error = %e, "could not forward cancel request to peer");
            }
        }
    }
}

/// A peer's address in the shape the server layer connects to (a host, or a unix
/// socket directory); nothing is logged in to, only a CancelRequest is sent.
fn peer_target(host: &str, port: u16) -> Arc<ServerTarget> {
    Arc::new(ServerTarget {
        host: host.to_owned(),
        port,
        database: String::new(),
        user: String::new(),
        password: None,
        application_name: None,
        tls: None,
        passthrough: None,
        scram_keys: Default::default(),
    })
}
