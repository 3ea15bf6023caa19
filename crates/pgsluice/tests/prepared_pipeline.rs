//! Prepared statements after errors inside pipelines (issue 13), with real drivers in
//! transaction mode: PostgreSQL skips every message after an error until the next
//! Sync, and pgsluice's statement bookkeeping must count those messages as never sent.
//! Each driver script runs against PostgreSQL directly first (it must pass there: the
//! script checks PostgreSQL's behaviour), then through pgsluice.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use pgsluice::config::{Config, PoolMode};
use pgsluice_testkit::PgCluster;
use tokio_postgres::{Client, NoTls};

struct Setup {
    cluster: PgCluster,
    server: pgsluice::Instance,
}

impl Setup {
    async fn start(pool_size: usize) -> Setup {
        let cluster = PgCluster::start().expect("start PostgreSQL");
        cluster.create_user("app", "app").unwrap();
        cluster.create_database("app", "app").unwrap();
        let mut cfg = Config::quick(&cluster.url("app", "app", "app")).unwrap();
        cfg.general.listen = vec!["127.0.0.1:0".parse().unwrap()];
        cfg.general.default_pool_size = pool_size;
        cfg.general.pool_mode = PoolMode::Transaction;
        let server = pgsluice::Instance::start(cfg)
            .await
            .expect("start pgsluice");
        Setup { cluster, server }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addrs()[0]
    }

    async fn connect(&self) -> Client {
        let a = self.addr();
        let conn = format!(
            "host={} port={} user=app password=app dbname=app",
            a.ip(),
            a.port()
        );
        let (client, connection) = tokio_postgres::connect(&conn, NoTls)
            .await
            .expect("connect through pgsluice");
        tokio::spawn(connection);
        client
    }
}

/// Runs a script of tests/python against `host:port`; panics with its output unless
/// it printed OK.
async fn run_python_at(script: &str, host: String, port: u16, what: &str) {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(&path)
            .env("PGS_HOST", host)
            .env("PGS_PORT", port.to_string())
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("OK"),
        "{script} {what} failed:\n{text}"
    );
}

/// Directly against PostgreSQL, then through pgsluice.
async fn both_ways(s: &Setup, script: &str) {
    let pg = &s.cluster;
    run_python_at(
        script,
        pg.host().to_owned(),
        pg.port(),
        "against PostgreSQL",
    )
    .await;
    let a = s.addr();
    run_python_at(script, a.ip().to_string(), a.port(), "through pgsluice").await;
}

/// The case (psycopg 3 pipeline mode, prepare_threshold=0: the second query
/// fails, the third is prepared; then six prepared queries), and libpq's pipeline mode
/// (PQsendPrepare after an error in the same Sync window, then a pipeline of two Syncs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_libpq_pipelines_with_a_failing_statement() {
    assert!(
        common::python_has("psycopg"),
        "psycopg 3 is not installed: run scripts/install-deps"
    );
    // One server connection: every statement meets the connection's bookkeeping.
    let s = Setup::start(1).await;
    both_ways(&s, "psycopg_pipeline.py").await;
}

/// asyncpg executemany with a failing row, two clients on one server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_executemany_with_a_failing_row() {
    assert!(
        common::python_has("asyncpg"),
        "asyncpg is not installed: run scripts/install-deps"
    );
    let s = Setup::start(1).await;
    both_ways(&s, "asyncpg_executemany.py").await;
}

/// tokio-postgres pipelines concurrent queries on one connection (each its own Sync
/// window): a failing statement in the middle fails alone, and the prepared queries
/// around it, before and after, return their own values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_pipelining_with_a_failing_statement() {
    let s = Setup::start(2).await;
    let client = s.connect().await;
    let double = client.prepare("select $1::int4 * 2").await.unwrap();
    let plus = client.prepare("select $1::int4 + 100").await.unwrap();
    // Another client takes turns on the connections, so statements meet connections
    // that lack them and pgsluice prepares them there inside the pipelines.
    let other = s.connect().await;
    for round in 0..5i32 {
        other
            .batch_execute("begin; select 1; commit")
            .await
            .unwrap();
        let queries = (0..8i32).map(|i| {
            let (client, double, plus) = (&client, &double, &plus);
            async move {
                match i {
                    3 => client
                        .query_one("select * from no_such_table", &[])
                        .await
                        .map(|_| -1),
                    5 => client
                        .query_one("select 1/($1::int4 - $1::int4)", &[&i])
                        .await
                        .map(|r| r.get(0)),
                    _ if i % 2 == 0 => client
                        .query_one(double, &[&(round * 10 + i)])
                        .await
                        .map(|r| r.get(0)),
                    _ => client
                        .query_one(plus, &[&(round * 10 + i)])
                        .await
                        .map(|r| r.get(0)),
                }
            }
        });
        let results = futures_util::future::join_all(queries).await;
        for (i, r) in (0..8i32).zip(results) {
            let v = round * 10 + i;
            match i {
                3 => assert_eq!(
                    r.unwrap_err().code().map(|c| c.code()),
                    Some("42P01"),
                    "round {round}"
                ),
                5 => assert_eq!(
                    r.unwrap_err().code().map(|c| c.code()),
                    Some("22012"),
                    "round {round}"
                ),
                _ if i % 2 == 0 => assert_eq!(r.unwrap(), v * 2, "round {round} query {i}"),
                _ => assert_eq!(r.unwrap(), v + 100, "round {round} query {i}"),
            }
        }
    }
    // Afterwards, sequential prepared queries and a new statement work.
    for i in 0..6 {
        let r = client.query_one(&double, &[&i]).await.unwrap();
        assert_eq!(r.get::<_, i32>(0), i * 2);
    }
    let third = client.prepare("select $1::int4 - 1").await.unwrap();
    assert_eq!(
        client
            .query_one(&third, &[&7])
            .await
            .unwrap()
            .get::<_, i32>(0),
        6
    );
}
