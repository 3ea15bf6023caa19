//! Faults: clients vanishing mid-transaction or mid-query, backends killed, PostgreSQL
//! restarted under a running pooler.

mod common;

use std::time::Duration;

use common::*;
use pgsluice::config::PoolMode;
use pgsluice_testkit::StopMode;

const TABLE_LOCKS: &str = "select count(*) from pg_locks l join pg_class c on c.oid = l.relation \
                           where c.relname = 't' and l.mode = 'AccessExclusiveLock' and l.granted";

#[tokio::test(flavor = "multi_thread")]
async fn client_vanishing_mid_transaction_releases_table_lock() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect_full(s.addr).await;
    a.client
        .batch_execute("create table t(id int primary key); insert into t values (1)")
        .await
        .unwrap();
    a.client
        .batch_execute("begin; lock table t in access exclusive mode")
        .await
        .unwrap();
    assert_eq!(count(&direct, TABLE_LOCKS).await, 1);

    // The client's socket closes without a Terminate message.
    a.task.abort();
    drop(a.client);
    let direct_ref = &direct;
    eventually("the lock to be released", PROMPTLY, || async move {
        (count(direct_ref, TABLE_LOCKS).await == 0).then_some(())
    })
    .await;

    // Another client (same single-connection pool) takes the lock.
    let b = connect(s.addr).await;
    b.batch_execute(
        "begin; set local lock_timeout = '5s'; lock table t in access exclusive mode; commit",
    )
    .await
    .expect("second client could not take the lock");
    assert_eq!(count(&b, "select count(*) from t").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_terminating_mid_transaction_releases_row_lock() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect(s.addr).await;
    a.batch_execute("create table t(id int primary key, v int); insert into t values (1, 0)")
        .await
        .unwrap();
    a.batch_execute(
        "begin; update t set v = 1 where id = 1; select * from t where id = 1 for update",
    )
    .await
    .unwrap();
    // Locked: a NOWAIT lock attempt fails.
    let e = direct
        .batch_execute("begin; select * from t where id = 1 for update nowait")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("55P03"));
    direct.batch_execute("rollback").await.unwrap();

    // Dropping the client sends Terminate in the middle of the transaction.
    drop(a);
    let direct_ref = &direct;
    eventually("the row lock to be released", PROMPTLY, || async move {
        let r = direct_ref
            .batch_execute("begin; select * from t where id = 1 for update nowait")
            .await;
        direct_ref.batch_execute("rollback").await.unwrap();
        r.ok()
    })
    .await;
    // The update was rolled back.
    assert_eq!(
        count(&direct, "select v::int8 from t where id = 1").await,
        0
    );

    let b = connect(s.addr).await;
    b.batch_execute(
        "begin; select * from t where id = 1 for update nowait; update t set v = 2; commit",
    )
    .await
    .expect("second client could not lock the row");
    assert_eq!(
        count(&direct, "select v::int8 from t where id = 1").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_vanishing_during_long_query_stops_the_backend_query() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect_full(s.addr).await;
    let client = a.client;
    let running = tokio::spawn(async move { client.simple_query("select pg_sleep(60)").await });
    wait_active_query(&direct, "pg_sleep(60)").await;
    a.task.abort();
    running.abort();
    let direct_ref = &direct;
    eventually(
        "the pg_sleep(60) backend to stop",
        PROMPTLY,
        || async move {
            let n = count(
                direct_ref,
                "select count(*) from pg_stat_activity where state = 'active' \
             and strpos(query, 'pg_sleep(60)') > 0 and pid <> pg_backend_pid()",
            )
            .await;
            (n == 0).then_some(())
        },
    )
    .await;
    // The single pool slot is usable again.
    let b = connect(s.addr).await;
    let r = tokio::time::timeout(PROMPTLY, b.simple_query("select 1"))
        .await
        .expect("pool slot not freed after the client left");
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_terminated_mid_query_reports_error_and_pool_recovers() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect(s.addr).await;
    let running = tokio::spawn(async move { a.simple_query("select pg_sleep(30)").await });
    let pid = wait_active_query(&direct, "pg_sleep(30)").await;
    direct
        .query_one("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("client not told about the dead backend")
        .unwrap();
    let e = r.expect_err("query on a terminated backend must fail");
    let c = code(&e);
    assert!(
        matches!(c.as_deref(), Some("57P01") | Some("08006")),
        "expected 57P01 or 08006, got {c:?}: {e:?}"
    );
    // A new client works: the dead connection was replaced.
    let b = connect(s.addr).await;
    assert_eq!(count(&b, "select 1::int8").await, 1);
    let new_pid = count(&b, "select pg_backend_pid()::int8").await;
    assert_ne!(new_pid, i64::from(pid));
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_pooled_backend_terminated_is_replaced() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect(s.addr).await;
    let pid = count(&a, "select pg_backend_pid()::int8").await;
    // Kill the idle server connection sitting in the pool.
    direct
        .query_one("select pg_terminate_backend($1)", &[&(pid as i32)])
        .await
        .unwrap();
    let direct_ref = &direct;
    eventually("the backend to exit", PROMPTLY, || async move {
        (app_backends(direct_ref).await == 0).then_some(())
    })
    .await;
    // The idle client is not attached to a server in transaction mode: its next query
    // must get a fresh connection instead of the dead one.
    let new_pid = count(&a, "select pg_backend_pid()::int8").await;
    assert_ne!(new_pid, pid);
}

async fn postgres_restart(mode: StopMode) {
    let mut s = setup(PoolMode::Transaction, 2).await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    a.batch_execute("create table t(x int); insert into t values (1)")
        .await
        .unwrap();
    // Two server connections in the pool.
    let (ra, rb) = tokio::join!(
        a.simple_query("select pg_sleep(0.2)"),
        b.simple_query("select pg_sleep(0.2)")
    );
    ra.unwrap();
    rb.unwrap();

    tokio::task::block_in_place(|| s.pg.restart(mode)).expect("restart PostgreSQL");

    // New clients: the first query may need a moment, then the pool works by itself.
    let addr = s.addr;
    eventually(
        "a query through pgsluice after the restart",
        PROMPTLY,
        || async move {
            let c = try_connect(&app_config(addr)).await.ok()?;
            c.simple_query("select 1").await.ok()
        },
    )
    .await;
    for i in 0..5i64 {
        let c = connect(s.addr).await;
        assert_eq!(
            count(&c, &format!("select {i}::int8 + count(*) from t")).await,
            i + 1
        );
    }
    // Clients that were idle during the restart are not tied to the dead connections.
    assert_eq!(count(&a, "select count(*) from t").await, 1);
    assert_eq!(count(&b, "select count(*) from t").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_fast_restart_pool_recovers() {
    postgres_restart(StopMode::Fast).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_immediate_restart_pool_recovers() {
    postgres_restart(StopMode::Immediate).await;
}
