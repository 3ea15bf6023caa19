//! Session state that transaction pooling cannot carry, caught before it leaks.
//!
//! In transaction mode a client's next transaction may run on another server
//! connection, and its current one goes to another client. Some statements leave state
//! on the connection that would then follow the *connection*, not the client: a
//! session-level `SET` of a parameter pgsluice does not track, `LISTEN`, SQL-level
//! `PREPARE`, temporary tables, `WITH HOLD` cursors, session advisory locks. pgsluice
//! refuses those with SQLSTATE 0A000 and a hint naming what to change; the refusal is
//! raised by PostgreSQL itself (the statement is replaced by a `DO` block that raises),
//! so transaction semantics (an aborted transaction block, skip-to-Sync) stay exactly
//! PostgreSQL's. Parameters in [`crate::params::TRACKED`] are allowed: pgsluice
//! re-applies them on every server connection the client gets. SETs a client sends
//! while it sets up never reach this guard: `client::param_request` runs and carries
//! them.

use crate::params::ParamSet;

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the client tried, for the message.
    pub what: String,
    /// What to do instead.
    pub hint: &'static str,
}

const HINT_SET: &str = "use SET LOCAL inside a transaction, ALTER ROLE/DATABASE ... SET, or pool_mode = session for this client";
const HINT_SESSION: &str =
    "this needs a dedicated server connection: use pool_mode = session for this database or user";

/// Checks a query text (in the client's encoding, which need not be UTF-8: every
/// keyword looked for is ASCII); `Some` when it would leave session state behind.
pub fn check(sql: &[u8]) -> Option<Refusal> {
    if plainly_harmless(sql) {
        return None;
    }
    check_text(&String::from_utf8_lossy(sql))
}

fn check_text(sql: &str) -> Option<Refusal> {
    let lower = sql.to_ascii_lowercase();
    if lower.contains("advisory_lock") {
        for f in [
            "pg_advisory_lock",
            "pg_advisory_lock_shared",
            "pg_try_advisory_lock",
            "pg_try_advisory_lock_shared",
        ] {
            if lower
                .match_indices(f)
                .any(|(i, _)| lower[i + f.len()..].trim_start().starts_with('('))
            {
                return Some(Refusal { what: format!("{f}() (a session-level advisory lock)"), hint: "use pg_advisory_xact_lock(), which is released at the end of the transaction" });
            }
        }
    }
    for stmt in statements(&lower) {
        if let Some(r) = check_statement(&stmt) {
            return Some(r);
        }
    }
    None
}

/// The hot path: one statement whose first word cannot start session state and that
/// names no advisory lock function. Decides on the bytes, without allocating.
fn plainly_harmless(sql: &[u8]) -> bool {
    let t = sql.trim_ascii_start();
    if t.starts_with(b"--") || t.starts_with(b"/*") {
        return false;
    }
    let word_len = t.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let word = &t[..word_len];
    if [
        &b"set"[..],
        b"listen",
        b"prepare",
        b"declare",
        b"create",
        b"do",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
    {
        return false;
    }
    if let Some(semi) = t.iter().position(|&c| c == b';') {
        if !t[semi..]
            .iter()
            .all(|&c| c == b';' || c.is_ascii_whitespace())
        {
            return false;
        }
    }
    // Compare only where an 'a' or 'A' starts: one byte test per position.
    let b = t;
    !b.iter().enumerate().any(|(i, &c)| {
        c | 0x20 == b'a'
            && b.get(i..i + 8)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"advisory"))
    })
}

fn check_statement(stmt: &str) -> Option<Refusal> {
    let words: Vec<&str> = stmt
        .split(|c: char| c.is_whitespace() || c == '=')
        .filter(|w| !w.is_empty())
        .collect();
    match words.as_slice() {
        ["set", "local" | "transaction", ..] | ["set", "session", "characteristics", ..] | ["set", "constraints", ..] => None,
        ["set", "session", "authorization", ..] | ["set", "role", ..] => Some(Refusal {
            what: format!("SET {}", words[1..].join(" ").to_uppercase()),
            hint: HINT_SESSION,
        }),
        ["set", "session", name, ..] | ["set", name, ..] => {
            let name = name.trim_matches('"');
            if ParamSet::index(name).is_some() {
                None
            } else {
                Some(Refusal { what: format!("SET {name}"), hint: HINT_SET })
            }
        }
        ["listen", ..] => Some(Refusal { what: "LISTEN".into(), hint: HINT_SESSION }),
        ["prepare", ..] => Some(Refusal {
            what: "SQL-level PREPARE".into(),
            hint: "use the extended protocol's named statements (driver-side prepare), which pgsluice carries across connections",
        }),
        ["declare", ..] if stmt.contains(" with hold") => Some(Refusal {
            what: "DECLARE ... WITH HOLD".into(),
            hint: "use a cursor without WITH HOLD inside a transaction, or pool_mode = session",
        }),
        ["create", rest @ ..] => {
            let temp = rest.iter().take(3).any(|w| *w == "temp" || *w == "temporary");
            if temp && !stmt.contains("on commit drop") {
                Some(Refusal {
                    what: "CREATE TEMPORARY TABLE".into(),
                    hint: "add ON COMMIT DROP and use the table inside one transaction, or pool_mode = session",
                })
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Splits SQL into statements at top-level semicolons, dropping comments and the
/// contents of quoted strings, identifiers and dollar-quoted bodies.
fn statements(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                cur.push(' ');
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
                cur.push(' ');
                continue;
            }
            b'\'' | b'"' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += 1;
                }
                cur.push_str(" x ");
            }
            b'$' => {
                // $tag$ ... $tag$
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|&x| x == b'$')
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(end)
                        if b[i + 1..end]
                            .iter()
                            .all(|x| x.is_ascii_alphanumeric() || *x == b'_') =>
                    {
                        let tag = &sql[i..=end];
                        match sql[end + 1..].find(tag) {
                            Some(close) => i = end + 1 + close + tag.len() - 1,
                            None => i = b.len(),
                        }
                        cur.push_str(" x ");
                    }
                    _ => cur.push('$'),
                }
            }
            b';' => {
                out.push(std::mem::take(&mut cur));
            }
            _ => cur.push(c as char),
        }
        i += 1;
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A statement that makes PostgreSQL itself raise the refusal.
pub fn refusal_sql(r: &Refusal) -> String {
    let msg = format!(
        "pgsluice: {} would leave session state on a shared server connection (pool_mode = transaction)",
        r.what
    );
    format!(
        "DO $pgsluice$ BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = {}, HINT = {}; END $pgsluice$",
        literal(&msg),
        literal(r.hint)
    )
}

fn literal(s: &str) -> String {
    let clean: String = s.chars().filter(|c| *c != '$' && *c != '\0').collect();
    format!("'{}'", clean.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_what_pooling_carries() {
        for ok in [
            "select 1",
            "SET LOCAL statement_timeout = 5",
            "set timezone to 'UTC'",
            "SET application_name = 'x'; select 1",
            "set transaction isolation level serializable",
            "create temp table t(x int) on commit drop",
            "select 'listen; prepare x as select 1'",
            "select pg_advisory_xact_lock(1)",
            "do $$ begin perform 1; end $$",
            "-- set foo = 1\nselect 1",
            "declare c cursor for select 1",
            "RESET ALL",
        ] {
            assert_eq!(check(ok.as_bytes()), None, "{ok}");
        }
    }

    #[test]
    fn text_in_another_encoding_is_checked_too() {
        // LATIN1 bytes (client_encoding = LATIN1): not UTF-8, and no business of ours.
        assert_eq!(check(b"select 'caf\xe9'"), None);
        assert_eq!(check(b"select 1; select '\xe9'"), None);
        assert_eq!(
            check(b"SET search_path = 'caf\xe9'").map(|r| r.what),
            Some("SET search_path".to_owned())
        );
        assert_eq!(
            check(b"select '\xe9'; LISTEN chan").map(|r| r.what),
            Some("LISTEN".to_owned())
        );
    }

    #[test]
    fn refuses_what_would_leak() {
        for (bad, what) in [
            ("SET statement_timeout = '1s'", "SET statement_timeout"),
            ("set session search_path to a, b", "SET search_path"),
            ("select 1; SET work_mem = '64MB'", "SET work_mem"),
            ("LISTEN chan", "LISTEN"),
            ("prepare p as select 1", "SQL-level PREPARE"),
            ("create temporary table t(x int)", "CREATE TEMPORARY TABLE"),
            (
                "declare c cursor with hold for select 1",
                "DECLARE ... WITH HOLD",
            ),
            (
                "select pg_advisory_lock(42)",
                "pg_advisory_lock() (a session-level advisory lock)",
            ),
            ("set role admin", "SET ROLE ADMIN"),
        ] {
            assert_eq!(
                check(bad.as_bytes()).map(|r| r.what),
                Some(what.to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn refusal_sql_quotes_safely() {
        let sql = refusal_sql(&Refusal {
            what: "SET a'b$x".into(),
            hint: "h",
        });
        assert!(sql.contains("'pgsluice: SET a''bx would"));
        assert!(sql.starts_with("DO $pgsluice$") && sql.ends_with("END $pgsluice$"));
    }
}
