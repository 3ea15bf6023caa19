//! Finds, anywhere in a parsed statement, what makes a query more than a read: a
//! data-modifying statement (a WITH ... AS (INSERT/UPDATE/DELETE/MERGE ...)), a locking
//! clause (FOR UPDATE / SHARE / NO KEY UPDATE / KEY SHARE), an INTO clause, or a call
//! of a function known to write.
//!
//! A function call can sit in nearly every node type (set operations, subqueries, CTEs,
//! arguments, CASE, JSON_TABLE, window and ORDER BY clauses...), so the search is a
//! [`crate::pgtree`] walk over every node, which stops at the first node that writes
//! (a serde error of its own stops it too: the safe answer).

use pg_query::NodeEnum;

use crate::pgtree::{self, Field, Stopped, Visitor};

/// Functions that write or depend on session state, matched without regard to case
/// or schema (`pg_catalog.NEXTVAL` is `nextval`).
const WRITERS: &[&str] = &[
    "nextval",
    "setval",
    // Read the session's last nextval: an error on a connection that never called it.
    "currval",
    "lastval",
    "set_config",
    "pg_notify",
    "txid_current",
    "pg_current_xact_id",
    // Large objects.
    "lo_create",
    "lo_creat",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_from_bytea",
    "lo_put",
    "lo_open",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    "pg_create_restore_point",
    "pg_switch_wal",
    "pg_logical_emit_message",
    "dblink_exec",
];

/// Name prefixes of function families that write (advisory locks live on one server).
const WRITER_PREFIXES: &[&str] = &["pg_advisory_", "pg_try_advisory_"];

/// The functions a classifier treats as writers: the built-in list plus the ones the
/// configuration adds.
#[derive(Debug, Clone, Default)]
pub(super) struct Writers {
    /// From `extra_write_functions`: (schema, name), lowercase; no schema matches any.
    extra: Vec<(Option<String>, String)>,
}

impl Writers {
    /// Adds `names` ("f" or "schema.f", any case) to the built-in list.
    pub(super) fn new(names: &[String]) -> Writers {
        let extra = names
            .iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .map(|n| match n.rsplit_once('.') {
                Some((schema, name)) => (Some(schema.to_owned()), name.to_owned()),
                None => (None, n),
            })
            .collect();
        Writers { extra }
    }

    /// True when a call of `parts` (the dotted name as written, e.g. `["pg_catalog",
    /// "nextval"]`) may write.
    fn matches(&self, parts: &[String]) -> bool {
        let Some(name) = parts.last() else {
            return false;
        };
        let schema = parts.len().checked_sub(2).map(|i| parts[i].as_str());
        let builtin = WRITERS.iter().any(|w| w.eq_ignore_ascii_case(name))
            || WRITER_PREFIXES.iter().any(|p| {
                name.get(..p.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(p))
            });
        builtin
            || self.extra.iter().any(|(s, n)| {
                n.eq_ignore_ascii_case(name)
                    && s.as_deref()
                        .is_none_or(|s| schema.is_some_and(|w| w.eq_ignore_ascii_case(s)))
            })
    }
}

/// True when nothing anywhere in `node` writes (see the module doc).
pub(super) fn only_reads(node: &NodeEnum, writers: &Writers) -> bool {
    pgtree::walk(node, &mut Scan { writers }).is_ok()
}

/// The visitor: stops at the first node that writes. A struct node's state is whether
/// it is a FuncCall, whose `funcname` parts are collected and judged.
struct Scan<'w> {
    writers: &'w Writers,
}

/// Node types that write wherever they appear inside a query.
fn writes(struct_name: &str) -> bool {
    matches!(
        struct_name,
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" | "LockingClause" | "IntoClause"
    )
}

impl Visitor for Scan<'_> {
    type Node = bool;

    fn enter(&mut self, name: &'static str) -> Result<bool, Stopped> {
        if writes(name) {
            return Err(Stopped);
        }
        Ok(name == "FuncCall")
    }

    fn field(&self, func_call: &bool, key: &str) -> Field {
        if *func_call && key == "funcname" {
            Field::Collect
        } else {
            Field::Walk
        }
    }

    fn collected(&mut self, _: &mut bool, _: &str, parts: Vec<String>) -> Result<(), Stopped> {
        if self.writers.matches(&parts) {
            return Err(Stopped);
        }
        Ok(())
    }

    fn leave(&mut self, _: bool) -> Result<(), Stopped> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Vec<String> {
        s.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn writer_names_match_without_case_or_schema() {
        let w = Writers::new(&["Audit.Log_Event".into(), "bump".into(), " ".into()]);
        for name in [
            "nextval",
            "pg_catalog.NEXTVAL",
            "pg_advisory_xact_lock_shared",
            "PG_TRY_ADVISORY_LOCK",
            "lowrite",
            "bump",
            "any.bump",
            "audit.log_event",
        ] {
            assert!(w.matches(&parts(name)), "{name}");
        }
        for name in [
            "count",
            "pg_terminate_backend",
            "log_event",
            "other.log_event",
            "pg_advis",
            "",
        ] {
            assert!(!w.matches(&parts(name)), "{name}");
        }
        assert!(!w.matches(&[]));
    }
}
