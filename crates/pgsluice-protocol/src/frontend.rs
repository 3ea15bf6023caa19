//! Frontend (client to server) messages: encoders for what pgsluice sends to PostgreSQL
//! as a client, and decoders for what it reads from clients during login.

use bytes::{BufMut, BytesMut};

use crate::frame::{put_cstr, write_message, Reader};
use crate::ProtocolError;

/// Message type bytes of frontend messages.
pub mod tag {
    /// Simple query.
    pub const QUERY: u8 = b'Q';
    /// Parse (extended protocol).
    pub const PARSE: u8 = b'P';
    /// Bind.
    pub const BIND: u8 = b'B';
    /// Execute.
    pub const EXECUTE: u8 = b'E';
    /// Describe.
    pub const DESCRIBE: u8 = b'D';
    /// Close.
    pub const CLOSE: u8 = b'C';
    /// Flush.
    pub const FLUSH: u8 = b'H';
    /// Sync.
    pub const SYNC: u8 = b'S';
    /// FunctionCall.
    pub const FUNCTION_CALL: u8 = b'F';
    /// CopyData.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone.
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail.
    pub const COPY_FAIL: u8 = b'f';
    /// Terminate.
    pub const TERMINATE: u8 = b'X';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share this type.
    pub const PASSWORD: u8 = b'p';
}

/// Appends a simple Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    write_message(buf, tag::QUERY, |b| put_cstr(b, sql.as_bytes()));
}

/// Appends Terminate.
pub fn terminate(buf: &mut BytesMut) {
    write_message(buf, tag::TERMINATE, |_| {});
}

/// Appends Sync.
pub fn sync(buf: &mut BytesMut) {
    write_message(buf, tag::SYNC, |_| {});
}

/// Appends a PasswordMessage (cleartext or md5 response).
pub fn password(buf: &mut BytesMut, password: &[u8]) {
    write_message(buf, tag::PASSWORD, |b| put_cstr(b, password));
}

/// Appends SASLInitialResponse.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    write_message(buf, tag::PASSWORD, |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

/// Appends SASLResponse.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    write_message(buf, tag::PASSWORD, |b| b.put_slice(data));
}

/// Decodes a PasswordMessage body (cleartext or md5) into the password bytes.
pub fn parse_password(body: &[u8]) -> Result<&[u8], ProtocolError> {
    let mut r = Reader::new(body);
    let p = r.cstr_bytes()?;
    if !r.is_empty() {
        return Err(ProtocolError::Malformed("password message"));
    }
    Ok(p)
}

/// Decodes a SASLInitialResponse body into (mechanism, initial data).
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let mut r = Reader::new(body);
    let mechanism = r.cstr()?;
    let len = r.i32()?;
    let data = if len < 0 {
        &[][..]
    } else {
        r.bytes(len as usize)?
    };
    if !r.is_empty() {
        return Err(ProtocolError::Malformed("SASLInitialResponse"));
    }
    Ok((mechanism, data))
}

/// Decodes a simple Query body into its SQL text.
pub fn parse_query(body: &[u8]) -> Result<&str, ProtocolError> {
    Reader::new(body).cstr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::split_message;

    #[test]
    fn login_messages_round_trip() {
        let mut buf = BytesMut::new();
        sasl_initial_response(&mut buf, "SCRAM-SHA-256", b"n,,n=,r=abc");
        password(&mut buf, b"secret");
        query(&mut buf, "select 1");
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(
            parse_sasl_initial_response(&m.body).unwrap(),
            ("SCRAM-SHA-256", &b"n,,n=,r=abc"[..])
        );
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(parse_password(&m.body).unwrap(), b"secret");
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(parse_query(&m.body).unwrap(), "select 1");
        assert!(parse_sasl_initial_response(b"SCRAM\0\0\0\0\x09ab").is_err());
        assert!(parse_password(b"abc").is_err());
    }
}
