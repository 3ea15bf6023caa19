//! Where a statement runs on a sharded database, decided from its parse tree
//! (PostgreSQL's own parser, `pg_query`): one shard by its key (a literal, or a Bind
//! parameter), every shard (DDL; a SELECT without the key, merged), split by rows
//! (multi-row INSERT, COPY FROM STDIN), or refused with a reason.
//!
//! OWNER: helper "shardplan" fills the bodies.

use std::sync::Arc;

use super::copy::CopyOptions;
use super::hash::KeyType;
use super::merge::MergePlan;
use super::Unsupported;

/// The sharding of one database, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharding {
    /// Number of shards (the modulus).
    pub shards: usize,
    /// The tables split over the shards.
    pub tables: Vec<ShardedTable>,
}

/// One table split over the shards by one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedTable {
    /// Schema, when the configuration names one (`schema.table`); `None` matches the
    /// table in any schema.
    pub schema: Option<String>,
    /// Table name (as PostgreSQL folds it: unquoted names lower-cased).
    pub name: String,
    /// The key column.
    pub column: String,
    /// The key's type: from the configuration, or looked up in the first shard's
    /// catalog by the session; `None` while unknown (a plan that needs to hash a key
    /// of this table is then refused, naming the `type` setting).
    pub key_type: Option<KeyType>,
    /// The key column's position among the table's columns (0-based, in the order
    /// `INSERT` without a column list and `COPY` without one use), looked up in the
    /// first shard's catalog by the session; `None` while unknown (such an INSERT or
    /// COPY is then refused).
    pub key_position: Option<usize>,
}

/// A transaction-control statement, handled by the session (it defers BEGIN until
/// the transaction's shard is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnCommand {
    /// BEGIN / START TRANSACTION (with its text, options included).
    Begin(String),
    /// COMMIT / END (COMMIT AND CHAIN is refused by the planner).
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
    /// SAVEPOINT, RELEASE, ROLLBACK TO: runs on the transaction's shard.
    Savepoint,
    /// PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED: refused unless the
    /// session allows it.
    TwoPhase,
}

/// Where a request runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Touches no sharded table and is not DDL: the first shard (the "home" shard,
    /// where unsharded tables live).
    Home,
    /// Every shard runs it (CREATE / ALTER / DROP TABLE, CREATE INDEX, other DDL);
    /// the client gets the first shard's reply once all succeeded.
    All,
    /// One shard, known from a literal key or an override comment.
    Shard(usize),
    /// One shard, from the value of Bind parameter `index` (0-based), hashed as
    /// `key_type` (its format comes from the Bind).
    ByParam {
        /// The parameter.
        index: usize,
        /// The key's type.
        key_type: KeyType,
    },
    /// A multi-row INSERT ... VALUES with literal keys on several shards: the
    /// statement each shard runs (rows kept in order); the client gets `INSERT 0 n`
    /// summed.
    SplitInsert(Vec<(usize, String)>),
    /// Every shard runs it (a SELECT without the key); results merged.
    FanOut(Arc<MergePlan>),
    /// `COPY table [(columns)] FROM STDIN` into a sharded table.
    CopyIn {
        /// Index into [`Sharding::tables`].
        table: usize,
        /// The key's field position in each row: from the statement's column list,
        /// else [`ShardedTable::key_position`].
        key_column: usize,
        /// Format options.
        options: CopyOptions,
    },
    /// Transaction control.
    Transaction(TxnCommand),
    /// `SET pgsluice.shard = n` (`Some(n)`) or `RESET pgsluice.shard` (`None`): the
    /// session routes its following statements to shard n until reset.
    SetShard(Option<usize>),
    /// Refused, with the reason.
    Refuse(Unsupported),
}

/// Plans requests of one sharded database; caches plans by statement text.
#[derive(Debug)]
pub struct Planner {
    _private: (),
}

impl Planner {
    /// A planner for `sharding`, remembering up to `cache_capacity` plans.
    pub fn new(sharding: Sharding, cache_capacity: usize) -> Planner {
        let _ = (sharding, cache_capacity);
        todo!("shardplan")
    }

    /// The sharding the planner uses.
    pub fn sharding(&self) -> &Sharding {
        todo!("shardplan")
    }

    /// The plan of a simple Query's text or a Parse message's statement (one or more
    /// statements; several are planned together: they must all run in one place).
    pub fn plan(&self, sql: &str) -> Arc<Plan> {
        let _ = sql;
        todo!("shardplan")
    }
}
