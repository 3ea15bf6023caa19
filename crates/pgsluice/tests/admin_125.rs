//! The admin console's PgBouncer 1.25 views, as they see clients pgsluice parks (idle
//! clients without a task): SHOW CLIENTS shows them `idle` with their id and prepared
//! statements, KILL_CLIENT reaches them, SHOW DATABASES / SHOW USERS count them, and
//! SHOW STATE follows PAUSE and SUSPEND. (Column lists and types: admin_console.rs.)

mod admin_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use admin_common::*;
use pgsluice::Instance;

const T: Duration = Duration::from_secs(30);

async fn start(cfg: pgsluice::config::Config) -> (Instance, SocketAddr) {
    let server = Instance::start(cfg).await.expect("start pgsluice");
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// Runs blocking test code (psql) off the runtime's workers.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// The rows of a SHOW command as column name -> value maps.
async fn rows(addr: SocketAddr, cmd: &'static str) -> Vec<BTreeMap<String, String>> {
    let (header, rows) = blocking(move || show(addr, cmd)).await;
    rows.into_iter()
        .map(|r| header.iter().cloned().zip(r).collect())
        .collect()
}

/// SHOW CLIENTS rows of user `app`.
async fn app_clients(addr: SocketAddr) -> Vec<BTreeMap<String, String>> {
    let mut r = rows(addr, "SHOW CLIENTS").await;
    r.retain(|c| c["user"] == "app");
    r
}

async fn until_parked(server: &Instance, n: usize) {
    let deadline = tokio::time::Instant::now() + T;
    while server.app().parked_clients() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {n} parked clients"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_clients_show_idle_with_their_statements_and_can_be_killed() {
    let pg = pg_with_app();
    let (server, addr) = start(base_config(&pg)).await;
    let client = app_client(addr).await;
    // tokio-postgres prepares named statements: one the client keeps.
    let stmt = client.prepare("select $1::int4 * 2").await.unwrap();
    let row = client.query_one(&stmt, &[&21i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    until_parked(&server, 1).await;

    let clients = app_clients(addr).await;
    assert_eq!(clients.len(), 1, "{clients:?}");
    let c = &clients[0];
    assert_eq!(c["state"], "idle", "{c:?}");
    assert_eq!(c["database"], "app");
    assert_eq!(c["link"], "", "{c:?}");
    assert_eq!(c["prepared_statements"], "1", "{c:?}");
    let id = c["id"].clone();
    assert!(id.parse::<u64>().is_ok(), "{c:?}");
    // The server connection it used keeps the statement prepared.
    let servers = rows(addr, "SHOW SERVERS").await;
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["state"], "idle");
    assert_eq!(servers[0]["prepared_statements"], "1", "{servers:?}");
    // Still parked: looking did not wake it.
    assert_eq!(server.app().parked_clients(), 1);

    // Counted per database and per user, parked or not.
    let second = app_client(addr).await;
    let dbs = rows(addr, "SHOW DATABASES").await;
    let app_db = dbs.iter().find(|d| d["name"] == "app").unwrap();
    assert_eq!(app_db["current_client_connections"], "2", "{app_db:?}");
    let users = rows(addr, "SHOW USERS").await;
    let app_user = users.iter().find(|u| u["name"] == "app").unwrap();
    assert_eq!(app_user["current_client_connections"], "2", "{app_user:?}");
    let admin_user = users.iter().find(|u| u["name"] == "admin").unwrap();
    assert_eq!(admin_user["current_client_connections"], "1");
    drop(second);

    // KILL_CLIENT reaches the parked client.
    blocking(move || admin(addr, &format!("KILL_CLIENT {id}"))).await;
    let e = client.query_one(&stmt, &[&1i32]).await.unwrap_err();
    let db = e
        .as_db_error()
        .map(|d| (d.severity().to_owned(), d.code().code().to_owned()));
    assert!(
        db.is_none() || db.as_ref().is_some_and(|d| d.0 == "FATAL"),
        "{e:?}"
    );
    let deadline = tokio::time::Instant::now() + T;
    while !app_clients(addr).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "still listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_state_follows_pause_suspend_and_resume() {
    let pg = pg_with_app();
    let (_server, addr) = start(base_config(&pg)).await;
    let state = || async move {
        rows(addr, "SHOW STATE")
            .await
            .into_iter()
            .map(|r| format!("{}={}", r["key"], r["value"]))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(state().await, "active=yes,paused=no,suspended=no");
    blocking(move || admin(addr, "PAUSE")).await;
    assert_eq!(state().await, "active=no,paused=yes,suspended=no");
    blocking(move || admin(addr, "RESUME")).await;
    assert_eq!(state().await, "active=yes,paused=no,suspended=no");
    blocking(move || admin(addr, "SUSPEND")).await;
    assert_eq!(state().await, "active=no,paused=no,suspended=yes");
    blocking(move || admin(addr, "RESUME")).await;
    assert_eq!(state().await, "active=yes,paused=no,suspended=no");
}
