//! LISTEN/NOTIFY through pgsluice in transaction mode with real client programs:
//! psql, psycopg 3, asyncpg and node-postgres; and a soak of 200 listeners while
//! pgbench runs through the same small pool.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use pgsluice::config::PoolMode;
use pgsluice::Instance;
use pgsluice_testkit::pg_bin;
use tokio_postgres::AsyncMessage;

/// How many clients listen through the pooler's hubs.
fn listening(server: &Instance) -> usize {
    hub_sum(server, |h| h.listening_clients())
}

/// Messages waiting in the pooler's notification queues.
fn queued(server: &Instance) -> usize {
    hub_sum(server, |h| h.queued_messages())
}

fn hub_sum(server: &Instance, f: impl Fn(&pgsluice::notify::NotifyHub) -> usize) -> usize {
    server
        .app()
        .pools()
        .iter()
        .filter_map(|p| p.notify_hub_if_any().map(|h| f(h)))
        .sum()
}

/// The next notification's payload on channel `ch`, within [`PROMPTLY`].
async fn next_payload(c: &mut Conn, ch: &str) -> String {
    loop {
        let m = tokio::time::timeout(PROMPTLY, c.messages.recv())
            .await
            .expect("no notification arrived")
            .expect("the connection ended");
        if let AsyncMessage::Notification(n) = m {
            assert_eq!(n.channel(), ch);
            return n.payload().to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_prints_notifications_after_its_commands() {
    let s = setup(PoolMode::Transaction, 1).await;
    let server = s.server.as_ref().unwrap();
    let mut cmd = Command::new(pg_bin("psql"));
    cmd.args(["-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p"])
        .arg(s.addr.port().to_string())
        .args(["-U", USER, "-d", DB, "-f", "-"]);
    clean_pg_env(&mut cmd);
    cmd.env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSFILE", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn psql");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"LISTEN psqlch;\n").unwrap();
    stdin.flush().unwrap();
    eventually("psql listening", PROMPTLY, || async {
        (listening(server) == 1).then_some(())
    })
    .await;
    // A second listener tells when the hub has the notification; once the queues are
    // empty again, psql's copy is on its socket, and psql reads it with its next
    // command.
    let mut witness = connect_full(s.addr).await;
    witness.client.batch_execute("LISTEN psqlch").await.unwrap();
    let n = connect(s.addr).await;
    n.batch_execute("NOTIFY psqlch, 'hello psql'")
        .await
        .unwrap();
    assert_eq!(next_payload(&mut witness, "psqlch").await, "hello psql");
    eventually("the queues drained", PROMPTLY, || async {
        (queued(server) == 0).then_some(())
    })
    .await;
    stdin
        .write_all(b"select pg_sleep(0.1);\nselect pg_sleep(0.1);\n\\q\n")
        .unwrap();
    drop(stdin);
    let out = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "psql failed:\n{text}");
    assert!(
        text.contains("Asynchronous notification \"psqlch\" with payload \"hello psql\" received"),
        "psql did not print the notification:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_notifies() {
    assert!(
        python_has("psycopg"),
        "psycopg 3 is not installed: run scripts/install-deps"
    );
    let s = setup(PoolMode::Transaction, 1).await;
    run_client_program(
        "python3",
        test_script("python", "psycopg_notify.py"),
        s.addr,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_add_listener() {
    assert!(
        python_has("asyncpg"),
        "asyncpg is not installed: run scripts/install-deps"
    );
    let s = setup(PoolMode::Transaction, 1).await;
    run_client_program(
        "python3",
        test_script("python", "asyncpg_notify.py"),
        s.addr,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_on_notification() {
    let pg = format!("{}/tests/node/node_modules/pg", env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::path::Path::new(&pg).is_dir(),
        "node-postgres is not installed in tests/node: run scripts/install-deps"
    );
    let s = setup(PoolMode::Transaction, 1).await;
    run_client_program("node", test_script("node", "notify.js"), s.addr).await;
}

const LISTENERS: usize = 200;
const BURSTS: usize = 5;
const PER_BURST: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_200_listeners_with_pgbench_on_a_pool_of_5() {
    let s = setup(PoolMode::Transaction, 5).await;
    let server = s.server.as_ref().unwrap();
    let init = tokio::task::block_in_place(|| pgbench(s.addr.port(), &["-i", "-s", "1", "-q"]));
    assert!(init.status.success(), "pgbench -i: {}", stderr(&init));
    let mut listeners = Vec::with_capacity(LISTENERS);
    for _ in 0..LISTENERS {
        let c = connect_full(s.addr).await;
        c.client.batch_execute("LISTEN soak").await.unwrap();
        listeners.push(c);
    }
    assert_eq!(listening(server), LISTENERS);
    let addr = s.addr;
    let bench = tokio::task::spawn_blocking(move || {
        pgbench(addr.port(), &["-S", "-c", "4", "-j", "2", "-T", "4", "-n"])
    });
    let n = connect(s.addr).await;
    for b in 0..BURSTS {
        let sql: String = (0..PER_BURST)
            .map(|i| format!("NOTIFY soak, '{}';", b * PER_BURST + i))
            .collect();
        n.batch_execute(&sql).await.unwrap();
        // Meanwhile the listeners run transactions of their own now and then.
        let l = &listeners[b * 7 % LISTENERS];
        assert_eq!(count(&l.client, "select 5::int8").await, 5);
    }
    let got = futures_util::future::join_all(listeners.iter_mut().map(|l| async move {
        let mut got = Vec::with_capacity(BURSTS * PER_BURST);
        for _ in 0..BURSTS * PER_BURST {
            got.push(next_payload(l, "soak").await.parse::<usize>().unwrap());
        }
        got
    }))
    .await;
    let want: Vec<usize> = (0..BURSTS * PER_BURST).collect();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &want, "listener {i} got another sequence");
    }
    let bench = bench.await.unwrap();
    let text = format!("{}\n{}", stdout(&bench), stderr(&bench));
    assert!(bench.status.success(), "pgbench -S failed:\n{text}");
    assert!(
        text.contains("number of failed transactions: 0"),
        "pgbench:\n{text}"
    );
    // PostgreSQL saw at most the pool and the listener connection.
    let direct = direct(&s.pg, "postgres").await;
    assert!(app_backends(&direct).await <= 6);
}
