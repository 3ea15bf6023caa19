//! What the relay knows of the conversation from the message types alone: requests
//! awaiting ReadyForQuery, extended-protocol messages awaiting a Sync, copy-in mode, and
//! the transaction status. The release point is derived from this.

use pgsluice_protocol::backend::TxStatus;
use pgsluice_protocol::ProtocolError;

/// Protocol state the relay derives from the message types it sees.
#[derive(Debug, Clone, Copy)]
pub struct WireState {
    /// Query/Sync/FunctionCall sent whose ReadyForQuery has not come back.
    pub(crate) pending: u32,
    /// An extended-protocol message was sent after the last Sync.
    pub(crate) unsynced: bool,
    /// Sync messages since the last Execute or Query (see the COPY note below).
    syncs_since_exec: u32,
    /// The last Execute/Query seen was an Execute.
    last_was_execute: bool,
    /// Status in the last ReadyForQuery.
    pub(crate) status: TxStatus,
    /// Query/Sync/FunctionCall messages seen.
    pub(crate) queries: u64,
    /// Server messages that end a query's work (wrapping): query_timeout's clock
    /// restarts when it moves, so that each query of a pipeline has its own.
    pub(crate) finished: u32,
}

impl WireState {
    pub(crate) fn new() -> Self {
        WireState {
            pending: 0,
            unsynced: false,
            syncs_since_exec: 0,
            last_was_execute: false,
            status: TxStatus::Idle,
            queries: 0,
            finished: 0,
        }
    }

    /// True when every request has been answered and no transaction is open.
    pub(crate) fn idle(&self) -> bool {
        self.pending == 0 && !self.unsynced && self.status == TxStatus::Idle
    }

    /// Accounts for a message the client sent; refuses types no client may send.
    pub(crate) fn client_tag(&mut self, tag: u8) -> Result<(), ProtocolError> {
        if !pgsluice_protocol::frontend::is_session_message(tag) {
            return Err(ProtocolError::UnknownMessageType(tag));
        }
        match tag {
            b'Q' => {
                self.pending += 1;
                self.syncs_since_exec = 0;
                self.last_was_execute = false;
                self.queries += 1;
            }
            b'F' => {
                self.pending += 1;
                self.queries += 1;
            }
            b'S' => {
                self.pending += 1;
                self.unsynced = false;
                self.syncs_since_exec += 1;
                self.queries += 1;
            }
            b'E' => {
                self.unsynced = true;
                self.syncs_since_exec = 0;
                self.last_was_execute = true;
            }
            b'P' | b'B' | b'D' | b'C' | b'H' => self.unsynced = true,
            // CopyDone / CopyFail end copy-in mode. PostgreSQL ignores Sync messages
            // received in copy-in mode, so Syncs sent since the COPY's Execute will get
            // no ReadyForQuery; after an extended-protocol COPY a fresh Sync is due.
            b'c' | b'f' if self.last_was_execute => {
                self.pending = self.pending.saturating_sub(self.syncs_since_exec);
                self.syncs_since_exec = 0;
                self.unsynced = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// How many Syncs a CopyDone/CopyFail sent now proves ignored by the server (they
    /// arrived while it was in copy-in mode after an extended-protocol COPY).
    pub(crate) fn syncs_ignored_by_copy(&self) -> u32 {
        if self.last_was_execute {
            self.syncs_since_exec
        } else {
            0
        }
    }

    /// Accounts for a ReadyForQuery from the server.
    pub(crate) fn server_ready(&mut self, status: TxStatus) {
        self.pending = self.pending.saturating_sub(1);
        self.status = status;
        self.finished = self.finished.wrapping_add(1);
    }

    /// Accounts for the start of a server message: CommandComplete,
    /// EmptyQueryResponse, ErrorResponse and PortalSuspended each end one statement or
    /// Execute (ReadyForQuery, which ends a Query or a Sync, is counted by
    /// [`WireState::server_ready`]). After one of them the server moves on to the next
    /// query in the pipeline, so query_timeout's clock starts afresh; rows, notices and
    /// the like leave it running.
    #[inline]
    pub(crate) fn server_tag(&mut self, tag: u8) {
        if matches!(tag, b'C' | b'I' | b'E' | b's') {
            self.finished = self.finished.wrapping_add(1);
        }
    }
}
