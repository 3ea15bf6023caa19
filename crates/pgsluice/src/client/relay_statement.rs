//! The relay's statement-mode part (see [`super::super::statement`]): held client
//! bytes, their admission once the request before them allows it, and the refusal of
//! a transaction block. A child of the relay module, so that it reaches the relay's
//! fields; the decisions themselves are the gate's.

use std::task::{Context, Poll};

use bytes::BytesMut;
use pgsluice_protocol::backend::TxStatus;

use super::{poll_send, ReadPath, Relay, RelayEnd, RelayIo, StatementGate};

/// The part of the first bytes of a run that goes to the server (all of them outside
/// statement mode); the gate holds the rest.
pub(super) fn admit_prefix<'p>(gate: Option<&mut StatementGate>, prefix: &'p [u8]) -> &'p [u8] {
    match gate {
        Some(gate) => {
            let n = gate.admit(prefix, false);
            gate.hold(&prefix[n..]);
            &prefix[..n]
        }
        None => prefix,
    }
}

impl<C: RelayIo, S: RelayIo> Relay<'_, C, S> {
    /// How many of the `read` bytes just read into the client buffer go to the server
    /// on this run (all of them outside statement mode); the gate holds the rest.
    pub(super) fn admit_read(&mut self, read: usize) -> usize {
        let done = self.request_done();
        let Some(gate) = self.ext.as_mut().and_then(|e| e.gate.as_mut()) else {
            return read;
        };
        let n = gate.admit(&self.c2s.buf[..read], done);
        gate.hold(&self.c2s.buf[n..read]);
        n
    }

    /// Statement mode: client bytes held back at the end of the run, the start of the
    /// client's next request.
    pub fn take_held(&mut self) -> Option<BytesMut> {
        let gate = self.ext.as_mut()?.gate.as_mut()?;
        gate.holding().then(|| gate.take_held())
    }

    /// Statement mode: held client bytes wait for the server's answer.
    pub(super) fn holding(&self) -> bool {
        self.ext
            .as_ref()
            .and_then(|e| e.gate.as_ref())
            .is_some_and(StatementGate::holding)
    }

    /// Statement mode: a transaction block was refused; its ReadyForQuery withheld.
    pub(super) fn refused(&self) -> bool {
        self.ext
            .as_ref()
            .and_then(|e| e.gate.as_ref())
            .is_some_and(StatementGate::refused)
    }

    /// After a refused transaction block: sends the client what the server answered
    /// before it, then ends the run.
    pub(super) fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        loop {
            let out = self.ext.as_mut().map(|e| &mut e.state.s2c_out);
            match poll_send(
                &mut self.s2c,
                out,
                self.client,
                cx,
                &mut self.counts.bytes_out,
            ) {
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => {
                    return Poll::Ready(RelayEnd::TransactionBlock {
                        server_quiet: self.server_quiet(),
                    })
                }
                Poll::Ready(Err(error)) => {
                    return Poll::Ready(RelayEnd::ClientGone {
                        server_idle: false,
                        error,
                    })
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Statement mode: whether the request sent awaits its ReadyForQuery, or has had it
    /// and the run ends once the answer is flushed to the client: no new request may go
    /// to the server on this run. (When neither, the client owes a Sync: after an
    /// extended-protocol COPY.)
    pub(super) fn request_done(&self) -> bool {
        self.flow.pending > 0 || self.flow.idle()
    }

    /// Statement mode: offers the held client bytes to the gate again when the request
    /// before them needs more from the client (a Sync after an extended-protocol COPY).
    /// Pending otherwise: the server's answer, or the flush that ends the run, wakes the
    /// task (both sockets were polled in the same turn).
    pub(super) fn admit_held(&mut self) -> Poll<Option<RelayEnd>> {
        if self.request_done() {
            return Poll::Pending;
        }
        let Some(ext) = self.ext.as_mut() else {
            return Poll::Ready(None);
        };
        let Some(gate) = ext.gate.as_mut() else {
            return Poll::Ready(None);
        };
        let held = gate.take_held();
        let n = gate.admit(&held, false);
        gate.hold(&held[n..]);
        let admitted = &held[..n];
        match ext
            .state
            .client_bytes(admitted, ext.registry, ext.client, &mut self.flow)
        {
            Ok(pass) => {
                self.terminated |= pass.terminated;
                if pass.path == ReadPath::AsRead {
                    // The client buffer is flushed: these go next.
                    ext.state.c2s_out.extend_from_slice(admitted);
                }
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(RelayEnd::ClientProtocol(e))),
        }
    }

    /// Statement mode, after server bytes were handled: when the server reported a
    /// transaction block, records the refusal and withholds its ReadyForQuery from what
    /// goes to the client. Nothing else was pending for the client (that was sent
    /// before this read), so what is pending now is all of it.
    pub(super) fn check_transaction_block(&mut self, path: ReadPath) {
        if self.flow.status == TxStatus::Idle {
            return;
        }
        let Some(ext) = self.ext.as_mut() else {
            return;
        };
        let Some(gate) = ext.gate.as_mut() else {
            return;
        };
        match path {
            ReadPath::AsRead => self.s2c.end = gate.refuse(&self.s2c.buf[..self.s2c.end]),
            ReadPath::Rewritten => {
                let out = &mut ext.state.s2c_out;
                out.truncate(gate.refuse(out));
            }
        }
    }
}
