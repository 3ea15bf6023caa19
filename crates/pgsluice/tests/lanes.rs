//! Relay lanes (`relay_lanes`, crate::lane): logged-in plain clients' sessions run on
//! pgsluice's own event loop, TLS-free clients only, and everything a session does
//! (transactions, waiting for a busy pool, parking, a cancel, a shutdown) works there
//! as on tokio's workers.

mod common;

use std::time::Duration;

use common::*;
use pgsluice::config::PoolMode;

/// Sessions running on the lanes now.
fn on_lanes(s: &Setup) -> usize {
    s.server
        .as_ref()
        .unwrap()
        .app()
        .lane_tasks()
        .expect("the pooler has lanes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_in_a_transaction_runs_on_a_lane_and_leaves_it_when_idle() {
    let s = setup_with(PoolMode::Transaction, 2, |c, _| {
        c.general.relay_lanes = Some(1)
    })
    .await;
    let c = connect(s.addr).await;
    // Parked right after login: no session task anywhere.
    eventually("the client to park", PROMPTLY, || async {
        (s.server.as_ref().unwrap().app().parked_clients() == 1).then_some(())
    })
    .await;
    assert_eq!(on_lanes(&s), 0);
    c.batch_execute("begin; create temp table t (x int) on commit drop; insert into t values (1)")
        .await
        .unwrap();
    // Mid-transaction: its session holds a server connection, on the lane.
    assert_eq!(on_lanes(&s), 1, "the session is not on the lane");
    let n: i64 = c
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    c.batch_execute("commit").await.unwrap();
    // Idle for a second or two: parked again, and the lane is empty.
    eventually(
        "the client to park again",
        Duration::from_secs(10),
        || async {
            (on_lanes(&s) == 0 && s.server.as_ref().unwrap().app().parked_clients() == 1)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_a_small_pool_through_two_lanes() {
    let s = setup_with(PoolMode::Transaction, 3, |c, _| {
        c.general.relay_lanes = Some(2)
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..20i64 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let c = connect(addr).await;
            let mut sum = 0;
            for j in 0..50i64 {
                let r: i64 = c
                    .query_one("select $1::int8 + $2::int8", &[&i, &j])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(r, i + j);
                sum += r;
            }
            sum
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    // Σi Σj (i + j) over i < 20, j < 50.
    assert_eq!(total, 50 * 190 + 20 * 1225);
    let pool = s.server.as_ref().unwrap().app().pools().pop().unwrap();
    assert!(pool.server_count() <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_on_a_lane_can_be_cancelled() {
    let s = setup_with(PoolMode::Transaction, 2, |c, _| {
        c.general.relay_lanes = Some(1)
    })
    .await;
    let c = connect_full(s.addr).await;
    let token = c.client.cancel_token();
    let slow = {
        let client = &c.client;
        async move { client.batch_execute("select pg_sleep(30)").await }
    };
    let cancel = async {
        eventually("the query to run on the lane", PROMPTLY, || async {
            (on_lanes(&s) == 1).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    };
    let (r, ()) = tokio::join!(slow, cancel);
    let e = r.expect_err("the query was not cancelled");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    // The connection goes on.
    let v: i32 = c.client.query_one("select 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lanes_everything_stays_on_tokio() {
    let s = setup_with(PoolMode::Transaction, 2, |c, _| {
        c.general.relay_lanes = Some(0)
    })
    .await;
    assert_eq!(s.server.as_ref().unwrap().app().lane_tasks(), None);
    let c = connect(s.addr).await;
    let v: i32 = c.query_one("select 5", &[]).await.unwrap().get(0);
    assert_eq!(v, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_lanes_after_their_clients() {
    let mut s = setup_with(PoolMode::Transaction, 2, |c, _| {
        c.general.relay_lanes = Some(1)
    })
    .await;
    let c = connect_full(s.addr).await;
    c.client.batch_execute("begin").await.unwrap();
    assert_eq!(on_lanes(&s), 1);
    let server = s.server.take().unwrap();
    let app = server.app().clone();
    let stop = tokio::spawn(server.shutdown(PROMPTLY, std::future::pending()));
    // The transaction finishes, then the client is told and the lane ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !stop.is_finished(),
        "shutdown did not wait for the transaction"
    );
    c.client.batch_execute("commit").await.unwrap();
    tokio::time::timeout(PROMPTLY, stop)
        .await
        .expect("shutdown did not end")
        .unwrap();
    assert_eq!(app.lane_tasks(), Some(0));
}
