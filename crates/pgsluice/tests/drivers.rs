//! The driver matrix (issue 19, docs/clients.md): every client driver pgsluice is
//! tried with, each through its own pgsluice in transaction pooling with SCRAM client
//! authentication, exercising prepared statements (the driver's own), a transaction
//! checked committed, an error mid-transaction (25P02 until ROLLBACK, then the
//! connection works) and, where the driver has them, COPY in and out and a cancel of
//! `pg_sleep(10)` (57014). Scripts per language: tests/python/driver_*.py,
//! tests/node/driver_pg.js, tests/java/DriverMatrix.java, tests/ruby/driver_pg.rb;
//! the Rust drivers are in tests/drivers_rust.
//!
//! A driver missing here fails its test with a hint (scripts/install-deps installs
//! them all), as in the other driver tests: CI never skips one.

mod common;
mod drivers_rust;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use drivers_rust::{assert_matrix_rows, copy_data, COPY_OUT};
use pgsluice::config::{AuthType, PoolMode};
use pgsluice_testkit::pg_bin;

/// Server connections per pool: fewer than the clients of the concurrent parts, so
/// statements move between server connections.
const POOL: usize = 3;

/// A cluster and pgsluice in transaction pooling, clients authenticating with SCRAM.
async fn start() -> Setup {
    let s = setup_with(PoolMode::Transaction, POOL, |c, _| {
        c.general.auth_type = AuthType::ScramSha256;
    })
    .await;
    assert_eq!(
        s.server().app().config().general.auth_type,
        AuthType::ScramSha256
    );
    s
}

/// Bind messages of named (prepared) statements pgsluice relayed so far: a driver that
/// says it prepares statements really sends them named.
fn named_binds(s: &Setup) -> u64 {
    s.server()
        .app()
        .pools()
        .iter()
        .map(|p| p.stats.totals().binds)
        .sum()
}

/// Asserts that at least `n` named statements were bound.
fn assert_named_binds(s: &Setup, n: u64) {
    let got = named_binds(s);
    assert!(got >= n, "{got} named Binds, want at least {n}");
}

/// Fails (never skips) when a driver is not installed.
fn require(present: bool, what: &str) {
    assert!(present, "{what} is not installed: run scripts/install-deps");
}

// ---------------------------------------------------------------------------
// libpq: psql and pgbench

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_libpq() {
    let s = start().await;
    let data = copy_data();
    let script = format!(
        "create table matrix(id int primary key, label text);\n\
         prepare twice(int) as select $1 * 2;\n\
         execute twice(21);\n\
         execute twice(5);\n\
         begin;\n\
         insert into matrix values (1, 'tx'), (2, 'tx'), (3, 'tx');\n\
         commit;\n\
         begin;\n\
         select 1/0;\n\
         \\echo error=:SQLSTATE\n\
         select 1;\n\
         \\echo next=:SQLSTATE\n\
         rollback;\n\
         select 42;\n\
         copy matrix(id, label) from stdin;\n\
         {data}\\.\n\
         {COPY_OUT};\n"
    );
    let out = tokio::task::block_in_place(|| psql(s.addr, USER, PASSWORD, DB, &[], &script));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("42\n10\nerror=22012\nnext=25P02\n42\n{}", data.trim_end())
    );
    assert!(
        stderr(&out).contains("current transaction is aborted"),
        "{}",
        stderr(&out)
    );
    assert_matrix_rows(&s, 2000);

    // Cancel: psql sends libpq's cancel on SIGINT.
    let mut cmd = Command::new(pg_bin("psql"));
    cmd.args([
        "-X",
        "-q",
        "-w",
        "-v",
        "VERBOSITY=verbose",
        "-h",
        "127.0.0.1",
        "-p",
    ])
    .arg(s.addr.port().to_string())
    .args(["-U", USER, "-d", DB, "-c", "select pg_sleep(10)"]);
    clean_pg_env(&mut cmd);
    cmd.env("PGPASSWORD", PASSWORD)
        .env("PGPASSFILE", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn psql");
    let direct = direct(&s.pg, DB).await;
    wait_active_query(&direct, "pg_sleep(10)").await;
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(kill.success());
    let out = tokio::task::block_in_place(|| child.wait_with_output()).unwrap();
    let elapsed = start.elapsed();
    assert!(
        stderr(&out).contains("57014: canceling statement due to user request"),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    assert!(elapsed < Duration::from_millis(9500), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_transactions_and_copy() {
    let s = start().await;
    // pgbench -i loads pgbench_accounts with COPY FROM STDIN.
    let init = tokio::task::block_in_place(|| {
        pgbench(s.addr.port(), &["-i", "-s", "1", "-q", "-I", "dtg"])
    });
    assert!(init.status.success(), "pgbench -i: {}", stderr(&init));
    assert_eq!(
        pg_sql(&s.pg, "select count(*) from pgbench_accounts"),
        "100000"
    );
    pg_sql(
        &s.pg,
        "create table bench(client int, v int); grant all on bench to app",
    );

    // Named prepared statements (-M prepared) in explicit transactions; each result is
    // checked by the script itself (a wrong one divides by zero: the client aborts).
    let dir = std::env::temp_dir().join(format!("pgsluice-drivers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("matrix.sql");
    std::fs::write(
        &script,
        "\\set v random(1, 1000)\n\
         BEGIN;\n\
         INSERT INTO bench(client, v) VALUES (:client_id, :v);\n\
         SELECT :v * 2 AS doubled, count(*) AS mine FROM bench WHERE client = :client_id \\gset\n\
         \\if :doubled != :v * 2\n\
         \\set boom 1 / 0\n\
         \\endif\n\
         COMMIT;\n",
    )
    .unwrap();
    let script = script.display().to_string();
    let out = tokio::task::block_in_place(|| {
        pgbench(
            s.addr.port(),
            &[
                "-n", "-M", "prepared", "-c", "8", "-j", "2", "-t", "50", "-f", &script,
            ],
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!("{}\n{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "pgbench failed:\n{text}");
    assert!(text.contains("number of failed transactions: 0"), "{text}");
    assert_eq!(pg_sql(&s.pg, "select count(*) from bench"), "400");
    // BEGIN, INSERT, SELECT and COMMIT: each a named statement.
    assert_named_binds(&s, 1600);
}

// ---------------------------------------------------------------------------
// Rust

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_driver() {
    let s = start().await;
    drivers_rust::tokio_postgres(&s).await;
    assert_matrix_rows(&s, 2000);
    assert_named_binds(&s, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_postgres_driver() {
    let s = start().await;
    drivers_rust::deadpool(&s).await;
    assert_matrix_rows(&s, 2000);
    assert_named_binds(&s, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_driver() {
    let s = start().await;
    drivers_rust::sqlx(&s).await;
    assert_matrix_rows(&s, 2000);
    assert_named_binds(&s, 150);
}

// ---------------------------------------------------------------------------
// Python

async fn python_driver(module: &str, script: &str, copied: usize, binds: u64) {
    require(python_has(module), &format!("python3 module {module}"));
    let s = start().await;
    run_python(script, s.addr).await;
    assert_matrix_rows(&s, copied);
    assert_named_binds(&s, binds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_driver() {
    python_driver("psycopg", "driver_psycopg.py", 2000, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg2_driver() {
    python_driver("psycopg2", "driver_psycopg2.py", 2000, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_driver() {
    python_driver("asyncpg", "driver_asyncpg.py", 2000, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_over_psycopg() {
    require(python_has("psycopg"), "python3 module psycopg");
    python_driver("sqlalchemy", "driver_sqlalchemy.py", 0, 50).await;
}

// ---------------------------------------------------------------------------
// Node.js, Java, Ruby

/// Issue 19's acceptance: 400 named prepared queries from 20 concurrent node-postgres
/// clients, all correct, through transaction pooling (and the rest of the matrix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_400_named_queries_from_20_clients() {
    let pg = format!("{}/tests/node/node_modules/pg", env!("CARGO_MANIFEST_DIR"));
    require(Path::new(&pg).is_dir(), "node-postgres (tests/node)");
    let s = start().await;
    let out = run_client_program("node", test_script("node", "driver_pg.js"), s.addr).await;
    assert!(out.contains("named_queries=400"), "{out}");
    assert_matrix_rows(&s, 0);
    assert_named_binds(&s, 400);
}

/// Issue 19's acceptance: pgjdbc with `prepareThreshold=1` runs 50 prepared queries,
/// all correct, through transaction pooling (and the rest of the matrix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_50_prepared_queries_with_prepare_threshold_1() {
    let s = start().await;
    let lines = run_java("DriverMatrix.java", s.addr);
    for want in [
        "prepared_ok=50",
        "committed=3",
        "aborted=25P02",
        "copy_in=2000",
        "copy_out=2000",
        "cancel=57014",
        "OK",
    ] {
        assert!(lines.iter().any(|l| l == want), "no {want} in {lines:?}");
    }
    assert_matrix_rows(&s, 2000);
    assert_named_binds(&s, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ruby_pg_driver() {
    let has_pg = Command::new("ruby")
        .args(["-e", "require 'pg'"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    require(has_pg, "ruby with the pg gem (Debian ruby-pg)");
    let s = start().await;
    run_client_program("ruby", test_script("ruby", "driver_pg.rb"), s.addr).await;
    assert_matrix_rows(&s, 2000);
    assert_named_binds(&s, 50);
}
