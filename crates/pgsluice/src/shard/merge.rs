//! Answering a SELECT that ran on every shard: plain row concatenation, ORDER BY as a
//! merge of the shards' sorted streams with LIMIT/OFFSET applied once, and count /
//! sum / min / max with or without GROUP BY on returned columns, re-aggregated.
//!
//! What cannot be merged correctly (avg without its sum and count, DISTINCT, window
//! functions, ORDER BY on a column not returned, HAVING...) is refused by
//! [`plan_select`], before anything runs.
//!
//! OWNER: helper "shardmerge" fills the bodies.

use bytes::BytesMut;
use pg_query::protobuf::SelectStmt;

use super::Unsupported;

/// How the shards' results of one SELECT combine. Built once per statement text.
#[derive(Debug, Clone, PartialEq)]
pub struct MergePlan {
    _private: (),
}

/// Plans the merge of a SELECT run on every shard, or refuses it.
pub fn plan_select(select: &SelectStmt) -> Result<MergePlan, Unsupported> {
    let _ = select;
    todo!("shardmerge")
}

impl MergePlan {
    /// The statement each shard runs when it differs from the client's (LIMIT l
    /// OFFSET o becomes LIMIT l+o on the shards); `None`: the client's text as is.
    pub fn shard_sql(&self) -> Option<&str> {
        todo!("shardmerge")
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

/// Combines the backend messages of one statement from every shard into the
/// client's result.
#[derive(Debug)]
pub struct Merger {
    _private: (),
}

impl Merger {
    /// A merger of `shards` result streams. `text_bytes_order`: the database's text
    /// ordering is byte order (collation "C" or "POSIX"); otherwise an ORDER BY or
    /// min/max on a text column is an error (pgsluice would not order as the server does).
    pub fn new(plan: &MergePlan, shards: usize, text_bytes_order: bool) -> Merger {
        let _ = (plan, shards, text_bytes_order);
        todo!("shardmerge")
    }

    /// One whole backend message (tag, length, body) of shard `shard`'s result:
    /// RowDescription, DataRow, CommandComplete or EmptyQueryResponse. (The session
    /// handles ErrorResponse, NoticeResponse, ParameterStatus, ReadyForQuery itself.)
    pub fn push(&mut self, shard: usize, msg: &[u8]) -> Result<(), MergeError> {
        let _ = (shard, msg);
        todo!("shardmerge")
    }

    /// Appends to `out` what the client can be sent now (rows of a plain
    /// concatenation stream out as they come; sorted and aggregated results wait).
    pub fn drain(&mut self, out: &mut BytesMut) -> Result<(), MergeError> {
        let _ = out;
        todo!("shardmerge")
    }

    /// After every shard's CommandComplete: the rest of the client's result
    /// (RowDescription if not sent yet, DataRows, CommandComplete `SELECT n`).
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), MergeError> {
        let _ = out;
        todo!("shardmerge")
    }
}
