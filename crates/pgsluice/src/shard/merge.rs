//! Answering a SELECT that ran on every shard: plain row concatenation, ORDER BY as a
//! merge of the shards' sorted streams with LIMIT/OFFSET applied once, and count /
//! sum / min / max with or without GROUP BY on returned columns, re-aggregated.
//!
//! What cannot be merged correctly (avg without its sum and count, DISTINCT, window
//! functions, ORDER BY on a column not returned, HAVING...) is refused by
//! [`plan_select`], before anything runs. What only the results tell (a column type
//! the merge cannot compare, text ordered by a collation other than C, shards that
//! disagree on the columns) fails the [`Merger`] with a [`MergeError`].
//!
//! Parts: `merge_plan.rs` analyzes the statement (with `merge_targets.rs` and
//! `merge_walk.rs`), `merge_columns.rs` resolves the plan
//! against the RowDescription, `merge_agg.rs` re-aggregates, `merge_value.rs` and
//! `merge_decimal.rs` decode, order and add values.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use pg_query::protobuf::SelectStmt;
use pg_query::{Node, NodeEnum};
use pgsluice_protocol::backend::{self, tag};
use pgsluice_protocol::SqlState;

use super::Unsupported;

#[path = "merge_agg.rs"]
mod agg;
#[cfg(test)]
#[path = "merge_agg_tests.rs"]
mod agg_tests;
#[path = "merge_columns.rs"]
mod columns;
#[path = "merge_decimal.rs"]
mod decimal;
#[cfg(test)]
#[path = "merge_pg_tests.rs"]
mod pg_tests;
#[cfg(test)]
#[path = "merge_plan_tests.rs"]
mod plan_tests;
#[path = "merge_plan.rs"]
mod planning;
#[path = "merge_targets.rs"]
mod targets;
#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
#[path = "merge_value.rs"]
mod value;
#[path = "merge_walk.rs"]
mod walk;

pub use planning::{AggKind, Role};

use columns::Columns;
use value::Val;

/// How the shards' results of one SELECT combine. Built once per statement text.
#[derive(Debug, Clone, PartialEq)]
pub struct MergePlan {
    shape: planning::Shape,
    shard_sql: Option<String>,
}

/// Plans the merge of a SELECT run on every shard, or refuses it.
pub fn plan_select(select: &SelectStmt) -> Result<MergePlan, Unsupported> {
    let (shape, rewritten) = planning::analyze(select)?;
    let shard_sql = match rewritten {
        None => None,
        Some(stmt) => {
            let node = Node {
                node: Some(NodeEnum::SelectStmt(Box::new(stmt))),
            };
            Some(
                node.deparse(pg_query::DeparseOptions::default())
                    .map_err(|e| {
                        Unsupported::feature(format!(
                            "cannot rewrite LIMIT/OFFSET for the shards: {e}"
                        ))
                    })?,
            )
        }
    };
    Ok(MergePlan { shape, shard_sql })
}

impl MergePlan {
    /// The statement each shard runs when it differs from the client's (LIMIT l
    /// OFFSET o becomes LIMIT l+o on the shards); `None`: the client's text as is.
    pub fn shard_sql(&self) -> Option<&str> {
        self.shard_sql.as_deref()
    }

    /// Rows go to the client as the shards send them ([`Merger::drain`]); otherwise
    /// they come out of a merge of sorted streams or at [`Merger::finish`].
    pub fn streams(&self) -> bool {
        self.shape.sort.is_empty() && self.shape.aggregate.is_none()
    }

    /// The result is sorted (ORDER BY) by pgsluice.
    pub fn sorted(&self) -> bool {
        !self.shape.sort.is_empty()
    }

    /// The SELECT aggregates: per output column, a GROUP BY key, a merged aggregate,
    /// or a value carried over; `None` for row-wise results.
    pub fn aggregate_roles(&self) -> Option<&[Role]> {
        self.shape.aggregate.as_deref()
    }

    /// The LIMIT the client asked for (`None`: none) and its OFFSET (0: none).
    pub fn limit_offset(&self) -> (Option<u64>, u64) {
        (self.shape.limit, self.shape.offset)
    }
}

/// A result the shards sent that cannot be merged (e.g. a sum that overflows, a
/// column type the merge cannot compare). The client gets an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MergeError {
    /// The SQLSTATE for the client.
    pub sqlstate: pgsluice_protocol::SqlState,
    /// What went wrong.
    pub message: String,
}

impl MergeError {
    fn new(sqlstate: SqlState, message: impl Into<String>) -> MergeError {
        MergeError {
            sqlstate,
            message: message.into(),
        }
    }

    /// A result pgsluice cannot merge (0A000).
    fn unsupported(message: impl Into<String>) -> MergeError {
        MergeError::new(SqlState::FEATURE_NOT_SUPPORTED, message)
    }

    /// A malformed message from a shard (08P01).
    fn malformed(message: impl Into<String>) -> MergeError {
        MergeError::new(SqlState::PROTOCOL_VIOLATION, message)
    }

    /// The driver used the merger out of order (XX000).
    fn misuse(message: impl Into<String>) -> MergeError {
        MergeError::new(SqlState::INTERNAL_ERROR, message)
    }
}

/// One shard's stream.
#[derive(Debug, Default)]
struct ShardState {
    done: bool,
    /// Sorted merge: rows received, not yet merged, with their sort keys.
    queue: VecDeque<(Vec<Option<Val>>, Bytes)>,
    /// Sorted merge: the last key received, to check the shard's order.
    last: Option<Vec<Option<Val>>>,
}

/// Combines the backend messages of one statement from every shard into the
/// client's result.
#[derive(Debug)]
pub struct Merger {
    plan: MergePlan,
    text_bytes_order: bool,
    shards: Vec<ShardState>,
    /// The first RowDescription, resolved against the plan.
    columns: Option<Columns>,
    describe: bool,
    described: bool,
    /// Concatenation: rows waiting for `drain`.
    pending: VecDeque<Bytes>,
    groups: agg::Groups,
    skipped: u64,
    sent: u64,
    empty: usize,
    finished: bool,
}

impl Merger {
    /// A merger of `shards` result streams. `text_bytes_order`: the database's text
    /// ordering is byte order (collation "C" or "POSIX"); otherwise an ORDER BY or
    /// min/max on a text column is an error (pgsluice would not order as the server does).
    pub fn new(plan: &MergePlan, shards: usize, text_bytes_order: bool) -> Merger {
        Merger {
            plan: plan.clone(),
            text_bytes_order,
            shards: (0..shards).map(|_| ShardState::default()).collect(),
            columns: None,
            describe: true,
            described: false,
            pending: VecDeque::new(),
            groups: agg::Groups::default(),
            skipped: 0,
            sent: 0,
            empty: 0,
            finished: false,
        }
    }

    /// Does not send the client a RowDescription (the extended protocol, when the
    /// client did not Describe and the session described the portal to the shards
    /// only so the merge knows the columns).
    pub fn without_row_description(mut self) -> Merger {
        self.describe = false;
        self
    }

    /// One whole backend message (tag, length, body) of shard `shard`'s result:
    /// RowDescription, DataRow, CommandComplete or EmptyQueryResponse. (The session
    /// handles ErrorResponse, NoticeResponse, ParameterStatus, ReadyForQuery itself.)
    pub fn push(&mut self, shard: usize, msg: &[u8]) -> Result<(), MergeError> {
        if self.finished {
            return Err(MergeError::misuse("merge: message after finish"));
        }
        let Some(state) = self.shards.get(shard) else {
            return Err(MergeError::misuse(format!("merge: no shard {shard}")));
        };
        if state.done {
            return Err(MergeError::malformed(format!(
                "shard {shard} sent a message after its result ended"
            )));
        }
        let (&kind, body) = match msg.split_first() {
            Some((k, rest)) if rest.len() >= 4 => (k, &rest[4..]),
            _ => return Err(MergeError::malformed("a truncated message from a shard")),
        };
        match kind {
            tag::ROW_DESCRIPTION => self.row_description(msg, body),
            tag::DATA_ROW => self.data_row(shard, msg, body),
            tag::COMMAND_COMPLETE => {
                self.shards[shard].done = true;
                Ok(())
            }
            tag::EMPTY_QUERY => {
                self.shards[shard].done = true;
                self.empty += 1;
                Ok(())
            }
            other => Err(MergeError::misuse(format!(
                "merge: unexpected message {:?} from shard {shard}",
                other as char
            ))),
        }
    }

    fn row_description(&mut self, msg: &[u8], body: &[u8]) -> Result<(), MergeError> {
        let cols = columns::parse_row_description(body)?;
        match &self.columns {
            Some(known) => known.check_same(&cols),
            None => {
                let resolved = Columns::resolve(
                    &self.plan.shape,
                    cols,
                    Bytes::copy_from_slice(msg),
                    self.text_bytes_order,
                )?;
                if let Some(roles) = &resolved.aggregate {
                    self.groups = agg::Groups::new(roles.clone());
                }
                self.columns = Some(resolved);
                Ok(())
            }
        }
    }

    fn data_row(&mut self, shard: usize, msg: &[u8], body: &[u8]) -> Result<(), MergeError> {
        if self.plan.streams() {
            self.pending.push_back(Bytes::copy_from_slice(msg));
            return Ok(());
        }
        let Some(columns) = &self.columns else {
            return Err(MergeError::misuse(
                "merge: a sorted or aggregated result needs the RowDescription first (Describe the portal)",
            ));
        };
        let values = backend::parse_data_row(body).map_err(|e| {
            MergeError::malformed(format!("a malformed DataRow from shard {shard}: {e}"))
        })?;
        if values.len() != columns.cols.len() {
            return Err(MergeError::malformed(format!(
                "shard {shard} sent a DataRow of {} columns",
                values.len()
            )));
        }
        if columns.aggregate.is_some() {
            return self.groups.add(columns, &values);
        }
        if self.limit_reached() {
            return Ok(());
        }
        let key = columns.sort_key(&values)?;
        let state = &mut self.shards[shard];
        if let Some(last) = &state.last {
            if columns::compare(&columns.sort, last, &key).is_gt() {
                return Err(MergeError::unsupported(format!(
                    "shard {shard} returned rows in another order than pgsluice compares them (a collation?)"
                )));
            }
        }
        state.last = Some(key.clone());
        state.queue.push_back((key, Bytes::copy_from_slice(msg)));
        Ok(())
    }

    fn limit_reached(&self) -> bool {
        self.plan.shape.limit.is_some_and(|l| self.sent >= l)
    }

    /// Sends a row unless OFFSET skips it or LIMIT is reached.
    fn emit(&mut self, row: &[u8], out: &mut BytesMut) {
        if self.skipped < self.plan.shape.offset {
            self.skipped += 1;
        } else if !self.limit_reached() {
            out.extend_from_slice(row);
            self.sent += 1;
        }
    }

    fn describe_once(&mut self, out: &mut BytesMut) {
        if let (false, Some(c)) = (self.described, &self.columns) {
            if self.describe {
                out.extend_from_slice(&c.message);
            }
            self.described = true;
        }
    }

    /// Appends to `out` what the client can be sent now (rows of a plain
    /// concatenation stream out as they come; sorted and aggregated results wait).
    pub fn drain(&mut self, out: &mut BytesMut) -> Result<(), MergeError> {
        if self.finished {
            return Ok(());
        }
        self.describe_once(out);
        while let Some(row) = self.pending.pop_front() {
            self.emit(&row, out);
        }
        if self.plan.sorted() && self.plan.shape.aggregate.is_none() {
            self.merge_sorted(out);
        }
        Ok(())
    }

    /// Emits the smallest head row while every unfinished shard has one queued.
    fn merge_sorted(&mut self, out: &mut BytesMut) {
        let Some(columns) = self.columns.take() else {
            return;
        };
        loop {
            if self.limit_reached() {
                self.shards.iter_mut().for_each(|s| s.queue.clear());
                break;
            }
            if self.shards.iter().any(|s| !s.done && s.queue.is_empty()) {
                break;
            }
            let mut best: Option<usize> = None;
            for (i, s) in self.shards.iter().enumerate() {
                let Some((key, _)) = s.queue.front() else {
                    continue;
                };
                let better = match best {
                    None => true,
                    Some(b) => {
                        let bk = &self.shards[b].queue.front().map(|(k, _)| k);
                        bk.is_some_and(|bk| columns::compare(&columns.sort, key, bk).is_lt())
                    }
                };
                if better {
                    best = Some(i);
                }
            }
            let Some(b) = best else { break };
            if let Some((_, row)) = self.shards[b].queue.pop_front() {
                self.emit(&row, out);
            }
        }
        self.columns = Some(columns);
    }

    /// After every shard's CommandComplete: the rest of the client's result
    /// (RowDescription if not sent yet, DataRows, CommandComplete `SELECT n`).
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), MergeError> {
        if self.finished {
            return Err(MergeError::misuse("merge: finish called twice"));
        }
        if let Some(s) = self.shards.iter().position(|s| !s.done) {
            return Err(MergeError::misuse(format!(
                "merge: finish before shard {s} completed"
            )));
        }
        if !self.shards.is_empty() && self.empty == self.shards.len() {
            self.finished = true;
            backend::empty_query(out);
            return Ok(());
        }
        self.drain(out)?;
        if let Some(columns) = &self.columns {
            if columns.aggregate.is_some() {
                let rows = self.groups.finish(columns)?;
                for row in rows {
                    self.emit(&row, out);
                }
            }
        }
        self.finished = true;
        backend::command_complete(out, &format!("SELECT {}", self.sent));
        Ok(())
    }
}
