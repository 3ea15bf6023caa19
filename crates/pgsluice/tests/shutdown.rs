//! Graceful shutdown of the pgsluice process on SIGTERM: open transactions finish, idle
//! clients get 57P01, the process exits by itself; a second SIGTERM stops at once.

mod common;

use std::time::Duration;

use common::*;

const SIGTERM: i32 = libc::SIGTERM;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_open_transaction_finish_then_exits() {
    let pg = cluster();
    let mut pooler = spawn_pooler(
        &pg,
        &["--pool-mode", "transaction", "--pool-size", "5"],
        &[],
    );
    let addr = pooler.addr();

    let a = connect(addr).await;
    a.batch_execute("create table t(x int)").await.unwrap();
    a.batch_execute("begin; insert into t values (1)")
        .await
        .unwrap();
    let mut b = connect_full(addr).await;
    assert_eq!(count(&b.client, "select 1::int8").await, 1);

    let n = pooler.line_count();
    pooler.signal(SIGTERM).unwrap();
    assert!(
        tokio::task::block_in_place(|| pooler.wait_for_line_since(
            n,
            "graceful shutdown started",
            PROMPTLY
        ))
        .is_some(),
        "no 'graceful shutdown started' line"
    );

    // The idle client is told 57P01 and disconnected.
    let ended = tokio::time::timeout(PROMPTLY, &mut b.task)
        .await
        .expect("idle client not disconnected at shutdown")
        .unwrap();
    let e = ended.expect_err("the idle client should get an error, not a clean close");
    assert_eq!(code(&e).as_deref(), Some("57P01"), "{e:?}");
    assert!(b.client.simple_query("select 1").await.is_err());

    // New clients are not accepted any more.
    assert!(try_connect(&app_config(addr)).await.is_err());

    // The open transaction goes on: the pooler is still running.
    assert!(
        pooler.try_wait().unwrap().is_none(),
        "pooler exited with a transaction open"
    );
    a.batch_execute("insert into t values (2)")
        .await
        .expect("statement inside the open transaction after SIGTERM");
    assert!(
        pooler.try_wait().unwrap().is_none(),
        "pooler exited with a transaction open"
    );
    a.batch_execute("commit")
        .await
        .expect("COMMIT after SIGTERM");

    // Then it exits by itself, successfully.
    let status = tokio::task::block_in_place(|| pooler.wait_exit(PROMPTLY))
        .unwrap()
        .expect("pooler still running after the last transaction ended");
    assert!(status.success(), "exit status {status}");
    assert_eq!(pg_sql(&pg, "select count(*) from t"), "2");
    // The client whose transaction finished is disconnected too.
    assert!(a.simple_query("select 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn second_sigterm_exits_at_once() {
    let pg = cluster();
    // A shutdown_timeout long enough that only the second signal can explain a quick exit.
    let mut pooler = spawn_pooler(&pg, &["--shutdown-timeout", "60s"], &[]);
    let addr = pooler.addr();
    let a = connect(addr).await;
    a.batch_execute("create table t(x int)").await.unwrap();
    a.batch_execute("begin; insert into t values (1)")
        .await
        .unwrap();

    let n = pooler.line_count();
    pooler.signal(SIGTERM).unwrap();
    assert!(tokio::task::block_in_place(|| pooler.wait_for_line_since(
        n,
        "graceful shutdown started",
        PROMPTLY
    ))
    .is_some());
    // Still waiting for the transaction.
    assert!(pooler.try_wait().unwrap().is_none());
    pooler.signal(SIGTERM).unwrap();
    let status = tokio::task::block_in_place(|| pooler.wait_exit(Duration::from_secs(10))).unwrap();
    assert!(
        status.is_some(),
        "a second SIGTERM must stop pgsluice at once, even with a transaction open"
    );
    // The transaction was not committed.
    assert!(a.simple_query("commit").await.is_err());
    assert_eq!(pg_sql(&pg, "select count(*) from t"), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_timeout_bounds_the_wait() {
    let pg = cluster();
    let mut pooler = spawn_pooler(&pg, &["--shutdown-timeout", "1s"], &[]);
    let a = connect(pooler.addr()).await;
    a.batch_execute("begin; select 1").await.unwrap();
    pooler.signal(SIGTERM).unwrap();
    let status = tokio::task::block_in_place(|| pooler.wait_exit(PROMPTLY))
        .unwrap()
        .expect("pgsluice still running long after shutdown_timeout");
    assert!(status.success(), "{status}");
    assert!(pooler
        .output()
        .iter()
        .any(|l| l.contains("shutdown_timeout reached")));
    assert!(a.simple_query("select 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_no_clients_exits_promptly() {
    let pg = cluster();
    let mut pooler = spawn_pooler(&pg, &[], &[]);
    // Used once, so a server connection is open in the pool.
    let c = connect(pooler.addr()).await;
    assert_eq!(count(&c, "select 1::int8").await, 1);
    drop(c);
    let direct = direct(&pg, DB).await;
    assert_eq!(app_backends(&direct).await, 1);
    pooler.signal(SIGTERM).unwrap();
    let status = tokio::task::block_in_place(|| pooler.wait_exit(PROMPTLY))
        .unwrap()
        .expect("pgsluice did not exit");
    assert!(status.success(), "{status}");
    // Its server connections are closed.
    let direct_ref = &direct;
    eventually("the server connections to close", PROMPTLY, || async move {
        (app_backends(direct_ref).await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_in_session_mode() {
    let pg = cluster();
    let mut pooler = spawn_pooler(&pg, &["--pool-mode", "session", "--pool-size", "4"], &[]);
    let addr = pooler.addr();
    let a = connect(addr).await;
    a.batch_execute("create table t(x int)").await.unwrap();
    a.batch_execute("begin; insert into t values (1)")
        .await
        .unwrap();
    // B holds its server connection for the session, idle.
    let mut b = connect_full(addr).await;
    assert_eq!(count(&b.client, "select 1::int8").await, 1);

    pooler.signal(SIGTERM).unwrap();
    let ended = tokio::time::timeout(PROMPTLY, &mut b.task)
        .await
        .expect("idle session-mode client not disconnected at shutdown")
        .unwrap();
    assert_eq!(
        code(&ended.expect_err("expected 57P01")).as_deref(),
        Some("57P01")
    );
    assert!(pooler.try_wait().unwrap().is_none());
    a.batch_execute("insert into t values (2); commit")
        .await
        .expect("transaction open at SIGTERM must be able to finish");
    let status = tokio::task::block_in_place(|| pooler.wait_exit(PROMPTLY))
        .unwrap()
        .expect("pgsluice still running after the last transaction");
    assert!(status.success(), "{status}");
    assert_eq!(pg_sql(&pg, "select count(*) from t"), "2");
}

/// A connection a session-mode client leaves gets the reset query in a background task
/// of its pool; in-process shutdown waits for that task, and none is left afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_waits_for_a_background_reset() {
    let pg = cluster();
    let mut cfg = config(&pg);
    cfg.general.pool_mode = pgsluice::config::PoolMode::Session;
    // The reset blocks while the test holds the advisory lock.
    cfg.general.server_reset_query = "select pg_advisory_xact_lock(4242)".into();
    let (server, addr) = start_pooler(cfg).await;
    let app = server.app().clone();
    // The instance's own background tasks (janitor, parking keeper).
    let base = app.background_tasks().live();
    let holder = direct(&pg, DB).await;
    holder
        .batch_execute("select pg_advisory_lock(4242)")
        .await
        .unwrap();

    let c = connect_full(addr).await;
    assert_eq!(count(&c.client, "select 1::int8").await, 1);
    c.finished().await.unwrap();
    wait_active_query(&holder, "pg_advisory_xact_lock").await;
    let pool = app.pools().pop().expect("the pool");
    assert_eq!(pool.counts().sv_tested, 1, "the connection is being reset");
    // The pool's upkeep and the reset.
    assert_eq!(app.background_tasks().live(), base + 2);

    let stop = tokio::spawn(server.shutdown(PROMPTLY, std::future::pending()));
    let pool_ref = &pool;
    eventually("the pool to close", PROMPTLY, || async move {
        pool_ref.is_closed().then_some(())
    })
    .await;
    assert!(!stop.is_finished(), "shutdown did not wait for the reset");
    assert!(app.background_tasks().live() >= 1);
    holder
        .batch_execute("select pg_advisory_unlock(4242)")
        .await
        .unwrap();
    tokio::time::timeout(PROMPTLY, stop)
        .await
        .expect("shutdown did not end")
        .unwrap();
    assert_eq!(
        app.background_tasks().live(),
        0,
        "background tasks left after shutdown"
    );
    // The reset connection came back to a closed pool: it was closed.
    assert_eq!(pool.server_count(), 0);
    let holder_ref = &holder;
    eventually("the server connection to close", PROMPTLY, || async move {
        (app_backends(holder_ref).await == 0).then_some(())
    })
    .await;
}
