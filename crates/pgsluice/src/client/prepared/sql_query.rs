//! The bookkeeping of one rewritten simple query with SQL-level prepared statements
//! ([`super::sql`]): the [`Action`] each statement's CommandComplete answers, and the
//! renaming of server names back to the client's in errors. Data the book queues
//! ([`super::book`]); it knows neither.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Stmt;

/// What one statement of a rewritten text does to prepared statements; each is
/// answered by one CommandComplete (`PREPARE`, `DEALLOCATE` or `DEALLOCATE ALL`).
#[derive(Debug)]
pub(super) enum Action {
    /// A PREPARE of `stmt`: the client's of `client`, or (None) one pgsluice put in
    /// (its CommandComplete is swallowed).
    Prepare {
        stmt: Arc<Stmt>,
        client: Option<Arc<str>>,
    },
    /// The client's DEALLOCATE of its name `client`.
    Deallocate { stmt: Arc<Stmt>, client: Arc<str> },
    /// A DEALLOCATE of a name the client does not have, sent as written.
    Passed,
    /// `DEALLOCATE ALL`.
    DeallocateAll,
}

impl Action {
    /// The command tag that answers this action.
    fn tag(&self) -> &'static [u8] {
        match self {
            Action::Prepare { .. } => b"PREPARE",
            Action::Deallocate { .. } | Action::Passed => b"DEALLOCATE",
            Action::DeallocateAll => b"DEALLOCATE ALL",
        }
    }
}

/// True for the tags that answer an [`Action`].
pub(super) fn is_action_tag(tag: &[u8]) -> bool {
    matches!(tag, b"PREPARE" | b"DEALLOCATE" | b"DEALLOCATE ALL")
}

/// One replaced stretch, in characters, for mapping error positions back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Moved {
    /// Start and length in the text sent.
    pub(super) sent_at: u32,
    pub(super) sent_len: u32,
    /// Start and length in the client's text.
    pub(super) orig_at: u32,
    pub(super) orig_len: u32,
}

/// A simple query whose text was rewritten for SQL-level prepared statements: what the
/// server's answer to it must do.
#[derive(Debug)]
pub(super) struct SqlQuery {
    /// In text order, each waiting for its CommandComplete.
    pub(super) actions: VecDeque<Action>,
    /// Server names (quoted, as errors show them) and the client's names.
    pub(super) renames: Vec<(Box<str>, Arc<str>)>,
    pub(super) moved: Vec<Moved>,
    /// A duplicate PREPARE was replaced by a `DO` block that raises 42P05.
    pub(super) refused_duplicate: bool,
    /// Statements whose presence on the server is uncertain (an earlier Sync window's
    /// message for them is unanswered): closed before the query (no error if absent).
    pub(super) clears: Vec<Arc<Stmt>>,
    /// pgsluice's own query (a PREPARE a Parse needs): its whole answer is swallowed.
    pub(super) injected: bool,
}

impl SqlQuery {
    pub(super) fn new() -> Self {
        SqlQuery {
            actions: VecDeque::new(),
            renames: Vec::new(),
            moved: Vec::new(),
            refused_duplicate: false,
            clears: Vec::new(),
            injected: false,
        }
    }
}

impl SqlQuery {
    /// Takes the action a CommandComplete with this tag answers; None when the tag
    /// answers none (or does not match: nothing is applied then).
    pub(super) fn take_action(&mut self, tag: &[u8]) -> Option<Action> {
        let a = self.actions.pop_front()?;
        if a.tag() == tag {
            Some(a)
        } else {
            tracing::warn!(?tag, action = ?a, "unexpected tag for a SQL prepared statement");
            None
        }
    }

    /// An ErrorResponse (or notice) body with server names shown as the client's and
    /// the position mapped back to the client's text; None when nothing changes.
    pub(super) fn fix_error(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(body.len());
        let mut changed = false;
        let mut rest = body;
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            let value = &tail[..end];
            rest = &tail[end + 1..];
            let fixed: Option<Vec<u8>> = match kind {
                b'P' => std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u32>().ok())
                    .map(|p| self.position(p).to_string().into_bytes()),
                b'W' if self.refused_duplicate && contains(value, b"inline_code_block") => {
                    changed = true;
                    continue;
                }
                _ => self.rename_in(value),
            };
            out.push(kind);
            match fixed {
                Some(v) => {
                    changed |= v != value;
                    out.extend_from_slice(&v);
                }
                None => out.extend_from_slice(value),
            }
            out.push(0);
        }
        out.push(0);
        changed.then_some(out)
    }

    fn rename_in(&self, value: &[u8]) -> Option<Vec<u8>> {
        let mut text: Option<Vec<u8>> = None;
        for (server, client) in &self.renames {
            let cur = text.as_deref().unwrap_or(value);
            if contains(cur, server.as_bytes()) {
                let quoted = format!("\"{client}\"");
                text = Some(replace(cur, server.as_bytes(), quoted.as_bytes()));
            }
        }
        text
    }

    /// A 1-based character position in the text sent, in the client's text.
    fn position(&self, p: u32) -> u32 {
        let at = p.saturating_sub(1);
        let mut shift: i64 = 0;
        for m in &self.moved {
            if at < m.sent_at {
                break;
            }
            if at < m.sent_at + m.sent_len {
                return m.orig_at + 1;
            }
            shift = i64::from(m.sent_at + m.sent_len) - i64::from(m.orig_at + m.orig_len);
        }
        (i64::from(at) - shift + 1).max(1) as u32
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len() + to.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}
