//! Parameter requests: a Query message made only of `SET` / `RESET` statements of
//! session parameters, which transaction pooling carries per client.
//!
//! Drivers set session parameters while they set a connection up: pgjdbc sends
//! `SET extra_float_digits = 3` before the application's first statement. PostgreSQL
//! does not report such parameters, so pgsluice cannot learn their values from the
//! server; it reads them from the statement instead. The rule:
//!
//! - A client is *setting up* from login until its first request that is not a
//!   parameter request. While setting up, a parameter request may set any session
//!   parameter; the values of those pgsluice does not track (`params::TRACKED`) are
//!   remembered per client and replayed on each server connection whose value differs
//!   (`ParamSet::sync_sql`). The statement itself runs on a server connection first, so
//!   PostgreSQL validates it and the client sees PostgreSQL's answer.
//! - Later, a parameter request that only resets (`RESET x`, `RESET ALL`, `SET x TO
//!   DEFAULT`) takes the same path, so that the client's remembered values go too; a
//!   later request that sets an untracked parameter is refused by the state guard as
//!   before (`client::state_guard`).
//!
//! Only values pgsluice can replay byte for byte whatever the connection's encoding
//! and string settings are carried: ASCII, no backslash, no comment, no dollar quote.
//! Anything else is not a parameter request and takes the ordinary path.

use crate::classify::words::{lead_word, packed};
use crate::params::ParamSet;

/// What a parameter request changes in the client's extra (untracked) parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// `SET name TO value` (value as SQL text).
    Set(String, String),
    /// `RESET name` or `SET name TO DEFAULT`.
    Reset(String),
    /// `RESET ALL`.
    ResetAll,
}

/// The changes of a parameter request to carry, when the request is one pgsluice
/// should handle itself (see the module doc); `None` when it takes the ordinary path.
pub(super) fn plan(request: &[u8], setting_up: bool) -> Option<Vec<Change>> {
    let sql = request_sql(request)?;
    let changes = parse(sql)?;
    let sets = changes.iter().any(|c| matches!(c, Change::Set(..)));
    if changes.is_empty() || (sets && !setting_up) {
        return None;
    }
    Some(changes)
}

/// The tracked settings a parameter request may change that PostgreSQL may not
/// report (search_path before version 18): read back from the server after it ran
/// (`client::state_guard::Carry`); the extras are carried from the changes.
pub(super) fn carry_of(request: &[u8]) -> super::state_guard::Carry {
    use crate::classify::session::{analyze, Effect};
    let mut carry = super::state_guard::Carry::default();
    let Some(sql) = request_sql(request) else {
        return carry;
    };
    for e in analyze(sql.as_bytes()).effects {
        match e {
            Effect::Set(name)
                if ParamSet::index(&name).is_some() && crate::params::needs_read_back(&name) =>
            {
                carry.settings.push(name)
            }
            Effect::ResetAll => carry.reset_all = true,
            _ => {}
        }
    }
    carry
}

/// Whether `request` is a parameter request at all (a client sending anything else
/// has finished setting up).
pub(super) fn is_param_request(request: &[u8]) -> bool {
    request_sql(request).and_then(parse).is_some()
}

/// The SQL text of `request` when it runs exactly one SET or RESET text (see
/// [`single_text`]), ASCII only.
fn request_sql(request: &[u8]) -> Option<&str> {
    single_text(request, &[b"set", b"reset"])
        .map(|(sql, _)| sql)
        .filter(|s| s.is_ascii())
}

/// How a request carries its one SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// One Query message.
    Simple,
    /// The unnamed statement: Parse, Bind, an optional Describe (of the statement,
    /// `b'S'`, or of the portal, `b'P'`), Execute, Sync.
    Extended {
        /// What the Describe asked for, if there is one.
        describe: Option<u8>,
    },
}

/// The SQL text of `request` when it runs exactly one text, and that text starts with
/// one of `words` (lowercase ASCII keywords, checked before anything is parsed): one
/// whole Query message, or the unnamed statement of the extended protocol (`Parse`,
/// `Bind`, optionally `Describe`, `Execute`, `Sync`, all unnamed: what pgjdbc sends
/// while setting up). Unnamed statements and portals are no business of the
/// prepared-statement layer, so such a request can run outside the relay.
pub(super) fn single_text<'a>(request: &'a [u8], words: &[&[u8]]) -> Option<(&'a str, Shape)> {
    // This runs for every request of a transaction-mode client: look at the first word
    // of the text before parsing anything (a Query's text starts after the 5-byte
    // header, a Parse's after the header and its empty name).
    let text = match request {
        [b'Q', _, _, _, _, text @ ..] | [b'P', _, _, _, _, 0, text @ ..] => text,
        _ => return None,
    };
    if !words.iter().any(|w| starts_with_word(text, w)) {
        return None;
    }
    let mut rest = request;
    let mut next = || {
        let h = pgsluice_protocol::frame::parse_header(rest, u32::MAX).ok()??;
        let body = rest.get(5..h.total_len())?;
        rest = &rest[h.total_len()..];
        Some((h.tag, body))
    };
    let (sql, extended) = match next()? {
        (b'Q', body) => (cstr(body)?, false),
        // Parse: an empty name, then the text.
        (b'P', [0, body @ ..]) => (cstr(body)?, true),
        _ => return None,
    };
    let mut shape = Shape::Simple;
    if extended {
        // Bind of the unnamed portal to the unnamed statement, an optional Describe
        // of either, Execute of the unnamed portal, Sync.
        let (b'B', [0, 0, ..]) = next()? else {
            return None;
        };
        let mut m = next()?;
        let mut describe = None;
        if let (b'D', [what @ (b'S' | b'P'), 0]) = m {
            describe = Some(*what);
            m = next()?;
        }
        if !matches!(m, (b'E', [0, ..])) || next()? != (b'S', &[][..]) {
            return None;
        }
        shape = Shape::Extended { describe };
    }
    if next().is_some() || !rest.is_empty() {
        return None;
    }
    Some((std::str::from_utf8(sql).ok()?, shape))
}

/// Whether `text`, after leading blanks, starts with the keyword `word` (ASCII
/// lowercase) as a whole word, in any case.
pub(super) fn starts_with_word(text: &[u8], word: &[u8]) -> bool {
    let t = text.trim_ascii_start();
    t.get(..word.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(word))
        && !t.get(word.len()).is_some_and(|&c| is_word_byte(c))
}

/// A byte that continues a keyword or identifier.
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The first word of a request's text, among those that decide its path before a
/// checkout (parameter requests, LISTEN); read once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FirstWord {
    /// `SET`.
    Set,
    /// `RESET`.
    Reset,
    /// `LISTEN`.
    Listen,
    /// `UNLISTEN`.
    Unlisten,
    /// Anything else, or no Query / unnamed Parse first.
    Other,
}

/// The [`FirstWord`] of `request`'s text (a Query's, or an unnamed Parse's).
pub(super) fn first_word(request: &[u8]) -> FirstWord {
    let text = match request {
        [b'Q', _, _, _, _, text @ ..] | [b'P', _, _, _, _, 0, text @ ..] => text,
        _ => return FirstWord::Other,
    };
    let t = text.trim_ascii_start();
    // One pass over the letters, one comparison (callgrind: ~110 instructions a
    // request with the iterator chain and four case-blind comparisons).
    let (n, w) = lead_word(t);
    if t.get(n).is_some_and(|&c| is_word_byte(c)) {
        return FirstWord::Other;
    }
    match (n, w) {
        (3, SET) => FirstWord::Set,
        (5, RESET) => FirstWord::Reset,
        (6, LISTEN) => FirstWord::Listen,
        (8, UNLISTEN) => FirstWord::Unlisten,
        _ => FirstWord::Other,
    }
}

const SET: u64 = packed(b"set");
const RESET: u64 = packed(b"reset");
const LISTEN: u64 = packed(b"listen");
const UNLISTEN: u64 = packed(b"unlisten");

/// A NUL-terminated string at the start of `body`.
fn cstr(body: &[u8]) -> Option<&[u8]> {
    body.iter().position(|&b| b == 0).map(|n| &body[..n])
}

/// Applies successful changes to the client's set.
pub(super) fn apply(params: &mut ParamSet, changes: &[Change]) {
    for c in changes {
        match c {
            Change::Set(name, value) => params.set_extra(name, value),
            Change::Reset(name) => params.remove_extra(name),
            Change::ResetAll => params.clear_extras(),
        }
    }
}

/// Largest answer kept (notices included) before pgsluice gives up on the request.
pub(super) const MAX_ANSWER: usize = 64 * 1024;

/// Parses SQL text into parameter changes; `None` unless every statement is a
/// carriable SET or RESET. Statements of tracked parameters yield no change.
fn parse(sql: &str) -> Option<Vec<Change>> {
    let toks = tokens(sql)?;
    let mut changes = Vec::new();
    let mut any = false;
    for stmt in toks.split(|t| *t == Tok::Semi) {
        if stmt.is_empty() {
            continue;
        }
        any = true;
        if let Some(c) = statement(stmt)? {
            changes.push(c);
        }
    }
    any.then_some(changes)
}

/// One statement: `Ok(None)` for a tracked parameter (PostgreSQL reports it).
fn statement(t: &[Tok<'_>]) -> Option<Option<Change>> {
    let word = |i: usize| match t.get(i) {
        Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
        _ => None,
    };
    match word(0)?.as_str() {
        "reset" => {
            let name = match t.get(1..)? {
                [Tok::Word(w)] if w.eq_ignore_ascii_case("all") => {
                    return Some(Some(Change::ResetAll))
                }
                [Tok::Word(a), Tok::Word(b)]
                    if a.eq_ignore_ascii_case("time") && b.eq_ignore_ascii_case("zone") =>
                {
                    return Some(None)
                }
                rest => name(rest)?,
            };
            carried(&name).map(|n| n.map(Change::Reset))
        }
        "set" => {
            let mut i = 1;
            if word(1).as_deref() == Some("session") {
                i = 2;
            }
            match word(i)?.as_str() {
                // Transaction-scoped or not a parameter: the ordinary path.
                "local" | "transaction" | "constraints" | "role" | "authorization"
                | "characteristics" | "seed" => return None,
                "session" if word(i + 1).as_deref() == Some("authorization") => return None,
                "time" if word(i + 1).as_deref() == Some("zone") => return Some(None),
                "names" => return Some(None),
                "schema" => return set_value("search_path", t.get(i + 1..)?),
                "xml" if word(i + 1).as_deref() == Some("option") => {
                    return set_value("xmloption", t.get(i + 2..)?)
                }
                _ => {}
            }
            let rest = &t[i..];
            let to = rest.iter().position(|x| {
                *x == Tok::Eq || matches!(x, Tok::Word(w) if w.eq_ignore_ascii_case("to"))
            })?;
            let name = name(&rest[..to])?;
            set_value(&name, &rest[to + 1..])
        }
        _ => None,
    }
}

/// `SET name TO value-list`.
fn set_value(name: &str, value: &[Tok<'_>]) -> Option<Option<Change>> {
    let Some(name) = carried(name)? else {
        return Some(None);
    };
    if let [Tok::Word(w)] = value {
        if w.eq_ignore_ascii_case("default") {
            return Some(Some(Change::Reset(name)));
        }
    }
    // Values separated by commas; a value is a literal, a word, or a signed number.
    let mut text = String::new();
    let mut expect_value = true;
    for tok in value {
        match tok {
            Tok::Comma if !expect_value => {
                text.push_str(", ");
                expect_value = true;
                continue;
            }
            Tok::Sign(c) if expect_value => text.push(*c),
            Tok::Word(w) | Tok::Str(w) | Tok::Ident(w) if expect_value => {
                text.push_str(w);
                expect_value = false;
            }
            _ => return None,
        }
    }
    if expect_value || text.len() > 1000 {
        return None;
    }
    Some(Some(Change::Set(name, text)))
}

/// A parameter name from its tokens (`a` or `a.b`), lower-case.
fn name(t: &[Tok<'_>]) -> Option<String> {
    let mut out = String::new();
    for (i, tok) in t.iter().enumerate() {
        match (i % 2, tok) {
            (0, Tok::Word(w)) => out.push_str(&w.to_ascii_lowercase()),
            (0, Tok::Ident(w)) => {
                out.push_str(&w[1..w.len() - 1].replace("\"\"", "\"").to_ascii_lowercase())
            }
            (1, Tok::Dot) => out.push('.'),
            _ => return None,
        }
    }
    (!out.is_empty() && t.len() % 2 == 1).then_some(out)
}

/// `Some(Some(name))` for a parameter carried as an extra, `Some(None)` for a tracked
/// one, `None` for names pgsluice never carries (they have their own statements or
/// scope, or change who the session is).
fn carried(name: &str) -> Option<Option<String>> {
    if ParamSet::index(name).is_some() {
        return Some(None);
    }
    const NEVER: [&str; 6] = [
        "role",
        "session_authorization",
        "transaction_isolation",
        "transaction_read_only",
        "transaction_deferrable",
        "all",
    ];
    (!NEVER.contains(&name)).then(|| Some(name.to_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// A bare word or number.
    Word(&'a str),
    /// A quoted string literal, quotes included.
    Str(&'a str),
    /// A quoted identifier, quotes included.
    Ident(&'a str),
    Eq,
    Comma,
    Dot,
    Semi,
    Sign(char),
}

/// Splits SQL into tokens; `None` for anything a parameter request does not contain
/// (comments, dollar quotes, escapes, operators).
fn tokens(sql: &str) -> Option<Vec<Tok<'_>>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'\\' => return None,
            b'\'' | b'"' => {
                i += 1;
                loop {
                    match b.get(i) {
                        None => return None,
                        Some(&b'\\') => return None,
                        Some(&q) if q == c => {
                            if b.get(i + 1) == Some(&c) {
                                i += 2;
                                continue;
                            }
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                let text = &sql[start..i];
                out.push(if c == b'"' {
                    Tok::Ident(text)
                } else {
                    Tok::Str(text)
                });
                continue;
            }
            b'=' => out.push(Tok::Eq),
            b',' => out.push(Tok::Comma),
            b';' => out.push(Tok::Semi),
            b'+' | b'-' if b.get(i + 1) != Some(&b'-') => out.push(Tok::Sign(c as char)),
            b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => out.push(Tok::Dot),
            _ if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'.' | b'$'))
                {
                    // A dot splits names (a.b), but stays inside numbers (1.5).
                    if b[i] == b'.' && !b[start].is_ascii_digit() && b[start] != b'.' {
                        break;
                    }
                    i += 1;
                }
                let w = &sql[start..i];
                // A string with a prefix (E'', U&'', B'') is not a plain literal.
                if b.get(i) == Some(&b'\'') || b.get(i) == Some(&b'&') {
                    return None;
                }
                out.push(Tok::Word(w));
                continue;
            }
            _ => return None,
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn query(sql: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        pgsluice_protocol::frontend::query(&mut out, sql);
        out.to_vec()
    }

    fn set(n: &str, v: &str) -> Change {
        Change::Set(n.into(), v.into())
    }

    #[test]
    fn driver_setup_statements_are_carried() {
        let p = |sql: &str| plan(&query(sql), true);
        assert_eq!(
            p("SET extra_float_digits = 3"),
            Some(vec![set("extra_float_digits", "3")])
        );
        assert_eq!(
            p("set session Statement_Timeout to '5s'; SET search_path = a, \"B\""),
            Some(vec![set("statement_timeout", "'5s'")])
        );
        // search_path is tracked: read back after the request, not carried as text.
        assert_eq!(
            carry_of(&query("set work_mem = '1MB'; SET search_path = a")).settings,
            ["search_path"]
        );
        assert_eq!(
            p("SET extra_float_digits TO -2;"),
            Some(vec![set("extra_float_digits", "-2")])
        );
        assert_eq!(
            p("SET myapp.tenant = 'x'"),
            Some(vec![set("myapp.tenant", "'x'")])
        );
        assert_eq!(p("SET SCHEMA 'app'"), None);
        assert_eq!(
            p("SET work_mem TO DEFAULT"),
            Some(vec![Change::Reset("work_mem".into())])
        );
        assert_eq!(p("RESET ALL"), Some(vec![Change::ResetAll]));
        assert_eq!(
            p("SET DateStyle = ISO; SET extra_float_digits = 3"),
            Some(vec![set("extra_float_digits", "3")])
        );
        // Only tracked parameters: the ordinary path, which already carries them.
        assert_eq!(p("SET application_name = 'PostgreSQL JDBC Driver'"), None);
        assert!(is_param_request(&query("SET application_name = 'x'")));
        assert!(is_param_request(&query("SET TIME ZONE 'UTC'")));
    }

    /// Parse/Bind/[Describe]/Execute/Sync of the unnamed statement, as pgjdbc sends.
    fn extended(sql: &str, describe: Option<u8>, stmt: &str) -> Vec<u8> {
        let msg = |tag: u8, body: &[u8]| {
            let mut m = vec![tag];
            m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            m.extend_from_slice(body);
            m
        };
        let mut out = msg(b'P', &[&[0], sql.as_bytes(), &[0, 0, 0]].concat());
        out.extend(msg(
            b'B',
            &[&[0], stmt.as_bytes(), &[0, 0, 0, 0, 0, 0, 0]].concat(),
        ));
        if let Some(kind) = describe {
            out.extend(msg(b'D', &[kind, 0]));
        }
        out.extend(msg(b'E', &[0, 0, 0, 0, 1]));
        out.extend(msg(b'S', &[]));
        out
    }

    #[test]
    fn the_extended_protocol_unnamed_statement_counts_too() {
        let digits = Some(vec![set("extra_float_digits", "3")]);
        let sql = "SET extra_float_digits = 3";
        assert_eq!(plan(&extended(sql, None, ""), true), digits);
        assert_eq!(plan(&extended(sql, Some(b'P'), ""), true), digits);
        assert_eq!(plan(&extended(sql, Some(b'S'), ""), true), digits);
        // A named statement is the prepared-statement layer's.
        assert_eq!(plan(&extended(sql, None, "S_1"), true), None);
        let mut no_sync = extended(sql, None, "");
        no_sync.truncate(no_sync.len() - 5);
        assert_eq!(plan(&no_sync, true), None);
        assert_eq!(plan(&extended("select 1", None, ""), true), None);
    }

    #[test]
    fn after_setup_only_resets_are_handled() {
        let p = |sql: &str| plan(&query(sql), false);
        assert_eq!(p("SET extra_float_digits = 3"), None);
        assert_eq!(
            p("RESET extra_float_digits"),
            Some(vec![Change::Reset("extra_float_digits".into())])
        );
        assert_eq!(p("reset all"), Some(vec![Change::ResetAll]));
    }

    #[test]
    fn anything_else_takes_the_ordinary_path() {
        for sql in [
            "select 1",
            "SET extra_float_digits = 3; select 1",
            "SET LOCAL work_mem = '1MB'",
            "SET ROLE admin",
            "SET SESSION AUTHORIZATION bob",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET search_path = E'a\\\\b'",
            "SET search_path = $$a$$",
            "SET work_mem = '1MB' -- comment",
            "SET work_mem = /* c */ '1MB'",
            "SET application_name = 'caf\u{e9}'",
            "SET work_mem = 1 + 2",
            "SET work_mem",
            "SET = 3",
            "SET a.b. = 3",
            "SET work_mem = ",
            "SET work_mem = 'unterminated",
            "RESET ROLE",
            "",
            ";",
        ] {
            assert_eq!(plan(&query(sql), true), None, "{sql}");
        }
        // Not a single whole Query message.
        let mut two = query("SET work_mem = '1MB'");
        two.extend_from_slice(&query("select 1"));
        assert_eq!(plan(&two, true), None);
        assert_eq!(plan(&two[..6], true), None);
    }

    #[test]
    fn changes_apply_to_the_client_set() {
        let mut p = ParamSet::default();
        apply(
            &mut p,
            &[set("extra_float_digits", "3"), set("work_mem", "'1MB'")],
        );
        assert_eq!(p.extra("extra_float_digits"), Some("3"));
        apply(&mut p, &[Change::Reset("work_mem".into())]);
        assert_eq!(p.extra("work_mem"), None);
        apply(&mut p, &[Change::ResetAll]);
        assert_eq!(p.extra("extra_float_digits"), None);
    }
}
