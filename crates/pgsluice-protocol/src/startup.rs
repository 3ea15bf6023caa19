//! The startup phase: StartupMessage, SSLRequest, GSSENCRequest and CancelRequest.
//!
//! These packets have no type byte: a 4-byte length, then a 4-byte code. PostgreSQL caps
//! them at 10,000 bytes; so do we, before reading or allocating anything.

use bytes::{BufMut, BytesMut};

use crate::frame::Reader;
use crate::ProtocolError;

/// PostgreSQL's limit on the length of a startup packet.
pub const MAX_STARTUP_PACKET: u32 = 10_000;
/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: u32 = 3 << 16;
/// The code of an SSLRequest.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// The code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// The code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Longest cancel key accepted (protocol 3.2 allows up to 256 bytes).
pub const MAX_CANCEL_KEY: usize = 256;

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// A StartupMessage for protocol 3.x.
    Startup {
        /// The minor protocol version requested (we speak 3.0).
        minor: u16,
        /// Parameters in the order sent (user, database, options, application_name...).
        params: Vec<(String, String)>,
    },
    /// A request to start TLS.
    SslRequest,
    /// A request to start GSSAPI encryption.
    GssEncRequest,
    /// A request to cancel the query running on another connection.
    Cancel {
        /// The process id from BackendKeyData.
        pid: i32,
        /// The secret key from BackendKeyData.
        secret: Vec<u8>,
    },
    /// A protocol version we do not speak (major other than 3).
    UnsupportedVersion {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
}

impl StartupPacket {
    /// Looks up a StartupMessage parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params, .. } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Splits a startup packet off the front of `buf` if a whole one is there.
pub fn parse_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(ProtocolError::StartupLength(len));
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    let packet = buf.split_to(len as usize);
    decode_startup(&packet[4..]).map(Some)
}

fn decode_startup(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let mut r = Reader::new(body);
    let code = r.i32()? as u32;
    match code {
        SSL_REQUEST_CODE if r.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if r.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let pid = r.i32()?;
            let secret = r.remaining();
            if secret.len() < 4 || secret.len() > MAX_CANCEL_KEY {
                return Err(ProtocolError::Malformed("cancel request"));
            }
            Ok(StartupPacket::Cancel {
                pid,
                secret: secret.to_vec(),
            })
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            Err(ProtocolError::Malformed("encryption request"))
        }
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != 3 {
                return Ok(StartupPacket::UnsupportedVersion { major, minor });
            }
            let mut params = Vec::new();
            loop {
                let key = r.cstr()?;
                if key.is_empty() {
                    break;
                }
                let value = r.cstr()?;
                params.push((key.to_owned(), value.to_owned()));
            }
            if !r.is_empty() {
                return Err(ProtocolError::Malformed(
                    "startup packet has trailing bytes",
                ));
            }
            Ok(StartupPacket::Startup { minor, params })
        }
    }
}

/// Encodes a protocol 3.0 StartupMessage.
pub fn write_startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = buf.len();
    buf.put_u32(0);
    buf.put_u32(PROTOCOL_3_0);
    for (k, v) in params {
        crate::frame::put_cstr(buf, k.as_bytes());
        crate::frame::put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Encodes a CancelRequest.
pub fn write_cancel(buf: &mut BytesMut, pid: i32, secret: &[u8]) {
    buf.put_u32(12 + secret.len() as u32);
    buf.put_u32(CANCEL_REQUEST_CODE);
    buf.put_i32(pid);
    buf.put_slice(secret);
}

/// Encodes an SSLRequest.
pub fn write_ssl_request(buf: &mut BytesMut) {
    buf.put_u32(8);
    buf.put_u32(SSL_REQUEST_CODE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_round_trip() {
        let mut buf = BytesMut::new();
        write_startup(&mut buf, &[("user", "app"), ("database", "db")]);
        let whole = buf.clone();
        let mut partial = BytesMut::from(&whole[..whole.len() - 1]);
        assert_eq!(parse_startup(&mut partial).unwrap(), None);
        let p = parse_startup(&mut buf).unwrap().unwrap();
        assert_eq!(p.param("user"), Some("app"));
        assert_eq!(p.param("database"), Some("db"));
        assert!(buf.is_empty());
    }

    #[test]
    fn special_requests() {
        let mut buf = BytesMut::new();
        write_ssl_request(&mut buf);
        write_cancel(&mut buf, 42, &[1, 2, 3, 4]);
        assert_eq!(
            parse_startup(&mut buf).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        assert_eq!(
            parse_startup(&mut buf).unwrap(),
            Some(StartupPacket::Cancel {
                pid: 42,
                secret: vec![1, 2, 3, 4]
            })
        );
    }

    #[test]
    fn bounds_and_versions() {
        let mut huge = BytesMut::from(&[0u8, 0, 0x30, 0x00][..]);
        assert_eq!(
            parse_startup(&mut huge),
            Err(ProtocolError::StartupLength(0x3000))
        );
        let mut tiny = BytesMut::from(&[0u8, 0, 0, 3][..]);
        assert!(parse_startup(&mut tiny).is_err());
        let mut v2 = BytesMut::from(&[0u8, 0, 0, 8, 0, 2, 0, 0][..]);
        assert_eq!(
            parse_startup(&mut v2).unwrap(),
            Some(StartupPacket::UnsupportedVersion { major: 2, minor: 0 })
        );
        let mut unterminated =
            BytesMut::from(&[0u8, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'][..]);
        assert!(parse_startup(&mut unterminated).is_err());
    }
}
