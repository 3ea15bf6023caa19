//! Everything a statement names, found anywhere in its tree: every table reference
//! (`RangeVar`), the names of its WITH queries, and whether it holds a data-modifying
//! statement, a locking clause, an INTO clause or a parameter.
//!
//! As in `classify::scan`, the walk is a `serde` serializer that writes nothing: every
//! node type of `pg_query` derives `Serialize`, so serde visits every field of every
//! node, and no table can hide in a node type a hand-written walk forgot. The
//! planner's own analysis (`plan_query`) reads the places it understands and compares
//! its count of sharded table references with this one: a reference it did not
//! analyse makes it refuse rather than guess.

use std::fmt;

use pg_query::NodeEnum;
use serde::ser::{self, Serialize};

/// What [`walk`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Found {
    /// Every table reference, in tree order: (schema as written or "", name).
    pub rels: Vec<(String, String)>,
    /// Names of WITH queries.
    pub ctes: Vec<String>,
    /// INSERT / UPDATE / DELETE / MERGE statements (the top-level one included).
    pub writes: usize,
    /// A FOR UPDATE / SHARE clause.
    pub locking: bool,
    /// An INTO clause (SELECT INTO, CREATE TABLE AS).
    pub into: bool,
    /// A parameter `$n`.
    pub params: bool,
}

/// Walks `node` (see the module doc).
pub(super) fn walk(node: &NodeEnum) -> Found {
    let mut w = Walk {
        found: Found::default(),
        capture: None,
    };
    // The walk itself never fails; an error would only come from serde internals.
    let _ = node.serialize(&mut w);
    w.found
}

struct Walk {
    found: Found,
    /// Collects the string of the field being visited, when set.
    capture: Option<String>,
}

#[derive(Debug)]
struct Never;

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("walk error")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Never
    }
}

/// What a compound value is, for the fields the walk collects.
enum Kind {
    Other,
    /// FOR UPDATE OF t: `t` names a table of the FROM list, it is no reference.
    Locking,
    RangeVar {
        schema: String,
        name: String,
    },
    Cte,
}

struct Fields<'a> {
    walk: &'a mut Walk,
    kind: Kind,
}

impl Fields<'_> {
    fn member<T: ?Sized + Serialize>(&mut self, key: &str, value: &T) -> Result<(), Never> {
        let wanted = match self.kind {
            Kind::RangeVar { .. } => key == "schemaname" || key == "relname",
            Kind::Cte => key == "ctename",
            Kind::Locking if key == "locked_rels" => return Ok(()),
            Kind::Locking | Kind::Other => false,
        };
        if !wanted {
            return value.serialize(&mut *self.walk);
        }
        let outer = self.walk.capture.replace(String::new());
        let result = value.serialize(&mut *self.walk);
        let text = std::mem::replace(&mut self.walk.capture, outer).unwrap_or_default();
        match (&mut self.kind, key) {
            (Kind::RangeVar { schema, .. }, "schemaname") => *schema = text,
            (Kind::RangeVar { name, .. }, _) => *name = text,
            (Kind::Cte, _) => self.walk.found.ctes.push(text),
            (Kind::Locking | Kind::Other, _) => {}
        }
        result
    }

    fn end(self) -> Result<(), Never> {
        if let Kind::RangeVar { schema, name } = self.kind {
            self.walk.found.rels.push((schema, name));
        }
        Ok(())
    }
}

macro_rules! ignore_scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Never> { Ok(()) })*
    };
}

impl<'a> ser::Serializer for &'a mut Walk {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Fields<'a>;
    type SerializeTuple = Fields<'a>;
    type SerializeTupleStruct = Fields<'a>;
    type SerializeTupleVariant = Fields<'a>;
    type SerializeMap = Fields<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Fields<'a>;

    ignore_scalars! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_f32: f32, serialize_f64: f64, serialize_char: char,
        serialize_bytes: &[u8], serialize_unit_struct: &'static str,
    }

    fn serialize_str(self, v: &str) -> Result<(), Never> {
        if let Some(text) = &mut self.capture {
            text.push_str(v);
        }
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Never> {
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Never> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Never> {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Never> {
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Fields<'a>, Never> {
        Ok(self.fields(""))
    }

    fn serialize_tuple(self, _: usize) -> Result<Fields<'a>, Never> {
        Ok(self.fields(""))
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Fields<'a>, Never> {
        Ok(self.fields(""))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields<'a>, Never> {
        Ok(self.fields(""))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Fields<'a>, Never> {
        Ok(self.fields(""))
    }

    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Fields<'a>, Never> {
        Ok(self.fields(name))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        _: usize,
    ) -> Result<Fields<'a>, Never> {
        Ok(self.fields(name))
    }
}

impl Walk {
    /// Notes a node type, and starts the collection of its fields.
    fn fields(&mut self, struct_name: &str) -> Fields<'_> {
        let kind = match struct_name {
            "RangeVar" => Kind::RangeVar {
                schema: String::new(),
                name: String::new(),
            },
            "CommonTableExpr" => Kind::Cte,
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                self.found.writes += 1;
                Kind::Other
            }
            "LockingClause" => {
                self.found.locking = true;
                Kind::Locking
            }
            "IntoClause" => {
                self.found.into = true;
                Kind::Other
            }
            "ParamRef" => {
                self.found.params = true;
                Kind::Other
            }
            _ => Kind::Other,
        };
        Fields { walk: self, kind }
    }
}

macro_rules! compound {
    ($($trait:ident { $($method:ident($($arg:ident: $ty:ty),*) => $key:expr;)* })*) => {
        $(impl ser::$trait for Fields<'_> {
            type Ok = ();
            type Error = Never;
            $(fn $method<T: ?Sized + Serialize>(&mut self, $($arg: $ty,)* value: &T) -> Result<(), Never> {
                $(let _ = $arg;)*
                self.member($key, value)
            })*
            fn end(self) -> Result<(), Never> {
                Fields::end(self)
            }
        })*
    };
}

compound! {
    SerializeSeq { serialize_element() => ""; }
    SerializeTuple { serialize_element() => ""; }
    SerializeTupleStruct { serialize_field() => ""; }
    SerializeTupleVariant { serialize_field() => ""; }
    SerializeStruct { serialize_field(key: &'static str) => key; }
    SerializeStructVariant { serialize_field(key: &'static str) => key; }
}

impl ser::SerializeMap for Fields<'_> {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Never> {
        self.member("", key)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Never> {
        self.member("", value)
    }
    fn end(self) -> Result<(), Never> {
        Fields::end(self)
    }
}
