//! A model of PostgreSQL for the SQL-level prepared-statement tests ([`super::sql_tests`]):
//! simple queries reduced to PREPARE / EXECUTE / DEALLOCATE, transaction blocks and
//! errors, plus the extended-protocol messages those tests send. It keeps statements by
//! name, answers EXECUTE with the statement's definition (so a statement mixed up
//! shows), fails a PREPARE of a missing table, and aborts transaction blocks on errors.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::backend::{self, TxStatus};
use pgsluice_protocol::frame::parse_header;
use pgsluice_protocol::frontend;

/// PostgreSQL's simple query protocol, reduced to prepared statements.
#[derive(Default)]
pub(super) struct Model {
    pub(super) stmts: HashMap<String, String>,
    /// Protocol-level statements (their text) and the unnamed portal's text.
    parsed: HashMap<String, String>,
    portal: Option<String>,
    /// Skipping to Sync after an extended-protocol error.
    skipping: bool,
    pub(super) tx: Option<bool>,
    /// PREPAREs run (created a statement).
    pub(super) prepares: usize,
}

fn error(out: &mut BytesMut, code: &str, msg: &str, extra: &str) {
    let body = format!("SERROR\0C{code}\0M{msg}\0{extra}\0");
    out.put_u8(b'E');
    out.put_u32(body.len() as u32 + 4);
    out.extend_from_slice(body.as_bytes());
}

/// Splits on `;` outside dollar quotes; (start, statement) pairs.
fn split(sql: &str) -> Vec<(usize, &str)> {
    let b = sql.as_bytes();
    let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
    let mut quote: Option<&str> = None;
    while i < b.len() {
        if b[i] == b'$' {
            if let Some(end) = sql[i + 1..].find('$') {
                let tag = &sql[i..i + end + 2];
                match quote {
                    None => quote = Some(tag),
                    Some(q) if q == tag => quote = None,
                    _ => {}
                }
                i += tag.len();
                continue;
            }
        }
        if b[i] == b';' && quote.is_none() {
            out.push((start, &sql[start..i]));
            start = i + 1;
        }
        i += 1;
    }
    out.push((start, &sql[start..]));
    out
}

/// A name as PostgreSQL folds it, and what follows it.
fn name_of(s: &str) -> (String, &str) {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        let end = rest.find('"').unwrap();
        return (rest[..end].to_owned(), &rest[end + 1..]);
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (s[..end].to_lowercase(), &s[end..])
}

impl Model {
    fn query(&mut self, sql: &str, out: &mut BytesMut) {
        for (at, stmt) in split(sql) {
            let text = stmt.trim();
            if text.is_empty() {
                continue;
            }
            if let Err((code, msg, extra)) = self.statement(sql, at, stmt, text, out) {
                error(out, code, &msg, &extra);
                if self.tx.is_some() {
                    self.tx = Some(false);
                }
                break;
            }
        }
        let status = match self.tx {
            None => TxStatus::Idle,
            Some(true) => TxStatus::InTransaction,
            Some(false) => TxStatus::Failed,
        };
        backend::ready_for_query(out, status);
    }

    fn statement(
        &mut self,
        sql: &str,
        at: usize,
        raw: &str,
        text: &str,
        out: &mut BytesMut,
    ) -> Result<(), (&'static str, String, String)> {
        let lower = text.to_lowercase();
        let word = lower.split_whitespace().next().unwrap_or("");
        if self.tx == Some(false) && !matches!(word, "rollback" | "commit") {
            let m =
                "current transaction is aborted, commands ignored until end of transaction block";
            return Err(("25P02", m.into(), String::new()));
        }
        let missing = |n: &str| {
            (
                "26000",
                format!("prepared statement \"{n}\" does not exist"),
            )
        };
        let tag = match word {
            "begin" => {
                self.tx = Some(true);
                "BEGIN".to_owned()
            }
            "commit" | "rollback" => {
                self.tx = None;
                word.to_uppercase()
            }
            "prepare" => {
                let (name, def) = name_of(&text[7..]);
                if self.stmts.contains_key(&name) {
                    let m = format!("prepared statement \"{name}\" already exists");
                    return Err(("42P05", m, String::new()));
                }
                if def.contains("missing") {
                    let m = "relation \"missing\" does not exist".to_owned();
                    return Err(("42P01", m, String::new()));
                }
                self.prepares += 1;
                self.stmts.insert(name, def.trim().to_owned());
                "PREPARE".to_owned()
            }
            "execute" => {
                let (name, args) = name_of(&text[7..]);
                let Some(def) = self.stmts.get(&name) else {
                    let (c, m) = missing(&name);
                    return Err((c, m, String::new()));
                };
                if let Some(bad) = args.find("'x'") {
                    // The argument's place, in characters of the whole text.
                    let off =
                        at + (raw.len() - raw.trim_start().len()) + (text.len() - args.len()) + bad;
                    let p = sql[..off].chars().count() + 1;
                    let m = "invalid input syntax for type integer: \"x\"".to_owned();
                    return Err(("22P02", m, format!("P{p}\0")));
                }
                backend::data_row(out, &[Some(def)]);
                "SELECT 1".to_owned()
            }
            "deallocate" => {
                let rest = text[10..].trim_start();
                let rest = rest
                    .strip_prefix("prepare ")
                    .or_else(|| rest.strip_prefix("PREPARE "))
                    .unwrap_or(rest);
                if rest.eq_ignore_ascii_case("all") {
                    self.stmts.clear();
                    "DEALLOCATE ALL".to_owned()
                } else {
                    let (name, _) = name_of(rest);
                    if self.stmts.remove(&name).is_none() {
                        let (c, m) = missing(&name);
                        return Err((c, m, String::new()));
                    }
                    "DEALLOCATE".to_owned()
                }
            }
            "do" if !text.contains("$m$") => {
                return Err(("0A000", "refused".into(), String::new()));
            }
            "do" => {
                let start = text.find("$m$").expect("message") + 3;
                let end = start + text[start..].find("$m$").unwrap();
                let w = "WPL/pgSQL function inline_code_block line 1 at RAISE\0".to_owned();
                return Err(("42P05", text[start..end].to_owned(), w));
            }
            _ if lower == "select 1/0" => {
                return Err(("22012", "division by zero".into(), String::new()));
            }
            _ => "SELECT 1".to_owned(),
        };
        backend::command_complete(out, &tag);
        Ok(())
    }

    /// Answers every complete message of `data`.
    pub(super) fn handle(&mut self, data: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let mut rest = data;
        while let Ok(Some(h)) = parse_header(rest, u32::MAX) {
            let body = &rest[5..h.total_len()];
            rest = &rest[h.total_len()..];
            if self.skipping && h.tag != b'S' {
                continue;
            }
            match h.tag {
                b'Q' => {
                    let sql = frontend::parse_query(body).unwrap();
                    self.query(std::str::from_utf8(sql).unwrap(), &mut out);
                }
                b'C' => {
                    let (kind, name) = frontend::parse_target(body).unwrap();
                    assert_eq!(kind, b'S');
                    // Both kinds share one name space in PostgreSQL.
                    self.stmts.remove(name);
                    self.parsed.remove(name);
                    out.extend_from_slice(&[b'3', 0, 0, 0, 4]);
                }
                b'P' => {
                    let p = frontend::parse_parse(body).unwrap();
                    let text = std::str::from_utf8(p.query).unwrap().to_owned();
                    self.parsed.insert(p.name.to_owned(), text);
                    out.extend_from_slice(&[b'1', 0, 0, 0, 4]);
                }
                b'B' => {
                    let (_, name, _) = frontend::bind_names(body).unwrap().unwrap();
                    match self.parsed.get(name) {
                        Some(t) => {
                            self.portal = Some(t.clone());
                            out.extend_from_slice(&[b'2', 0, 0, 0, 4]);
                        }
                        None => {
                            let m = format!("prepared statement \"{name}\" does not exist");
                            error(&mut out, "26000", &m, "");
                            self.skipping = true;
                        }
                    }
                }
                b'E' => {
                    let text = self.portal.clone().expect("a bound portal");
                    let trimmed = text.trim().to_owned();
                    if let Err((code, msg, extra)) =
                        self.statement(&text, 0, &text, &trimmed, &mut out)
                    {
                        error(&mut out, code, &msg, &extra);
                        self.skipping = true;
                    }
                }
                b'S' => {
                    self.skipping = false;
                    self.portal = None;
                    let status = match self.tx {
                        None => TxStatus::Idle,
                        Some(true) => TxStatus::InTransaction,
                        Some(false) => TxStatus::Failed,
                    };
                    backend::ready_for_query(&mut out, status);
                }
                other => panic!("model does not speak {}", other as char),
            }
        }
        assert!(rest.is_empty(), "whole messages only");
        out
    }
}
