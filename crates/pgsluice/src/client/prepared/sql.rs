//! SQL-level `PREPARE` / `EXECUTE` / `DEALLOCATE` in simple queries, carried across
//! server connections like protocol-level named statements.
//!
//! A client's `PREPARE p ...` becomes `PREPARE pgsluice_sql_<id> ...` on the server
//! (a name unique to that one PREPARE, so clients never meet on it), and the client
//! keeps `p` -> the statement with its definition (the text after the name). Its
//! `EXECUTE p` and `DEALLOCATE p` are renamed the same way; where the server
//! connection lacks the statement, a `PREPARE` of it is put into the text just before
//! the statement that needs it, and its CommandComplete swallowed. A duplicate name is
//! answered by PostgreSQL itself (a `DO` block raising 42P05 in place of that
//! statement), so transaction semantics stay PostgreSQL's. Names the client does not
//! have go to the server as written (it answers 26000 under the client's name).
//!
//! Nothing is recorded until the server confirms it: each statement that changes
//! prepared statements is one [`Action`], matched in text order against the
//! CommandComplete tags (`PREPARE`, `DEALLOCATE`, `DEALLOCATE ALL`) of the query's
//! answer. PostgreSQL's prepared statements are not transactional (a PREPARE inside a
//! transaction that rolls back stays), and neither is this bookkeeping. Errors are shown
//! with the client's names, and their position (`P`) mapped back to the client's text.
//!
//! Sans-IO: [`plan`] reads a text and returns the text to send and the [`SqlQuery`] the
//! book queues; the book ([`super::book`]) applies its actions.

use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::classify::session::{Analysis, Effect};
use crate::client::state_guard::Refusal;

use super::book::Book;
use super::server::Presence;
use super::sql_query::{Action, Moved, SqlQuery};
use super::{ClientStatements, StatementRegistry, Stmt};

/// Server names of SQL-level statements start with this (protocol-level ones with
/// `PGSLUICE_`); the id that follows is unique for the process.
pub(super) const SERVER_PREFIX: &str = "pgsluice_sql_";
/// A name no statement ever has: a client name the client does not have, written in
/// pgsluice's own name space, is sent as this one, so that it cannot reach another
/// client's statement.
pub(super) const ABSENT_NAME: &str = "pgsluice_absent";

/// True when the analysis holds SQL-level prepared-statement effects.
pub(super) fn has_effects(analysis: &Analysis) -> bool {
    analysis.effects.iter().any(|e| {
        matches!(
            e,
            Effect::Prepare { .. } | Effect::Execute { .. } | Effect::Deallocate { .. }
        )
    })
}

/// What one name stands for at a point of the text.
type Entry = Option<(Arc<str>, Arc<Stmt>)>;

/// The state of a text being planned: names and server statements changed by its
/// earlier statements.
struct Plan<'x> {
    book: &'x mut Book,
    client: &'x ClientStatements,
    registry: &'x StatementRegistry,
    /// Names the text changed so far (last one wins).
    overlay: Vec<(String, Entry)>,
    /// A `DEALLOCATE ALL` ran earlier in the text.
    all_gone: bool,
    /// Statements the text made present on the server so far.
    in_text: Vec<u64>,
    q: SqlQuery,
    /// Byte ranges of the client's text and what replaces them, in text order.
    splices: Vec<(Range<usize>, Vec<u8>)>,
}

impl Plan<'_> {
    fn resolve(&self, name: &str) -> Entry {
        if let Some((_, e)) = self.overlay.iter().rev().find(|(n, _)| n == name) {
            return e.clone();
        }
        if self.all_gone {
            return None;
        }
        if let Some(planned) = self.book.sql_name_plan(name) {
            return planned;
        }
        self.client
            .sql_get(name)
            .map(|(n, s)| (n.clone(), s.clone()))
    }

    /// Makes `stmt` present for the statement at `stmt_start`: a PREPARE of it (its
    /// definition, or `AS SELECT` when it is about to be deallocated) goes just before.
    fn ensure(&mut self, stmt: &Arc<Stmt>, stmt_start: usize, dummy: bool) {
        if self.in_text.contains(&stmt.id) {
            return;
        }
        let presence = if self.all_gone {
            Presence::Absent
        } else {
            self.book.presence(stmt)
        };
        match presence {
            Presence::Present => {
                self.registry.stats.hits.fetch_add(1, Relaxed);
                return;
            }
            Presence::Uncertain => self.q.clears.push(stmt.clone()),
            Presence::Absent | Presence::Closing => {}
        }
        self.registry.stats.misses.fetch_add(1, Relaxed);
        self.book.counts.server_parses += 1;
        let mut text = format!("PREPARE {}", stmt.server_name).into_bytes();
        if dummy {
            text.extend_from_slice(b" AS SELECT");
        } else {
            text.extend_from_slice(&stmt.query);
        }
        text.extend_from_slice(b"\n;");
        self.splices.push((stmt_start..stmt_start, text));
        self.q.actions.push_back(Action::Prepare {
            stmt: stmt.clone(),
            client: None,
        });
        self.in_text.push(stmt.id);
    }

    /// The client's name at `at` goes to the server as `stmt`'s server name.
    fn rename(&mut self, at: Range<usize>, name: &Arc<str>, stmt: &Stmt) {
        self.splices
            .push((at, stmt.server_name.as_bytes().to_vec()));
        let quoted = format!("\"{}\"", stmt.server_name).into_boxed_str();
        if !self.q.renames.iter().any(|(s, _)| *s == quoted) {
            self.q.renames.push((quoted, name.clone()));
        }
    }

    /// A name the client does not have: sent as written, unless it is in pgsluice's
    /// own name space.
    fn unknown(&mut self, at: Range<usize>, name: &str) {
        if name.to_ascii_lowercase().starts_with("pgsluice_") {
            self.splices.push((at, ABSENT_NAME.as_bytes().to_vec()));
            let quoted = format!("\"{ABSENT_NAME}\"").into_boxed_str();
            self.q.renames.push((quoted, name.into()));
        }
    }
}

/// The text to send for a simple query with SQL-level prepared-statement effects, and
/// what the server's answer must do; Ok(None) when the text has none.
pub(super) fn plan(
    sql: &[u8],
    analysis: &Analysis,
    book: &mut Book,
    client: &ClientStatements,
    registry: &StatementRegistry,
) -> Result<Option<(Vec<u8>, SqlQuery)>, Refusal> {
    if !has_effects(analysis) {
        return Ok(None);
    }
    let stmts = statements(sql);
    let mut p = Plan {
        book,
        client,
        registry,
        overlay: Vec::new(),
        all_gone: false,
        in_text: Vec::new(),
        q: SqlQuery::new(),
        splices: Vec::new(),
    };
    for effect in &analysis.effects {
        let (name, at) = match effect {
            Effect::Prepare { name, at } | Effect::Execute { name, at } => (Some(name), at),
            Effect::Deallocate { name, at } => (name.as_ref(), at),
            _ => continue,
        };
        let Some(stmt_range) = stmts.iter().find(|r| r.contains(&at.start)).cloned() else {
            // Without the name's place nothing can be renamed: leave it to the server.
            continue;
        };
        if !analysis.utf8 && !sql[at.clone()].is_ascii() {
            return Err(Refusal {
                what: "a SQL-level prepared statement name with non-ASCII characters in a client encoding other than UTF8".into(),
                hint: "use an ASCII name, or pool_mode = session",
            });
        }
        match effect {
            Effect::Prepare { .. } => {
                let name = name.expect("PREPARE names a statement");
                let protocol = !p.all_gone && client.contains(name);
                if protocol || p.resolve(name).is_some() {
                    let block = duplicate_sql(name);
                    p.splices.push((stmt_range, block.into_bytes()));
                    p.q.refused_duplicate = true;
                    // PostgreSQL runs nothing after the error.
                    break;
                }
                let stmt = registry.fresh_sql(&sql[at.end..stmt_range.end]);
                let client_name: Arc<str> = name.as_str().into();
                p.rename(at.clone(), &client_name, &stmt);
                p.q.actions.push_back(Action::Prepare {
                    stmt: stmt.clone(),
                    client: Some(client_name.clone()),
                });
                p.in_text.push(stmt.id);
                p.overlay.push((name.clone(), Some((client_name, stmt))));
            }
            Effect::Execute { .. } => {
                let name = name.expect("EXECUTE names a statement");
                match p.resolve(name) {
                    Some((client_name, stmt)) => {
                        p.ensure(&stmt, stmt_range.start, false);
                        p.rename(at.clone(), &client_name, &stmt);
                    }
                    None => p.unknown(at.clone(), name),
                }
            }
            Effect::Deallocate {
                name: Some(name), ..
            } => match p.resolve(name) {
                Some((client_name, stmt)) => {
                    p.ensure(&stmt, stmt_range.start, true);
                    p.rename(at.clone(), &client_name, &stmt);
                    p.q.actions.push_back(Action::Deallocate {
                        stmt: stmt.clone(),
                        client: client_name,
                    });
                    p.in_text.retain(|&id| id != stmt.id);
                    p.overlay.push((name.clone(), None));
                }
                None => {
                    p.unknown(at.clone(), name);
                    p.q.actions.push_back(Action::Passed);
                }
            },
            Effect::Deallocate { name: None, .. } => {
                p.q.actions.push_back(Action::DeallocateAll);
                p.overlay.clear();
                p.in_text.clear();
                p.all_gone = true;
            }
            _ => {}
        }
    }
    let Plan {
        mut q, mut splices, ..
    } = p;
    splices.sort_by_key(|(r, _)| (r.start, r.end));
    let text = apply(sql, &splices, analysis.utf8, &mut q.moved);
    Ok(Some((text, q)))
}

/// The byte ranges of the statements of `sql` (without their `;`).
fn statements(sql: &[u8]) -> Vec<Range<usize>> {
    let text = match std::str::from_utf8(sql) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        // Same length, so byte ranges stay true (as `classify::session` reads it).
        Err(_) => std::borrow::Cow::Owned(
            sql.iter()
                .map(|&b| if b < 0x80 { b as char } else { '_' })
                .collect::<String>(),
        ),
    };
    let Ok(parsed) = pg_query::parse(&text, pg_query::ParserOptions::DEFAULT) else {
        return Vec::new();
    };
    parsed
        .protobuf
        .stmts
        .iter()
        .map(|raw| {
            let start = raw.stmt_location.max(0) as usize;
            let end = match raw.stmt_len {
                0 => sql.len(),
                n => (start + n as usize).min(sql.len()),
            };
            start..end
        })
        .collect()
}

/// Characters in `b` (UTF-8 when `utf8`, else one per byte).
fn chars(b: &[u8], utf8: bool) -> u32 {
    if utf8 {
        b.iter().filter(|&&c| c & 0xC0 != 0x80).count() as u32
    } else {
        b.len() as u32
    }
}

/// `sql` with the splices made; records where each one moved the text.
fn apply(
    sql: &[u8],
    splices: &[(Range<usize>, Vec<u8>)],
    utf8: bool,
    moved: &mut Vec<Moved>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + splices.len() * 32);
    let mut from = 0;
    let (mut sent_chars, mut orig_chars) = (0u32, 0u32);
    for (r, with) in splices {
        if r.start < from {
            continue;
        }
        let same = chars(&sql[from..r.start], utf8);
        sent_chars += same;
        orig_chars += same;
        out.extend_from_slice(&sql[from..r.start]);
        let m = Moved {
            sent_at: sent_chars,
            sent_len: chars(with, true),
            orig_at: orig_chars,
            orig_len: chars(&sql[r.clone()], utf8),
        };
        out.extend_from_slice(with);
        sent_chars += m.sent_len;
        orig_chars += m.orig_len;
        moved.push(m);
        from = r.end;
    }
    out.extend_from_slice(&sql[from..]);
    out
}

/// A statement that makes PostgreSQL raise its own duplicate-name error, 42P05.
fn duplicate_sql(name: &str) -> String {
    let msg = format!("prepared statement \"{name}\" already exists");
    let inner = dollar_tag(&msg, "m");
    let literal = format!("{inner}{msg}{inner}");
    let body = format!(
        " BEGIN RAISE EXCEPTION USING ERRCODE = 'duplicate_prepared_statement', MESSAGE = {literal}; END "
    );
    let outer = dollar_tag(&body, "pgsluice");
    format!("DO {outer}{body}{outer}")
}

/// A dollar-quote tag (`$word$`, with the word lengthened as needed) absent from `s`.
fn dollar_tag(s: &str, word: &str) -> String {
    let mut tag = format!("${word}$");
    while s.contains(&tag) {
        tag.insert(tag.len() - 1, 'x');
    }
    tag
}
