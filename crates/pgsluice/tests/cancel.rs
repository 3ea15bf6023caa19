//! Query cancellation through the pooler.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use pgsluice::config::PoolMode;
use tokio_postgres::NoTls;

async fn cancel_running_query(mode: PoolMode) {
    let s = setup(mode, 2).await;
    let direct = direct(&s.pg, DB).await;
    let c = connect(s.addr).await;
    let token = c.cancel_token();
    let running = tokio::spawn(async move {
        let r = c.simple_query("select pg_sleep(30)").await;
        (c, r)
    });
    wait_active_query(&direct, "pg_sleep(30)").await;
    token.cancel_query(NoTls).await.expect("send cancel");
    let (c, r) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the query was not cancelled within 20 s")
        .unwrap();
    let e = r.expect_err("pg_sleep(30) should have been cancelled");
    assert_eq!(code(&e).as_deref(), Some("57014"), "{e:?}");
    assert_eq!(message(&e), "canceling statement due to user request");
    // The client goes on.
    assert_eq!(count(&c, "select 3::int8").await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_running_query_transaction_mode() {
    cancel_running_query(PoolMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_running_query_session_mode() {
    cancel_running_query(PoolMode::Session).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_inside_a_transaction_aborts_it() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    let c = connect(s.addr).await;
    c.batch_execute("create table t(x int)").await.unwrap();
    c.batch_execute("begin; insert into t values (1)")
        .await
        .unwrap();
    let token = c.cancel_token();
    let running = tokio::spawn(async move {
        let r = c.simple_query("select pg_sleep(30)").await;
        (c, r)
    });
    wait_active_query(&direct, "pg_sleep(30)").await;
    token.cancel_query(NoTls).await.unwrap();
    let (c, r) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("not cancelled within 20 s")
        .unwrap();
    assert_eq!(code(&r.unwrap_err()).as_deref(), Some("57014"));
    let e = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("25P02"));
    c.batch_execute("rollback").await.unwrap();
    assert_eq!(count(&c, "select count(*) from t").await, 0);
}

/// A cancel from an idle client must not reach the server connection it used last,
/// now serving another client.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_from_idle_client_does_not_hit_others() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    // A used the only server connection; now B uses it for a while.
    assert_eq!(count(&a, "select 1::int8").await, 1);
    let b_running = tokio::spawn(async move {
        let r = b.simple_query("select pg_sleep(2)").await;
        (b, r)
    });
    wait_active_query(&direct, "pg_sleep(2)").await;
    a.cancel_token().cancel_query(NoTls).await.unwrap();
    let (b, r) = tokio::time::timeout(Duration::from_secs(20), b_running)
        .await
        .expect("B's query did not finish")
        .unwrap();
    r.expect("A's cancel must not cancel B's query");
    // Both clients still work.
    assert_eq!(count(&a, "select 2::int8").await, 2);
    assert_eq!(count(&b, "select 3::int8").await, 3);
    // A cancel for an idle client right before its next query changes nothing.
    a.cancel_token().cancel_query(NoTls).await.unwrap();
    assert_eq!(count(&a, "select 4::int8").await, 4);
}

/// A CancelRequest with a key nobody has is dropped; the pooler keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn bogus_cancel_request_is_ignored() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    let c = connect(s.addr).await;
    let running = tokio::spawn(async move {
        let r = c.simple_query("select pg_sleep(1)").await;
        (c, r)
    });
    wait_active_query(&direct, "pg_sleep(1)").await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let mut sock = raw_connect(addr);
        let mut msg = Vec::new();
        msg.extend_from_slice(&16i32.to_be_bytes());
        msg.extend_from_slice(&80877102i32.to_be_bytes());
        msg.extend_from_slice(&12345i32.to_be_bytes());
        msg.extend_from_slice(&67890i32.to_be_bytes());
        sock.write_all(&msg).unwrap();
        let (bytes, closed) = read_to_close(&mut sock);
        assert!(closed, "connection not closed after a CancelRequest");
        assert!(
            bytes.is_empty(),
            "a CancelRequest gets no answer: {bytes:?}"
        );
    })
    .await
    .unwrap();
    let (c, r) = running.await.unwrap();
    r.expect("the running query must not be cancelled");
    assert_eq!(count(&c, "select 1::int8").await, 1);
}
