//! Parameter requests of a client that sets up (`client::param_request`) and the
//! parameter sync before each checkout: the part of [`Session`] that makes a server
//! connection's session parameters the client's.

use std::time::Instant;

use bytes::BytesMut;
use pgsluice_protocol::SqlState;
use tokio::io::AsyncWriteExt;

use super::{Next, Session, StopSignal};
use crate::client::conclude::conclude;
use crate::client::param_request::{self, Change, FirstWord};
use crate::client::relay::RelayEnd;
use crate::config::PoolMode;
use crate::error::ClientNotice;
use crate::net::Stream;
use crate::pool::Checkout;

impl Session {
    /// The changes of a parameter request pgsluice runs itself; ends the setting-up
    /// phase at the first request that is no parameter request.
    pub(super) fn param_plan(
        &mut self,
        prefix: &[u8],
        mode: PoolMode,
        word: FirstWord,
    ) -> Option<Vec<Change>> {
        if mode == PoolMode::Session {
            return None;
        }
        if !matches!(word, FirstWord::Set | FirstWord::Reset) {
            self.setting_up = false;
            return None;
        }
        let plan = param_request::plan(prefix, self.setting_up);
        if plan.is_none() && self.setting_up && !param_request::is_param_request(prefix) {
            self.setting_up = false;
        }
        plan
    }

    /// Runs a parameter request on `co` and passes PostgreSQL's answer on; when it
    /// succeeded, the client's extra parameters change and the connection records
    /// that it holds them.
    pub(super) async fn param_request(
        &mut self,
        stream: &mut Stream,
        mut co: Checkout,
        prefix: &[u8],
        changes: &[Change],
        held_since: Instant,
        stop: &StopSignal,
    ) -> Next {
        let pool = co.pool().clone();
        let limit = pool.settings().connect_timeout;
        let conn = co.conn();
        let mut answer = BytesMut::with_capacity(256);
        let run = conn.run_for_client(prefix, &mut answer, param_request::MAX_ANSWER);
        let answered = match tokio::time::timeout(limit, run).await {
            Ok(Ok(a)) if a.status == pgsluice_protocol::backend::TxStatus::Idle => a,
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                tracing::warn!(server = %conn.id, "parameter request failed on the server connection; closing it");
                return setting_failed();
            }
        };
        if !answered.failed {
            param_request::apply(&mut self.params, changes);
            conn.params.adopt_extras(&self.params);
        }
        // Tracked values the server reported (and, now, the same extras).
        self.params.clone_from(&conn.params);
        let carry = param_request::carry_of(prefix);
        if !carry.is_empty() && !answered.failed {
            if let Err(e) = Box::pin(self.read_back(&mut co, &carry)).await {
                tracing::warn!(error = %e, "could not read back the client's session settings; closing the server connection");
                return setting_failed();
            }
        }
        self.traffic.bytes_in += prefix.len() as u64;
        self.traffic.bytes_out += answer.len() as u64;
        let (bytes_in, bytes_out) = (prefix.len() as u64, answer.len() as u64);
        pool.stats
            .add_xact(1, bytes_in, bytes_out, held_since.elapsed());
        let next = conclude(
            RelayEnd::Idle,
            co,
            PoolMode::Transaction,
            false,
            stop.fired,
            &self.ctx.background,
        );
        if stream.write_all(&answer).await.is_err() {
            return Next::End(None, "client connection error");
        }
        next
    }

    pub(super) async fn sync_params(
        &mut self,
        co: &mut Checkout,
        sql: String,
    ) -> Result<(), crate::error::ServerError> {
        let conn = co.conn();
        conn.run_discarding(&sql).await?;
        // PostgreSQL reports the canonical spelling ("utc" becomes "UTC"); the values
        // it may not report (search_path, the extras) are now the client's.
        conn.params.adopt_unreported(&self.params);
        self.params.clone_from(&conn.params);
        Ok(())
    }
}

/// The end of a client whose parameter request could not be completed on the server
/// connection (which is closed).
fn setting_failed() -> Next {
    let n = ClientNotice::fatal(
        SqlState::CONNECTION_FAILURE,
        "server connection failed while setting a parameter",
    );
    Next::End(Some(n), "server connection lost")
}
