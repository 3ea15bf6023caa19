//! Finds, anywhere in a parsed statement, what makes a query more than a read: a
//! data-modifying statement (a WITH ... AS (INSERT/UPDATE/DELETE/MERGE ...)), a locking
//! clause (FOR UPDATE / SHARE / NO KEY UPDATE / KEY SHARE), an INTO clause, or a call
//! of a function known to write.
//!
//! The tree has some 270 node types, and a function call can sit in nearly all of
//! them (set operations, subqueries, CTEs, arguments, CASE, JSON_TABLE, window and
//! ORDER BY clauses...). A hand-written walk would have to name every field of every
//! type and would silently miss whatever a new PostgreSQL adds. Every node type of
//! `pg_query` derives `serde::Serialize`, so the walk is a serializer that writes
//! nothing: serde visits every field of every node, complete by construction, and the
//! serializer stops (with an error) at the first node that writes. Depth is bounded by
//! the decoder's nesting limit, which rejects deeper trees before they get here.

use std::fmt;

use pg_query::NodeEnum;
use serde::ser::{self, Serialize};

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
    let mut walk = Walk {
        writers,
        name: None,
    };
    node.serialize(&mut walk).is_ok()
}

/// The walking serializer; `name` collects the parts of a function name while the
/// `funcname` field of a FuncCall is being visited.
struct Walk<'w> {
    writers: &'w Writers,
    name: Option<Vec<String>>,
}

/// Why the walk stopped: something writes (or serde reported an error of its own,
/// which is treated the same, the safe way).
#[derive(Debug)]
struct Writes;

impl fmt::Display for Writes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("statement writes")
    }
}

impl std::error::Error for Writes {}

impl ser::Error for Writes {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Writes
    }
}

/// Node types that write wherever they appear inside a query.
fn writes(struct_name: &str) -> bool {
    matches!(
        struct_name,
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" | "LockingClause" | "IntoClause"
    )
}

/// Scalars carry nothing to look at, except strings while a function name is collected.
macro_rules! ignore_scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Writes> { Ok(()) })*
    };
}

impl<'a, 'w> ser::Serializer for &'a mut Walk<'w> {
    type Ok = ();
    type Error = Writes;
    type SerializeSeq = Fields<'a, 'w>;
    type SerializeTuple = Fields<'a, 'w>;
    type SerializeTupleStruct = Fields<'a, 'w>;
    type SerializeTupleVariant = Fields<'a, 'w>;
    type SerializeMap = Fields<'a, 'w>;
    type SerializeStruct = Fields<'a, 'w>;
    type SerializeStructVariant = Fields<'a, 'w>;

    ignore_scalars! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_f32: f32, serialize_f64: f64, serialize_char: char,
        serialize_bytes: &[u8], serialize_unit_struct: &'static str,
    }

    fn serialize_str(self, v: &str) -> Result<(), Writes> {
        if let Some(parts) = &mut self.name {
            parts.push(v.to_owned());
        }
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Writes> {
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Writes> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Writes> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Writes> {
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Writes> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Writes> {
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Fields<'a, 'w>, Writes> {
        Ok(Fields::new(self, false))
    }

    fn serialize_tuple(self, _: usize) -> Result<Fields<'a, 'w>, Writes> {
        Ok(Fields::new(self, false))
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Fields<'a, 'w>, Writes> {
        Ok(Fields::new(self, false))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields<'a, 'w>, Writes> {
        Ok(Fields::new(self, false))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Fields<'a, 'w>, Writes> {
        Ok(Fields::new(self, false))
    }

    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Fields<'a, 'w>, Writes> {
        if writes(name) {
            return Err(Writes);
        }
        Ok(Fields::new(self, name == "FuncCall"))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        _: usize,
    ) -> Result<Fields<'a, 'w>, Writes> {
        if writes(name) {
            return Err(Writes);
        }
        Ok(Fields::new(self, false))
    }
}

/// The members of one compound value; `func_call` when it is a FuncCall node.
struct Fields<'a, 'w> {
    walk: &'a mut Walk<'w>,
    func_call: bool,
}

impl<'a, 'w> Fields<'a, 'w> {
    fn new(walk: &'a mut Walk<'w>, func_call: bool) -> Self {
        Fields { walk, func_call }
    }

    fn member<T: ?Sized + Serialize>(&mut self, key: &str, value: &T) -> Result<(), Writes> {
        if !(self.func_call && key == "funcname") {
            return value.serialize(&mut *self.walk);
        }
        // The name is a list of String nodes: collect their values, then judge them.
        let outer = self.walk.name.replace(Vec::new());
        let result = value.serialize(&mut *self.walk);
        let parts = std::mem::replace(&mut self.walk.name, outer).unwrap_or_default();
        result?;
        if self.walk.writers.matches(&parts) {
            return Err(Writes);
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Fields<'_, '_> {
    type Ok = ();
    type Error = Writes;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Writes> {
        self.member("", value)
    }
    fn end(self) -> Result<(), Writes> {
        Ok(())
    }
}

impl ser::SerializeTuple for Fields<'_, '_> {
    type Ok = ();
    type Error = Writes;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Writes> {
        self.member("", value)
    }
    fn end(self) -> Result<(), Writes> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Fields<'_, '_> {
    type Ok = ();
    type Error = Writes;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Writes> {
        self.member("", value)
    }
    fn end(self) -> Result<(), Writes> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Fields<'_, '_> {
    type Ok = ();
    type Error = Writes;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Writes> {
        self.member("", value)
    }
    fn end(self) -> Result<(), Writes> {
        Ok(())
    }
}

impl ser::SerializeMap for Fields<'_, '_> {
    type Ok = ();
    type Error = Writes;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Writes> {
        self.member("", key)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Writes> {
        self.member("", value)
    }
    fn end(self) -> Result<(), Writes> {
        Ok(())
    }
}

impl ser::SerializeStruct for Fields<'_, '_> {
    type Ok = ();
    type Error = Writes;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Writes> {
        self.member(key, value)
    }
    fn end(self) -> Result<(), Writes> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Fields<'_, '_> {
    type Ok = ();
    type Error = Writes;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Writes> {
        self.member(key, value)
    }
    fn end(self) -> Result<(), Writes> {
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
