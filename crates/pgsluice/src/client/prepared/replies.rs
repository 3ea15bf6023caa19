//! The server-to-client side of the rewriting path: each server message is matched
//! against the queue of expected replies, then forwarded, dropped or renamed, with the
//! replies pgsluice makes up put in their turn.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::ProtocolError;

use super::ext::Expect;
use super::{ClientStatements, ServerStatements};
use crate::client::relay::Flow;
use crate::params::ParamSet;

/// Appends a message with this type and body.
pub(super) fn put_message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(body.len() as u32 + 4);
    out.extend_from_slice(body);
}

/// Appends the replies pgsluice makes up that are due now (at the front of the queue).
pub(super) fn drain_synth(queue: &mut VecDeque<Expect>, out: &mut BytesMut) {
    while let Some(Expect::Synth(tag)) = queue.front() {
        out.extend_from_slice(&[*tag, 0, 0, 0, 4]);
        queue.pop_front();
    }
}

/// What becomes of one server message.
pub(super) enum Forward {
    /// It goes to the client as it is.
    Yes,
    /// It is dropped (the reply to a message pgsluice injected).
    No,
    /// It goes with the server's statement name replaced by the client's.
    Renamed(Box<str>, Box<str>),
}

/// Appends a whole server message to `out` as `forward` says.
pub(super) fn emit(out: &mut BytesMut, forward: Forward, tag: u8, body: &[u8]) {
    match forward {
        Forward::Yes => put_message(out, tag, body),
        Forward::No => {}
        Forward::Renamed(from, to) => {
            let text = String::from_utf8_lossy(body).replace(&*from, &to);
            put_message(out, tag, text.as_bytes());
        }
    }
}

/// Matches one server message against the queue. `body` is None for streamed messages.
pub(super) struct MessageCx<'x> {
    pub(super) queue: &'x mut VecDeque<Expect>,
    pub(super) stmts: &'x mut ServerStatements,
    pub(super) flow: &'x mut Flow,
    pub(super) client: &'x mut ClientStatements,
    pub(super) client_params: &'x mut ParamSet,
    pub(super) server_params: &'x mut ParamSet,
}

impl MessageCx<'_> {
    /// Accounts for one server message (queue, statements, flow, parameters) and says
    /// what becomes of it.
    pub(super) fn on_message(
        &mut self,
        tag: u8,
        body: Option<&[u8]>,
    ) -> Result<Forward, ProtocolError> {
        let MessageCx {
            queue,
            stmts,
            flow,
            client,
            client_params,
            server_params,
        } = self;
        use pgsluice_protocol::backend::{parse_parameter_status, TxStatus};
        let mut forward = Forward::Yes;
        match tag {
            b'1' => {
                if let Some(Expect::Parse {
                    forward: f, stmt, ..
                }) = queue.front()
                {
                    if let Some(s) = stmt {
                        s.verified.store(true, Relaxed);
                    }
                    if !f {
                        forward = Forward::No;
                    }
                    queue.pop_front();
                }
            }
            b'2' => {
                if matches!(queue.front(), Some(Expect::Bind)) {
                    queue.pop_front();
                }
            }
            b'n' => {
                if matches!(
                    queue.front(),
                    Some(Expect::DescribeStatement | Expect::DescribePortal)
                ) {
                    queue.pop_front();
                }
            }
            b'I' | b's' => {
                if matches!(queue.front(), Some(Expect::Execute)) {
                    queue.pop_front();
                }
            }
            b'3' => {
                if let Some(Expect::Close { forward: f }) = queue.front() {
                    if !f {
                        forward = Forward::No;
                    }
                    queue.pop_front();
                }
            }
            b'T' => {
                if matches!(
                    queue.front(),
                    Some(Expect::DescribeStatement | Expect::DescribePortal)
                ) {
                    queue.pop_front();
                }
            }
            b'C' => {
                if let Some(b) = body {
                    let tag_text = b.strip_suffix(b"\0").unwrap_or(b);
                    if tag_text == b"DISCARD ALL" || tag_text == b"DEALLOCATE ALL" {
                        stmts.present.clear();
                    }
                    // Extra parameters (params.rs): DISCARD ALL or RESET may have
                    // reset what pgsluice applied; the next sync applies them again.
                    if tag_text == b"DISCARD ALL" || tag_text == b"RESET" {
                        server_params.forget_extra_values();
                    }
                    if tag_text == b"DISCARD ALL" {
                        client_params.clear_extras();
                    }
                }
                if matches!(queue.front(), Some(Expect::Execute)) {
                    queue.pop_front();
                }
            }
            b'Z' => {
                let status = body
                    .and_then(|b| b.first().copied())
                    .and_then(TxStatus::from_byte)
                    .ok_or(ProtocolError::Malformed("ReadyForQuery"))?;
                flow.server_ready(status);
                if matches!(
                    queue.front(),
                    Some(Expect::Sync | Expect::Query | Expect::FunctionCall)
                ) {
                    queue.pop_front();
                }
            }
            b'S' => {
                if let Some(b) = body {
                    let (name, value) = parse_parameter_status(b)?;
                    server_params.set(name, value);
                    client_params.set(name, value);
                }
            }
            b'E' => match queue.front() {
                Some(Expect::Query | Expect::FunctionCall) | None => {}
                Some(_) => {
                    if let Some(Expect::Parse {
                        client_name,
                        stmt,
                        rename,
                        ..
                    }) = queue.front_mut()
                    {
                        if let Some((from, to)) = rename.take() {
                            forward = Forward::Renamed(
                                format!("\"{from}\"").into(),
                                format!("\"{to}\"").into(),
                            );
                        } else if let Some(failed) = stmt {
                            let id = failed.id;
                            stmts.present.remove(&id);
                            // A failed Parse leaves nothing behind: the client name goes too.
                            if let Some(name) = client_name {
                                if client.get(name).is_some_and(|s| s.id == id) {
                                    client.remove(name);
                                }
                            }
                        }
                    }
                    // PostgreSQL skips everything up to the next Sync; so does the queue.
                    while let Some(e) = queue.front() {
                        if matches!(e, Expect::Sync) {
                            break;
                        }
                        queue.pop_front();
                    }
                }
            },
            _ => {}
        }
        Ok(forward)
    }
}
