//! How each way a relay run ends returns the server connection and what the client is
//! told: over fake server connections (a local socket pair the test answers), no
//! PostgreSQL.

use std::time::Instant;

use pgsluice_protocol::SqlState;

use super::{conclude, Next};
use crate::client::relay::RelayEnd;
use crate::client::stop::Stop;
use crate::config::PoolMode;
use crate::pool::test_support::{open, standalone};
use crate::shutdown::TaskTracker;

const TERMINATE: &[u8] = b"X\0\0\0\x04";

fn ended(next: Next) -> (Option<SqlState>, &'static str) {
    match next {
        Next::Continue => panic!("the session was to end"),
        Next::End(n, reason) => (n.map(|n| n.code), reason),
    }
}

#[tokio::test]
async fn an_idle_release_point_keeps_the_session_and_the_connection() {
    let p = standalone(|_| {});
    let (co, _server) = open(&p, Instant::now());
    let tasks = TaskTracker::default();
    let next = conclude(
        RelayEnd::Idle,
        co,
        PoolMode::Transaction,
        false,
        None,
        &tasks,
    );
    assert!(matches!(next, Next::Continue));
    assert_eq!((p.status().idle, p.status().total), (1, 1));
}

#[tokio::test]
async fn a_shutdown_ends_the_session_at_its_release_point_and_keeps_the_connection() {
    let p = standalone(|_| {});
    let (co, _server) = open(&p, Instant::now());
    let tasks = TaskTracker::default();
    let next = conclude(
        RelayEnd::Idle,
        co,
        PoolMode::Transaction,
        false,
        Some(Stop::Shutdown),
        &tasks,
    );
    assert_eq!(ended(next), (Some(SqlState::ADMIN_SHUTDOWN), "shutdown"));
    assert_eq!(p.status().idle, 1, "clean at its release point: reusable");
}

#[tokio::test]
async fn a_client_leaving_mid_transaction_closes_the_connection() {
    let p = standalone(|_| {});
    let (co, mut server) = open(&p, Instant::now());
    let tasks = TaskTracker::default();
    let end = RelayEnd::ClientGone {
        server_idle: false,
        error: None,
    };
    let next = conclude(end, co, PoolMode::Transaction, false, None, &tasks);
    assert_eq!(ended(next), (None, "client closed"));
    assert_eq!(server.until_closed().await, TERMINATE);
    p.background().wait().await;
    assert_eq!(p.status().total, 0, "never reused");
}

#[tokio::test]
async fn a_client_leaving_between_transactions_leaves_the_connection_reusable() {
    let p = standalone(|_| {});
    let (co, _server) = open(&p, Instant::now());
    let tasks = TaskTracker::default();
    let end = RelayEnd::ClientGone {
        server_idle: true,
        error: Some(std::io::ErrorKind::ConnectionReset.into()),
    };
    let next = conclude(end, co, PoolMode::Transaction, false, None, &tasks);
    assert_eq!(ended(next), (None, "client connection error"));
    assert_eq!(p.status().idle, 1);
}

#[tokio::test]
async fn a_lost_or_confused_server_is_closed_and_the_client_told() {
    for (end, code, reason) in [
        (
            RelayEnd::ServerGone(None),
            SqlState::CONNECTION_FAILURE,
            "server connection lost",
        ),
        (
            RelayEnd::ServerProtocol(pgsluice_protocol::ProtocolError::Malformed("x")),
            SqlState::PROTOCOL_VIOLATION,
            "server protocol violation",
        ),
        (
            RelayEnd::ClientProtocol(pgsluice_protocol::ProtocolError::Malformed("x")),
            SqlState::PROTOCOL_VIOLATION,
            "client protocol violation",
        ),
    ] {
        let p = standalone(|_| {});
        let (co, mut server) = open(&p, Instant::now());
        let tasks = TaskTracker::default();
        let next = conclude(end, co, PoolMode::Transaction, false, None, &tasks);
        assert_eq!(ended(next), (Some(code), reason));
        assert_eq!(server.until_closed().await, TERMINATE, "{reason}");
        p.background().wait().await;
        assert_eq!(p.status().total, 0, "{reason}: never reused");
    }
}

#[tokio::test]
async fn a_transaction_block_in_statement_mode_is_rolled_back_before_reuse() {
    let p = standalone(|_| {});
    let (co, mut server) = open(&p, Instant::now());
    let tasks = TaskTracker::default();
    let end = RelayEnd::TransactionBlock { server_quiet: true };
    let next = conclude(end, co, PoolMode::Statement, false, None, &tasks);
    assert_eq!(
        ended(next),
        (
            Some(SqlState::PROTOCOL_VIOLATION),
            "transaction block in statement mode"
        )
    );
    assert_eq!(server.query().await, "ROLLBACK");
    assert_eq!(
        p.status().idle,
        0,
        "not reusable before its ROLLBACK succeeded"
    );
    server.answer(true).await;
    p.background().wait().await;
    assert_eq!(p.status().idle, 1);
}

#[tokio::test]
async fn a_killed_client_with_a_running_query_gets_it_cancelled_in_a_tracked_task() {
    let p = standalone(|_| {});
    let (co, _server) = open(&p, Instant::now());
    let tasks = TaskTracker::default();
    let next = conclude(
        RelayEnd::Killed,
        co,
        PoolMode::Transaction,
        true,
        None,
        &tasks,
    );
    assert_eq!(
        ended(next),
        (Some(SqlState::ADMIN_SHUTDOWN), "killed by admin command")
    );
    // The CancelRequest goes to the (unreachable) server target in a task of `tasks`.
    assert_eq!(tasks.live(), 1);
    tasks.wait().await;
    p.background().wait().await;
    assert_eq!(
        p.status().total,
        0,
        "a killed client's connection is closed"
    );
}
