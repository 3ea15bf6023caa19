//! What a session does for a route over several hosts: reads a request's first
//! message whole and classifies it (read/write splitting), and waits for an eligible
//! host when there is none; and for a sharded database: hands requests to the
//! sharded driver.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use pgsluice_protocol::SqlState;

use super::Session;
use crate::error::ClientNotice;
use crate::net::Stream;
use crate::router::{Access, Target, Work};

/// The longest first message read whole before it is classified for read/write
/// splitting; a longer one is not classified and goes to the primary.
const CLASSIFY_READ_LIMIT: usize = 64 * 1024;

/// Reads until the request's first message is complete (up to [`CLASSIFY_READ_LIMIT`]),
/// so that its statement can be classified.
pub(super) async fn read_first_message(
    stream: &mut Stream,
    prefix: &mut BytesMut,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(len) = prefix.get(1..5) {
            let need = 1 + u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if prefix.len() >= need || need > CLASSIFY_READ_LIMIT {
                return Ok(());
            }
            prefix.reserve(need - prefix.len());
        }
        if stream.read_buf(prefix).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

impl Session {
    /// What the request does, for a route that splits reads from writes.
    pub(super) fn classify(&self, prefix: &[u8]) -> Access {
        let stmts = &self.stmts;
        self.route.classify(prefix, &|name| {
            let (_, stmt) = stmts.get(std::str::from_utf8(name).ok()?)?;
            std::str::from_utf8(&stmt.query).ok().map(Arc::from)
        })
    }

    /// Waits until a host is eligible for the client's work (a failover, a replica
    /// catching up), within the pool's query_wait_timeout.
    pub(super) async fn wait_for_host(
        &self,
        prefix: &[u8],
        access: Access,
        what: &'static str,
    ) -> Result<(), ClientNotice> {
        let fail = || {
            ClientNotice::fatal(
                SqlState::CANNOT_CONNECT_NOW,
                format!("no server host is available: this work needs {what}"),
            )
        };
        let Some(mut changes) = self.route.host_changes() else {
            return Err(fail());
        };
        let deadline = tokio::time::Instant::now() + self.route.wait_limit();
        loop {
            // Subscribed first, then checked: a change in between is not missed.
            let work = Work {
                request: prefix,
                access,
                now: Instant::now(),
            };
            if matches!(self.route.target(work), Target::One(_)) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(fail()),
            }
        }
    }
}

impl Session {
    /// A request on a sharded database: the sharded driver serves it.
    pub(super) async fn sharded(
        &mut self,
        stream: &mut Stream,
        info: &Arc<crate::pool::listing::ClientInfo>,
        prefix: BytesMut,
    ) -> super::super::conclude::Next {
        let route = self.route.clone();
        let (next, rest) = super::super::shard_session::serve(
            &self.ctx,
            &route,
            &mut self.params,
            stream,
            info,
            &self.cancel,
            prefix,
        )
        .await;
        self.traffic.transactions += 1;
        if let Some(rest) = rest {
            self.pending = Some(Box::new(rest));
        }
        next
    }
}
