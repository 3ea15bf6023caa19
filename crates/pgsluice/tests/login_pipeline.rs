//! A client that pipelines a large batch of queries in the same write as its login
//! (trust: right behind the StartupMessage; plain: right behind the PasswordMessage)
//! gets every answer, in session and transaction mode. The bytes that arrive with the
//! login are handed to the session; none may be lost, however many there are.

mod common;

use std::io::Write;

use common::*;
use pgsluice::config::{AuthType, PoolMode};

/// How many queries the batch holds (about 64 KiB of Query messages).
const QUERIES: usize = 1_500;

/// `QUERIES` simple Query messages, `select <i>` padded to make the batch ~64 KiB.
fn batch() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..QUERIES {
        out.extend_from_slice(&query_message(&format!(
            "select {i} as n /* {:>20} */",
            "padding padding"
        )));
    }
    assert!(out.len() >= 64 * 1024, "batch is {} bytes", out.len());
    out
}

/// Reads answers until `QUERIES` ReadyForQuery; checks each DataRow carries its number.
fn expect_all_answers(s: &mut std::net::TcpStream) {
    for i in 0..QUERIES {
        let msgs = read_until_ready(s);
        let row = msgs
            .iter()
            .find(|(t, _)| *t == b'D')
            .unwrap_or_else(|| panic!("query {i}: no DataRow in {msgs:?}"));
        // DataRow: int16 column count, int32 length, value.
        let value = std::str::from_utf8(&row.1[6..]).unwrap();
        assert_eq!(value, i.to_string(), "query {i} answered out of order");
    }
}

fn password_message(password: &str) -> Vec<u8> {
    let mut m = vec![b'p'];
    m.extend_from_slice(&((password.len() + 5) as i32).to_be_bytes());
    m.extend_from_slice(password.as_bytes());
    m.push(0);
    m
}

async fn trust_login_with_batch(mode: PoolMode) {
    let s = setup_with(mode, 2, |c, _| c.general.auth_type = AuthType::Trust).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let mut sock = raw_connect(addr);
        let mut bytes = startup_message(&[("user", USER), ("database", DB)]);
        bytes.extend_from_slice(&batch());
        sock.write_all(&bytes).unwrap();
        let login = read_until_ready(&mut sock);
        assert!(login.iter().any(|(t, _)| *t == b'R'), "{login:?}");
        expect_all_answers(&mut sock);
    })
    .await
    .unwrap();
    assert_serves_plain(&s).await;
}

/// A role whose password is long enough that the login buffer grows past the relay's
/// buffer: the batch behind it arrives in the same reads.
const LONG_USER: &str = "longpw";

fn long_password() -> String {
    "p".repeat(15_000)
}

async fn plain_login_with_batch(mode: PoolMode) {
    let pg = cluster();
    tokio::task::block_in_place(|| pg.create_user(LONG_USER, &long_password())).unwrap();
    let mut cfg = pgsluice::config::Config::quick(&pg.url(LONG_USER, &long_password(), DB))
        .expect("quick config");
    cfg.general.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.general.pool_mode = mode;
    cfg.general.default_pool_size = 2;
    cfg.general.auth_type = AuthType::Plain;
    let (server, addr) = start_pooler(cfg).await;
    tokio::task::spawn_blocking(move || {
        let mut sock = raw_connect(addr);
        sock.write_all(&startup_message(&[("user", LONG_USER), ("database", DB)]))
            .unwrap();
        // AuthenticationCleartextPassword: 'R', length 8, code 3.
        let mut head = [0u8; 9];
        std::io::Read::read_exact(&mut sock, &mut head).unwrap();
        assert_eq!(head[0], b'R');
        assert_eq!(i32::from_be_bytes(head[5..9].try_into().unwrap()), 3);
        let mut bytes = password_message(&long_password());
        bytes.extend_from_slice(&batch());
        sock.write_all(&bytes).unwrap();
        let login = read_until_ready(&mut sock);
        assert!(login.iter().any(|(t, _)| *t == b'K'), "{login:?}");
        expect_all_answers(&mut sock);
    })
    .await
    .unwrap();
    drop(server);
    drop(pg);
}

/// The pooler still serves a fresh (trust) client after the batch.
async fn assert_serves_plain(s: &Setup) {
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let (mut sock, _) = raw_login(addr, &[("user", USER), ("database", DB)]);
        sock.write_all(&query_message("select 7")).unwrap();
        let msgs = read_until_ready(&mut sock);
        assert!(msgs.iter().any(|(t, _)| *t == b'D'), "{msgs:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_behind_startup_session_mode() {
    trust_login_with_batch(PoolMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_behind_startup_transaction_mode() {
    trust_login_with_batch(PoolMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_behind_password_session_mode() {
    plain_login_with_batch(PoolMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_behind_password_transaction_mode() {
    plain_login_with_batch(PoolMode::Transaction).await;
}
