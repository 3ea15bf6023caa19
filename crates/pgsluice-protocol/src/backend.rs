//! Backend (server to client) messages: encoders for what pgsluice itself sends to
//! clients, and decoders for what it must read from PostgreSQL.

use bytes::{BufMut, BytesMut};

use crate::frame::{put_cstr, write_message, Reader};
use crate::{ProtocolError, SqlState};

/// Message type bytes of backend messages.
pub mod tag {
    /// Authentication request (all kinds).
    pub const AUTHENTICATION: u8 = b'R';
    /// BackendKeyData.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// ParameterStatus.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// ReadyForQuery.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// NotificationResponse.
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    /// RowDescription.
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// DataRow.
    pub const DATA_ROW: u8 = b'D';
    /// CommandComplete.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// EmptyQueryResponse.
    pub const EMPTY_QUERY: u8 = b'I';
    /// CopyInResponse.
    pub const COPY_IN: u8 = b'G';
    /// CopyOutResponse.
    pub const COPY_OUT: u8 = b'H';
    /// CopyBothResponse.
    pub const COPY_BOTH: u8 = b'W';
    /// NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Not in a transaction block.
    Idle,
    /// In a transaction block.
    InTransaction,
    /// In a failed transaction block (queries rejected until ROLLBACK).
    Failed,
}

impl TxStatus {
    /// Decodes the status byte.
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    /// The status byte.
    pub fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Ends the statement.
    Error,
    /// Ends the session.
    Fatal,
    /// A warning notice.
    Warning,
    /// An informational notice.
    Notice,
    /// Log-level message.
    Log,
}

impl Severity {
    /// The (non-localized) name PostgreSQL uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
            Severity::Log => "LOG",
        }
    }
}

/// An error or notice pgsluice sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorNotice<'a> {
    /// Severity.
    pub severity: Severity,
    /// SQLSTATE code.
    pub code: SqlState,
    /// Primary message.
    pub message: &'a str,
    /// Optional detail.
    pub detail: Option<&'a str>,
    /// Optional hint.
    pub hint: Option<&'a str>,
}

impl<'a> ErrorNotice<'a> {
    /// An ERROR with the given code and message.
    pub fn error(code: SqlState, message: &'a str) -> Self {
        ErrorNotice {
            severity: Severity::Error,
            code,
            message,
            detail: None,
            hint: None,
        }
    }

    /// A FATAL error with the given code and message.
    pub fn fatal(code: SqlState, message: &'a str) -> Self {
        ErrorNotice {
            severity: Severity::Fatal,
            code,
            message,
            detail: None,
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: &'a str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// Adds a detail.
    pub fn with_detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Appends the ErrorResponse (or NoticeResponse for notice severities).
    pub fn write(&self, buf: &mut BytesMut) {
        let t = match self.severity {
            Severity::Error | Severity::Fatal => tag::ERROR_RESPONSE,
            _ => tag::NOTICE_RESPONSE,
        };
        write_message(buf, t, |b| {
            for f in [b'S', b'V'] {
                b.put_u8(f);
                put_cstr(b, self.severity.as_str().as_bytes());
            }
            b.put_u8(b'C');
            put_cstr(b, self.code.code().as_bytes());
            b.put_u8(b'M');
            put_cstr(b, self.message.as_bytes());
            if let Some(d) = self.detail {
                b.put_u8(b'D');
                put_cstr(b, d.as_bytes());
            }
            if let Some(h) = self.hint {
                b.put_u8(b'H');
                put_cstr(b, h.as_bytes());
            }
            b.put_u8(0);
        });
    }
}

/// Appends AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    write_message(buf, tag::AUTHENTICATION, |b| b.put_u32(0));
}

/// Appends AuthenticationCleartextPassword.
pub fn auth_cleartext(buf: &mut BytesMut) {
    write_message(buf, tag::AUTHENTICATION, |b| b.put_u32(3));
}

/// Appends AuthenticationMD5Password with the given salt.
pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    write_message(buf, tag::AUTHENTICATION, |b| {
        b.put_u32(5);
        b.put_slice(&salt);
    });
}

/// Appends AuthenticationSASL listing the mechanisms.
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    write_message(buf, tag::AUTHENTICATION, |b| {
        b.put_u32(10);
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

/// Appends AuthenticationSASLContinue.
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    write_message(buf, tag::AUTHENTICATION, |b| {
        b.put_u32(11);
        b.put_slice(data);
    });
}

/// Appends AuthenticationSASLFinal.
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    write_message(buf, tag::AUTHENTICATION, |b| {
        b.put_u32(12);
        b.put_slice(data);
    });
}

/// Appends ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    write_message(buf, tag::PARAMETER_STATUS, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

/// Appends BackendKeyData (protocol 3.0: a 4-byte secret).
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    write_message(buf, tag::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// Appends ReadyForQuery.
pub fn ready_for_query(buf: &mut BytesMut, status: TxStatus) {
    write_message(buf, tag::READY_FOR_QUERY, |b| b.put_u8(status.as_byte()));
}

/// Appends NegotiateProtocolVersion: the newest minor version we support and the
/// protocol options we did not recognise.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: u16, unrecognized: &[&str]) {
    write_message(buf, tag::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_u32(PROTOCOL_MAJOR_3 | u32::from(minor));
        b.put_u32(unrecognized.len() as u32);
        for o in unrecognized {
            put_cstr(b, o.as_bytes());
        }
    });
}

const PROTOCOL_MAJOR_3: u32 = 3 << 16;

/// Appends a RowDescription for text columns of the given names and type OIDs.
pub fn row_description(buf: &mut BytesMut, columns: &[(&str, u32)]) {
    write_message(buf, tag::ROW_DESCRIPTION, |b| {
        b.put_u16(columns.len() as u16);
        for (name, oid) in columns {
            put_cstr(b, name.as_bytes());
            b.put_u32(0); // table oid
            b.put_i16(0); // column number
            b.put_u32(*oid);
            b.put_i16(-1); // type size
            b.put_i32(-1); // type modifier
            b.put_i16(0); // text format
        }
    });
}

/// Appends a RowDescription of text-format columns given as (name, type OID, type
/// size), the size being what `pg_type.typlen` says (-1 for variable-length types).
pub fn row_description_sized(buf: &mut BytesMut, columns: &[(&str, u32, i16)]) {
    write_message(buf, tag::ROW_DESCRIPTION, |b| {
        b.put_u16(columns.len() as u16);
        for (name, oid, size) in columns {
            put_cstr(b, name.as_bytes());
            b.put_u32(0); // table oid
            b.put_i16(0); // column number
            b.put_u32(*oid);
            b.put_i16(*size);
            b.put_i32(-1); // type modifier
            b.put_i16(0); // text format
        }
    });
}

/// Appends a DataRow of text values (None = NULL).
pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    write_message(buf, tag::DATA_ROW, |b| {
        b.put_u16(values.len() as u16);
        for v in values {
            match v {
                Some(s) => {
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// Appends CommandComplete.
pub fn command_complete(buf: &mut BytesMut, command_tag: &str) {
    write_message(buf, tag::COMMAND_COMPLETE, |b| {
        put_cstr(b, command_tag.as_bytes())
    });
}

/// Appends ParseComplete.
pub fn parse_complete(buf: &mut BytesMut) {
    write_message(buf, b'1', |_| {});
}

/// Appends BindComplete.
pub fn bind_complete(buf: &mut BytesMut) {
    write_message(buf, b'2', |_| {});
}

/// Appends ParameterDescription for a statement with these parameter type OIDs.
pub fn parameter_description(buf: &mut BytesMut, types: &[u32]) {
    write_message(buf, b't', |b| {
        b.put_i16(types.len() as i16);
        for t in types {
            b.put_u32(*t);
        }
    });
}

/// Appends NoData (a Describe of something that returns no rows).
pub fn no_data(buf: &mut BytesMut) {
    write_message(buf, b'n', |_| {});
}

/// Appends NotificationResponse: the notifying backend's process id, the channel and
/// the payload.
pub fn notification(buf: &mut BytesMut, pid: i32, channel: &str, payload: &str) {
    write_message(buf, tag::NOTIFICATION_RESPONSE, |b| {
        b.put_i32(pid);
        put_cstr(b, channel.as_bytes());
        put_cstr(b, payload.as_bytes());
    });
}

/// Parses a NotificationResponse body: process id, channel, payload.
pub fn parse_notification(body: &[u8]) -> Result<(i32, &[u8], &[u8]), ProtocolError> {
    let bad = || ProtocolError::Malformed("NotificationResponse");
    let (pid, rest) = body.split_first_chunk::<4>().ok_or_else(bad)?;
    let nul = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
    let channel = &rest[..nul];
    let rest = &rest[nul + 1..];
    let end = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
    if end + 1 != rest.len() {
        return Err(bad());
    }
    Ok((i32::from_be_bytes(*pid), channel, &rest[..end]))
}

/// Appends EmptyQueryResponse.
pub fn empty_query(buf: &mut BytesMut) {
    write_message(buf, tag::EMPTY_QUERY, |_| {});
}

/// An authentication request from PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear.
    Cleartext,
    /// Send an md5 hash with this salt.
    Md5 {
        /// The salt.
        salt: [u8; 4],
    },
    /// Start a SASL exchange with one of these mechanisms.
    Sasl {
        /// Mechanism names offered.
        mechanisms: Vec<&'a str>,
    },
    /// SASL challenge data.
    SaslContinue(&'a [u8]),
    /// SASL outcome data.
    SaslFinal(&'a [u8]),
    /// A method pgsluice does not implement (Kerberos, GSSAPI, SSPI...).
    Unsupported(i32),
}

/// Decodes the body of an Authentication ('R') message.
pub fn parse_auth(body: &[u8]) -> Result<AuthRequest<'_>, ProtocolError> {
    let mut r = Reader::new(body);
    Ok(match r.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => {
            let s = r.bytes(4)?;
            AuthRequest::Md5 {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => AuthRequest::SaslContinue(r.remaining()),
        12 => AuthRequest::SaslFinal(r.remaining()),
        other => AuthRequest::Unsupported(other),
    })
}

/// Decodes a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Result<(&str, &str), ProtocolError> {
    let mut r = Reader::new(body);
    Ok((r.cstr()?, r.cstr()?))
}

/// Decodes a BackendKeyData body into (pid, secret bytes).
pub fn parse_backend_key_data(body: &[u8]) -> Result<(i32, &[u8]), ProtocolError> {
    let mut r = Reader::new(body);
    let pid = r.i32()?;
    let secret = r.remaining();
    if secret.len() < 4 || secret.len() > crate::startup::MAX_CANCEL_KEY {
        return Err(ProtocolError::Malformed("backend key data"));
    }
    Ok((pid, secret))
}

/// The fields of an ErrorResponse or NoticeResponse from PostgreSQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// Non-localized severity (V), or localized (S) when V is absent.
    pub severity: &'a str,
    /// SQLSTATE (C).
    pub code: &'a str,
    /// Message (M).
    pub message: &'a str,
}

/// Decodes the fields of an ErrorResponse or NoticeResponse that pgsluice uses.
pub fn parse_error_fields(body: &[u8]) -> Result<ErrorFields<'_>, ProtocolError> {
    let mut r = Reader::new(body);
    let mut out = ErrorFields::default();
    loop {
        let field = r.u8()?;
        if field == 0 {
            break;
        }
        let value = std::str::from_utf8(r.cstr_bytes()?).unwrap_or("");
        match field {
            b'V' => out.severity = value,
            b'S' if out.severity.is_empty() => out.severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes a DataRow body into its column values (`None` = NULL).
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut r = Reader::new(body);
    let n = r.i16()?;
    if n < 0 {
        return Err(ProtocolError::Malformed("negative DataRow column count"));
    }
    let mut values = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = r.i32()?;
        values.push(match len {
            -1 => None,
            l if l < 0 => return Err(ProtocolError::Malformed("negative DataRow value length")),
            l => Some(r.bytes(l as usize)?),
        });
    }
    if !r.is_empty() {
        return Err(ProtocolError::Malformed("DataRow has trailing bytes"));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::split_message;

    #[test]
    fn error_round_trip() {
        let mut buf = BytesMut::new();
        ErrorNotice::fatal(
            SqlState::TOO_MANY_CONNECTIONS,
            "no more connections allowed",
        )
        .with_hint("raise max_client_conn")
        .write(&mut buf);
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(m.tag, b'E');
        let f = parse_error_fields(&m.body).unwrap();
        assert_eq!((f.severity, f.code), ("FATAL", "53300"));
        assert_eq!(f.message, "no more connections allowed");
    }

    #[test]
    fn notification_round_trip() {
        let mut buf = BytesMut::new();
        notification(&mut buf, 42, "chan", "payload");
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(m.tag, tag::NOTIFICATION_RESPONSE);
        assert_eq!(
            parse_notification(&m.body).unwrap(),
            (42, &b"chan"[..], &b"payload"[..])
        );
        for bad in [
            &b""[..],
            b"\0\0\0\x01chan",
            b"\0\0\0\x01c\0p",
            b"\0\0\0\x01c\0p\0x",
        ] {
            assert!(parse_notification(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn auth_requests_decode() {
        let mut buf = BytesMut::new();
        auth_sasl(&mut buf, &["SCRAM-SHA-256"]);
        auth_md5(&mut buf, [1, 2, 3, 4]);
        auth_ok(&mut buf);
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(
            parse_auth(&m.body).unwrap(),
            AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256"]
            }
        );
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(
            parse_auth(&m.body).unwrap(),
            AuthRequest::Md5 { salt: [1, 2, 3, 4] }
        );
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(parse_auth(&m.body).unwrap(), AuthRequest::Ok);
        assert!(parse_auth(&[0, 0]).is_err());
        assert!(parse_auth(&[0, 0, 0, 5, 1]).is_err());
    }

    #[test]
    fn parameter_status_and_key() {
        let mut buf = BytesMut::new();
        parameter_status(&mut buf, "TimeZone", "UTC");
        backend_key_data(&mut buf, 7, 9);
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(
            parse_parameter_status(&m.body).unwrap(),
            ("TimeZone", "UTC")
        );
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(
            parse_backend_key_data(&m.body).unwrap(),
            (7, &9i32.to_be_bytes()[..])
        );
    }

    #[test]
    fn data_row_round_trip_and_malformed() {
        let mut buf = BytesMut::new();
        data_row(&mut buf, &[Some("alice"), None, Some("")]);
        let m = split_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(
            parse_data_row(&m.body).unwrap(),
            vec![Some(&b"alice"[..]), None, Some(&b""[..])]
        );
        assert!(parse_data_row(&[]).is_err());
        assert!(parse_data_row(&[0xff, 0xff]).is_err());
        assert!(parse_data_row(&[0, 1, 0, 0, 0, 9, b'x']).is_err());
        assert!(parse_data_row(&[0, 1, 0xff, 0xff, 0xff, 0xfe]).is_err());
        assert!(parse_data_row(&[0, 0, 1]).is_err());
        assert_eq!(
            parse_data_row(&[0, 0]).unwrap(),
            Vec::<Option<&[u8]>>::new()
        );
    }
}
