//! Prepared statements and session state across transaction pooling (issue 4), against
//! real PostgreSQL and real drivers.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use bytes::BytesMut;
use pgsluice::config::{AuthType, Config, PoolMode};
use pgsluice_protocol::frame::split_message;
use pgsluice_protocol::{backend, frontend, startup};
use pgsluice_testkit::{pg_bin, PgCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls};

struct Setup {
    cluster: PgCluster,
    server: pgsluice::Instance,
}

impl Setup {
    async fn start(pool_size: usize) -> Setup {
        Self::start_with(pool_size, |_| {}).await
    }

    async fn start_with(pool_size: usize, edit: impl FnOnce(&mut Config)) -> Setup {
        let cluster = PgCluster::start().expect("start PostgreSQL");
        cluster.create_user("app", "app").unwrap();
        cluster.create_database("app", "app").unwrap();
        let mut cfg = Config::quick(&cluster.url("app", "app", "app")).unwrap();
        cfg.general.listen = vec!["127.0.0.1:0".parse().unwrap()];
        cfg.general.default_pool_size = pool_size;
        cfg.general.pool_mode = PoolMode::Transaction;
        edit(&mut cfg);
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

    /// Backends of user `app` on the real server right now.
    fn app_backends(&self) -> usize {
        self.cluster
            .psql("select count(*) from pg_stat_activity where usename = 'app'")
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no code: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_with_40_clients_on_4_connections() {
    let s = Setup::start(4).await;
    let a = s.addr();
    let port = a.port().to_string();
    let run = move |args: &[&str]| {
        let out = Command::new(pg_bin("pgbench"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "app"])
            .args(args)
            .arg("app")
            .env("PGPASSWORD", "app")
            .output()
            .expect("run pgbench");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
        text
    };
    let s2 = tokio::task::spawn_blocking(move || {
        run(&["-i", "-s", "1", "-q"]);
        let out = run(&["-M", "prepared", "-c", "40", "-j", "2", "-t", "30"]);
        assert!(out.contains("number of failed transactions: 0"), "{out}");
        assert!(
            out.contains("number of transactions actually processed: 1200/1200"),
            "{out}"
        );
        let out = run(&["-M", "prepared", "-S", "-c", "40", "-j", "2", "-t", "50"]);
        assert!(
            out.contains("number of transactions actually processed: 2000/2000"),
            "{out}"
        );
    });
    s2.await.unwrap();
    assert!(
        s.app_backends() <= 4,
        "more server connections than the pool size"
    );
}

/// A bare protocol client (trust auth) for exchanges drivers do not let us write.
struct Raw {
    stream: tokio::net::TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut out = BytesMut::new();
        startup::write_startup(&mut out, &[("user", "app"), ("database", "app")]);
        stream.write_all(&out).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
        };
        raw.until_ready().await;
        raw
    }

    /// Reads until ReadyForQuery; returns (DataRow first values, error codes, tags seen).
    async fn until_ready(&mut self) -> (Vec<String>, Vec<String>, String) {
        let (mut rows, mut errors, mut tags) = (Vec::new(), Vec::new(), String::new());
        loop {
            while let Some(m) = split_message(&mut self.buf, 1 << 30).unwrap() {
                tags.push(m.tag as char);
                match m.tag {
                    b'D' => {
                        let len = i32::from_be_bytes(m.body[2..6].try_into().unwrap()) as usize;
                        rows.push(String::from_utf8_lossy(&m.body[6..6 + len]).into_owned());
                    }
                    b'E' => errors.push(
                        backend::parse_error_fields(&m.body)
                            .unwrap()
                            .code
                            .to_owned(),
                    ),
                    b'Z' => return (rows, errors, tags),
                    _ => {}
                }
            }
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "pgsluice closed the connection");
        }
    }

    async fn send(&mut self, build: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        build(&mut out);
        self.stream.write_all(&out).await.unwrap();
    }
}

fn bind_execute(out: &mut BytesMut, stmt: &str) {
    // Bind: unnamed portal, statement, no parameter formats, no parameters, no result formats.
    out.extend_from_slice(b"B");
    let body_len = 1 + stmt.len() + 1 + 2 + 2 + 2;
    out.extend_from_slice(&((body_len + 4) as u32).to_be_bytes());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(stmt.as_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    // Execute unnamed portal, no row limit.
    out.extend_from_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_statement_name_different_sql_per_client() {
    // Two clients use the same statement name for different SQL on one server connection.
    let s = Setup::start_with(1, |c| c.general.auth_type = AuthType::Trust).await;
    let mut a = Raw::connect(s.addr()).await;
    let mut b = Raw::connect(s.addr()).await;
    a.send(|o| {
        frontend::parse(o, "s1", b"select 'from a'", &[]);
        frontend::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await.2, "1Z");
    b.send(|o| {
        frontend::parse(o, "s1", b"select 'from b'", &[]);
        frontend::sync(o);
    })
    .await;
    assert_eq!(b.until_ready().await.2, "1Z");
    for _ in 0..3 {
        for (c, want) in [(&mut a, "from a"), (&mut b, "from b")] {
            c.send(|o| {
                bind_execute(o, "s1");
                frontend::sync(o);
            })
            .await;
            let (rows, errors, _) = c.until_ready().await;
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(rows, vec![want.to_owned()]);
        }
    }
    // A duplicate name is 42P05, as PostgreSQL says, and the pipeline skips to Sync.
    a.send(|o| {
        frontend::parse(o, "s1", b"select 'again'", &[]);
        bind_execute(o, "s1");
        frontend::sync(o);
    })
    .await;
    let (rows, errors, tags) = a.until_ready().await;
    assert_eq!(errors, vec!["42P05".to_owned()], "{tags}");
    assert!(rows.is_empty());
    // Close forgets the name; Bind to it is then 26000; a new Parse of the name works.
    a.send(|o| {
        frontend::target_message(o, frontend::tag::CLOSE, b'S', "s1");
        frontend::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await.2, "3Z");
    a.send(|o| {
        bind_execute(o, "s1");
        frontend::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await.1, vec!["26000".to_owned()]);
    a.send(|o| {
        frontend::parse(o, "s1", b"select 'new a'", &[]);
        bind_execute(o, "s1");
        frontend::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await.0, vec!["new a".to_owned()]);
    // b's statement of the same name is untouched.
    b.send(|o| {
        bind_execute(o, "s1");
        frontend::sync(o);
    })
    .await;
    assert_eq!(b.until_ready().await.0, vec!["from b".to_owned()]);
    // A failed Parse leaves nothing behind.
    b.send(|o| {
        frontend::parse(o, "bad", b"select * from no_such_table", &[]);
        frontend::sync(o);
    })
    .await;
    assert_eq!(b.until_ready().await.1, vec!["42P01".to_owned()]);
    b.send(|o| {
        bind_execute(o, "bad");
        frontend::sync(o);
    })
    .await;
    assert_eq!(b.until_ready().await.1, vec!["26000".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_survive_server_switches() {
    let s = Setup::start(3).await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(s.connect().await);
    }
    let mut tasks = Vec::new();
    for (n, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let st = c
                .prepare("select $1::int4 * 2, pg_backend_pid()")
                .await
                .unwrap();
            let mut pids = std::collections::HashSet::new();
            for i in 0..100i32 {
                let row = c.query_one(&st, &[&i]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), i * 2, "client {n}");
                pids.insert(row.get::<_, i32>(1));
                if i % 10 == 0 {
                    // A transaction in the middle keeps its statement on one server.
                    c.batch_execute("begin").await.unwrap();
                    let a = c.query_one(&st, &[&1]).await.unwrap().get::<_, i32>(1);
                    let b = c.query_one(&st, &[&2]).await.unwrap().get::<_, i32>(1);
                    assert_eq!(a, b, "a transaction stays on one server connection");
                    c.batch_execute("commit").await.unwrap();
                }
            }
            pids.len()
        }));
    }
    let mut switched = false;
    for t in tasks {
        switched |= t.await.unwrap() > 1;
    }
    assert!(
        switched,
        "test premise: some client used more than one server connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_postgres_semantics() {
    let s = Setup::start(2).await;
    let c = s.connect().await;
    // A failed Parse leaves nothing behind.
    let e = c.prepare("select * from no_such_table").await.unwrap_err();
    assert_eq!(code(&e), "42P01");
    // Bind to an unknown statement name: 26000, as PostgreSQL says it.
    let raw = s.connect().await;
    let e = raw.batch_execute("execute nope").await.unwrap_err();
    assert_eq!(code(&e), "26000");
    // The connection is still usable, in and out of transactions.
    let st = c.prepare("select 1").await.unwrap();
    c.batch_execute("begin").await.unwrap();
    let e = c.query("select 1/0", &[]).await.unwrap_err();
    assert_eq!(code(&e), "22012");
    let e = c.query(&st, &[]).await.unwrap_err();
    assert_eq!(code(&e), "25P02", "failed transaction rejects statements");
    c.batch_execute("rollback").await.unwrap();
    assert_eq!(c.query_one(&st, &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_is_invisible_to_clients() {
    // Many distinct statements on one server connection: the per-server cache bound
    // (200) forces evictions; clients keep using every statement.
    let s = Setup::start(1).await;
    let c = s.connect().await;
    let mut stmts = Vec::new();
    for i in 0..260 {
        stmts.push(
            c.prepare(&format!("select {i}::int4 + $1::int4"))
                .await
                .unwrap(),
        );
    }
    for round in 0..2 {
        for (i, st) in stmts.iter().enumerate() {
            let v: i32 = c.query_one(st, &[&round]).await.unwrap().get(0);
            assert_eq!(v, i as i32 + round);
        }
    }
    let on_server: i64 = s
        .cluster
        .psql("select count(*) from pg_stat_activity where usename = 'app'")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(on_server, 1);
    let stats = &s.server.app().clients().statements.stats;
    assert!(
        stats.evictions.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "evictions happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_parameters_never_reach_another_client() {
    let s = Setup::start(1).await;
    let a = s.connect().await;
    let b = s.connect().await;
    a.batch_execute("set timezone = 'Asia/Tokyo'")
        .await
        .unwrap();
    a.batch_execute("set application_name = 'client-a'")
        .await
        .unwrap();
    let tz_b: String = b.query_one("show timezone", &[]).await.unwrap().get(0);
    let app_b: String = b
        .query_one("show application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(tz_b, "Asia/Tokyo");
    assert_ne!(app_b, "client-a");
    let tz_a: String = a.query_one("show timezone", &[]).await.unwrap().get(0);
    assert_eq!(tz_a, "Asia/Tokyo");
    // Closing a statement only forgets the client's name; another client's same SQL works.
    let st = a.prepare("select 7").await.unwrap();
    drop(st);
    let st_b = b.prepare("select 7").await.unwrap();
    assert_eq!(b.query_one(&st_b, &[]).await.unwrap().get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_with_default_statement_cache() {
    assert!(
        common::python_has("asyncpg"),
        "asyncpg is not installed: run scripts/install-deps"
    );
    let s = Setup::start(4).await;
    common::run_python("asyncpg_workload.py", s.addr()).await;
    assert!(s.app_backends() <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_preparing_every_statement() {
    assert!(
        common::python_has("psycopg"),
        "psycopg 3 is not installed: run scripts/install-deps"
    );
    let s = Setup::start(4).await;
    common::run_python("psycopg_workload.py", s.addr()).await;
    assert!(s.app_backends() <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_session_state_is_refused_not_leaked() {
    let s = Setup::start(1).await;
    let a = s.connect().await;
    let b = s.connect().await;
    // Past its setup: a SET as a client's first requests is carried, not refused
    // (tests/session_params.rs).
    a.batch_execute("select 1").await.unwrap();
    let e = a
        .batch_execute("set statement_timeout = '1ms'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    let db = e.as_db_error().unwrap();
    assert!(
        db.message().contains("SET statement_timeout"),
        "{}",
        db.message()
    );
    assert!(
        db.hint().unwrap_or("").contains("SET LOCAL"),
        "{:?}",
        db.hint()
    );
    let v: String = b
        .query_one("show statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "0", "nothing reached the shared server connection");
    // Inside a transaction block the refusal aborts the block, as any error would.
    a.batch_execute("begin").await.unwrap();
    let e = a.batch_execute("listen chan").await.unwrap_err();
    assert_eq!(code(&e), "0A000");
    let e = a.query("select 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    a.batch_execute("rollback").await.unwrap();
    // What transaction pooling can carry still works.
    a.batch_execute("begin; set local statement_timeout = '5s'; commit")
        .await
        .unwrap();
    a.batch_execute("set timezone = 'UTC'").await.unwrap();
    // Extended protocol: the refusal is raised when the statement runs.
    let st = a.prepare("create temporary table tt(x int)").await.unwrap();
    let e = a.execute(&st, &[]).await.unwrap_err();
    assert_eq!(code(&e), "0A000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_statements_and_state_on_one_connection() {
    let s = Setup::start_with(1, |c| c.general.pool_mode = PoolMode::Session).await;
    let a = s.connect().await;
    a.batch_execute("set statement_timeout = '10s'; prepare p as select 5")
        .await
        .unwrap();
    let v: i32 = a.query_one("execute p", &[]).await.unwrap().get(0);
    assert_eq!(v, 5);
    let st = a.prepare("select $1::int4 + 1").await.unwrap();
    assert_eq!(
        a.query_one(&st, &[&1i32]).await.unwrap().get::<_, i32>(0),
        2
    );
    drop(a);
    // After the session ends, DISCARD ALL cleans the connection for the next client.
    let b = s.connect().await;
    let v: String = b
        .query_one("show statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "0");
    let e = b.batch_execute("execute p").await.unwrap_err();
    assert_eq!(code(&e), "26000");
}
