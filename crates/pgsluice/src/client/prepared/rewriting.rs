//! The rewriting relay path of transaction mode: a queue of the responses expected from
//! the server, fed by the client side ([`super::rewrite`]) and matched by the server side
//! ([`super::replies`]); see the parent module for the design.
//!
//! Most reads need no rewriting: complete messages that all go on unchanged (simple
//! queries, unnamed extended-protocol messages, their results). Such a read is handled
//! in place and the relay sends the bytes as it read them ([`ReadPath::AsRead`]); anything
//! else goes through a [`Framer`] into an out buffer.

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::frame::parse_header;
use pgsluice_protocol::framer::{Framer, Mode, Piece};
use pgsluice_protocol::frontend::tag as ft;
use pgsluice_protocol::ProtocolError;

use super::book::{Book, PreparedCounts};
use super::replies::{emit, put_message, Forward, MessageCx};
use super::rewrite::{Emit, Rewrite};
use super::{ClientStatements, StatementRegistry};
use crate::client::relay::WireState;
use crate::params::ParamSet;

/// Messages up to this size are handled whole on the server-to-client path.
const SMALL_MESSAGE: u32 = 64 * 1024;
/// Simple queries up to this size are checked for session state (larger ones stream).
const GUARDED_QUERY: u32 = 1 << 20;
/// Most bytes read to find the names at the front of a Bind.
const BIND_PREFIX_LIMIT: usize = 16 * 1024;

/// Per-server-connection state for the rewriting relay path.
#[derive(Debug)]
pub struct Rewriter {
    /// The queue of expected replies and the statements on this connection.
    pub(super) book: Book,
    c2s: Framer,
    s2c: Framer,
    /// Bytes ready for the server.
    pub c2s_out: BytesMut,
    /// Bytes ready for the client.
    pub s2c_out: BytesMut,
}

/// Where the bytes of one read go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// Send them as read: every message in them goes on unchanged, and nothing was
    /// written to the out buffer.
    AsRead,
    /// The out buffer holds what to send instead (possibly nothing).
    Rewritten,
}

/// What the client-side pass found.
#[derive(Debug)]
pub struct ClientPass {
    /// The client sent Terminate (bytes after it are dropped).
    pub terminated: bool,
    /// Where the bytes go.
    pub path: ReadPath,
}

impl ClientPass {
    /// The end of a pass over whole messages read in place: the read goes as it is
    /// when nothing was rewritten, else what `cx` wrote (its last run flushed).
    fn in_place(cx: &mut Rewrite<'_>) -> ClientPass {
        let path = if cx.all_unchanged() {
            ReadPath::AsRead
        } else {
            cx.out();
            ReadPath::Rewritten
        };
        ClientPass {
            terminated: false,
            path,
        }
    }
}

/// How the client-to-server framer delivers each message type.
fn c2s_mode(tag: u8, len: u32) -> Mode {
    match tag {
        ft::PARSE
        | ft::DESCRIBE
        | ft::CLOSE
        | ft::TERMINATE
        | ft::SYNC
        | ft::FLUSH
        | ft::EXECUTE => Mode::Whole,
        ft::BIND => Mode::Prefix {
            limit: BIND_PREFIX_LIMIT,
        },
        ft::QUERY if len <= GUARDED_QUERY => Mode::Whole,
        _ => Mode::Stream,
    }
}

/// True when `data` is nothing but complete messages, each valid under `max_len` and
/// accepted by `ok(tag, declared length)`.
fn complete_messages(data: &[u8], max_len: u32, ok: impl Fn(u8, u32) -> bool) -> bool {
    let mut rest = data;
    while !rest.is_empty() {
        let Ok(Some(h)) = parse_header(rest, max_len) else {
            return false;
        };
        if rest.len() < h.total_len() || !ok(h.tag, h.len) {
            return false;
        }
        rest = &rest[h.total_len()..];
    }
    true
}

/// The body of `data` when it is exactly one complete simple Query that the in-place
/// path takes whole (valid under `max_len`, at most [`GUARDED_QUERY`]).
fn lone_query(data: &[u8], max_len: u32) -> Option<&[u8]> {
    let (&[tag, a, b, c, d], body) = data.split_first_chunk::<5>()?;
    let len = u32::from_be_bytes([a, b, c, d]);
    let fits = tag == ft::QUERY
        && len >= 4
        && len <= max_len.min(GUARDED_QUERY)
        && body.len() == len as usize - 4;
    fits.then_some(body)
}

/// Calls `each(tag, declared length, body, start, end)` for every message of `data`,
/// which [`complete_messages`] accepted.
fn for_each_message(
    data: &[u8],
    mut each: impl FnMut(u8, u32, &[u8], usize, usize) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    let mut at = 0;
    while let Ok(Some(h)) = parse_header(&data[at..], u32::MAX) {
        let end = at + h.total_len();
        let Some(body) = data.get(at + 5..end) else {
            break;
        };
        each(h.tag, h.len, body, at, end)?;
        at = end;
    }
    Ok(())
}

impl Rewriter {
    /// Fresh state for a new server connection.
    pub fn new(max_message: u32, max_prepared: usize) -> Self {
        Rewriter {
            book: Book::new(max_prepared),
            c2s: Framer::new(max_message),
            s2c: Framer::new(u32::MAX),
            c2s_out: BytesMut::new(),
            s2c_out: BytesMut::new(),
        }
    }

    /// Called when a client takes the connection.
    pub fn begin_checkout(&mut self) {
        self.book.begin_checkout();
    }

    /// Number of statements the server confirmed on this connection.
    pub fn statements(&self) -> usize {
        self.book.stmts.len()
    }

    /// The prepared-statement counters since the last call (for SHOW STATS).
    pub fn take_counts(&mut self) -> PreparedCounts {
        std::mem::take(&mut self.book.counts)
    }

    /// The session settings the client's statements changed since the last call.
    pub fn take_carry(&mut self) -> crate::client::state_guard::Carry {
        std::mem::take(&mut self.book.carry)
    }

    /// Nothing buffered, nothing expected: the connection is between messages.
    pub fn quiescent(&self) -> bool {
        self.book.settled()
            && self.c2s_out.is_empty()
            && self.s2c_out.is_empty()
            && self.c2s.at_boundary()
            && self.s2c.at_boundary()
    }

    /// Releases buffer memory of an idle connection.
    pub fn shrink(&mut self) {
        self.c2s.shrink();
        self.s2c.shrink();
        if self.c2s_out.capacity() > 64 * 1024 {
            self.c2s_out = BytesMut::new();
        }
        if self.s2c_out.capacity() > 64 * 1024 {
            self.s2c_out = BytesMut::new();
        }
    }

    /// Handles client bytes: rewritten into `c2s_out` (and replies made up into
    /// `s2c_out`), or, when every message goes on unchanged, left to be sent as read.
    pub fn client_bytes(
        &mut self,
        data: &[u8],
        registry: &StatementRegistry,
        client: &mut ClientStatements,
        flow: &mut WireState,
    ) -> Result<ClientPass, ProtocolError> {
        let pass = self.client_pass(data, registry, client, flow);
        // Whole messages read in place may be counted; what the framer delivered, or
        // a read that failed part-way, is queued.
        let whole = matches!(&pass, Ok((_, true)));
        self.book.end_read(whole);
        pass.map(|(pass, _)| pass)
    }

    /// [`Rewriter::client_bytes`], and whether the read was handled whole in place.
    fn client_pass(
        &mut self,
        data: &[u8],
        registry: &StatementRegistry,
        client: &mut ClientStatements,
        flow: &mut WireState,
    ) -> Result<(ClientPass, bool), ProtocolError> {
        let Rewriter {
            book,
            c2s,
            c2s_out,
            s2c_out,
            ..
        } = self;
        // The usual request, one simple Query, handled as the loop below would handle
        // it but without the loop (callgrind: ~100 instructions a transaction).
        if c2s.at_boundary() && c2s_out.is_empty() {
            if let Some(body) = lone_query(data, c2s.max_len()) {
                flow.client_tag(ft::QUERY)?;
                let mut cx = Rewrite::new(c2s_out, s2c_out, book, client, registry, data);
                match cx.whole(ft::QUERY, body)? {
                    Emit::Same => cx.pass_run(0, data.len()),
                    Emit::Done => {
                        cx.out();
                    }
                }
                return Ok((ClientPass::in_place(&mut cx), true));
            }
        }
        let in_place = c2s.at_boundary()
            && c2s_out.is_empty()
            && complete_messages(data, c2s.max_len(), |tag, len| {
                tag != ft::TERMINATE && (tag != ft::BIND || len as usize <= BIND_PREFIX_LIMIT)
            });
        if in_place {
            let mut cx = Rewrite::new(c2s_out, s2c_out, book, client, registry, data);
            for_each_message(data, |tag, len, body, start, end| {
                let emit = match c2s_mode(tag, len) {
                    Mode::Whole => {
                        flow.client_tag(tag)?;
                        cx.whole(tag, body)?
                    }
                    Mode::Prefix { .. } => {
                        flow.client_tag(tag)?;
                        cx.bind(len, body)?
                    }
                    Mode::Stream => {
                        stream_start(&mut cx, flow, tag)?;
                        Emit::Same
                    }
                };
                match emit {
                    Emit::Same => cx.pass_run(start, end),
                    // Ends the run (a message answered locally leaves a gap).
                    Emit::Done => {
                        cx.out();
                    }
                }
                Ok(())
            })?;
            return Ok((ClientPass::in_place(&mut cx), true));
        }
        let mut terminated = false;
        let mut cx = Rewrite::new(c2s_out, s2c_out, book, client, registry, &[]);
        c2s.feed::<ProtocolError>(
            data,
            c2s_mode,
            |_, prefix| prefix.iter().filter(|&&b| b == 0).count() >= 2,
            |piece| {
                if terminated {
                    return Ok(());
                }
                match piece {
                    Piece::Whole { tag, body } => {
                        tracing::trace!(tag = %(tag as char), queue = ?cx.book.queued(), "c2s whole");
                        if tag == ft::TERMINATE {
                            terminated = true;
                            return Ok(());
                        }
                        flow.client_tag(tag)?;
                        if cx.whole(tag, body)? == Emit::Same {
                            put_message(cx.out(), tag, body);
                        }
                        Ok(())
                    }
                    Piece::Prefix { tag, len, prefix } => {
                        flow.client_tag(tag)?;
                        if cx.bind(len, prefix)? == Emit::Same {
                            let out = cx.out();
                            out.put_u8(tag);
                            out.put_u32(len);
                            out.extend_from_slice(prefix);
                        }
                        Ok(())
                    }
                    Piece::Start { tag, len } => {
                        stream_start(&mut cx, flow, tag)?;
                        let out = cx.out();
                        out.put_u8(tag);
                        out.put_u32(len);
                        Ok(())
                    }
                    Piece::Body(b) => {
                        cx.out().extend_from_slice(b);
                        Ok(())
                    }
                }
            },
        )?;
        let pass = ClientPass {
            terminated,
            path: ReadPath::Rewritten,
        };
        Ok((pass, false))
    }

    /// Handles server bytes: into `s2c_out`, dropping and adding replies as queued, or,
    /// when every message goes to the client unchanged, left to be sent as read.
    pub fn server_bytes(
        &mut self,
        data: &[u8],
        flow: &mut WireState,
        client: &mut ClientStatements,
        client_params: &mut ParamSet,
        server_params: &mut ParamSet,
    ) -> Result<ReadPath, ProtocolError> {
        let Rewriter {
            book, s2c, s2c_out, ..
        } = self;
        let mut m = MessageCx {
            book,
            flow,
            client,
            client_params,
            server_params,
        };
        let mut data = data;
        if s2c.at_boundary() && s2c_out.is_empty() {
            // Handled in place, in one pass: whole messages up to SMALL_MESSAGE,
            // unchanged so far with nothing written. At the first message that is not
            // forwarded as it is, or that has a made-up reply after it, the bytes before
            // it are copied and the rest is written message by message. Should the read
            // end in a part of a message (or one too large to take whole), what was
            // handled goes out as it is and the framer takes the rest.
            let mut copying = false;
            let mut at = 0;
            while let Some(&[tag, a, b, c, d]) = data.get(at..at + 5) {
                let len = u32::from_be_bytes([a, b, c, d]);
                let end = at + 1 + len as usize;
                if !(4..=SMALL_MESSAGE).contains(&len) || end > data.len() {
                    break;
                }
                let body = &data[at + 5..end];
                // Rows and the like need no bookkeeping (most messages of a result).
                let forward = if m.passes_unseen(tag) {
                    Forward::Yes
                } else {
                    m.on_message(tag, Some(body))?
                };
                if copying || !matches!(forward, Forward::Yes) || m.synth_due() {
                    if !copying {
                        s2c_out.extend_from_slice(&data[..at]);
                        copying = true;
                    }
                    emit(s2c_out, forward, tag, body);
                    m.book.drain_synth(s2c_out, m.client);
                }
                at = end;
            }
            if at == data.len() {
                return Ok(if copying {
                    ReadPath::Rewritten
                } else {
                    ReadPath::AsRead
                });
            }
            if !copying {
                s2c_out.extend_from_slice(&data[..at]);
            }
            data = &data[at..];
        }
        s2c.feed::<ProtocolError>(
            data,
            |_, len| {
                if len <= SMALL_MESSAGE {
                    Mode::Whole
                } else {
                    Mode::Stream
                }
            },
            |_, _| false,
            |piece| match piece {
                Piece::Whole { tag, body } => {
                    tracing::trace!(tag = %(tag as char), queue = ?m.book.queued(), "s2c whole");
                    let forward = m.on_message(tag, Some(body))?;
                    emit(s2c_out, forward, tag, body);
                    m.book.drain_synth(s2c_out, m.client);
                    Ok(())
                }
                Piece::Start { tag, len } => {
                    m.on_message(tag, None)?;
                    s2c_out.put_u8(tag);
                    s2c_out.put_u32(len);
                    m.book.drain_synth(s2c_out, m.client);
                    Ok(())
                }
                Piece::Body(b) => {
                    s2c_out.extend_from_slice(b);
                    Ok(())
                }
                Piece::Prefix { .. } => Ok(()),
            },
        )?;
        Ok(ReadPath::Rewritten)
    }
}

/// Accounts for a client message that streams (CopyData, large queries...): it goes on
/// unchanged.
fn stream_start(cx: &mut Rewrite<'_>, flow: &mut WireState, tag: u8) -> Result<(), ProtocolError> {
    if tag == ft::COPY_DONE || tag == ft::COPY_FAIL {
        cx.book.forget_syncs(flow.syncs_ignored_by_copy());
    }
    flow.client_tag(tag)?;
    cx.expect_for(tag);
    Ok(())
}

#[cfg(test)]
#[path = "rewriting_tests.rs"]
mod tests;
