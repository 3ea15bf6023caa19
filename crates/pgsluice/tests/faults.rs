//! Faults: clients vanishing mid-transaction or mid-query, backends killed, PostgreSQL
//! restarted under a running pooler.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use pgsluice::config::{AuthType, PoolMode};
use pgsluice_testkit::StopMode;
use tokio_postgres::types::Type;

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
    // The testkit's clusters run with synchronous_commit = off, and an immediate stop
    // is a crash: only a flushed commit survives it, so this one is synchronous.
    a.batch_execute(
        "begin; set local synchronous_commit = on; \
         create table t(x int); insert into t values (1); commit",
    )
    .await
    .unwrap();
    // Two server connections in the pool: A's open transaction holds one, so B's needs
    // the second.
    a.batch_execute("begin; select 1").await.unwrap();
    b.batch_execute("begin; select 1").await.unwrap();
    a.batch_execute("commit").await.unwrap();
    b.batch_execute("commit").await.unwrap();
    assert_eq!(server_counts(s.server()).0, 2, "server connections open");

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

/// A client that sends half a message and vanishes: the server connection, now in the
/// middle of a message, must not be handed to anyone else.
#[tokio::test(flavor = "multi_thread")]
async fn half_sent_message_then_disconnect_does_not_poison_the_pool() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.auth_type = AuthType::Trust
    })
    .await;
    let addr = s.addr;
    let server = s.server();
    let (mut sock, _) =
        tokio::task::block_in_place(|| raw_login(addr, &[("user", USER), ("database", DB)]));
    // The pool's one connection is idle before the client starts its query...
    eventually("an idle server connection", PROMPTLY, || {
        let idle = server_counts(server) == (1, 1);
        async move { idle.then_some(()) }
    })
    .await;
    // A Query announcing 1000 bytes, of which only a few are sent.
    let mut m = vec![b'Q'];
    m.extend_from_slice(&1004i32.to_be_bytes());
    m.extend_from_slice(b"select 1 /* and then nothing");
    sock.write_all(&m).unwrap();
    // ...and handed to it (its first bytes go with it) before the client vanishes.
    eventually(
        "the server connection handed to the client",
        PROMPTLY,
        || {
            let busy = server_counts(server) == (1, 0);
            async move { busy.then_some(()) }
        },
    )
    .await;
    drop(sock);
    for i in 0..3i64 {
        let b = connect_trust(addr).await;
        let v = tokio::time::timeout(PROMPTLY, b.simple_query(&format!("select {i} + 40")))
            .await
            .expect("the next client hangs: it got the half-written server connection")
            .expect("query failed");
        let row = v
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap();
        assert_eq!(row, (i + 40).to_string());
    }
}

/// A message over max_message_size is refused; the server connection it was headed
/// to is not reused half-fed.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_message_is_refused_and_pool_stays_clean() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.max_message_size = 64 * 1024;
    })
    .await;
    let a = connect(s.addr).await;
    let fits = "a".repeat(32 * 1024);
    let rows = a
        .query_typed("select length($1::text)", &[(&fits, Type::TEXT)])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 32 * 1024);
    let too_big = "b".repeat(256 * 1024);
    let e = tokio::time::timeout(
        PROMPTLY,
        a.query_typed("select length($1::text)", &[(&too_big, Type::TEXT)]),
    )
    .await
    .expect("no answer to an oversized message")
    .expect_err("a message over max_message_size must be refused");
    assert_eq!(code(&e).as_deref(), Some("08P01"), "{e:?}");
    // Another client gets a clean server connection.
    let b = connect(s.addr).await;
    let v = tokio::time::timeout(PROMPTLY, count(&b, "select 11::int8"))
        .await
        .expect("next client hangs");
    assert_eq!(v, 11);
    assert_eq!(count(&b, "select 12::int8").await, 12);
}

/// A client that gives up while waiting for a server connection does not keep a slot.
#[tokio::test(flavor = "multi_thread")]
async fn client_leaving_while_waiting_for_a_server_does_not_leak() {
    let s = setup(PoolMode::Transaction, 1).await;
    let a = connect(s.addr).await;
    a.batch_execute("begin").await.unwrap();
    let b = connect_full(s.addr).await;
    let b_client = b.client;
    let waiting = tokio::spawn(async move { b_client.simple_query("select 1").await });
    wait_queued(s.server(), 1, || waiting.is_finished()).await;
    assert!(
        !waiting.is_finished(),
        "B should be waiting for the only connection"
    );
    // B goes away: once both tasks are gone, its socket is closed.
    waiting.abort();
    b.task.abort();
    let _ = waiting.await;
    let _ = b.task.await;
    a.batch_execute("commit").await.unwrap();
    for i in 0..3i64 {
        let c = connect(s.addr).await;
        let v = tokio::time::timeout(PROMPTLY, count(&c, &format!("select {i}::int8")))
            .await
            .expect("pool slot leaked by the client that left while waiting");
        assert_eq!(v, i);
    }
    assert_eq!(count(&a, "select 5::int8").await, 5);
}

/// PostgreSQL down when the first client arrives: a prompt, clear error; once it is up
/// again, clients get in without restarting pgsluice.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_at_first_login_then_up() {
    let mut s = setup(PoolMode::Transaction, 2).await;
    tokio::task::block_in_place(|| s.pg.stop(StopMode::Fast)).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(20), try_connect(&app_config(s.addr)))
        .await
        .expect("login hangs while PostgreSQL is down")
        .expect_err("login cannot succeed while PostgreSQL is down");
    let c = code(&e);
    assert!(
        matches!(c.as_deref(), Some("08001") | Some("08006") | Some("57P03")),
        "expected a connection-failure SQLSTATE, got {c:?}: {e:?}"
    );
    tokio::task::block_in_place(|| s.pg.start_again()).unwrap();
    let addr = s.addr;
    eventually("a login once PostgreSQL is back", PROMPTLY, || async move {
        let c = try_connect(&app_config(addr)).await.ok()?;
        c.simple_query("select 1").await.ok()
    })
    .await;
}

/// A server connection that dies while pooled and idle in session mode is not given to
/// the next session.
#[tokio::test(flavor = "multi_thread")]
async fn session_mode_dead_idle_connection_is_replaced() {
    let s = setup(PoolMode::Session, 1).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect(s.addr).await;
    let pid = count(&a, "select pg_backend_pid()::int8").await;
    drop(a);
    let direct_ref = &direct;
    // Wait until the connection is back in the pool (idle), then kill it.
    eventually("the reset connection to be idle", PROMPTLY, || async move {
        let n = count(
            direct_ref,
            "select count(*) from pg_stat_activity where usename = 'app' and state = 'idle'",
        )
        .await;
        (n == 1).then_some(())
    })
    .await;
    direct
        .query_one("select pg_terminate_backend($1)", &[&(pid as i32)])
        .await
        .unwrap();
    eventually("the backend to exit", PROMPTLY, || async move {
        (app_backends(direct_ref).await == 0).then_some(())
    })
    .await;
    let b = connect(s.addr).await;
    let new_pid = count(&b, "select pg_backend_pid()::int8").await;
    assert_ne!(new_pid, pid);
}
