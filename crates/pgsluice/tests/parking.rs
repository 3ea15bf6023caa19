//! Parked clients (idle clients without a task): they park after login and after a
//! second or two idle, come back with their session state whole, and are reached by
//! KILL, client_idle_timeout and shutdown while parked.

mod common;

use std::time::Duration;

use common::*;
use pgsluice::config::{PoolMode, Secs};
use pgsluice::Instance;

/// How many clients are parked now.
fn parked(server: &Instance) -> usize {
    server.app().parked_clients()
}

/// The error the connection ended with (the client kept open meanwhile: dropping it
/// would end the connection from our side first).
async fn ended_with(conn: Conn) -> tokio_postgres::Error {
    let Conn { client, task, .. } = conn;
    let r = tokio::time::timeout(PROMPTLY, task)
        .await
        .expect("the connection did not end")
        .expect("connection task panicked");
    drop(client);
    r.expect_err("the connection ended without an error")
}

/// Waits until exactly `n` clients are parked.
async fn until_parked(server: &Instance, n: usize) {
    eventually(&format!("{n} parked clients"), PROMPTLY, || async move {
        (parked(server) == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_parks_and_comes_back_with_its_state() {
    let setup = setup(PoolMode::Transaction, 2).await;
    let server = setup.server.as_ref().unwrap();
    let c = connect(setup.addr).await;
    // Parked right after login.
    until_parked(server, 1).await;
    // Session state kept by the pooler: a tracked parameter and a named statement.
    c.batch_execute("set timezone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let stmt = c.prepare("select $1::int4 + 1").await.unwrap();
    assert_eq!(
        parked(server),
        0,
        "a client with work just done is not parked at once"
    );
    // Parked again by the sweep after a second or two idle.
    until_parked(server, 1).await;
    let tz = simple_value(&c, "show timezone").await.unwrap();
    assert_eq!(tz.as_deref(), Some("Asia/Tokyo"));
    let row = c.query_one(&stmt, &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    // And once more, with the metrics endpoint counting it.
    until_parked(server, 1).await;
    let text = pgsluice::metrics::render(&**server.app());
    assert!(
        text.contains("\npgsluice_clients_parked 1\n"),
        "{}",
        text.lines()
            .filter(|l| l.contains("parked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A parked client that leaves is logged out and leaves the lot.
    drop(stmt);
    drop(c);
    until_parked(server, 0).await;
    eventually("the client to leave the pool's list", PROMPTLY, || async {
        server
            .app()
            .pools()
            .iter()
            .all(|p| p.clients().is_empty())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_reaches_a_parked_client() {
    let setup = setup(PoolMode::Transaction, 2).await;
    let server = setup.server.as_ref().unwrap();
    let conn = connect_full(setup.addr).await;
    let other = connect(setup.addr).await;
    until_parked(server, 2).await;
    let victim = server.app().pools()[0]
        .clients()
        .into_iter()
        .min_by_key(|c| c.connect_time_us)
        .unwrap();
    victim.kill();
    let e = ended_with(conn).await;
    assert_eq!(code(&e).as_deref(), Some("57P01"), "{e:?}");
    // The other parked client is untouched.
    assert_eq!(parked(server), 1);
    assert_eq!(count(&other, "select 1::int8").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_ends_a_parked_client() {
    let setup = setup_with(PoolMode::Transaction, 2, |cfg, _| {
        cfg.general.client_idle_timeout = Secs(Duration::from_secs(2));
    })
    .await;
    let server = setup.server.as_ref().unwrap();
    let conn = connect_full(setup.addr).await;
    until_parked(server, 1).await;
    let e = ended_with(conn).await;
    assert_eq!(code(&e).as_deref(), Some("57P05"), "{e:?}");
    assert_eq!(parked(server), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_client_idle_timeout_reaches_parked_clients() {
    let setup = setup(PoolMode::Transaction, 2).await;
    let server = setup.server.as_ref().unwrap();
    let conn = connect_full(setup.addr).await;
    until_parked(server, 1).await;
    let app = server.app();
    let mut cfg = (*app.config()).clone();
    cfg.general.client_idle_timeout = Secs(Duration::from_secs(2));
    app.apply_config(cfg).await.expect("reload");
    let e = ended_with(conn).await;
    assert_eq!(code(&e).as_deref(), Some("57P05"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_parked_clients() {
    let mut setup = setup(PoolMode::Transaction, 2).await;
    let conns = [
        connect_full(setup.addr).await,
        connect_full(setup.addr).await,
    ];
    let server = setup.server.take().unwrap();
    until_parked(&server, 2).await;
    let app = server.app().clone();
    tokio::time::timeout(
        PROMPTLY,
        server.shutdown(PROMPTLY, std::future::pending::<()>()),
    )
    .await
    .expect("every parked client finished");
    for conn in conns {
        let e = ended_with(conn).await;
        assert_eq!(code(&e).as_deref(), Some("57P01"), "{e:?}");
    }
    assert_eq!(app.parked_clients(), 0);
}
