//! Re-aggregation: the shards' rows of one group (equal GROUP BY values, or the one
//! row of an aggregate without GROUP BY) combine into one row: counts and sums
//! added, min/max compared, other columns taken from the first shard's row.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use pgsluice_protocol::backend::tag;
use pgsluice_protocol::SqlState;

use super::columns::{compare, AggCol, Columns, Decoder, SumKind};
use super::decimal::Decimal;
use super::value::{self, Kind, Val};
use super::MergeError;

/// One column of a group, as combined so far.
#[derive(Debug, Clone)]
enum Cell {
    /// GROUP BY value or carried value: the first row's bytes.
    Raw(Option<Bytes>),
    Count(i128),
    SumInt(Option<i128>),
    SumNum(Option<Decimal>),
    /// The sum, and whether a term was infinite (else an infinite sum overflowed).
    SumFloat(Option<f64>, bool),
    /// min/max so far: value and the bytes the shard sent.
    Extreme(Option<(Val, Bytes)>),
}

/// The groups of an aggregated result, in order of first appearance.
#[derive(Debug, Default)]
pub(super) struct Groups {
    roles: Vec<AggCol>,
    index: BTreeMap<Vec<Option<Val>>, usize>,
    rows: Vec<Vec<Cell>>,
}

fn out_of_range(what: &str) -> MergeError {
    MergeError::new(
        SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
        format!("{what} out of range"),
    )
}

fn name(columns: &Columns, at: usize) -> &str {
    &columns.cols[at].name
}

impl Groups {
    pub(super) fn new(roles: Vec<AggCol>) -> Groups {
        Groups {
            roles,
            ..Groups::default()
        }
    }

    /// Adds one shard's row.
    pub(super) fn add(
        &mut self,
        columns: &Columns,
        values: &[Option<&[u8]>],
    ) -> Result<(), MergeError> {
        let mut key = Vec::new();
        for (at, role) in self.roles.iter().enumerate() {
            if let AggCol::Group(d) = role {
                key.push(match values[at] {
                    None => None,
                    Some(raw) => Some(d.decode(raw, name(columns, at))?),
                });
            }
        }
        let g = match self.index.get(&key) {
            Some(&g) => g,
            None => {
                let cells = self.roles.iter().map(initial).collect();
                self.rows.push(cells);
                self.index.insert(key, self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        for (at, role) in self.roles.iter().enumerate() {
            let raw = values[at];
            let col = name(columns, at);
            let cell = &mut self.rows[g][at];
            match (role, cell) {
                (AggCol::Group(_) | AggCol::Carry, Cell::Raw(v)) => {
                    if v.is_none() {
                        *v = raw.map(Bytes::copy_from_slice);
                    }
                }
                (AggCol::Count { binary }, Cell::Count(n)) => {
                    if let Some(raw) = raw {
                        *n += int(raw, *binary, col)?;
                    }
                }
                (AggCol::Sum(SumKind::Int8, binary), Cell::SumInt(s)) => {
                    if let Some(raw) = raw {
                        *s = Some(s.unwrap_or(0) + int(raw, *binary, col)?);
                    }
                }
                (AggCol::Sum(SumKind::Numeric, binary), Cell::SumNum(s)) => {
                    if let Some(raw) = raw {
                        let d = if *binary {
                            Decimal::from_binary(raw)
                        } else {
                            std::str::from_utf8(raw).ok().and_then(Decimal::parse)
                        };
                        let d = d.ok_or_else(|| {
                            MergeError::malformed(format!("column \"{col}\": a bad numeric"))
                        })?;
                        *s = Some(match s.take() {
                            None => d,
                            Some(acc) => acc.add(&d),
                        });
                    }
                }
                (AggCol::Sum(SumKind::Float(f4), binary), Cell::SumFloat(s, inf)) => {
                    if let Some(raw) = raw {
                        let dec = Decoder {
                            kind: Kind::Float(*f4),
                            binary: *binary,
                            unsigned: false,
                        };
                        let Val::Float(f) = dec.decode(raw, col)? else {
                            continue;
                        };
                        *inf |= f.0.is_infinite();
                        *s = Some(s.unwrap_or(0.0) + f.0);
                    }
                }
                (AggCol::Min(d) | AggCol::Max(d), Cell::Extreme(best)) => {
                    if let Some(raw) = raw {
                        let v = d.decode(raw, col)?;
                        let max = matches!(role, AggCol::Max(_));
                        let replace = match best {
                            None => true,
                            Some((b, _)) => {
                                if max {
                                    v > *b
                                } else {
                                    v < *b
                                }
                            }
                        };
                        if replace {
                            *best = Some((v, Bytes::copy_from_slice(raw)));
                        }
                    }
                }
                _ => return Err(MergeError::misuse("merge: aggregate state mismatch")),
            }
        }
        Ok(())
    }

    /// The groups as DataRow messages, in ORDER BY order (else first appearance).
    pub(super) fn finish(&mut self, columns: &Columns) -> Result<Vec<Bytes>, MergeError> {
        let mut rows = Vec::with_capacity(self.rows.len());
        for cells in std::mem::take(&mut self.rows) {
            let mut values: Vec<Option<Bytes>> = Vec::with_capacity(cells.len());
            for (at, cell) in cells.into_iter().enumerate() {
                values.push(self.output(at, cell)?);
            }
            let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
            let key = columns.sort_key(&refs)?;
            rows.push((key, data_row(&refs)));
        }
        rows.sort_by(|a, b| compare(&columns.sort, &a.0, &b.0));
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }

    fn output(&self, at: usize, cell: Cell) -> Result<Option<Bytes>, MergeError> {
        let binary = match self.roles[at] {
            AggCol::Count { binary } | AggCol::Sum(_, binary) => binary,
            _ => false,
        };
        Ok(match cell {
            Cell::Raw(v) => v,
            Cell::Extreme(v) => v.map(|(_, raw)| raw),
            Cell::Count(n) => Some(int8(n, binary, "count")?),
            Cell::SumInt(s) => s.map(|n| int8(n, binary, "bigint")).transpose()?,
            Cell::SumNum(s) => s.map(|d| match binary {
                true => Bytes::from(d.to_binary()),
                false => Bytes::from(d.to_string()),
            }),
            Cell::SumFloat(s, inf) => match s {
                None => None,
                Some(v) => {
                    let f4 = matches!(self.roles[at], AggCol::Sum(SumKind::Float(true), _));
                    let overflow = if f4 {
                        (v as f32).is_infinite()
                    } else {
                        v.is_infinite()
                    };
                    if overflow && !inf {
                        return Err(out_of_range(if f4 { "real" } else { "double precision" }));
                    }
                    Some(match (binary, f4) {
                        (true, true) => Bytes::copy_from_slice(&(v as f32).to_be_bytes()),
                        (true, false) => Bytes::copy_from_slice(&v.to_be_bytes()),
                        (false, _) => Bytes::from(value::format_float(v, f4)),
                    })
                }
            },
        })
    }
}

fn initial(role: &AggCol) -> Cell {
    match role {
        AggCol::Group(_) | AggCol::Carry => Cell::Raw(None),
        AggCol::Count { .. } => Cell::Count(0),
        AggCol::Sum(SumKind::Int8, _) => Cell::SumInt(None),
        AggCol::Sum(SumKind::Numeric, _) => Cell::SumNum(None),
        AggCol::Sum(SumKind::Float(_), _) => Cell::SumFloat(None, false),
        AggCol::Min(_) | AggCol::Max(_) => Cell::Extreme(None),
    }
}

fn int(raw: &[u8], binary: bool, col: &str) -> Result<i128, MergeError> {
    match value::decode(Kind::Int, binary, raw) {
        Ok(Val::Int(n)) => Ok(i128::from(n)),
        Ok(_) => Err(MergeError::malformed(format!(
            "column \"{col}\": not an integer"
        ))),
        Err(e) => Err(MergeError::malformed(format!("column \"{col}\": {e}"))),
    }
}

fn int8(n: i128, binary: bool, what: &str) -> Result<Bytes, MergeError> {
    let n = i64::try_from(n).map_err(|_| out_of_range(what))?;
    Ok(if binary {
        Bytes::copy_from_slice(&n.to_be_bytes())
    } else {
        Bytes::from(n.to_string())
    })
}

/// A DataRow message of raw values (`None` = NULL).
pub(super) fn data_row(values: &[Option<&[u8]>]) -> Bytes {
    let len = 4
        + 2
        + values
            .iter()
            .map(|v| 4 + v.map_or(0, <[u8]>::len))
            .sum::<usize>();
    let mut b = BytesMut::with_capacity(1 + len);
    b.put_u8(tag::DATA_ROW);
    b.put_u32(len as u32);
    b.put_u16(values.len() as u16);
    for v in values {
        match v {
            Some(v) => {
                b.put_i32(v.len() as i32);
                b.put_slice(v);
            }
            None => b.put_i32(-1),
        }
    }
    b.freeze()
}
