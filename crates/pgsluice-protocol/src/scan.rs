//! A streaming scanner that finds message boundaries in bytes being forwarded.
//!
//! The forwarding path never copies or splits messages: it reads a chunk from one socket,
//! lets the [`Scanner`] walk the headers in it, and writes the same chunk to the other
//! socket. The scanner keeps the position across chunks (a header can straddle two reads,
//! a 100 MB DataRow spans thousands) and reports each message start. For the few message
//! types that policy must look inside (ReadyForQuery, ParameterStatus...), it copies
//! the body into a small side buffer and reports it once complete.

use crate::frame::{header_from_bytes, take_header, HEADER_LEN};
use crate::ProtocolError;

/// What the scanner saw in a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanEvent<'a> {
    /// A message begins (its header is complete). `len` is the declared length.
    Start {
        /// Message type byte.
        tag: u8,
        /// Declared length (counts itself, not the type byte).
        len: u32,
        /// Offset of the type byte in the chunk being fed, or None when the header
        /// began in an earlier chunk.
        at: Option<usize>,
    },
    /// The whole body of a message whose tag is in the capture set.
    Captured {
        /// Message type byte.
        tag: u8,
        /// The message body, without header.
        body: &'a [u8],
    },
    /// A message whose tag is in the capture set but whose body exceeded the capture
    /// limit; it was forwarded but not captured.
    Oversized {
        /// Message type byte.
        tag: u8,
    },
}

/// A set of message type bytes, as a 256-bit mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagSet([u64; 4]);

impl TagSet {
    /// The empty set.
    pub const EMPTY: TagSet = TagSet([0; 4]);

    /// A set holding the given tags.
    pub const fn of(tags: &[u8]) -> TagSet {
        let mut m = [0u64; 4];
        let mut i = 0;
        while i < tags.len() {
            let t = tags[i] as usize;
            m[t / 64] |= 1 << (t % 64);
            i += 1;
        }
        TagSet(m)
    }

    /// Membership test.
    #[inline]
    pub const fn contains(&self, tag: u8) -> bool {
        let t = tag as usize;
        self.0[t / 64] & (1 << (t % 64)) != 0
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Between messages, or inside a header that has `have` bytes so far.
    Header { have: usize },
    /// Inside a body with `remaining` bytes to go.
    Body {
        tag: u8,
        remaining: usize,
        capture: bool,
    },
}

/// Streaming message-boundary scanner for one direction of a connection.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    header: [u8; HEADER_LEN],
    max_len: u32,
    capture: TagSet,
    capture_limit: usize,
    captured: Vec<u8>,
}

impl Scanner {
    /// A scanner that rejects messages longer than `max_len` and captures the bodies of
    /// messages whose tag is in `capture`, up to `capture_limit` bytes each.
    pub fn new(max_len: u32, capture: TagSet, capture_limit: usize) -> Self {
        Scanner {
            state: State::Header { have: 0 },
            header: [0; HEADER_LEN],
            max_len,
            capture,
            capture_limit,
            captured: Vec::new(),
        }
    }

    /// True when the bytes fed so far end exactly at a message boundary.
    #[inline]
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0 })
    }

    /// Forgets any partial message (used when a connection changes hands).
    pub fn reset(&mut self) {
        self.state = State::Header { have: 0 };
        self.captured.clear();
    }

    /// Gives back the capture buffer's memory (for idle connections).
    pub fn shrink(&mut self) {
        if self.captured.is_empty() {
            self.captured = Vec::new();
        }
    }

    /// Walks `data`, calling `on_event` for each message start and captured body.
    ///
    /// The callback may return an error to stop the scan (the error is passed through).
    /// After an error the scanner's position is unspecified; the connection should close.
    pub fn feed<E>(
        &mut self,
        mut data: &[u8],
        mut on_event: impl FnMut(ScanEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<ProtocolError>,
    {
        let total = data.len();
        while !data.is_empty() {
            match self.state {
                State::Header { have } => {
                    let at = (have == 0).then_some(total - data.len());
                    let header = match take_header(&mut self.header, have, &mut data) {
                        Ok(h) => h,
                        Err(have) => {
                            self.state = State::Header { have };
                            return Ok(());
                        }
                    };
                    let h = header_from_bytes(header, self.max_len)?;
                    on_event(ScanEvent::Start {
                        tag: h.tag,
                        len: h.len,
                        at,
                    })?;
                    let capture = self.capture.contains(h.tag);
                    let remaining = h.body_len();
                    if capture {
                        self.captured.clear();
                        if remaining > self.capture_limit {
                            on_event(ScanEvent::Oversized { tag: h.tag })?;
                        }
                    }
                    let capture = capture && remaining <= self.capture_limit;
                    if remaining == 0 {
                        self.state = State::Header { have: 0 };
                        if capture {
                            on_event(ScanEvent::Captured {
                                tag: h.tag,
                                body: &[],
                            })?;
                        }
                    } else {
                        self.state = State::Body {
                            tag: h.tag,
                            remaining,
                            capture,
                        };
                    }
                }
                State::Body {
                    tag,
                    remaining,
                    capture,
                } => {
                    let take = remaining.min(data.len());
                    if capture {
                        // Fast path: the whole body is in this chunk, no copy needed.
                        if take == remaining && self.captured.is_empty() {
                            self.state = State::Header { have: 0 };
                            let body = &data[..take];
                            data = &data[take..];
                            on_event(ScanEvent::Captured { tag, body })?;
                            continue;
                        }
                        self.captured.extend_from_slice(&data[..take]);
                    }
                    data = &data[take..];
                    if take == remaining {
                        self.state = State::Header { have: 0 };
                        if capture {
                            let body = std::mem::take(&mut self.captured);
                            let r = on_event(ScanEvent::Captured { tag, body: &body });
                            self.captured = body;
                            self.captured.clear();
                            r?;
                        }
                    } else {
                        self.state = State::Body {
                            tag,
                            remaining: remaining - take,
                            capture,
                        };
                    }
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

    fn scan_all(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = Scanner::new(1 << 20, TagSet::of(b"ZS"), 64);
        let mut out = Vec::new();
        for c in chunks {
            s.feed::<ProtocolError>(c, |e| {
                out.push(match e {
                    ScanEvent::Start { tag, len, .. } => format!("start {} {len}", tag as char),
                    ScanEvent::Captured { tag, body } => {
                        format!("cap {} {}", tag as char, String::from_utf8_lossy(body))
                    }
                    ScanEvent::Oversized { tag } => format!("big {}", tag as char),
                });
                Ok(())
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn finds_boundaries_in_any_split() {
        let mut stream = msg(b'D', b"0123456789");
        stream.extend(msg(b'S', b"TimeZone\0UTC\0"));
        stream.extend(msg(b'Z', b"I"));
        let whole = scan_all(&[&stream]);
        assert_eq!(
            whole,
            vec![
                "start D 14",
                "start S 17",
                "cap S TimeZone\0UTC\0",
                "start Z 5",
                "cap Z I"
            ]
        );
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(scan_all(&[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(scan_all(&bytes), whole);
    }

    #[test]
    fn oversized_capture_is_reported_not_buffered() {
        let big = vec![b'x'; 100];
        let stream = msg(b'S', &big);
        assert_eq!(scan_all(&[&stream]), vec!["start S 104", "big S"]);
    }

    #[test]
    fn bad_length_is_an_error() {
        let mut s = Scanner::new(1000, TagSet::EMPTY, 0);
        let r = s.feed::<ProtocolError>(b"Q\0\0\0\x02", |_| Ok(()));
        assert!(r.is_err());
        let mut s = Scanner::new(1000, TagSet::EMPTY, 0);
        let r = s.feed::<ProtocolError>(b"Q\0\x01\0\0", |_| Ok(()));
        assert!(matches!(r, Err(ProtocolError::TooLarge { .. })));
    }

    #[test]
    fn start_offsets() {
        let mut stream = msg(b'Q', b"x\0");
        stream.extend(msg(b'X', b""));
        let mut s = Scanner::new(1000, TagSet::EMPTY, 0);
        let mut at = Vec::new();
        s.feed::<ProtocolError>(&stream[..3], |e| {
            if let ScanEvent::Start { at: a, .. } = e {
                at.push(a);
            }
            Ok(())
        })
        .unwrap();
        s.feed::<ProtocolError>(&stream[3..], |e| {
            if let ScanEvent::Start { at: a, .. } = e {
                at.push(a);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(at, vec![None, Some(4)]);
    }

    #[test]
    fn boundary_tracking() {
        let mut s = Scanner::new(1000, TagSet::EMPTY, 0);
        assert!(s.at_boundary());
        s.feed::<ProtocolError>(b"Q\0\0", |_| Ok(())).unwrap();
        assert!(!s.at_boundary());
        s.feed::<ProtocolError>(b"\0\x05x", |_| Ok(())).unwrap();
        assert!(s.at_boundary());
    }
}
