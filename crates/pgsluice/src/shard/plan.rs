//! Where a statement runs on a sharded database, decided from its parse tree
//! (PostgreSQL's own parser, `pg_query`): one shard by its key (a literal, or a Bind
//! parameter), every shard (DDL; a SELECT without the key, merged), split by rows
//! (multi-row INSERT, COPY FROM STDIN), or refused with a reason.
//!
//! # Rules
//!
//! Tables are matched by name as PostgreSQL folds it; a [`ShardedTable`] without a
//! schema matches the table in any schema, and an unqualified name matches a sharded
//! table whatever its configured schema. Names of the statement's own WITH queries,
//! and system catalogs (`pg_catalog.*`, `information_schema.*`, unqualified `pg_*`),
//! are not tables here. Every other table is *unsharded*: it lives on shard 0 (the
//! home shard).
//!
//! - **Home**: statements that touch no sharded table and are not DDL (`SELECT 1`,
//!   unsharded tables, `SHOW`, functions, `CALL`, `LISTEN`/`NOTIFY`/`UNLISTEN`,
//!   cursors over unsharded tables and `FETCH`/`MOVE`/`CLOSE`, `CREATE TABLE AS` /
//!   `SELECT INTO` / `REFRESH MATERIALIZED VIEW` over unsharded tables, COPY of
//!   unsharded tables). A sharded table anywhere counts: in a subquery, a CTE, a join,
//!   a function's argument. Text the parser rejects is Home too: the syntax error is
//!   the same on every shard, and the server reports it in its own words.
//! - **All** (every shard): DDL (CREATE / ALTER / DROP of tables, indexes, schemas,
//!   views, sequences, functions, types, extensions, triggers, policies, roles...),
//!   COMMENT, GRANT / REVOKE, TRUNCATE, VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT,
//!   SET / RESET of ordinary settings (SET TRANSACTION too), DISCARD, `DEALLOCATE ALL`.
//! - **Overrides**: `SET pgsluice.shard = n` (or `TO n`) is [`Plan::SetShard`]`(Some(n))`,
//!   `RESET pgsluice.shard` and `SET pgsluice.shard TO DEFAULT` are `SetShard(None)`;
//!   `SET LOCAL pgsluice.shard` is refused. A comment `/* pgsluice: shard=n */` (or
//!   `-- pgsluice: shard=n`) anywhere in the text sends every statement of the text to
//!   shard n, refusals included, except transaction control, `SET pgsluice.shard` and
//!   SQL-level PREPARE / EXECUTE. An n out of range is refused with SQLSTATE 22023.
//! - **INSERT ... VALUES** into a sharded table: the key of each row is a literal
//!   (integer, string, negative number, NULL, a literal cast to a type of the key's
//!   family) or a parameter `$k` (possibly cast); an explicit NULL goes to shard 0, as
//!   PostgreSQL places NULL, but a key column left out is refused (its default, a serial
//!   or identity, is computed by the server after the shard is chosen). Without a column
//!   list the key is at
//!   [`ShardedTable::key_position`]. One shard for all rows: [`Plan::Shard`] /
//!   [`Plan::ByParam`]; literal keys on several shards: [`Plan::SplitInsert`] (one
//!   statement per shard, rows in order, RETURNING and ON CONFLICT kept), refused when
//!   the statement has parameters. Refused: INSERT ... SELECT, a DEFAULT or expression
//!   key, ON CONFLICT DO UPDATE of the key, subqueries or CTEs reading tables, rows
//!   keyed by different parameters.
//! - **SELECT / UPDATE / DELETE**: the WHERE clause's top-level AND conjuncts (and
//!   the ON conditions of inner joins) pin a sharded table's key: `key = literal`,
//!   `key = $k` (either side, qualified by table or alias, casts allowed), `key IN
//!   (one value)`, `key IS NULL`; equalities of key columns (`a.key = b.key`, `JOIN
//!   USING`/`NATURAL` on the key, `key IN (SELECT key ...)`, correlated `b.key =
//!   a.key`) link tables, and a pin flows along them into the joined table (not out of
//!   an outer join's nullable side, nor out of a subquery). When one shard holds the
//!   rows every sharded table reference needs: that shard. Otherwise a SELECT whose
//!   sharded tables are all linked by key equalities (a co-located join, correct per
//!   shard) runs on every shard and is merged ([`Plan::FanOut`], by
//!   [`super::merge::plan_select`], which refuses what it cannot merge); tables not
//!   linked are refused ("join of sharded tables a and b on non-key columns"). A
//!   fan-out also needs every sharded table in the top-level SELECT's FROM list
//!   (joins included) or in a subquery of an expression tied to those rows by key
//!   (`i.key = o.key`, `o.key IN (SELECT i.key ...)`); one in a FROM subquery, a WITH
//!   query or a set operation, not pinned, is refused (each shard would see only its
//!   part of the subquery's rows). `key IS NULL` pins nothing on the nullable side of
//!   an outer join below the condition (the join's added rows match it too). Refused:
//!   UPDATE / DELETE without the key (a write on several shards), UPDATE of the key
//!   column, `SELECT ... FOR UPDATE` without the key, MERGE into a sharded table,
//!   data-modifying WITH over sharded tables, `CREATE TABLE AS` / `SELECT INTO` over a
//!   sharded table, and any statement that mixes sharded and unsharded tables (the
//!   unsharded ones live on shard 0 only; the override comment is the escape hatch).
//! - **COPY**: `COPY sharded [(columns)] FROM STDIN` is [`Plan::CopyIn`] (key field
//!   from the column list, else the key position; a list without the key is refused).
//!   COPY TO of a sharded table or a query over one is refused, and so is COPY FROM a
//!   server file or program into a sharded table (every row would land on one shard:
//!   use `COPY FROM STDIN`, psql's `\copy`). COPY of unsharded tables is Home.
//! - **Transaction control**: [`Plan::Transaction`]; COMMIT / ROLLBACK AND CHAIN are
//!   refused.
//! - **EXPLAIN** plans like its statement; an EXPLAIN that would run on every shard
//!   (or be split) is refused, as its plan would describe one shard's part only.
//! - **SQL-level PREPARE / EXECUTE / DEALLOCATE name** are refused (use protocol-level
//!   prepared statements); `DO` blocks are refused (they may write anywhere), as are
//!   `LOCK` of a sharded table and cursors over sharded tables.
//!
//! # Several statements in one text
//!
//! Each is planned, then: any refusal refuses the text; transaction control is set
//! aside; what remains must agree: all Home, all All, or all the same shard or
//! parameter (Home counts as shard 0) gives that plan; a text of transaction control
//! only must be one statement. Anything else (two shards, a fan-out, a split INSERT,
//! COPY, `SET pgsluice.shard` among other statements) is refused: "statements of one
//! query string go to different shards; send them separately".
//!
//! Plans are cached by exact text (bounded, see [`Planner::new`]).
//!
//! Files: `plan_stmt` (per statement kind, combination), `plan_utility`
//! (overrides, DDL, transaction control, COPY), `plan_query` (SELECT / UPDATE /
//! DELETE: scopes, pins and links) with `plan_query_expr` (subqueries inside
//! expressions) and `plan_query_outcome` (the conclusion), `plan_insert`, `plan_key` (literals, parameters, their shard),
//! `plan_walk` (every table a statement names), `plan_cache`.

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

#[path = "plan_cache.rs"]
mod cache;
#[path = "plan_insert.rs"]
mod insert;
#[path = "plan_key.rs"]
mod key;
#[path = "plan_query.rs"]
mod query;
#[path = "plan_stmt.rs"]
mod stmt;
#[path = "plan_utility.rs"]
mod utility;
#[path = "plan_walk.rs"]
mod walk;

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
#[cfg(test)]
#[path = "plan_tests_dml.rs"]
mod tests_dml;
#[cfg(test)]
#[path = "plan_tests_fanout.rs"]
mod tests_fanout;

/// Plans requests of one sharded database; caches plans by statement text.
#[derive(Debug)]
pub struct Planner {
    sharding: Sharding,
    cache: cache::PlanCache,
}

impl Planner {
    /// A planner for `sharding`, remembering up to `cache_capacity` plans.
    pub fn new(sharding: Sharding, cache_capacity: usize) -> Planner {
        Planner {
            sharding,
            cache: cache::PlanCache::new(cache_capacity),
        }
    }

    /// The sharding the planner uses.
    pub fn sharding(&self) -> &Sharding {
        &self.sharding
    }

    /// The plan of a simple Query's text or a Parse message's statement (one or more
    /// statements; several are planned together: they must all run in one place).
    pub fn plan(&self, sql: &str) -> Arc<Plan> {
        self.cache
            .get_or(sql, |sql| Arc::new(stmt::plan_text(&self.sharding, sql)))
    }
}

impl Sharding {
    /// The index of the sharded table a statement names `schema.name` (`schema`
    /// empty when unqualified).
    pub fn table_index(&self, schema: &str, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| {
            t.name == name && (schema.is_empty() || t.schema.as_deref().is_none_or(|s| s == schema))
        })
    }
}
