//! Key values in a statement (literals and `$n` parameters, possibly cast) and the
//! shard a key goes to.
//!
//! A literal is read as the server would read it for the key column: a string by the
//! key type's input function, an integer as itself. What the server would reject
//! (`'abc'` for a bigint key, an integer out of an int4 key's range) goes to shard 0:
//! the server reports its own error there, or, for a comparison that cannot be true
//! (`int4_key = 3000000000`), finds no row, as every shard would.

use pg_query::protobuf::{a_const, TypeName};
use pg_query::{Node, NodeEnum};

use super::super::hash::{self, KeyType, KeyValue};
use super::super::Unsupported;
use super::{Plan, ShardedTable, Sharding};

/// A literal constant.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Lit {
    Null,
    /// An integer constant (within i64).
    Int(i64),
    /// An integer constant beyond i64 (the server reads it as numeric).
    HugeInt,
    /// A string constant (type unknown until the context decides).
    Str(String),
    /// A numeric constant with a fraction or an exponent.
    Num(String),
}

/// A key as written: a literal or a parameter, with the type it is cast to.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum KeyExpr {
    Literal { lit: Lit, cast: Option<KeyType> },
    Param { index: usize, cast: Option<KeyType> },
}

/// Where a key's rows are: a shard, or the shard of a parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Shard(usize),
    Param {
        index: usize,
        key_type: KeyType,
    },
    /// A key the server rejects (or a comparison no row meets): shard 0 answers.
    Rejected,
}

impl Target {
    /// Both name the same shard (parameters: the same parameter).
    pub(super) fn same(self, other: Target) -> bool {
        match (self.plain(), other.plain()) {
            (Target::Shard(a), Target::Shard(b)) => a == b,
            (Target::Param { index: a, .. }, Target::Param { index: b, .. }) => a == b,
            _ => false,
        }
    }

    /// [`Target::Rejected`] as shard 0.
    pub(super) fn plain(self) -> Target {
        match self {
            Target::Rejected => Target::Shard(0),
            t => t,
        }
    }
}

/// Where the key is used: INSERT's assignment is stricter than a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    Insert,
    Filter,
}

/// The node inside a `Node`.
pub(super) fn inner(n: &Node) -> Option<&NodeEnum> {
    n.node.as_ref()
}

/// The key a node holds, when it is a literal or a parameter (under casts to types of
/// one key family; a cast to another type makes it an expression).
pub(super) fn key_expr(node: &NodeEnum) -> Option<KeyExpr> {
    match node {
        NodeEnum::AConst(c) => {
            if c.isnull {
                return Some(KeyExpr::Literal {
                    lit: Lit::Null,
                    cast: None,
                });
            }
            let lit = match c.val.as_ref()? {
                a_const::Val::Ival(i) => Lit::Int(i64::from(i.ival)),
                a_const::Val::Fval(f) => float_literal(&f.fval),
                a_const::Val::Sval(s) => Lit::Str(s.sval.clone()),
                a_const::Val::Boolval(_) | a_const::Val::Bsval(_) => return None,
            };
            Some(KeyExpr::Literal { lit, cast: None })
        }
        NodeEnum::ParamRef(p) => Some(KeyExpr::Param {
            index: usize::try_from(p.number).ok()?.checked_sub(1)?,
            cast: None,
        }),
        NodeEnum::TypeCast(c) => {
            let ty = cast_type(c.type_name.as_ref()?)?;
            let mut e = key_expr(inner(c.arg.as_deref()?)?)?;
            let cast = match &mut e {
                KeyExpr::Literal { cast, .. } | KeyExpr::Param { cast, .. } => cast,
            };
            match cast {
                // The innermost cast reads the value; outer ones must keep its family.
                Some(inner) if family(*inner) != family(ty) => return None,
                Some(_) => {}
                None => *cast = Some(ty),
            }
            Some(e)
        }
        _ => None,
    }
}

/// An integer beyond int4 or a numeric constant, as the parser keeps them (text).
fn float_literal(text: &str) -> Lit {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_or(Lit::HugeInt, Lit::Int);
    }
    Lit::Num(text.to_owned())
}

/// The key type a cast names, when it is one (`int8`, `pg_catalog.int4`, `text`,
/// `varchar` without a length, `uuid`); not arrays, not typmods (`varchar(2)`
/// truncates).
fn cast_type(t: &TypeName) -> Option<KeyType> {
    if !t.typmods.is_empty() || !t.array_bounds.is_empty() || t.setof || t.pct_type {
        return None;
    }
    let name = match t.names.last().and_then(inner)? {
        NodeEnum::String(s) => s.sval.as_str(),
        _ => return None,
    };
    Some(match name {
        "int2" | "smallint" => KeyType::SmallInt,
        "int4" | "int" | "integer" => KeyType::Integer,
        "int8" | "bigint" => KeyType::BigInt,
        "text" | "varchar" => KeyType::Text,
        "uuid" => KeyType::Uuid,
        _ => return None,
    })
}

/// Types whose values hash alike for equal values: integers, strings, uuid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Int,
    Text,
    Uuid,
}

pub(super) fn family(t: KeyType) -> Family {
    match t {
        KeyType::SmallInt | KeyType::Integer | KeyType::BigInt => Family::Int,
        KeyType::Text => Family::Text,
        KeyType::Uuid => Family::Uuid,
    }
}

/// The refusal when a key must be hashed and its type is not known.
pub(super) fn unknown_type(table: &ShardedTable) -> Unsupported {
    Unsupported::feature(format!(
        "the type of the sharding key {}.{} is not known yet: set `type` in its \
         sharded_tables entry",
        table.name, table.column
    ))
}

/// Where the rows of `table` with key `e` are. `Ok(None)`: `e` is no usable key in
/// a comparison (a fraction compared with an integer key, a value of another type
/// family): the caller treats it as any other expression.
pub(super) fn target(
    sharding: &Sharding,
    table: &ShardedTable,
    e: &KeyExpr,
    usage: Use,
) -> Result<Option<Target>, Unsupported> {
    if let KeyExpr::Literal { lit: Lit::Null, .. } = e {
        // NULL needs no hashing (and no type): shard 0.
        return Ok(Some(Target::Shard(0)));
    }
    let key_type = table.key_type.ok_or_else(|| unknown_type(table))?;
    let other_family = |cast: Option<KeyType>| cast.is_some_and(|c| family(c) != family(key_type));
    match e {
        KeyExpr::Param { index, cast } => {
            if other_family(*cast) {
                return match usage {
                    Use::Filter => Ok(None),
                    Use::Insert => Err(Unsupported::feature(format!(
                        "the key {} of sharded table {} is given as ${} cast to another type",
                        table.column,
                        table.name,
                        index + 1
                    ))),
                };
            }
            Ok(Some(Target::Param {
                index: *index,
                key_type: cast.unwrap_or(key_type),
            }))
        }
        KeyExpr::Literal { lit, cast } => {
            let ty = cast.unwrap_or(key_type);
            if other_family(*cast) {
                // INSERT converts an integer to text on assignment; the rest is an
                // error or a comparison across types.
                return match (usage, lit, family(key_type)) {
                    (Use::Insert, Lit::Int(i), Family::Text) if family(ty) == Family::Int => {
                        Ok(Some(shard_of(
                            sharding,
                            &KeyValue::Text(i.to_string().as_bytes()),
                        )))
                    }
                    (Use::Filter, ..) => Ok(None),
                    (Use::Insert, ..) => Err(Unsupported::feature(format!(
                        "the key {} of sharded table {} is given as a value of another type",
                        table.column, table.name
                    ))),
                };
            }
            literal_target(sharding, table, lit, ty, usage)
        }
    }
}

/// The shard of a literal read as type `ty` (of the key's family).
fn literal_target(
    sharding: &Sharding,
    table: &ShardedTable,
    lit: &Lit,
    ty: KeyType,
    usage: Use,
) -> Result<Option<Target>, Unsupported> {
    let shard = |v: &KeyValue<'_>| Ok(Some(shard_of(sharding, v)));
    match (lit, family(ty)) {
        (Lit::Null, _) => Ok(Some(Target::Shard(0))),
        (Lit::HugeInt, _) => Ok(Some(Target::Rejected)),
        (Lit::Int(i), Family::Int) => {
            let fits = match ty {
                KeyType::SmallInt => i16::try_from(*i).is_ok(),
                KeyType::Integer => i32::try_from(*i).is_ok(),
                _ => true,
            };
            if fits {
                shard(&KeyValue::Int(*i))
            } else {
                Ok(Some(Target::Rejected))
            }
        }
        (Lit::Int(i), Family::Text) => shard(&KeyValue::Text(i.to_string().as_bytes())),
        (Lit::Str(s), Family::Text) => shard(&KeyValue::Text(s.as_bytes())),
        (Lit::Str(s), _) => match hash::key_from_text(ty, s.as_bytes()) {
            Ok(v) => shard(&v),
            // Rejected by the type's input function: an error on every shard.
            Err(_) => Ok(Some(Target::Rejected)),
        },
        (Lit::Num(n), _) => match usage {
            Use::Filter => Ok(None),
            Use::Insert => Err(Unsupported::feature(format!(
                "the key {} of sharded table {} is given as the number {n}, which the \
                 server would convert; give the key's value exactly",
                table.column, table.name
            ))),
        },
        // An integer for a uuid key: the server rejects it.
        (Lit::Int(_), Family::Uuid) => Ok(Some(Target::Rejected)),
    }
}

/// The shard of a key value.
pub(super) fn shard_of(sharding: &Sharding, v: &KeyValue<'_>) -> Target {
    Target::Shard(hash::shard_of_hash(
        hash::partition_hash(v),
        sharding.shards.max(1),
    ))
}

impl From<Target> for Plan {
    fn from(t: Target) -> Plan {
        match t.plain() {
            Target::Param { index, key_type } => Plan::ByParam { index, key_type },
            Target::Shard(n) => Plan::Shard(n),
            Target::Rejected => Plan::Shard(0),
        }
    }
}
