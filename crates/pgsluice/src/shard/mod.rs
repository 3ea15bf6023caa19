//! Sharding: one logical database over several PostgreSQL servers.
//!
//! Rows are placed exactly as PostgreSQL's `PARTITION BY HASH (key)` with modulus =
//! number of shards would place them ([`hash`]), so data moves between pgsluice shards
//! and native hash partitions without rehashing. The rest is sans-IO as well:
//! [`plan`] decides from a statement's parse tree where it runs, [`merge`] combines
//! the results of a statement that ran on every shard, [`copy`] splits the rows of a
//! `COPY ... FROM STDIN` by their key. The client session (`client::shard_session`)
//! drives them over the shards' pools.
//!
//! Nothing here does I/O or knows about clients, pools or servers.

pub mod copy;
pub mod hash;
pub mod merge;
pub mod plan;

use pgsluice_protocol::SqlState;

pub use hash::{KeyType, KeyValue};

/// Something a sharded database cannot do correctly: the client gets an
/// ErrorResponse with this SQLSTATE and message, never a partial answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unsupported {
    /// Usually `FEATURE_NOT_SUPPORTED` (0A000).
    pub sqlstate: SqlState,
    /// Names what is unsupported, e.g. "avg() over several shards".
    pub message: String,
}

impl Unsupported {
    /// A `FEATURE_NOT_SUPPORTED` refusal.
    pub fn feature(message: impl Into<String>) -> Unsupported {
        Unsupported {
            sqlstate: SqlState::FEATURE_NOT_SUPPORTED,
            message: message.into(),
        }
    }
}
