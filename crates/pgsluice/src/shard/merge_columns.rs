//! The shards' RowDescription, and the merge plan resolved against it: which output
//! column each ORDER BY key is (after `*` expansion and name lookup), how its values
//! decode, and what each column of an aggregated result does.

use std::cmp::Ordering;

use bytes::Bytes;
use pgsluice_protocol::frame::Reader;

use super::planning::{AggKind, ColRef, Role, Shape};
use super::value::{self, oid, Kind, Val};
use super::MergeError;

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Col {
    pub(super) name: String,
    pub(super) type_oid: u32,
    pub(super) binary: bool,
}

/// Decodes a RowDescription body.
pub(super) fn parse_row_description(body: &[u8]) -> Result<Vec<Col>, MergeError> {
    let bad = |e: pgsluice_protocol::ProtocolError| {
        MergeError::malformed(format!("a malformed RowDescription from a shard: {e}"))
    };
    let mut r = Reader::new(body);
    let n = r.i16().map_err(bad)?;
    let mut cols = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let name = r.cstr().map_err(bad)?.to_string();
        r.bytes(6).map_err(bad)?; // table oid, column number
        let type_oid = r.i32().map_err(bad)? as u32;
        r.bytes(6).map_err(bad)?; // type size, type modifier
        let format = r.i16().map_err(bad)?;
        cols.push(Col {
            name,
            type_oid,
            binary: format == 1,
        });
    }
    Ok(cols)
}

/// How one column's values decode for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decoder {
    pub(super) kind: Kind,
    pub(super) binary: bool,
    /// `oid` columns: four unsigned bytes in binary.
    pub(super) unsigned: bool,
}

impl Decoder {
    pub(super) fn decode(&self, raw: &[u8], col: &str) -> Result<Val, MergeError> {
        let v = if self.binary && self.unsigned {
            value::decode_oid_binary(raw)
        } else {
            value::decode(self.kind, self.binary, raw)
        };
        v.map_err(|e| MergeError::unsupported(format!("column \"{col}\": {e}")))
    }
}

/// One ORDER BY key, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SortCol {
    pub(super) index: usize,
    pub(super) decoder: Decoder,
    pub(super) desc: bool,
    pub(super) nulls_first: bool,
}

/// What an aggregated result's column does, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AggCol {
    Group(Decoder),
    Carry,
    Count { binary: bool },
    Sum(SumKind, bool),
    Min(Decoder),
    Max(Decoder),
}

/// How a sum adds, by its result type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SumKind {
    /// sum(int2/int4): bigint.
    Int8,
    /// sum(int8/numeric): numeric.
    Numeric,
    /// sum(float4) (`true`) / sum(float8).
    Float(bool),
}

/// The first RowDescription and the plan resolved against it.
#[derive(Debug, Clone)]
pub(super) struct Columns {
    pub(super) cols: Vec<Col>,
    /// The RowDescription message as the shard sent it.
    pub(super) message: Bytes,
    pub(super) sort: Vec<SortCol>,
    pub(super) aggregate: Option<Vec<AggCol>>,
}

impl Columns {
    pub(super) fn resolve(
        shape: &Shape,
        cols: Vec<Col>,
        message: Bytes,
        text_bytes_order: bool,
    ) -> Result<Columns, MergeError> {
        let n = cols.len();
        let fixed = shape.star.is_none();
        if (fixed && n != shape.targets) || n + 1 < shape.targets {
            return Err(MergeError::unsupported(format!(
                "the shards returned {n} columns where the statement lists {}",
                shape.targets
            )));
        }
        let target_pos = |i: usize| match shape.star {
            Some(s) if i > s => n - (shape.targets - i),
            _ => i,
        };
        let decoder = |at: usize, what: &str, ordered: bool| -> Result<Decoder, MergeError> {
            let c: &Col = &cols[at];
            let kind = Kind::of(c.type_oid).ok_or_else(|| {
                MergeError::unsupported(format!(
                    "{what} column \"{}\" of type OID {} cannot be merged by pgsluice",
                    c.name, c.type_oid
                ))
            })?;
            if ordered && kind.is_text() && !text_bytes_order {
                return Err(MergeError::unsupported(format!(
                    "{what} text column \"{}\" over several shards needs the database's collation to be C or POSIX",
                    c.name
                )));
            }
            Ok(Decoder {
                kind,
                binary: c.binary,
                unsigned: c.type_oid == oid::OID,
            })
        };
        let mut sort = Vec::with_capacity(shape.sort.len());
        for key in &shape.sort {
            let index = match &key.col {
                ColRef::Target(i) => target_pos(*i),
                ColRef::Position(p) => *p,
                ColRef::Name { name, fallback } => {
                    let named: Vec<usize> = (0..n).filter(|&i| &cols[i].name == name).collect();
                    let fallback = fallback.map(target_pos);
                    match (named.as_slice(), fallback) {
                        ([one], _) => *one,
                        ([], Some(f)) => f,
                        ([], None) => {
                            return Err(MergeError::unsupported(format!(
                                "ORDER BY {name}: not a returned column (add it to the select list)"
                            )))
                        }
                        (many, Some(f)) if many.contains(&f) => f,
                        _ => {
                            return Err(MergeError::unsupported(format!(
                                "ORDER BY {name}: several returned columns have that name"
                            )))
                        }
                    }
                }
            };
            if index >= n {
                return Err(MergeError::unsupported(format!(
                    "ORDER BY position {} is not returned",
                    index + 1
                )));
            }
            sort.push(SortCol {
                index,
                decoder: decoder(index, "ORDER BY", true)?,
                desc: key.desc,
                nulls_first: key.nulls_first,
            });
        }
        let aggregate = match &shape.aggregate {
            None => None,
            Some(roles) => {
                let mut out = Vec::with_capacity(n);
                for (at, role) in roles.iter().enumerate() {
                    let c = &cols[at];
                    out.push(match role {
                        Role::Group => AggCol::Group(decoder(at, "GROUP BY", false)?),
                        Role::Carry => AggCol::Carry,
                        Role::Agg(AggKind::Count) if c.type_oid == oid::INT8 => {
                            AggCol::Count { binary: c.binary }
                        }
                        Role::Agg(AggKind::Count) => return Err(type_error("count()", c)),
                        Role::Agg(AggKind::Sum) => AggCol::Sum(sum_kind(c)?, c.binary),
                        Role::Agg(AggKind::Min) => AggCol::Min(decoder(at, "min()", true)?),
                        Role::Agg(AggKind::Max) => AggCol::Max(decoder(at, "max()", true)?),
                    });
                }
                Some(out)
            }
        };
        Ok(Columns {
            cols,
            message,
            sort,
            aggregate,
        })
    }

    /// Another shard's RowDescription must match the first one.
    pub(super) fn check_same(&self, other: &[Col]) -> Result<(), MergeError> {
        if other.len() != self.cols.len() {
            return Err(MergeError::unsupported(format!(
                "the shards returned different columns ({} and {}): is the table the same on every shard?",
                self.cols.len(),
                other.len()
            )));
        }
        for (a, b) in self.cols.iter().zip(other) {
            if a.type_oid != b.type_oid || a.binary != b.binary {
                return Err(MergeError::unsupported(format!(
                    "the shards returned column \"{}\" with different types (OID {} and {}): is the table the same on every shard?",
                    a.name, a.type_oid, b.type_oid
                )));
            }
        }
        Ok(())
    }

    /// The decoded sort-key values of a row.
    pub(super) fn sort_key(
        &self,
        values: &[Option<&[u8]>],
    ) -> Result<Vec<Option<Val>>, MergeError> {
        self.sort
            .iter()
            .map(|s| match values[s.index] {
                None => Ok(None),
                Some(raw) => s.decoder.decode(raw, &self.cols[s.index].name).map(Some),
            })
            .collect()
    }
}

fn type_error(what: &str, c: &Col) -> MergeError {
    MergeError::unsupported(format!(
        "{what} column \"{}\" of type OID {} cannot be merged by pgsluice",
        c.name, c.type_oid
    ))
}

fn sum_kind(c: &Col) -> Result<SumKind, MergeError> {
    match c.type_oid {
        oid::INT8 => Ok(SumKind::Int8),
        oid::NUMERIC => Ok(SumKind::Numeric),
        oid::FLOAT4 => Ok(SumKind::Float(true)),
        oid::FLOAT8 => Ok(SumKind::Float(false)),
        _ => Err(type_error("sum()", c)),
    }
}

/// Compares two sort keys as the ORDER BY says (direction, NULLS FIRST/LAST).
pub(super) fn compare(sort: &[SortCol], a: &[Option<Val>], b: &[Option<Val>]) -> Ordering {
    for (s, (x, y)) in sort.iter().zip(a.iter().zip(b)) {
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => {
                if s.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (Some(_), None) => {
                if s.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (Some(x), Some(y)) => {
                let o = x.cmp(y);
                if s.desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}
