//! The upgrade channel's messages and their framing, sans-IO: bytes in, messages out.
//!
//! A frame is a one-byte tag, a four-byte big-endian body length and the body. Strings
//! are a four-byte length and UTF-8 bytes. [`decode`] returns `Ok(None)` while a frame
//! is incomplete, checks the length against [`MAX_BODY`] before waiting for (or
//! allocating) a body, and never panics: anything it does not understand is a
//! [`FrameError`]. The file descriptors some messages carry travel beside the bytes
//! (SCM_RIGHTS, [`super::fdpass`]); [`Message::carries_fd`] says which.

use bytes::{Buf, BufMut, BytesMut};

/// The version of the channel's protocol; both sides say theirs in [`Message::Hello`]
/// and refuse a different one.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest body accepted (a client image holds its prepared statements' texts and
/// any bytes already read from it).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Tag byte + length.
const HEADER: usize = 5;

/// What a passed listening socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// A TCP listener of `listen` (address `ip:port`).
    Tcp,
    /// The Unix socket `<unix_socket_dir>/.s.PGSQL.<port>` (address: its path).
    Unix,
    /// The metrics and dashboard endpoint (`metrics_listen`, address `ip:port`).
    Metrics,
}

impl ListenerKind {
    fn code(self) -> u8 {
        match self {
            ListenerKind::Tcp => 1,
            ListenerKind::Unix => 2,
            ListenerKind::Metrics => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(ListenerKind::Tcp),
            2 => Some(ListenerKind::Unix),
            3 => Some(ListenerKind::Metrics),
            _ => None,
        }
    }
}

/// One message of the upgrade channel. The new process speaks first (`Hello`); the old
/// one answers `Hello`, its listeners and `ListenersSent`; the new one says `Ready` (or
/// `Error`); then the old one sends clients and, when it holds none, `Done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Protocol version and process id of the side that sends it.
    Hello {
        /// [`PROTOCOL_VERSION`] of the sender.
        version: u16,
        /// The sender's pid.
        pid: u32,
    },
    /// A listening socket (its fd comes with the message).
    Listener {
        /// What it is.
        kind: ListenerKind,
        /// Its address (`ip:port`, or the socket file's path).
        addr: String,
    },
    /// Every listener has been sent.
    ListenersSent {
        /// The old process's cancel keys (client ids) are all below this one; the new
        /// process issues its own from here on, so that the keys of the clients it
        /// adopts stay unique.
        key_floor: i32,
    },
    /// The new process listens and has written the pidfile: the old one stops accepting.
    Ready {
        /// The new process's pid.
        pid: u32,
    },
    /// A client moving to the new process (its socket's fd comes with the message).
    Client {
        /// Its encoded `client::handover::ClientImage`.
        image: Vec<u8>,
    },
    /// The old process holds no more clients that can move.
    Done,
    /// The upgrade is abandoned; why.
    Error {
        /// A line for the log.
        text: String,
    },
}

impl Message {
    fn tag(&self) -> u8 {
        match self {
            Message::Hello { .. } => b'H',
            Message::Listener { .. } => b'L',
            Message::ListenersSent { .. } => b'l',
            Message::Ready { .. } => b'R',
            Message::Client { .. } => b'C',
            Message::Done => b'D',
            Message::Error { .. } => b'E',
        }
    }

    /// Whether one file descriptor travels with this message.
    pub fn carries_fd(&self) -> bool {
        matches!(self, Message::Listener { .. } | Message::Client { .. })
    }
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A tag no version of the protocol uses.
    #[error("unknown upgrade message tag {0:#04x}")]
    UnknownTag(u8),
    /// A body longer than [`MAX_BODY`].
    #[error("upgrade message of {0} bytes is too long")]
    TooLong(usize),
    /// The body does not hold what its tag says.
    #[error("malformed upgrade message: {0}")]
    Malformed(&'static str),
}

/// Appends `msg`'s frame to `out`.
pub fn encode(msg: &Message, out: &mut BytesMut) {
    let mut body = BytesMut::new();
    match msg {
        Message::Hello { version, pid } => {
            body.put_u16(*version);
            body.put_u32(*pid);
        }
        Message::Listener { kind, addr } => {
            body.put_u8(kind.code());
            put_str(&mut body, addr);
        }
        Message::Ready { pid } => body.put_u32(*pid),
        Message::ListenersSent { key_floor } => body.put_i32(*key_floor),
        Message::Client { image } => body.extend_from_slice(image),
        Message::Error { text } => put_str(&mut body, text),
        Message::Done => {}
    }
    out.put_u8(msg.tag());
    // Bodies this side builds are far below MAX_BODY (a client image is bounded by the
    // client's own limits), so the length fits.
    out.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&body);
}

/// Takes one message off the front of `buf`: `Ok(None)` when the frame is not complete
/// yet (nothing is consumed).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_BODY {
        return Err(FrameError::TooLong(len));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let mut frame = buf.split_to(HEADER + len);
    frame.advance(HEADER);
    let body = &mut &frame[..];
    let msg = match tag {
        b'H' => Message::Hello {
            version: get_u16(body)?,
            pid: get_u32(body)?,
        },
        b'L' => {
            let code = get_u8(body)?;
            let kind = ListenerKind::from_code(code)
                .ok_or(FrameError::Malformed("unknown listener kind"))?;
            Message::Listener {
                kind,
                addr: get_str(body)?,
            }
        }
        b'l' => Message::ListenersSent {
            key_floor: get_i32(body)?,
        },
        b'R' => Message::Ready {
            pid: get_u32(body)?,
        },
        b'C' => {
            let image = body.to_vec();
            body.advance(body.len());
            Message::Client { image }
        }
        b'D' => Message::Done,
        b'E' => Message::Error {
            text: get_str(body)?,
        },
        other => return Err(FrameError::UnknownTag(other)),
    };
    if !body.is_empty() {
        return Err(FrameError::Malformed("bytes after the message"));
    }
    Ok(Some(msg))
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(s.as_bytes());
}

fn get_u8(b: &mut &[u8]) -> Result<u8, FrameError> {
    b.try_get_u8()
        .map_err(|_| FrameError::Malformed("short body"))
}

fn get_u16(b: &mut &[u8]) -> Result<u16, FrameError> {
    b.try_get_u16()
        .map_err(|_| FrameError::Malformed("short body"))
}

fn get_u32(b: &mut &[u8]) -> Result<u32, FrameError> {
    b.try_get_u32()
        .map_err(|_| FrameError::Malformed("short body"))
}

fn get_i32(b: &mut &[u8]) -> Result<i32, FrameError> {
    b.try_get_i32()
        .map_err(|_| FrameError::Malformed("short body"))
}

fn get_str(b: &mut &[u8]) -> Result<String, FrameError> {
    let len = get_u32(b)? as usize;
    if b.len() < len {
        return Err(FrameError::Malformed("string longer than the body"));
    }
    let s = std::str::from_utf8(&b[..len]).map_err(|_| FrameError::Malformed("not UTF-8"))?;
    let s = s.to_owned();
    b.advance(len);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all() -> Vec<Message> {
        vec![
            Message::Hello {
                version: PROTOCOL_VERSION,
                pid: 4242,
            },
            Message::Listener {
                kind: ListenerKind::Tcp,
                addr: "127.0.0.1:6432".into(),
            },
            Message::Listener {
                kind: ListenerKind::Unix,
                addr: "/tmp/.s.PGSQL.6432".into(),
            },
            Message::Listener {
                kind: ListenerKind::Metrics,
                addr: "[::1]:9127".into(),
            },
            Message::ListenersSent { key_floor: -3 },
            Message::ListenersSent {
                key_floor: i32::MAX,
            },
            Message::Ready { pid: 7 },
            Message::Client {
                image: vec![0, 1, 2, 255],
            },
            Message::Client { image: Vec::new() },
            Message::Done,
            Message::Error {
                text: "config: bad key é".into(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips_one_after_another() {
        let mut buf = BytesMut::new();
        for m in all() {
            encode(&m, &mut buf);
        }
        for m in all() {
            assert_eq!(decode(&mut buf).unwrap(), Some(m));
        }
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn a_partial_frame_waits_and_consumes_nothing() {
        let mut whole = BytesMut::new();
        encode(
            &Message::Listener {
                kind: ListenerKind::Tcp,
                addr: "0.0.0.0:1".into(),
            },
            &mut whole,
        );
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decode(&mut part).unwrap(), None, "cut at {cut}");
            assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[(&[u8], FrameError)] = &[
            (b"Z\0\0\0\0", FrameError::UnknownTag(b'Z')),
            (b"H\0\0\0\x02ab", FrameError::Malformed("short body")),
            (
                b"R\0\0\0\x05\0\0\0\x01x",
                FrameError::Malformed("bytes after the message"),
            ),
            (
                b"L\0\0\0\x05\x09\0\0\0\0",
                FrameError::Malformed("unknown listener kind"),
            ),
            (
                b"E\0\0\0\x04\0\0\0\x09",
                FrameError::Malformed("string longer than the body"),
            ),
            (
                b"E\0\0\0\x05\0\0\0\x01\xff",
                FrameError::Malformed("not UTF-8"),
            ),
            (b"C\xff\xff\xff\xff", FrameError::TooLong(u32::MAX as usize)),
        ];
        for (bytes, want) in cases {
            let mut b = BytesMut::from(*bytes);
            assert_eq!(decode(&mut b).unwrap_err(), *want, "{bytes:?}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut b) {}
        }

        #[test]
        fn strings_round_trip(addr in ".{0,40}", text in ".{0,40}") {
            let mut b = BytesMut::new();
            let l = Message::Listener { kind: ListenerKind::Unix, addr };
            let e = Message::Error { text };
            encode(&l, &mut b);
            encode(&e, &mut b);
            prop_assert_eq!(decode(&mut b).unwrap(), Some(l));
            prop_assert_eq!(decode(&mut b).unwrap(), Some(e));
        }
    }
}
