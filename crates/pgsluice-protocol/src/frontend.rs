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

/// True for the message types a client may send after login.
pub fn is_session_message(t: u8) -> bool {
    matches!(
        t,
        tag::QUERY
            | tag::PARSE
            | tag::BIND
            | tag::EXECUTE
            | tag::DESCRIBE
            | tag::CLOSE
            | tag::FLUSH
            | tag::SYNC
            | tag::FUNCTION_CALL
            | tag::COPY_DATA
            | tag::COPY_DONE
            | tag::COPY_FAIL
            | tag::TERMINATE
    )
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

/// Decodes a simple Query body into its SQL text, as bytes: the text is in the
/// client's encoding (client_encoding), which need not be UTF-8.
pub fn parse_query(body: &[u8]) -> Result<&[u8], ProtocolError> {
    Reader::new(body).cstr_bytes()
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
        assert_eq!(parse_query(&m.body).unwrap(), b"select 1");
        // Text in another client_encoding (here LATIN1) is not UTF-8, and is fine.
        assert_eq!(parse_query(b"select '\xe9'\0").unwrap(), b"select '\xe9'");
        assert!(parse_sasl_initial_response(b"SCRAM\0\0\0\0\x09ab").is_err());
        assert!(parse_password(b"abc").is_err());
    }
}

/// A decoded Parse message (borrowed from the message body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Statement name ("" = unnamed).
    pub name: &'a str,
    /// Query text, in the client's encoding (not necessarily UTF-8).
    pub query: &'a [u8],
    /// Parameter type OIDs (0 = unspecified).
    pub param_types: Vec<u32>,
}

/// Decodes a Parse body.
pub fn parse_parse(body: &[u8]) -> Result<Parse<'_>, ProtocolError> {
    let mut r = Reader::new(body);
    let name = r.cstr()?;
    let query = r.cstr_bytes()?;
    let n = r.i16()?;
    if n < 0 {
        return Err(ProtocolError::Malformed("Parse parameter count"));
    }
    let mut param_types = Vec::with_capacity(n as usize);
    for _ in 0..n {
        param_types.push(r.i32()? as u32);
    }
    if !r.is_empty() {
        return Err(ProtocolError::Malformed("Parse has trailing bytes"));
    }
    Ok(Parse {
        name,
        query,
        param_types,
    })
}

/// Appends a Parse message.
pub fn parse(buf: &mut BytesMut, name: &str, query: &[u8], param_types: &[u32]) {
    write_message(buf, tag::PARSE, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, query);
        b.put_i16(param_types.len() as i16);
        for t in param_types {
            b.put_u32(*t);
        }
    });
}

/// The names at the front of a Bind body: (portal, statement, bytes they occupy).
///
/// Returns `Ok(None)` when `prefix` does not yet hold both names (the caller reads more).
pub fn bind_names(prefix: &[u8]) -> Result<Option<(&str, &str, usize)>, ProtocolError> {
    let Some(p_end) = prefix.iter().position(|&b| b == 0) else {
        return Ok(None);
    };
    let Some(s_len) = prefix[p_end + 1..].iter().position(|&b| b == 0) else {
        return Ok(None);
    };
    let s_end = p_end + 1 + s_len;
    let utf8 = crate::frame::utf8;
    Ok(Some((
        utf8(&prefix[..p_end])?,
        utf8(&prefix[p_end + 1..s_end])?,
        s_end + 1,
    )))
}

/// Decodes a Describe or Close body: (kind b'S' or b'P', name).
pub fn parse_target(body: &[u8]) -> Result<(u8, &str), ProtocolError> {
    let mut r = Reader::new(body);
    let kind = r.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(ProtocolError::Malformed("Describe/Close target kind"));
    }
    let name = r.cstr()?;
    if !r.is_empty() {
        return Err(ProtocolError::Malformed(
            "Describe/Close has trailing bytes",
        ));
    }
    Ok((kind, name))
}

/// Appends a Describe or Close message (`message_tag` is `tag::DESCRIBE` or `tag::CLOSE`).
pub fn target_message(buf: &mut BytesMut, message_tag: u8, kind: u8, name: &str) {
    write_message(buf, message_tag, |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_bytes());
    });
}

/// Appends a Bind of `portal` to `statement` with text-format parameters (`None` =
/// NULL) and text-format results.
pub fn bind_text(buf: &mut BytesMut, portal: &str, statement: &str, params: &[Option<&[u8]>]) {
    write_message(buf, tag::BIND, |b| {
        put_cstr(b, portal.as_bytes());
        put_cstr(b, statement.as_bytes());
        b.put_i16(0); // every parameter in text format
        b.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(0); // every result column in text format
    });
}

/// Appends an Execute of `portal` returning at most `max_rows` rows (0 = all).
pub fn execute(buf: &mut BytesMut, portal: &str, max_rows: u32) {
    write_message(buf, tag::EXECUTE, |b| {
        put_cstr(b, portal.as_bytes());
        b.put_u32(max_rows);
    });
}

#[cfg(test)]
mod extended_tests {
    use super::*;
    use crate::frame::split_message;

    #[test]
    fn parse_round_trip() {
        let mut buf = BytesMut::new();
        parse(&mut buf, "s1", b"select $1", &[23]);
        target_message(&mut buf, tag::CLOSE, b'S', "s1");
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        let p = parse_parse(&m.body).unwrap();
        assert_eq!(
            (p.name, p.query, p.param_types),
            ("s1", &b"select $1"[..], vec![23])
        );
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(parse_target(&m.body).unwrap(), (b'S', "s1"));
        assert!(parse_parse(b"s\0q\0\xff\xff").is_err());
        assert!(parse_target(b"X\0").is_err());
    }

    #[test]
    fn bind_names_need_both_terminators() {
        assert_eq!(bind_names(b"\0stm").unwrap(), None);
        assert_eq!(
            bind_names(b"p\0stmt\0\0\0").unwrap(),
            Some(("p", "stmt", 7))
        );
        assert_eq!(bind_names(b"").unwrap(), None);
    }

    #[test]
    fn bind_and_execute_encode() {
        let mut buf = BytesMut::new();
        bind_text(&mut buf, "", "", &[Some(&b"x' OR '1'='1"[..]), None]);
        execute(&mut buf, "", 0);
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(m.tag, tag::BIND);
        let mut want = b"\0\0\0\0\0\x02\0\0\0\x0cx' OR '1'='1\xff\xff\xff\xff\0\0".to_vec();
        assert_eq!(&m.body[..], &want[..]);
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(m.tag, tag::EXECUTE);
        want = b"\0\0\0\0\0".to_vec();
        assert_eq!(&m.body[..], &want[..]);
        assert!(buf.is_empty());
    }
}
