//! A walk over every node of a statement parsed by `pg_query`, for the SQL work of
//! [`crate::classify`] and [`crate::shard`].
//!
//! The tree has some 270 node types, and what a caller looks for (a function call, a
//! table reference, a locking clause) can sit in nearly all of them. A hand-written walk
//! would have to name every field of every type and would silently miss whatever a new
//! PostgreSQL adds. Every node type of `pg_query` derives `serde::Serialize`, so the walk
//! is a serializer that writes nothing: serde visits every field of every node, complete
//! by construction. The caller's [`Visitor`] sees each struct node as it starts and ends,
//! may ask for the strings under one of its fields (a function's name parts, a
//! relation's name), and may stop the walk. Depth is bounded by the protobuf decoder's
//! nesting limit, which rejects deeper trees before they get here.

use std::fmt;

use serde::ser::{self, Serialize};

/// The walk stopped: the visitor asked it to, or serde reported an error of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tree walk stopped")
    }
}

impl std::error::Error for Stopped {}

impl ser::Error for Stopped {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stopped
    }
}

/// What a walk does at the nodes it passes.
pub trait Visitor {
    /// What the visitor keeps about a struct node while its fields are walked.
    type Node;

    /// A struct node of type `name` (`"FuncCall"`, `"RangeVar"`...) starts.
    fn enter(&mut self, name: &'static str) -> Result<Self::Node, Stopped>;

    /// What to do with field `key` of `node`.
    fn field(&self, node: &Self::Node, key: &str) -> Field;

    /// The strings found under a field the visitor asked to [`Field::Collect`], in
    /// tree order.
    fn collected(
        &mut self,
        node: &mut Self::Node,
        key: &str,
        strings: Vec<String>,
    ) -> Result<(), Stopped>;

    /// A struct node ends (after all its fields).
    fn leave(&mut self, node: Self::Node) -> Result<(), Stopped>;
}

/// What the walk does with one field of a struct node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Walk it.
    Walk,
    /// Walk it, and pass the strings found under it to [`Visitor::collected`].
    Collect,
    /// Leave it out, with everything under it.
    Skip,
}

/// Walks every node under `root` (a `pg_query` node, or anything `Serialize`).
pub fn walk<V: Visitor>(root: &impl Serialize, visitor: &mut V) -> Result<(), Stopped> {
    let mut w = Walker {
        visitor,
        strings: None,
    };
    root.serialize(&mut w)
}

/// The serializer; `strings` collects while a wanted field is walked.
struct Walker<'v, V> {
    visitor: &'v mut V,
    strings: Option<Vec<String>>,
}

impl<'v, V: Visitor> Walker<'v, V> {
    fn compound(&mut self, name: Option<&'static str>) -> Result<Fields<'_, 'v, V>, Stopped> {
        let node = match name {
            Some(name) => Some(self.visitor.enter(name)?),
            None => None,
        };
        Ok(Fields { walker: self, node })
    }
}

/// The members of one compound value; `node` when it is a struct node.
struct Fields<'a, 'v, V: Visitor> {
    walker: &'a mut Walker<'v, V>,
    node: Option<V::Node>,
}

impl<V: Visitor> Fields<'_, '_, V> {
    fn member<T: ?Sized + Serialize>(&mut self, key: &str, value: &T) -> Result<(), Stopped> {
        let Some(node) = self.node.as_mut() else {
            return value.serialize(&mut *self.walker);
        };
        match self.walker.visitor.field(node, key) {
            Field::Walk => return value.serialize(&mut *self.walker),
            Field::Skip => return Ok(()),
            Field::Collect => {}
        }
        let outer = self.walker.strings.replace(Vec::new());
        let result = value.serialize(&mut *self.walker);
        let strings = std::mem::replace(&mut self.walker.strings, outer).unwrap_or_default();
        result?;
        self.walker.visitor.collected(node, key, strings)
    }

    fn finish(self) -> Result<(), Stopped> {
        match self.node {
            Some(node) => self.walker.visitor.leave(node),
            None => Ok(()),
        }
    }
}

/// Scalars carry nothing to look at (strings are collected when wanted).
macro_rules! ignore_scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Stopped> { Ok(()) })*
    };
}

impl<'a, 'v, V: Visitor> ser::Serializer for &'a mut Walker<'v, V> {
    type Ok = ();
    type Error = Stopped;
    type SerializeSeq = Fields<'a, 'v, V>;
    type SerializeTuple = Fields<'a, 'v, V>;
    type SerializeTupleStruct = Fields<'a, 'v, V>;
    type SerializeTupleVariant = Fields<'a, 'v, V>;
    type SerializeMap = Fields<'a, 'v, V>;
    type SerializeStruct = Fields<'a, 'v, V>;
    type SerializeStructVariant = Fields<'a, 'v, V>;

    ignore_scalars! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_f32: f32, serialize_f64: f64, serialize_char: char,
        serialize_bytes: &[u8], serialize_unit_struct: &'static str,
    }

    fn serialize_str(self, v: &str) -> Result<(), Stopped> {
        if let Some(strings) = &mut self.strings {
            strings.push(v.to_owned());
        }
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Stopped> {
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Stopped> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Stopped> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Stopped> {
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stopped> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stopped> {
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stopped> {
        self.compound(None)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stopped> {
        self.compound(None)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Stopped> {
        self.compound(None)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Stopped> {
        self.compound(None)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stopped> {
        self.compound(None)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, Stopped> {
        self.compound(Some(name))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Stopped> {
        self.compound(Some(name))
    }
}

macro_rules! compound {
    ($($trait:ident { $($method:ident($($arg:ident: $ty:ty),*) => $key:expr;)* })*) => {
        $(impl<V: Visitor> ser::$trait for Fields<'_, '_, V> {
            type Ok = ();
            type Error = Stopped;
            $(fn $method<T: ?Sized + Serialize>(&mut self, $($arg: $ty,)* value: &T) -> Result<(), Stopped> {
                $(let _ = $arg;)*
                self.member($key, value)
            })*
            fn end(self) -> Result<(), Stopped> {
                self.finish()
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

impl<V: Visitor> ser::SerializeMap for Fields<'_, '_, V> {
    type Ok = ();
    type Error = Stopped;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Stopped> {
        self.member("", key)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Stopped> {
        self.member("", value)
    }
    fn end(self) -> Result<(), Stopped> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the struct nodes in order, the strings under every `relname` field, and
    /// stops at a node named `stop_at`.
    #[derive(Default)]
    struct Recorder {
        entered: Vec<&'static str>,
        left: usize,
        names: Vec<Vec<String>>,
        stop_at: Option<&'static str>,
    }

    impl Visitor for Recorder {
        type Node = &'static str;
        fn enter(&mut self, name: &'static str) -> Result<&'static str, Stopped> {
            if self.stop_at == Some(name) {
                return Err(Stopped);
            }
            self.entered.push(name);
            Ok(name)
        }
        fn field(&self, _: &&'static str, key: &str) -> Field {
            match key {
                "relname" | "funcname" => Field::Collect,
                "limit_count" => Field::Skip,
                _ => Field::Walk,
            }
        }
        fn collected(
            &mut self,
            _: &mut &'static str,
            _: &str,
            s: Vec<String>,
        ) -> Result<(), Stopped> {
            self.names.push(s);
            Ok(())
        }
        fn leave(&mut self, _: &'static str) -> Result<(), Stopped> {
            self.left += 1;
            Ok(())
        }
    }

    fn root(sql: &str) -> pg_query::protobuf::ParseResult {
        pg_query::parse(sql, pg_query::ParserOptions::DEFAULT)
            .expect("parses")
            .protobuf
    }

    #[test]
    fn visits_every_struct_node_and_collects_wanted_strings() {
        let mut r = Recorder::default();
        let tree = root(
            "select pg_catalog.lower(x) from s.t join u on true \
             where y in (select 1 from v) limit (select count(*) from w)",
        );
        walk(&tree, &mut r).expect("no stop");
        assert_eq!(r.entered.len(), r.left, "every node entered is left");
        for node in ["SelectStmt", "FuncCall", "RangeVar", "JoinExpr", "SubLink"] {
            assert!(r.entered.contains(&node), "{node} in {:?}", r.entered);
        }
        // The skipped LIMIT's subquery (count(*) from w) was not visited.
        let names: Vec<Vec<&str>> = r
            .names
            .iter()
            .map(|v| v.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            names,
            vec![vec!["pg_catalog", "lower"], vec!["t"], vec!["u"], vec!["v"]]
        );
    }

    #[test]
    fn a_visitor_stops_the_walk() {
        let mut r = Recorder {
            stop_at: Some("FuncCall"),
            ..Recorder::default()
        };
        assert_eq!(walk(&root("select 1 + abs(2)"), &mut r), Err(Stopped));
        assert!(!r.entered.contains(&"FuncCall"));
        let mut r = Recorder {
            stop_at: Some("FuncCall"),
            ..Recorder::default()
        };
        assert_eq!(walk(&root("select 1 + 2"), &mut r), Ok(()));
    }
}
