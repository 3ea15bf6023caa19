//! Planner tests: statements, overrides, transactions, COPY, combination, cache.
//! Queries and INSERT are in `plan_tests_dml.rs`.

use std::sync::Arc;

use pgsluice_protocol::SqlState;

use super::*;
use crate::shard::hash::{partition_hash, shard_of_hash, KeyValue};

/// `orders(customer_id)` (key first), `items(customer_id)` (key second),
/// `app.users(id)` (position unknown), all keyed by `ty`.
pub(super) fn sharding(shards: usize, ty: KeyType) -> Sharding {
    let table = |schema: Option<&str>, name: &str, column: &str, position| ShardedTable {
        schema: schema.map(str::to_owned),
        name: name.into(),
        column: column.into(),
        key_type: Some(ty),
        key_position: position,
    };
    Sharding {
        shards,
        tables: vec![
            table(None, "orders", "customer_id", Some(0)),
            table(None, "items", "customer_id", Some(1)),
            table(Some("app"), "users", "id", None),
        ],
    }
}

pub(super) fn planner(shards: usize, ty: KeyType) -> Planner {
    Planner::new(sharding(shards, ty), 100)
}

pub(super) fn plan(p: &Planner, sql: &str) -> Plan {
    Plan::clone(&p.plan(sql))
}

/// The refusal's message; panics on any other plan.
#[track_caller]
pub(super) fn refused(p: &Planner, sql: &str) -> Unsupported {
    match plan(p, sql) {
        Plan::Refuse(u) => u,
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

#[track_caller]
pub(super) fn refused_with(p: &Planner, sql: &str, words: &str) {
    let u = refused(p, sql);
    assert!(
        u.message.contains(words),
        "{sql}: {:?} does not mention {words:?}",
        u.message
    );
}

pub(super) fn int_shard(v: i64, shards: usize) -> usize {
    shard_of_hash(partition_hash(&KeyValue::Int(v)), shards)
}

#[test]
fn statements_without_sharded_tables_go_home() {
    let p = planner(2, KeyType::BigInt);
    for sql in [
        "select 1",
        "SELECT now(), version()",
        "select * from customers where id = 1",
        "select * from customers c join accounts a on a.id = c.account_id",
        "update customers set name = 'x' where id = 3",
        "delete from customers",
        "insert into customers values (1, 'x')",
        "show search_path",
        "select f(1)",
        "values (1), (2)",
        "select * from pg_class, pg_catalog.pg_namespace, information_schema.tables",
        "listen ch",
        "notify ch, 'x'",
        "unlisten *",
        "call proc(1)",
        "fetch 10 from c",
        "close c",
        "declare c cursor for select * from customers",
        "create table copy_of_customers as select * from customers",
        "select * into temp t from customers",
        "lock table customers",
        "refresh materialized view mv",
        "copy customers from stdin",
        "copy customers to stdout",
        "copy (select * from customers) to stdout",
        "copy customers from '/tmp/x.csv'",
        "merge into customers c using accounts a on a.id = c.id when matched then delete",
        // A quoted name is another table than the folded one.
        "select * from \"Orders\"",
        "select * from other.users",
        "",
        ";",
        // Syntax errors: the server says what is wrong.
        "selec 1",
        "select * from orders where",
    ] {
        assert_eq!(plan(&p, sql), Plan::Home, "{sql}");
    }
}

#[test]
fn ddl_and_maintenance_go_to_every_shard() {
    let p = planner(3, KeyType::BigInt);
    for sql in [
        "create table orders (customer_id bigint, note text)",
        "CREATE TABLE t (a int) PARTITION BY HASH (a)",
        "alter table orders add column x int",
        "drop table orders, customers",
        "create index on orders (note)",
        "create unique index concurrently i on orders (customer_id, note)",
        "drop index i",
        "create schema s",
        "create view v as select * from orders",
        "drop view v",
        "create sequence s",
        "drop sequence s",
        "alter sequence s restart",
        "create function f() returns int language sql as 'select 1'",
        "drop function f",
        "create type mood as enum ('a', 'b')",
        "create type pair as (a int, b int)",
        "drop type mood",
        "create extension pgcrypto",
        "drop extension pgcrypto",
        "comment on table orders is 'x'",
        "grant select on orders to bob",
        "revoke all on orders from bob",
        "truncate orders",
        "truncate customers",
        "vacuum orders",
        "vacuum",
        "analyze orders",
        "cluster orders using i",
        "reindex table orders",
        "checkpoint",
        "create role bob",
        "alter table orders rename to orders2",
        "create trigger t before insert on orders for each row execute function f()",
        "create domain d as int",
        "set search_path = app, public",
        "set local statement_timeout = 5",
        "SET TIME ZONE 'UTC'",
        "set transaction isolation level serializable",
        "reset statement_timeout",
        "reset all",
        "discard all",
        "deallocate all",
        "set constraints all deferred",
    ] {
        assert_eq!(plan(&p, sql), Plan::All, "{sql}");
    }
}

#[test]
fn create_table_as_over_a_sharded_table_is_refused() {
    let p = planner(2, KeyType::BigInt);
    refused_with(&p, "create table o2 as select * from orders", "orders");
    refused_with(
        &p,
        "create materialized view mv as select * from orders",
        "orders",
    );
    refused_with(
        &p,
        "select * into o2 from orders where customer_id = 1",
        "SELECT INTO",
    );
    refused_with(
        &p,
        "explain create table o2 as select * from orders",
        "orders",
    );
}

#[test]
fn set_pgsluice_shard_overrides_and_is_range_checked() {
    let p = planner(3, KeyType::BigInt);
    for (sql, want) in [
        ("set pgsluice.shard = 1", Some(1)),
        ("SET pgsluice.shard TO 2", Some(2)),
        ("set pgsluice.shard = '0'", Some(0)),
        ("set session pgsluice.shard = 1", Some(1)),
        ("reset pgsluice.shard", None),
        ("set pgsluice.shard to default", None),
    ] {
        assert_eq!(plan(&p, sql), Plan::SetShard(want), "{sql}");
    }
    for sql in [
        "set pgsluice.shard = 3",
        "set pgsluice.shard = -1",
        "set pgsluice.shard = 'two'",
        "set pgsluice.shard = 1.5",
        "set pgsluice.shard = 1, 2",
    ] {
        let u = refused(&p, sql);
        assert_eq!(
            u.sqlstate,
            SqlState::INVALID_PARAMETER_VALUE,
            "{sql}: {u:?}"
        );
    }
    assert_eq!(
        refused(&p, "set pgsluice.shard = 7").message,
        "invalid shard \"7\" in SET pgsluice.shard: the database has 3 shards, 0 to 2"
    );
    refused_with(&p, "set local pgsluice.shard = 1", "SET LOCAL");
    // Other pgsluice.* settings are ordinary placeholders.
    assert_eq!(plan(&p, "set pgsluice.other = 1"), Plan::All);
}

#[test]
fn the_shard_comment_forces_a_shard() {
    let p = planner(3, KeyType::BigInt);
    for sql in [
        "/* pgsluice: shard=1 */ select * from orders",
        "select * from orders /*pgsluice:shard=1*/",
        "/* PGSLUICE: Shard = 1 */ update orders set note = 'x'",
        "delete from orders -- pgsluice: shard=1",
        "/* pgsluice: shard=1 */ select 1",
        "/* pgsluice: shard=1 */ create table t (a int)",
        "/* pgsluice: shard=1 */ insert into orders values (1), (2), (3)",
        "/* pgsluice: shard=1 */ do $$ begin end $$",
        "/* pgsluice: shard=1 */ copy orders to stdout",
        "/* pgsluice: shard=1 */ selec 1",
        "/* pgsluice: shard=1 */ select * from orders; select 2 /* pgsluice: shard=1 */",
    ] {
        assert_eq!(plan(&p, sql), Plan::Shard(1), "{sql}");
    }
    // In a string it is data, not a comment.
    assert_eq!(plan(&p, "select '/* pgsluice: shard=1 */'"), Plan::Home);
    // Transaction control stays what it is.
    assert_eq!(
        plan(&p, "begin /* pgsluice: shard=1 */"),
        Plan::Transaction(TxnCommand::Begin("begin /* pgsluice: shard=1 */".into()))
    );
    assert_eq!(
        plan(
            &p,
            "begin; /* pgsluice: shard=2 */ delete from orders; commit"
        ),
        Plan::Shard(2)
    );
    // Other comments are comments.
    assert_eq!(plan(&p, "/* pgsluice */ select 1"), Plan::Home);
    assert_eq!(plan(&p, "/* pgsluice: other=1 */ select 1"), Plan::Home);
    for sql in [
        "/* pgsluice: shard=3 */ select 1",
        "/* pgsluice: shard=x */ select 1",
        "/* pgsluice: shard=1 */ select 1 /* pgsluice: shard=2 */",
    ] {
        let u = refused(&p, sql);
        assert_eq!(
            u.sqlstate,
            SqlState::INVALID_PARAMETER_VALUE,
            "{sql}: {u:?}"
        );
    }
}

#[test]
fn transaction_control() {
    let p = planner(2, KeyType::BigInt);
    let t = |c| Plan::Transaction(c);
    for (sql, want) in [
        ("BEGIN", t(TxnCommand::Begin("BEGIN".into()))),
        (
            "begin isolation level repeatable read;",
            t(TxnCommand::Begin(
                "begin isolation level repeatable read".into(),
            )),
        ),
        (
            "  START TRANSACTION READ ONLY  ",
            t(TxnCommand::Begin("START TRANSACTION READ ONLY".into())),
        ),
        ("commit", t(TxnCommand::Commit)),
        ("end", t(TxnCommand::Commit)),
        ("rollback", t(TxnCommand::Rollback)),
        ("abort", t(TxnCommand::Rollback)),
        ("savepoint a", t(TxnCommand::Savepoint)),
        ("release savepoint a", t(TxnCommand::Savepoint)),
        ("rollback to savepoint a", t(TxnCommand::Savepoint)),
        ("prepare transaction 'x'", t(TxnCommand::TwoPhase)),
        ("commit prepared 'x'", t(TxnCommand::TwoPhase)),
        ("rollback prepared 'x'", t(TxnCommand::TwoPhase)),
    ] {
        assert_eq!(plan(&p, sql), want, "{sql}");
    }
    refused_with(&p, "commit and chain", "AND CHAIN");
    refused_with(&p, "rollback and chain", "AND CHAIN");
}

#[test]
fn sql_level_prepared_statements_do_blocks_and_explain() {
    let p = planner(2, KeyType::BigInt);
    for sql in [
        "prepare s as select 1",
        "execute s",
        "deallocate s",
        "deallocate prepare s",
    ] {
        refused_with(&p, sql, "protocol-level prepared statements");
    }
    refused_with(&p, "do $$ begin perform 1; end $$", "DO");
    assert_eq!(
        plan(&p, "explain select * from orders where customer_id = 450"),
        Plan::Shard(1)
    );
    assert_eq!(
        plan(
            &p,
            "explain (analyze, buffers) delete from orders where customer_id = $1"
        ),
        Plan::ByParam {
            index: 0,
            key_type: KeyType::BigInt
        }
    );
    assert_eq!(plan(&p, "explain select 1"), Plan::Home);
    for sql in [
        "explain select * from orders",
        "explain select count(*) from orders o join items i using (customer_id)",
        "explain insert into orders values (450), (900)",
    ] {
        refused_with(
            &p,
            sql,
            "EXPLAIN of a statement that runs on several shards",
        );
    }
    refused_with(
        &p,
        "explain update orders set note = 'x'",
        "without its key",
    );
}

#[test]
fn copy_in_needs_the_key_column() {
    let p = planner(2, KeyType::BigInt);
    refused_with(&p, "copy orders to stdout", "COPY orders TO");
    refused_with(
        &p,
        "copy orders (customer_id) to stdout with csv",
        "COPY orders TO",
    );
    refused_with(&p, "copy (select * from orders) to stdout", "orders");
    refused_with(&p, "copy orders from '/tmp/orders.csv'", "COPY FROM STDIN");
    refused_with(&p, "copy orders from program 'cat x'", "COPY FROM STDIN");
    refused_with(
        &p,
        "copy orders (note) from stdin",
        "without its key column customer_id",
    );
    refused_with(&p, "copy app.users from stdin", "position is not known yet");
    let mut untyped = sharding(2, KeyType::BigInt);
    untyped.tables[0].key_type = None;
    let p = Planner::new(untyped, 10);
    refused_with(&p, "copy orders from stdin", "`type`");
}

#[test]
fn several_statements_must_agree() {
    let p = planner(2, KeyType::BigInt);
    // 450 is on shard 1, 900 on shard 0 (of 2).
    for (sql, want) in [
        ("select 1; select 2", Plan::Home),
        ("create table a (x int); create index on a (x)", Plan::All),
        (
            "begin; insert into orders values (450, 'x'); commit",
            Plan::Shard(1),
        ),
        (
            "BEGIN; update orders set note = 'y' where customer_id = 450; \
             select * from orders where customer_id = 450; COMMIT",
            Plan::Shard(1),
        ),
        (
            "select * from customers; insert into orders values (900)",
            Plan::Shard(0),
        ),
        ("begin; select 1; commit", Plan::Home),
    ] {
        assert_eq!(plan(&p, sql), want, "{sql}");
    }
    for sql in [
        "insert into orders values (450); insert into orders values (900)",
        "select * from customers; insert into orders values (450)",
        "set a.b = 1; select 1",
        "begin; insert into orders values (450), (900); commit",
        "set pgsluice.shard = 1; select 1",
    ] {
        refused_with(
            &p,
            sql,
            "statements of one query string go to different shards",
        );
    }
    refused_with(
        &p,
        "begin; commit",
        "several transaction-control statements",
    );
    // A refusal anywhere refuses the text.
    refused_with(
        &p,
        "select 1; update orders set note = 'x'",
        "without its key",
    );
}

#[test]
fn plans_are_cached_by_text_within_capacity() {
    let p = Planner::new(sharding(2, KeyType::BigInt), 3);
    let a = p.plan("select * from orders where customer_id = 450");
    let b = p.plan("select * from orders where customer_id = 450");
    assert!(Arc::ptr_eq(&a, &b));
    for i in 0..10 {
        p.plan(&format!("select {i}"));
        assert!(p.cache.len() <= 3);
    }
    assert_eq!(p.cache.len(), 3);
    let none = Planner::new(sharding(2, KeyType::BigInt), 0);
    none.plan("select 1");
    assert_eq!(none.cache.len(), 0);
    assert_eq!(p.sharding(), &sharding(2, KeyType::BigInt));
}

#[test]
fn table_names_match_as_postgres_folds_them() {
    let p = planner(2, KeyType::BigInt);
    assert_eq!(
        plan(&p, "SELECT * FROM ORDERS WHERE CUSTOMER_ID = 450"),
        Plan::Shard(1)
    );
    assert_eq!(
        plan(&p, "select * from public.orders where customer_id = 450"),
        Plan::Shard(1)
    );
    assert_eq!(
        plan(&p, "select * from \"orders\" where \"customer_id\" = 450"),
        Plan::Shard(1)
    );
    // A configured schema: that schema, or an unqualified name.
    assert_eq!(
        plan(&p, "select * from app.users where id = 450"),
        Plan::Shard(1)
    );
    assert_eq!(
        plan(&p, "select * from users where id = 450"),
        Plan::Shard(1)
    );
    assert_eq!(
        plan(&p, "select * from other.users where id = 450"),
        Plan::Home
    );
    refused_with(
        &p,
        "with orders as (select 1) select * from orders",
        "WITH query named orders",
    );
    assert_eq!(p.sharding().table_index("", "items"), Some(1));
    assert_eq!(p.sharding().table_index("x", "users"), None);
}
