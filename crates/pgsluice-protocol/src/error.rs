//! The error type shared by every decoder in this crate.

/// A violation of the wire protocol by the peer. Every decoder returns this instead of
/// panicking; the caller maps it to SQLSTATE 08P01 and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A length field below the 4 bytes that it must at least count (itself).
    #[error("invalid length {len} in message of type {}", printable(*.tag))]
    InvalidLength {
        /// The message type byte.
        tag: u8,
        /// The length as declared.
        len: u32,
    },
    /// A message whose declared length exceeds the configured maximum.
    #[error("message of type {} declares {len} bytes, more than the limit of {max}", printable(*.tag))]
    TooLarge {
        /// The message type byte.
        tag: u8,
        /// The length as declared.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// A startup packet whose length is out of PostgreSQL's bounds.
    #[error("invalid startup packet length {0}")]
    StartupLength(u32),
    /// A message type the receiving side does not accept (PostgreSQL closes the
    /// connection on these too, since message boundaries can no longer be trusted).
    #[error("invalid frontend message type {0}")]
    UnknownMessageType(u8),
    /// A message body that does not have the shape its type requires.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

fn printable(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}
