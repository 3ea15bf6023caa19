//! `query_wait_notify`: a client that has waited that long in a pool's queue is told,
//! once, with a NOTICE, that it is queued (PgBouncer's message), then keeps waiting.
//! Only the waiting path pays for this; a client that gets a connection at once never
//! reaches it.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgsluice_protocol::backend::{ErrorNotice, Severity};
use pgsluice_protocol::SqlState;
use tokio::io::AsyncWriteExt;

use crate::error::PoolError;
use crate::net::Stream;
use crate::pool::listing::ClientInfo;
use crate::pool::{Checkout, Pool, Queued};

/// PgBouncer's text, kept word for word: scripts match on it.
pub(crate) const QUEUED_MESSAGE: &str =
    "No server connection available in postgres backend, client being queued";

/// The NOTICE a queued client gets.
fn queued_notice() -> BytesMut {
    let mut out = BytesMut::new();
    let mut n = ErrorNotice::error(SqlState::SUCCESSFUL_COMPLETION, QUEUED_MESSAGE);
    n.severity = Severity::Notice;
    n.write(&mut out);
    out
}

/// Waits in the queue like [`Pool::wait_for`]; after `after`, sends the NOTICE to the
/// client first. The wait goes on while the NOTICE is written (the grant waits in its
/// channel), and a failed write only means the client is gone, which the relay finds.
pub(crate) async fn wait_notifying(
    pool: &Arc<Pool>,
    stream: &mut Stream,
    queued: Queued,
    info: &Arc<ClientInfo>,
    after: Duration,
) -> Result<Checkout, PoolError> {
    let wait = pool.wait_for(queued, Some(info.clone()));
    tokio::pin!(wait);
    tokio::select! {
        r = &mut wait => return r,
        () = tokio::time::sleep(after) => {}
    }
    if let Err(e) = stream.write_all(&queued_notice()).await {
        tracing::debug!(error = %e, "could not send the queued notice");
    }
    wait.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_carries_pgbouncers_text() {
        let b = queued_notice();
        assert_eq!(b[0], b'N');
        let body = String::from_utf8_lossy(&b[5..]);
        assert!(body.contains("SNOTICE"), "{body}");
        assert!(body.contains(&format!("M{QUEUED_MESSAGE}")), "{body}");
    }
}
