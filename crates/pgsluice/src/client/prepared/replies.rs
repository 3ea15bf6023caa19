//! The server-to-client side of the rewriting path: each server message is matched
//! against the queue of expected replies, then forwarded, dropped or renamed, with the
//! replies pgsluice makes up put in their turn.

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::ProtocolError;

use super::book::{Book, Expect};
use super::{sql_query, ClientStatements};
use crate::client::relay::WireState;
use crate::params::ParamSet;

/// Appends a message with this type and body.
pub(super) fn put_message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(body.len() as u32 + 4);
    out.extend_from_slice(body);
}

/// What becomes of one server message.
pub(super) enum Forward {
    /// It goes to the client as it is.
    Yes,
    /// It is dropped (the reply to a message pgsluice injected).
    No,
    /// It goes with the server's statement name replaced by the client's.
    Renamed(Box<str>, Box<str>),
    /// It goes with this body instead.
    Body(Vec<u8>),
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
        Forward::Body(b) => put_message(out, tag, &b),
    }
}

/// Matches one server message against the queue. `body` is None for streamed messages.
pub(super) struct MessageCx<'x> {
    pub(super) book: &'x mut Book,
    pub(super) flow: &'x mut WireState,
    pub(super) client: &'x mut ClientStatements,
    pub(super) client_params: &'x mut ParamSet,
    pub(super) server_params: &'x mut ParamSet,
}

impl MessageCx<'_> {
    /// True when a made-up reply is due (at the front of the queue).
    pub(super) fn synth_due(&self) -> bool {
        self.front_is(|e| matches!(e, Expect::Synth(_)))
    }

    /// True when [`MessageCx::on_message`] would do nothing with a message of this
    /// type but forward it: DataRow, NoticeResponse, NotificationResponse, and a
    /// RowDescription that answers no Describe.
    #[inline]
    pub(super) fn passes_unseen(&self, tag: u8) -> bool {
        match tag {
            b'D' | b'N' | b'A' => true,
            b'T' => !self
                .front_is(|e| matches!(e, Expect::DescribeStatement(_) | Expect::DescribePortal)),
            _ => false,
        }
    }

    /// True when the front of the queue expects a reply of this kind.
    fn front_is(&self, want: impl Fn(&Expect) -> bool) -> bool {
        self.book.front().is_some_and(want)
    }

    /// Accounts for one server message (queue, statements, flow, parameters) and says
    /// what becomes of it.
    pub(super) fn on_message(
        &mut self,
        tag: u8,
        body: Option<&[u8]>,
    ) -> Result<Forward, ProtocolError> {
        use pgsluice_protocol::backend::{parse_parameter_status, TxStatus};
        let mut forward = Forward::Yes;
        self.flow.server_tag(tag);
        let done = match tag {
            b'1' => match self.book.front() {
                Some(Expect::Parse { forward: f, .. }) => {
                    if !f {
                        forward = Forward::No;
                    }
                    true
                }
                _ => false,
            },
            b'2' => self.front_is(|e| matches!(e, Expect::Bind(_))),
            b'n' | b'T' => self
                .front_is(|e| matches!(e, Expect::DescribeStatement(_) | Expect::DescribePortal)),
            b'I' | b's' => self.front_is(|e| matches!(e, Expect::Execute)),
            b'3' => match self.book.front() {
                Some(Expect::Close { forward: f, .. }) => {
                    if !f {
                        forward = Forward::No;
                    }
                    true
                }
                _ => false,
            },
            b'C' => {
                if let Some(b) = body {
                    let tag_text = b.strip_suffix(b"\0").unwrap_or(b);
                    if tag_text == b"DISCARD ALL" || tag_text == b"DEALLOCATE ALL" {
                        self.book.stmts.clear_confirmed();
                    }
                    // Extra parameters (params.rs): DISCARD ALL or RESET may have
                    // reset what pgsluice applied; the next sync applies them again.
                    if tag_text == b"DISCARD ALL" || tag_text == b"RESET" {
                        self.server_params.forget_extra_values();
                    }
                    if tag_text == b"DISCARD ALL" {
                        self.client_params.clear_extras();
                        self.client.forget_sql();
                    }
                    if sql_query::is_action_tag(tag_text)
                        && !self.book.sql_tag(tag_text, self.client)
                    {
                        forward = Forward::No;
                    }
                }
                self.front_is(|e| matches!(e, Expect::Execute))
            }
            b'Z' => {
                let status = body
                    .and_then(|b| b.first().copied())
                    .and_then(TxStatus::from_byte)
                    .ok_or(ProtocolError::Malformed("ReadyForQuery"))?;
                // The answer to pgsluice's own query is not the client's.
                if self.front_is(|e| matches!(e, Expect::SqlQuery(q) if q.injected)) {
                    forward = Forward::No;
                } else {
                    self.flow.server_ready(status);
                }
                if self.book.counting() {
                    self.book.ready();
                    return Ok(forward);
                }
                self.front_is(|e| {
                    matches!(
                        e,
                        Expect::Sync | Expect::Query | Expect::SqlQuery(_) | Expect::FunctionCall
                    )
                })
            }
            b'S' => {
                if let Some(b) = body {
                    let (name, value) = parse_parameter_status(b)?;
                    self.server_params.set(name, value);
                    self.client_params.set(name, value);
                }
                false
            }
            b'E' => {
                match self.book.front() {
                    // A simple query's error ends with its own ReadyForQuery.
                    Some(Expect::Query | Expect::FunctionCall) | None => {}
                    // Renamed; what the query did not reach is dropped at its end.
                    Some(Expect::SqlQuery(q)) if q.injected => forward = Forward::No,
                    Some(Expect::SqlQuery(q)) => {
                        if let Some(fixed) = body.and_then(|b| q.fix_error(b)) {
                            forward = Forward::Body(fixed);
                        }
                    }
                    // An error while the Sync itself runs (a deferred constraint at
                    // commit): nothing left to skip.
                    Some(Expect::Sync) => {}
                    Some(e) => {
                        if let Some(r) = e.rename() {
                            forward = Forward::Renamed(
                                format!("\"{}\"", r.stmt.server_name).into(),
                                format!("\"{}\"", r.name).into(),
                            );
                        }
                        // The failed message did nothing; PostgreSQL skips everything
                        // up to the next Sync, and so does the queue.
                        self.book.finish(false, self.client);
                        self.book.skip_to_sync(self.client);
                    }
                }
                false
            }
            _ => false,
        };
        if done {
            self.book.finish(true, self.client);
        }
        Ok(forward)
    }
}
