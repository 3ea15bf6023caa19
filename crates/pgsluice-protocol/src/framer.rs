//! A streaming framer for paths that must look inside (and possibly rewrite) messages.
//!
//! Unlike [`crate::Scanner`], which only reports where messages start, the framer
//! delivers each message in one of three shapes chosen by the caller per message type
//! and length: *whole* (body collected, even across reads), *prefix* (the first bytes up
//! to a caller-defined point, then the rest streamed), or *streamed* (header, then body
//! bytes as they arrive, never buffered). Large DataRows and CopyData stream; small
//! control messages arrive whole, so rewriting them is simple and bounded.

use crate::frame::{header_from_bytes, take_header, HEADER_LEN};
use crate::ProtocolError;

/// How the caller wants a message delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Collect the whole body and deliver it at once.
    Whole,
    /// Collect until [`Piece::Prefix`]'s callback says the prefix is complete (it
    /// returns `true`), at most `limit` bytes, then stream the rest.
    Prefix {
        /// Most bytes to collect before giving up on the prefix and streaming.
        limit: usize,
    },
    /// Deliver the header, then body bytes as they arrive.
    Stream,
}

/// A piece of the message stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete message.
    Whole {
        /// Type byte.
        tag: u8,
        /// Body (without header).
        body: &'a [u8],
    },
    /// The start of a message delivered in prefix mode: the header and the collected
    /// prefix; the remaining body follows as [`Piece::Body`] pieces.
    Prefix {
        /// Type byte.
        tag: u8,
        /// Declared length.
        len: u32,
        /// Bytes collected (the whole body if it was short).
        prefix: &'a [u8],
    },
    /// The header of a streamed message.
    Start {
        /// Type byte.
        tag: u8,
        /// Declared length.
        len: u32,
    },
    /// Body bytes of a streamed (or prefix-mode) message.
    Body(&'a [u8]),
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header {
        have: usize,
    },
    Whole {
        tag: u8,
        need: usize,
    },
    Prefix {
        tag: u8,
        len: u32,
        need: usize,
        limit: usize,
    },
    Stream {
        remaining: usize,
    },
}

/// Splits a byte stream into [`Piece`]s.
#[derive(Debug)]
pub struct Framer {
    state: State,
    header: [u8; HEADER_LEN],
    hold: Vec<u8>,
    max_len: u32,
}

impl Framer {
    /// A framer rejecting messages longer than `max_len`.
    pub fn new(max_len: u32) -> Self {
        Framer {
            state: State::Header { have: 0 },
            header: [0; HEADER_LEN],
            hold: Vec::new(),
            max_len,
        }
    }

    /// The longest message accepted.
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// True between messages.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0 })
    }

    /// Frees the collection buffer if it grew large.
    pub fn shrink(&mut self) {
        if self.hold.capacity() > 64 * 1024 && self.hold.is_empty() {
            self.hold = Vec::new();
        }
    }

    /// Feeds bytes. `mode` picks the delivery shape per (tag, len); `prefix_done`
    /// decides, for prefix mode, whether the bytes collected so far suffice; `on_piece`
    /// receives the pieces in order.
    pub fn feed<E: From<ProtocolError>>(
        &mut self,
        mut data: &[u8],
        mode: impl Fn(u8, u32) -> Mode,
        prefix_done: impl Fn(u8, &[u8]) -> bool,
        mut on_piece: impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !data.is_empty() {
            match self.state {
                State::Header { have } => {
                    let header = match take_header(&mut self.header, have, &mut data) {
                        Ok(h) => h,
                        Err(have) => {
                            self.state = State::Header { have };
                            return Ok(());
                        }
                    };
                    let h = header_from_bytes(header, self.max_len)?;
                    let body_len = h.body_len();
                    match mode(h.tag, h.len) {
                        Mode::Whole => {
                            if data.len() >= body_len {
                                let (body, rest) = data.split_at(body_len);
                                data = rest;
                                self.state = State::Header { have: 0 };
                                on_piece(Piece::Whole { tag: h.tag, body })?;
                            } else {
                                self.hold.clear();
                                self.hold.extend_from_slice(data);
                                data = &[];
                                self.state = State::Whole {
                                    tag: h.tag,
                                    need: body_len - self.hold.len(),
                                };
                            }
                        }
                        Mode::Prefix { limit } => {
                            self.hold.clear();
                            self.state = State::Prefix {
                                tag: h.tag,
                                len: h.len,
                                need: body_len,
                                limit,
                            };
                            if body_len == 0 {
                                self.state = State::Header { have: 0 };
                                on_piece(Piece::Prefix {
                                    tag: h.tag,
                                    len: h.len,
                                    prefix: &[],
                                })?;
                            }
                        }
                        Mode::Stream => {
                            on_piece(Piece::Start {
                                tag: h.tag,
                                len: h.len,
                            })?;
                            self.state = if body_len == 0 {
                                State::Header { have: 0 }
                            } else {
                                State::Stream {
                                    remaining: body_len,
                                }
                            };
                        }
                    }
                }
                State::Whole { tag, need } => {
                    let take = need.min(data.len());
                    self.hold.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if take == need {
                        self.state = State::Header { have: 0 };
                        let body = std::mem::take(&mut self.hold);
                        let r = on_piece(Piece::Whole { tag, body: &body });
                        self.hold = body;
                        self.hold.clear();
                        r?;
                    } else {
                        self.state = State::Whole {
                            tag,
                            need: need - take,
                        };
                    }
                }
                State::Prefix {
                    tag,
                    len,
                    need,
                    limit,
                } => {
                    // Collect byte runs until the prefix is complete, the limit is hit,
                    // or the body ends.
                    let room = limit.saturating_sub(self.hold.len()).max(1);
                    let take = need.min(data.len()).min(room);
                    self.hold.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    let left = need - take;
                    let done =
                        left == 0 || self.hold.len() >= limit || prefix_done(tag, &self.hold);
                    if done {
                        let prefix = std::mem::take(&mut self.hold);
                        let r = on_piece(Piece::Prefix {
                            tag,
                            len,
                            prefix: &prefix,
                        });
                        self.hold = prefix;
                        self.hold.clear();
                        r?;
                        self.state = if left == 0 {
                            State::Header { have: 0 }
                        } else {
                            State::Stream { remaining: left }
                        };
                    } else {
                        self.state = State::Prefix {
                            tag,
                            len,
                            need: left,
                            limit,
                        };
                    }
                }
                State::Stream { remaining } => {
                    let take = remaining.min(data.len());
                    on_piece(Piece::Body(&data[..take]))?;
                    data = &data[take..];
                    self.state = if take == remaining {
                        State::Header { have: 0 }
                    } else {
                        State::Stream {
                            remaining: remaining - take,
                        }
                    };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Re-assembles the stream from pieces: must equal the input for any split.
    fn roundtrip(chunks: &[&[u8]]) -> (Vec<u8>, Vec<String>) {
        let mut f = Framer::new(1 << 20);
        let mut out = Vec::new();
        let mut log = Vec::new();
        for c in chunks {
            f.feed::<ProtocolError>(
                c,
                |tag, _| match tag {
                    b'D' => Mode::Stream,
                    b'B' => Mode::Prefix { limit: 64 },
                    _ => Mode::Whole,
                },
                |_, p| p.iter().filter(|&&b| b == 0).count() >= 2,
                |p| {
                    match p {
                        Piece::Whole { tag, body } => {
                            log.push(format!("whole {}", tag as char));
                            out.extend(msg(tag, body));
                        }
                        Piece::Prefix { tag, len, prefix } => {
                            log.push(format!("prefix {} {}", tag as char, prefix.len()));
                            out.push(tag);
                            out.extend_from_slice(&len.to_be_bytes());
                            out.extend_from_slice(prefix);
                        }
                        Piece::Start { tag, len } => {
                            log.push(format!("start {}", tag as char));
                            out.push(tag);
                            out.extend_from_slice(&len.to_be_bytes());
                        }
                        Piece::Body(b) => out.extend_from_slice(b),
                    }
                    Ok(())
                },
            )
            .unwrap();
        }
        assert!(f.at_boundary());
        (out, log)
    }

    #[test]
    fn any_split_reassembles() {
        let mut stream = msg(b'P', b"s1\0select 1\0\0\0");
        stream.extend(msg(b'B', b"\0s1\0\0\0\0\0\0\0"));
        stream.extend(msg(b'D', &[7u8; 300]));
        stream.extend(msg(b'S', b""));
        let (whole, log) = roundtrip(&[&stream]);
        assert_eq!(whole, stream);
        assert_eq!(log, vec!["whole P", "prefix B 10", "start D", "whole S"]);
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(roundtrip(&[a, b]).0, stream, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(roundtrip(&bytes).0, stream);
    }
}
