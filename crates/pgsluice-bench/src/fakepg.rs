//! An instant-answer fake PostgreSQL backend, so that a pooler in front of it is the
//! bottleneck instead of PostgreSQL.
//!
//! It accepts any startup packet (SSLRequest and GSSENCRequest get `N`), answers
//! AuthenticationOk (trust), the usual ParameterStatus messages, BackendKeyData and
//! ReadyForQuery. Every simple Query gets canned answers per statement: a `SELECT`
//! returns one row with one `int4` column holding `1`, anything else just its command
//! tag. `SET` of a reported parameter answers ParameterStatus as PostgreSQL does (so a
//! pooler's parameter sync settles), `BEGIN`/`COMMIT` move the transaction status.
//! The extended protocol (Parse/Bind/Describe/Execute/Close/Sync/Flush) is answered
//! the same way, which is enough for `pgbench -n -f script.sql` in the simple,
//! extended and prepared query modes. Nothing is stored and nothing is checked:
//! this is a load generator's counterpart, not a database.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::backend::{self, ErrorNotice, TxStatus};
use pgsluice_protocol::frame::{split_message, Reader};
use pgsluice_protocol::startup::{parse_startup, StartupPacket};
use pgsluice_protocol::SqlState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest message accepted from a client.
const MAX_MESSAGE: u32 = 64 * 1024 * 1024;
/// OID of `int4`.
const INT4_OID: u32 = 23;

/// Parameters a real server reports with ParameterStatus (GUC_REPORT), canonical spelling.
const REPORTED: [&str; 11] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
];

/// Runs the fake server on `listener` until the process ends. Prints nothing.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    let next_pid = Arc::new(AtomicI32::new(10_000));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let pid = next_pid.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = Conn::new(stream, pid).run().await;
        });
    }
}

/// Binds `addr`, prints `listening on ADDR` to stderr, and serves forever on a Tokio
/// runtime with `workers` threads.
pub fn run_blocking(addr: &str, workers: usize) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("pgsluice-fakepg listening on {}", listener.local_addr()?);
        serve(listener).await
    })
}

/// What a statement returns.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// One row, one int4 column.
    Select,
    /// Only a command tag.
    Command(String),
}

/// One client connection's state.
struct Conn {
    stream: TcpStream,
    pid: i32,
    input: BytesMut,
    out: BytesMut,
    status: TxStatus,
    /// Current values of the reported parameters.
    params: Vec<(&'static str, String)>,
    /// Values at login (what RESET ALL / DISCARD ALL go back to).
    defaults: Vec<(&'static str, String)>,
    /// Prepared statement name -> SQL text.
    statements: HashMap<String, String>,
    /// Portal name -> SQL text.
    portals: HashMap<String, String>,
}

impl Conn {
    fn new(stream: TcpStream, pid: i32) -> Conn {
        Conn {
            stream,
            pid,
            input: BytesMut::with_capacity(8192),
            out: BytesMut::with_capacity(8192),
            status: TxStatus::Idle,
            params: Vec::new(),
            defaults: Vec::new(),
            statements: HashMap::new(),
            portals: HashMap::new(),
        }
    }

    async fn fill(&mut self) -> io::Result<bool> {
        Ok(self.stream.read_buf(&mut self.input).await? > 0)
    }

    async fn run(mut self) -> io::Result<()> {
        let params = loop {
            match parse_startup(&mut self.input).map_err(io::Error::other)? {
                Some(StartupPacket::Startup { params, .. }) => break params,
                Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                    self.stream.write_all(b"N").await?;
                }
                Some(_) => return Ok(()),
                None => {
                    if !self.fill().await? {
                        return Ok(());
                    }
                }
            }
        };
        self.login(&params);
        self.flush().await?;
        loop {
            while let Some(msg) =
                split_message(&mut self.input, MAX_MESSAGE).map_err(io::Error::other)?
            {
                if msg.tag == b'X' {
                    return self.flush().await;
                }
                self.handle(msg.tag, &msg.body);
            }
            self.flush().await?;
            if !self.fill().await? {
                return Ok(());
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    fn login(&mut self, startup: &[(String, String)]) {
        let given = |k: &str| {
            startup
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let user = given("user").unwrap_or_default();
        for name in REPORTED {
            let value = given(name).unwrap_or_else(|| match name {
                "client_encoding" | "server_encoding" => "UTF8".into(),
                "DateStyle" => "ISO, MDY".into(),
                "integer_datetimes" | "standard_conforming_strings" => "on".into(),
                "IntervalStyle" => "postgres".into(),
                "is_superuser" => "off".into(),
                "server_version" => "15.0 (pgsluice-fakepg)".into(),
                "session_authorization" => user.clone(),
                "TimeZone" => "UTC".into(),
                _ => String::new(),
            });
            self.params.push((name, value));
        }
        self.defaults = self.params.clone();
        backend::auth_ok(&mut self.out);
        for (name, value) in &self.params {
            backend::parameter_status(&mut self.out, name, value);
        }
        backend::backend_key_data(&mut self.out, self.pid, self.pid.wrapping_mul(7919));
        backend::ready_for_query(&mut self.out, self.status);
    }

    fn handle(&mut self, tag: u8, body: &[u8]) {
        let mut r = Reader::new(body);
        match tag {
            b'Q' => {
                let sql = r.cstr().unwrap_or("");
                let statements = split_statements(sql);
                if statements.is_empty() {
                    backend::empty_query(&mut self.out);
                }
                for stmt in statements {
                    let kind = self.execute_effects(stmt);
                    self.answer(&kind, true);
                }
                backend::ready_for_query(&mut self.out, self.status);
            }
            b'P' => {
                let name = r.cstr().unwrap_or("").to_owned();
                let sql = r.cstr().unwrap_or("").trim().to_owned();
                self.statements.insert(name, sql);
                simple_message(&mut self.out, b'1');
            }
            b'B' => {
                let portal = r.cstr().unwrap_or("").to_owned();
                let stmt = r.cstr().unwrap_or("");
                match self.statements.get(stmt).cloned() {
                    Some(sql) => {
                        self.portals.insert(portal, sql);
                        simple_message(&mut self.out, b'2');
                    }
                    None => self.error("prepared statement does not exist"),
                }
            }
            b'D' => {
                let what = r.u8().unwrap_or(b'P');
                let name = r.cstr().unwrap_or("");
                let sql = if what == b'S' {
                    // ParameterDescription with zero parameters.
                    self.out.put_u8(b't');
                    self.out.put_u32(6);
                    self.out.put_u16(0);
                    self.statements.get(name)
                } else {
                    self.portals.get(name)
                };
                match sql.map(|s| classify(s)) {
                    Some(Kind::Select) => {
                        backend::row_description(&mut self.out, &[("?column?", INT4_OID)])
                    }
                    _ => simple_message(&mut self.out, b'n'),
                }
            }
            b'E' => {
                let portal = r.cstr().unwrap_or("");
                match self.portals.get(portal).cloned() {
                    Some(sql) => {
                        let kind = self.execute_effects(&sql);
                        self.answer(&kind, false);
                    }
                    None => self.error("portal does not exist"),
                }
            }
            b'C' => simple_message(&mut self.out, b'3'),
            b'S' => {
                self.portals.remove("");
                backend::ready_for_query(&mut self.out, self.status);
            }
            b'H' | b'd' | b'c' | b'f' => {}
            _ => self.error("message type not supported by pgsluice-fakepg"),
        }
    }

    /// Applies what a statement does to the session (transaction status,
    /// parameters) and returns its kind.
    fn execute_effects(&mut self, stmt: &str) -> Kind {
        let kind = classify(stmt);
        if let Kind::Command(tag) = &kind {
            match tag.as_str() {
                "BEGIN" => self.status = TxStatus::InTransaction,
                "COMMIT" | "ROLLBACK" => self.status = TxStatus::Idle,
                "SET" => {
                    if let Some((name, value)) = parse_set(stmt) {
                        self.set_param(&name, value);
                    }
                }
                "DISCARD ALL" | "RESET ALL" => {
                    for i in 0..self.params.len() {
                        if self.params[i].1 != self.defaults[i].1 {
                            let (name, value) = self.defaults[i].clone();
                            self.set_param(name, value);
                        }
                    }
                }
                _ => {}
            }
        }
        kind
    }

    fn set_param(&mut self, name: &str, value: String) {
        if let Some(p) = self
            .params
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            p.1 = value;
            backend::parameter_status(&mut self.out, p.0, &p.1);
        }
    }

    fn answer(&mut self, kind: &Kind, describe: bool) {
        match kind {
            Kind::Select => {
                if describe {
                    backend::row_description(&mut self.out, &[("?column?", INT4_OID)]);
                }
                backend::data_row(&mut self.out, &[Some("1")]);
                backend::command_complete(&mut self.out, "SELECT 1");
            }
            Kind::Command(tag) => backend::command_complete(&mut self.out, tag),
        }
    }

    fn error(&mut self, message: &str) {
        ErrorNotice::error(SqlState::FEATURE_NOT_SUPPORTED, message).write(&mut self.out);
    }
}

/// Appends a message with an empty body.
fn simple_message(out: &mut BytesMut, tag: u8) {
    out.put_u8(tag);
    out.put_u32(4);
}

/// Splits a simple-query string on `;` outside single quotes; drops empty pieces.
fn split_statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in sql.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&sql[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The kind (and command tag) of a statement from its first keyword.
fn classify(stmt: &str) -> Kind {
    let first = stmt
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    let tag = match first.as_str() {
        "SELECT" | "VALUES" | "WITH" | "SHOW" => return Kind::Select,
        "BEGIN" | "START" => "BEGIN".into(),
        "COMMIT" | "END" => "COMMIT".into(),
        "ROLLBACK" | "ABORT" => "ROLLBACK".into(),
        "INSERT" => "INSERT 0 1".into(),
        "UPDATE" => "UPDATE 1".into(),
        "DELETE" => "DELETE 1".into(),
        "DISCARD" => "DISCARD ALL".into(),
        "RESET" if stmt.to_ascii_uppercase().contains("ALL") => "RESET ALL".into(),
        "" => "EMPTY".into(),
        other => other.to_owned(),
    };
    Kind::Command(tag)
}

/// Parses `SET [SESSION|LOCAL] name {TO|=} value` into (name, unquoted value).
fn parse_set(stmt: &str) -> Option<(String, String)> {
    let rest = stmt.trim().get(3..)?.trim_start();
    let rest = ["SESSION ", "LOCAL "]
        .iter()
        .find_map(|p| {
            rest.get(..p.len())
                .filter(|h| h.eq_ignore_ascii_case(p))
                .map(|_| rest[p.len()..].trim_start())
        })
        .unwrap_or(rest);
    let (name, value) = match rest.split_once('=') {
        Some((n, v)) if !n.trim().contains(' ') => (n.trim(), v.trim()),
        _ => {
            let (n, v) = rest.split_once(char::is_whitespace)?;
            let v = v.trim_start();
            let v = v.get(..2).filter(|t| t.eq_ignore_ascii_case("TO"))?;
            let value = rest[n.len()..].trim_start()[v.len()..].trim();
            (n, value)
        }
    };
    let value = value.strip_prefix(['E', 'e']).unwrap_or(value);
    let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace("''", "'").replace("\\\\", "\\"),
        None => value.to_owned(),
    };
    Some((name.trim_matches('"').to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_classifies() {
        assert_eq!(
            split_statements("SET a TO 'x;y'; select 1;;"),
            vec!["SET a TO 'x;y'", "select 1"]
        );
        assert_eq!(classify("select 1"), Kind::Select);
        assert_eq!(classify("begin"), Kind::Command("BEGIN".into()));
        assert_eq!(classify("END"), Kind::Command("COMMIT".into()));
        assert_eq!(classify("discard all"), Kind::Command("DISCARD ALL".into()));
    }

    #[test]
    fn parses_set() {
        let p = |s| parse_set(s).unwrap();
        assert_eq!(
            p("SET application_name TO 'pgbench'"),
            ("application_name".into(), "pgbench".into())
        );
        assert_eq!(
            p("set TimeZone = 'it''s'"),
            ("TimeZone".into(), "it's".into())
        );
        assert_eq!(
            p("SET SESSION DateStyle TO ISO"),
            ("DateStyle".into(), "ISO".into())
        );
        assert_eq!(p("SET x TO E'a\\\\b'"), ("x".into(), "a\\b".into()));
        assert!(parse_set("SET").is_none());
    }
}
