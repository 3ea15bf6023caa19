//! What a SQL text does to *session* state, read from PostgreSQL's own parse tree.
//!
//! Transaction pooling hands a client's next transaction to any server connection, so
//! pgsluice must know which statements leave state on the connection: session-level
//! `SET` / `RESET`, SQL-level `PREPARE` / `EXECUTE` / `DEALLOCATE`, `LISTEN`,
//! `WITH HOLD` cursors, temporary objects that outlive the transaction, session
//! advisory locks, `SET ROLE`. [`analyze`] reports them as [`Effect`]s; what pgsluice
//! carries and what it refuses is decided elsewhere (`client::state_guard`). Sans-IO and
//! allocation-free for the common statement: [`analyze`] first looks at the text's
//! first word and a few markers, and parses only when something may matter.
//!
//! What the parser cannot see stays out of reach: the body of a `DO` block or of a
//! function is a string to the grammar.

use std::ops::Range;

use pg_query::protobuf::{
    DiscardMode, OnCommitAction, RangeVar, Token, VariableSetKind, VariableSetStmt,
};
use pg_query::{Node, NodeEnum};

use super::words::{equal_bytes, equal_letters, lead_word, load, packed};

/// One thing a statement does to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A session-level `SET name`, `SET name TO DEFAULT`, `RESET name`, or a
    /// `set_config(name, value, false)` call; `name` lower-case. `SET LOCAL` and
    /// `set_config(..., true)` end with the transaction and are not reported.
    Set(String),
    /// `RESET ALL` or `DISCARD ALL`: every parameter back to its default.
    ResetAll,
    /// `DISCARD ALL`: also deallocates every prepared statement and unlistens.
    DiscardAll,
    /// SQL `PREPARE name ...`; `at` is the byte range of the name as written.
    Prepare {
        /// The statement name (as PostgreSQL folds it).
        name: String,
        /// Where the name is written in the text.
        at: Range<usize>,
    },
    /// SQL `EXECUTE name ...` (also under EXPLAIN or CREATE TABLE AS).
    Execute {
        /// The statement name.
        name: String,
        /// Where the name is written in the text.
        at: Range<usize>,
    },
    /// `DEALLOCATE [PREPARE] name`, or `DEALLOCATE ALL` (`name` None).
    Deallocate {
        /// The statement name; None for ALL.
        name: Option<String>,
        /// Where the name (or `ALL`) is written in the text.
        at: Range<usize>,
    },
    /// `LISTEN channel`.
    Listen(String),
    /// `UNLISTEN channel`; None for `UNLISTEN *`.
    Unlisten(Option<String>),
    /// Session state pgsluice cannot carry; the text says what, for the message.
    Unsafe(Unsafe),
}

/// Session state that cannot follow a client from connection to connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    /// `SET ROLE` / `SET SESSION AUTHORIZATION` (an identity change).
    Role,
    /// `DECLARE ... WITH HOLD` (a cursor that outlives its transaction).
    HoldCursor,
    /// A temporary table, view or sequence that outlives its transaction.
    TempObject,
    /// `pg_advisory_lock()` and friends: locks held by the session.
    SessionAdvisoryLock,
    /// `set_config()` with a name that is not a constant.
    DynamicSetConfig,
}

impl Unsafe {
    /// What the client tried, for an error message.
    pub fn what(self) -> &'static str {
        match self {
            Unsafe::Role => "SET ROLE / SET SESSION AUTHORIZATION",
            Unsafe::HoldCursor => "DECLARE ... WITH HOLD",
            Unsafe::TempObject => "CREATE TEMPORARY TABLE (without ON COMMIT DROP)",
            Unsafe::SessionAdvisoryLock => "pg_advisory_lock() (a session-level advisory lock)",
            Unsafe::DynamicSetConfig => "set_config() with a computed parameter name",
        }
    }
}

/// The session effects of one SQL text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// In text order.
    pub effects: Vec<Effect>,
    /// The text was valid UTF-8 (byte ranges are exact); otherwise bytes above 0x7F
    /// were read as `_` for the parser, and names that contain them are not exact.
    pub utf8: bool,
}

impl Analysis {
    /// Nothing that concerns the session.
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }
}

/// Statements whose first word may start session state: what [`session_first_word`]
/// recognises (the tests hold the two together).
#[cfg(test)]
const FIRST_WORDS: &[&[u8]] = &[
    b"set",
    b"reset",
    b"listen",
    b"unlisten",
    b"prepare",
    b"execute",
    b"deallocate",
    b"declare",
    b"create",
    b"discard",
    b"explain",
];

/// Function names that send a text with a call (an opening parenthesis) to the parser.
const CALL_MARKERS: &[&[u8]] = &[b"advisory", b"set_config"];

/// The session effects of `sql` (in the client's encoding; every keyword is ASCII).
/// Texts the parser refuses have none: PostgreSQL will refuse them too.
pub fn analyze(sql: &[u8]) -> Analysis {
    if plainly_harmless(sql) {
        return Analysis {
            effects: Vec::new(),
            utf8: true,
        };
    }
    let (text, utf8) = match std::str::from_utf8(sql) {
        Ok(t) => (std::borrow::Cow::Borrowed(t), true),
        Err(_) => {
            // Same length, so byte ranges stay true.
            let mapped: String = sql
                .iter()
                .map(|&b| if b < 0x80 { b as char } else { '_' })
                .collect();
            (std::borrow::Cow::Owned(mapped), false)
        }
    };
    Analysis {
        effects: effects_of(&text),
        utf8,
    }
}

const SET: u64 = packed(b"set");
const RESET: u64 = packed(b"reset");
const LISTEN: u64 = packed(b"listen");
const CREATE: u64 = packed(b"create");
const PREPARE: u64 = packed(b"prepare");
const EXECUTE: u64 = packed(b"execute");
const DECLARE: u64 = packed(b"declare");
const DISCARD: u64 = packed(b"discard");
const EXPLAIN: u64 = packed(b"explain");
const UNLISTEN: u64 = packed(b"unlisten");
const DEALLOCA: u64 = packed(b"dealloca");

/// True when the first word (`n` letters of `t`, packed in `w`) is one of
/// [`FIRST_WORDS`]: one comparison per candidate of the same length.
fn session_first_word(t: &[u8], n: usize, w: u64) -> bool {
    match n {
        3 => w == SET,
        5 => w == RESET,
        6 => w == LISTEN || w == CREATE,
        7 => matches!(w, PREPARE | EXECUTE | DECLARE | DISCARD | EXPLAIN),
        8 => w == UNLISTEN,
        10 => w == DEALLOCA && t[8..10].eq_ignore_ascii_case(b"te"),
        _ => false,
    }
}

/// One statement whose first word cannot start session state, with none of the
/// markers of a session-level call or a `SELECT ... INTO TEMP`: decided on the bytes,
/// eight at a time, without parsing or allocating.
fn plainly_harmless(sql: &[u8]) -> bool {
    let t = sql.trim_ascii_start();
    if t.starts_with(b"--") || t.starts_with(b"/*") || t.starts_with(b"(") {
        return false;
    }
    let (n, w) = lead_word(t);
    if session_first_word(t, n, w) {
        return false;
    }
    // One pass for the bytes that start a marker: the first `;`, any `(` (a function
    // with session effects needs a call), any `t` (of `SELECT ... INTO TEMP`). The
    // words themselves are looked for only where their first byte is.
    let (mut semi, mut paren, mut temp) = (None, false, false);
    let mut at = 0;
    while at < t.len() {
        let x = load(t, at);
        let semis = equal_bytes(x, b';');
        if semis != 0 && semi.is_none() {
            semi = Some(at + semis.trailing_zeros() as usize / 8);
        }
        paren |= equal_bytes(x, b'(') != 0;
        let mut ts = equal_letters(x, b't');
        while ts != 0 && !temp {
            let i = at + ts.trailing_zeros() as usize / 8;
            temp = t
                .get(i..i + 4)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"temp"));
            ts &= ts - 1;
        }
        at += 8;
    }
    // One statement: after a semicolon only semicolons and white space.
    if let Some(s) = semi {
        if !t[s..].iter().all(|&c| c == b';' || c.is_ascii_whitespace()) {
            return false;
        }
    }
    let call = paren && CALL_MARKERS.iter().any(|m| contains_ignore_case(t, m));
    let into = temp && contains_ignore_case(t, b"into");
    !(call || into)
}

/// `needle` (lower-case ASCII) in `hay`, any case; compares only where the needle's
/// first letter is.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    let first = needle[0];
    hay.iter().enumerate().any(|(i, &c)| {
        c | 0x20 == first
            && hay
                .get(i..i + needle.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

fn effects_of(sql: &str) -> Vec<Effect> {
    let Ok(parsed) = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut tokens = None;
    for raw in &parsed.protobuf.stmts {
        let Some(stmt) = node(raw.stmt.as_deref()) else {
            continue;
        };
        let start = raw.stmt_location.max(0) as usize;
        let end = match raw.stmt_len {
            0 => sql.len(),
            n => (start + n as usize).min(sql.len()),
        };
        let mut cx = Stmt {
            sql,
            range: start..end,
            tokens: &mut tokens,
            out: &mut out,
        };
        cx.statement(stmt);
        let text = &sql.as_bytes()[start..end];
        if contains_ignore_case(text, b"advisory") || contains_ignore_case(text, b"set_config") {
            calls(stmt, &mut out);
        }
    }
    out
}

/// The statement inside a node, if any.
fn node(n: Option<&Node>) -> Option<&NodeEnum> {
    n.and_then(|n| n.node.as_ref())
}

/// One top-level statement being read.
struct Stmt<'a> {
    sql: &'a str,
    range: Range<usize>,
    /// The whole text's tokens, scanned once when a name's place is needed.
    tokens: &'a mut Option<Vec<pg_query::protobuf::ScanToken>>,
    out: &'a mut Vec<Effect>,
}

impl Stmt<'_> {
    fn statement(&mut self, stmt: &NodeEnum) {
        match stmt {
            NodeEnum::VariableSetStmt(s) => self.set(s),
            NodeEnum::DiscardStmt(d)
                if DiscardMode::try_from(d.target) == Ok(DiscardMode::DiscardAll) =>
            {
                self.out.push(Effect::ResetAll);
                self.out.push(Effect::DiscardAll);
            }
            NodeEnum::ListenStmt(l) => self.out.push(Effect::Listen(l.conditionname.clone())),
            NodeEnum::UnlistenStmt(u) => self.out.push(Effect::Unlisten(
                (!u.conditionname.is_empty()).then(|| u.conditionname.clone()),
            )),
            NodeEnum::PrepareStmt(p) => {
                let at = self.word_after(Token::Prepare);
                self.out.push(Effect::Prepare {
                    name: p.name.clone(),
                    at,
                });
                if let Some(q) = node(p.query.as_deref()) {
                    self.statement(q);
                }
            }
            NodeEnum::ExecuteStmt(e) => {
                let at = self.word_after(Token::Execute);
                self.out.push(Effect::Execute {
                    name: e.name.clone(),
                    at,
                });
            }
            NodeEnum::DeallocateStmt(d) => {
                let (name, at) = if d.isall {
                    (None, self.word_after(Token::Deallocate))
                } else {
                    let at = self.word_after(Token::Deallocate);
                    (Some(d.name.clone()), at)
                };
                self.out.push(Effect::Deallocate { name, at });
            }
            NodeEnum::ExplainStmt(e) => {
                if let Some(q) = node(e.query.as_deref()) {
                    self.statement(q);
                }
            }
            NodeEnum::CreateTableAsStmt(c) => {
                if c.into
                    .as_ref()
                    .is_some_and(|i| temp_kept(i.rel.as_ref(), i.on_commit))
                {
                    self.out.push(Effect::Unsafe(Unsafe::TempObject));
                }
                if let Some(q) = node(c.query.as_deref()) {
                    self.statement(q);
                }
            }
            NodeEnum::SelectStmt(s)
                if s.into_clause
                    .as_ref()
                    .is_some_and(|i| temp_kept(i.rel.as_ref(), i.on_commit)) =>
            {
                self.out.push(Effect::Unsafe(Unsafe::TempObject));
            }
            NodeEnum::CreateStmt(c) if temp_kept(c.relation.as_ref(), c.oncommit) => {
                self.out.push(Effect::Unsafe(Unsafe::TempObject));
            }
            NodeEnum::ViewStmt(v) if is_temp(v.view.as_ref()) => {
                self.out.push(Effect::Unsafe(Unsafe::TempObject));
            }
            NodeEnum::CreateSeqStmt(s) if is_temp(s.sequence.as_ref()) => {
                self.out.push(Effect::Unsafe(Unsafe::TempObject));
            }
            // CURSOR_OPT_HOLD (0x0020) in parsenodes.h.
            NodeEnum::DeclareCursorStmt(d) if d.options & 0x0020 != 0 => {
                self.out.push(Effect::Unsafe(Unsafe::HoldCursor));
            }
            _ => {}
        }
    }

    fn set(&mut self, s: &VariableSetStmt) {
        let kind = VariableSetKind::try_from(s.kind);
        if s.is_local {
            return;
        }
        match kind {
            Ok(VariableSetKind::VarResetAll) => self.out.push(Effect::ResetAll),
            // SET SESSION CHARACTERISTICS AS TRANSACTION ...: the session's defaults for
            // later transactions. (SET TRANSACTION ... ends with the transaction.)
            Ok(VariableSetKind::VarSetMulti) if s.name == "SESSION CHARACTERISTICS" => {
                for arg in &s.args {
                    if let Some(NodeEnum::DefElem(d)) = node(Some(arg)) {
                        self.out.push(Effect::Set(format!("default_{}", d.defname)));
                    }
                }
            }
            Ok(
                VariableSetKind::VarSetValue
                | VariableSetKind::VarSetDefault
                | VariableSetKind::VarSetCurrent
                | VariableSetKind::VarReset,
            ) => {
                let name = s.name.to_ascii_lowercase();
                let resets = matches!(
                    kind,
                    Ok(VariableSetKind::VarReset | VariableSetKind::VarSetDefault)
                );
                match name.as_str() {
                    // The current transaction's own settings.
                    "transaction_isolation"
                    | "transaction_read_only"
                    | "transaction_deferrable" => {}
                    // RESET ROLE leaves nothing behind.
                    "role" | "session_authorization" => {
                        if !resets {
                            self.out.push(Effect::Unsafe(Unsafe::Role))
                        }
                    }
                    _ => self.out.push(Effect::Set(name)),
                }
            }
            _ => {}
        }
    }

    /// The byte range of the token that follows the first `keyword` token of this
    /// statement (the name of PREPARE / EXECUTE / DEALLOCATE, skipping the optional
    /// `PREPARE` after DEALLOCATE). An empty range at the statement's start when there
    /// is none, which a statement the parser read cannot lack.
    fn word_after(&mut self, keyword: Token) -> Range<usize> {
        let sql = self.sql;
        let tokens = self
            .tokens
            .get_or_insert_with(|| pg_query::scan(sql).map(|s| s.tokens).unwrap_or_default());
        let within = tokens
            .iter()
            .filter(|t| t.start as usize >= self.range.start && (t.end as usize) <= self.range.end);
        let mut after_keyword = false;
        for t in within {
            let tok = Token::try_from(t.token).ok();
            if after_keyword {
                if keyword == Token::Deallocate && tok == Some(Token::Prepare) {
                    continue;
                }
                return t.start as usize..t.end as usize;
            }
            if tok == Some(keyword) {
                after_keyword = true;
            }
        }
        self.range.start..self.range.start
    }
}

/// A temporary relation.
fn is_temp(rel: Option<&RangeVar>) -> bool {
    rel.is_some_and(|r| r.relpersistence == "t")
}

/// A temporary relation that outlives its transaction (no ON COMMIT DROP).
fn temp_kept(rel: Option<&RangeVar>, on_commit: i32) -> bool {
    is_temp(rel) && OnCommitAction::try_from(on_commit) != Ok(OnCommitAction::OncommitDrop)
}

/// Session-level advisory lock functions (the `_xact_` ones end with the transaction;
/// unlocking leaves nothing behind).
const SESSION_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Function calls anywhere in `stmt` that change the session: session advisory locks
/// and `set_config(name, value, false)`. Walks the tree as JSON (every node type derives
/// `Serialize`, so nothing is skipped); only texts with a marker get here.
fn calls(stmt: &NodeEnum, out: &mut Vec<Effect>) {
    let Ok(tree) = serde_json::to_value(stmt) else {
        return;
    };
    let mut stack = vec![&tree];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(call) = map.get("FuncCall") {
                    func_call(call, out);
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
}

fn func_call(call: &serde_json::Value, out: &mut Vec<Effect>) {
    let name = call["funcname"]
        .as_array()
        .and_then(|parts| parts.last())
        .and_then(|p| p["node"]["String"]["sval"].as_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if SESSION_LOCKS.contains(&name.as_str()) {
        out.push(Effect::Unsafe(Unsafe::SessionAdvisoryLock));
    } else if name == "set_config" {
        let args = call["args"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let konst = |i: usize| args.get(i).map(|a| &a["node"]["AConst"]["val"]);
        // A literal `true` (or 't'...) ends with the transaction.
        let local = konst(2).is_some_and(|c| {
            c["Boolval"]["boolval"].as_bool() == Some(true)
                || c["Sval"]["sval"]
                    .as_str()
                    .is_some_and(|s| matches!(s, "t" | "true" | "on" | "yes"))
        });
        if local {
            return;
        }
        match konst(0).and_then(|c| c["Sval"]["sval"].as_str()) {
            Some(param) => out.push(Effect::Set(param.to_ascii_lowercase())),
            None => out.push(Effect::Unsafe(Unsafe::DynamicSetConfig)),
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
