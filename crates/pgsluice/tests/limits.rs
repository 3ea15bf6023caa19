//! Limits: max_client_conn and query_wait_timeout.

mod common;

use std::time::Duration;

use common::*;
use pgsluice::config::{PoolMode, Secs};

#[tokio::test(flavor = "multi_thread")]
async fn max_client_conn_refuses_the_next_client() {
    let s = setup_with(PoolMode::Transaction, 2, |c, _| {
        c.general.max_client_conn = 3
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let c = connect(s.addr).await;
        assert_eq!(count(&c, "select 1::int8").await, 1);
        clients.push(c);
    }
    let e = try_connect(&app_config(s.addr))
        .await
        .expect_err("a 4th client must be refused");
    assert_eq!(code(&e).as_deref(), Some("53300"), "{e:?}");
    assert!(
        message(&e).contains("max_client_conn"),
        "message should name the limit: {}",
        message(&e)
    );
    // The first three are unaffected.
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(count(c, &format!("select {i}::int8")).await, i as i64);
    }
    // Once one leaves, a new client gets in.
    clients.pop();
    let addr = s.addr;
    let c = eventually("a free client slot", PROMPTLY, || async move {
        try_connect(&app_config(addr)).await.ok()
    })
    .await;
    assert_eq!(count(&c, "select 9::int8").await, 9);
}

/// Failed logins give their max_client_conn slot back.
#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_do_not_use_up_client_slots() {
    let s = setup_with(PoolMode::Transaction, 2, |c, _| {
        c.general.max_client_conn = 2
    })
    .await;
    for _ in 0..6 {
        let e = try_connect(&client_config(s.addr, USER, "wrong", DB))
            .await
            .unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("28P01"));
        let e = try_connect(&client_config(s.addr, USER, PASSWORD, "nosuchdb"))
            .await
            .unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("3D000"));
    }
    let addr = s.addr;
    let a = eventually("a free slot after failed logins", PROMPTLY, || async move {
        try_connect(&app_config(addr)).await.ok()
    })
    .await;
    let b = eventually("a second free slot", PROMPTLY, || async move {
        try_connect(&app_config(addr)).await.ok()
    })
    .await;
    assert_eq!(count(&a, "select 1::int8").await, 1);
    assert_eq!(count(&b, "select 2::int8").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_wait_timeout_errors_the_waiting_client() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.query_wait_timeout = Secs::from_secs(1);
    })
    .await;
    let a = connect(s.addr).await;
    a.batch_execute("begin; select 1").await.unwrap();

    let b = connect(s.addr).await;
    let e = tokio::time::timeout(Duration::from_secs(20), b.simple_query("select 1"))
        .await
        .expect("the waiting client got no answer within 20 s")
        .expect_err("no server connection is free: the query must fail");
    assert_eq!(code(&e).as_deref(), Some("53300"), "{e:?}");
    assert!(
        message(&e).contains("query_wait_timeout"),
        "message should name query_wait_timeout: {}",
        message(&e)
    );

    // A's transaction is intact; after it ends, others are served again.
    assert_eq!(count(&a, "select 2::int8").await, 2);
    a.batch_execute("commit").await.unwrap();
    let c = connect(s.addr).await;
    assert_eq!(count(&c, "select 3::int8").await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_client_is_served_within_query_wait_timeout() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.query_wait_timeout = Secs::from_secs(10);
    })
    .await;
    let a = connect(s.addr).await;
    a.batch_execute("begin").await.unwrap();
    let b = connect(s.addr).await;
    let waiting = tokio::spawn(async move { b.simple_query("select 1").await.map(|_| ()) });
    wait_queued(s.server(), 1, || waiting.is_finished()).await;
    assert!(
        !waiting.is_finished(),
        "B was served while A's transaction held the only connection"
    );
    a.batch_execute("commit").await.unwrap();
    tokio::time::timeout(PROMPTLY, waiting)
        .await
        .expect("waiting client not served after COMMIT")
        .unwrap()
        .expect("waiting client should get the connection, not an error");
}

/// Hundreds of clients at once over a pool of 5: everyone is served, FIFO waiting works,
/// and PostgreSQL never sees more than 5 backends.
#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_clients_over_a_small_pool() {
    let s = setup_with(PoolMode::Transaction, 5, |c, _| {
        c.general.auth_type = pgsluice::config::AuthType::Trust;
    })
    .await;
    let addr = s.addr;
    let direct = direct(&s.pg, DB).await;
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        tasks.push(tokio::spawn(async move {
            let c = connect_trust(addr).await;
            for j in 0..3i64 {
                let v = count(
                    &c,
                    &format!("select {i}::int8 * 10 + {j} from pg_sleep(0.01)"),
                )
                .await;
                assert_eq!(v, i * 10 + j);
            }
        }));
    }
    let mut max = 0;
    let all = futures_util::future::join_all(tasks);
    tokio::pin!(all);
    let results = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            tokio::select! {
                r = &mut all => break r,
                n = app_backends(&direct) => max = max.max(n),
            }
        }
    })
    .await
    .expect("200 clients not served within 60 s");
    for r in results {
        r.expect("client task failed");
    }
    assert!(max <= 5, "PostgreSQL saw {max} backends for a pool of 5");
}
