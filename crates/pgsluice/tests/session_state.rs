//! Session settings carried in transaction pooling (docs/session-state.md): each
//! client's search_path and `track_extra_parameters` follow it from server connection
//! to server connection, with PostgreSQL's own semantics (a SET in a rolled-back
//! transaction, SET LOCAL, set_config, RESET, RESET ALL, DISCARD ALL); what cannot be
//! carried is refused by the parser-based guard, and nothing leaks to another client.
//!
//! The test clusters run a PostgreSQL that does not report search_path (before 18), so
//! these tests exercise the read-back path.

mod common;

use std::io::Write;
use std::process::Command;

use common::*;
use pgsluice::config::{AuthType, PoolMode};
use pgsluice_testkit::pg_bin;
use tokio_postgres::Client;

/// Schemas s0..s{n-1}, each with a table `t` holding its own number.
async fn schemas(direct: &Client, n: usize) {
    for i in 0..n {
        direct
            .batch_execute(&format!(
                "create schema if not exists s{i} authorization {USER};
                 create table if not exists s{i}.t(x int);
                 alter table s{i}.t owner to {USER};
                 truncate s{i}.t; insert into s{i}.t values ({i});"
            ))
            .await
            .unwrap();
    }
}

async fn show(c: &Client, what: &str) -> String {
    simple_value(c, &format!("show {what}"))
        .await
        .unwrap()
        .unwrap()
}

async fn t_value(c: &Client) -> Result<Option<String>, tokio_postgres::Error> {
    simple_value(c, "select x::text from t").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_keeps_its_search_path_across_server_connections() {
    let s = setup(PoolMode::Transaction, 2).await;
    let direct = direct(&s.pg, DB).await;
    schemas(&direct, 6).await;
    let default_path = show(&direct, "search_path").await;

    let mut clients = Vec::new();
    for i in 0..6 {
        let c = connect(s.addr).await;
        if i % 2 == 0 {
            // Past its setup phase: the ordinary path.
            c.batch_execute("select 1").await.unwrap();
        }
        c.batch_execute(&format!("SET search_path TO s{i}, public"))
            .await
            .unwrap();
        clients.push(c);
    }
    let plain = connect(s.addr).await;
    for round in 0..4 {
        for (i, c) in clients.iter().enumerate() {
            assert_eq!(
                t_value(c).await.unwrap().as_deref(),
                Some(i.to_string().as_str()),
                "client {i}, round {round}"
            );
            // The extended protocol sees it too.
            let row = c.query_one("select current_schema()", &[]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), format!("s{i}"));
        }
        // A client that never set it has the server's default on every connection.
        assert_eq!(show(&plain, "search_path").await, default_path);
    }
    assert!(app_backends(&direct).await <= 2, "pool size respected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_postgresql_transaction_semantics() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    schemas(&direct, 3).await;
    let default_path = show(&direct, "search_path").await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    a.batch_execute("select 1").await.unwrap();

    // A SET in a rolled-back transaction is undone.
    a.batch_execute("begin; set search_path = s1; rollback")
        .await
        .unwrap();
    assert_eq!(show(&a, "search_path").await, default_path);
    // SET LOCAL ends with the transaction.
    a.batch_execute("begin; set local search_path = s1; commit")
        .await
        .unwrap();
    assert_eq!(show(&a, "search_path").await, default_path);
    // A committed SET stays, and is not B's.
    a.batch_execute("begin; set search_path = s1; commit")
        .await
        .unwrap();
    assert_eq!(t_value(&a).await.unwrap().as_deref(), Some("1"));
    assert_eq!(show(&b, "search_path").await, default_path);
    assert_eq!(t_value(&a).await.unwrap().as_deref(), Some("1"));
    // An error after the SET in one request: the implicit transaction is rolled back.
    let e = a
        .batch_execute("set search_path = s2; select 1/0")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("22012"));
    assert_eq!(t_value(&a).await.unwrap().as_deref(), Some("1"));
    // set_config(..., false) is a session SET.
    simple_value(&a, "select set_config('search_path', 's2', false)")
        .await
        .unwrap();
    assert_eq!(show(&b, "search_path").await, default_path);
    assert_eq!(t_value(&a).await.unwrap().as_deref(), Some("2"));
    // RESET, and RESET ALL, bring the default back.
    a.batch_execute("reset search_path").await.unwrap();
    assert_eq!(show(&a, "search_path").await, default_path);
    a.batch_execute("set search_path = s1").await.unwrap();
    assert_eq!(show(&b, "search_path").await, default_path);
    a.batch_execute("reset all").await.unwrap();
    assert_eq!(show(&a, "search_path").await, default_path);
    a.batch_execute("set search_path = s1, \"S Q\"")
        .await
        .unwrap();
    assert_eq!(show(&b, "search_path").await, default_path);
    assert_eq!(show(&a, "search_path").await, "s1, \"S Q\"");
    a.batch_execute("discard all").await.unwrap();
    assert_eq!(show(&a, "search_path").await, default_path);
    // A value PostgreSQL refuses changes nothing.
    a.batch_execute("set search_path = s2").await.unwrap();
    let e = a
        .batch_execute("set default_transaction_isolation = 'sideways'")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("0A000"), "untracked: refused");
    assert_eq!(t_value(&a).await.unwrap().as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_extra_parameters_are_carried_and_others_refused() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.track_extra_parameters = vec!["IntervalStyle".into(), "work_mem".into()];
    })
    .await;
    let direct = direct(&s.pg, DB).await;
    let default_mem = show(&direct, "work_mem").await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    a.batch_execute("select 1").await.unwrap();
    a.batch_execute("set work_mem = '7MB'").await.unwrap();
    assert_eq!(show(&b, "work_mem").await, default_mem);
    assert_eq!(show(&a, "work_mem").await, "7MB");
    assert_eq!(show(&b, "work_mem").await, default_mem);
    a.batch_execute("begin; set work_mem = '9MB'; commit")
        .await
        .unwrap();
    assert_eq!(show(&b, "work_mem").await, default_mem);
    assert_eq!(show(&a, "work_mem").await, "9MB");
    a.batch_execute("reset work_mem").await.unwrap();
    assert_eq!(show(&a, "work_mem").await, default_mem);

    // Not listed: refused, with the hint that says how to carry it.
    let e = a
        .batch_execute("set maintenance_work_mem = '64MB'")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{e:?}");
    let db = e.as_db_error().unwrap();
    assert!(db.message().contains("SET maintenance_work_mem"), "{db:?}");
    assert!(
        db.hint().unwrap_or("").contains("track_extra_parameters"),
        "{db:?}"
    );
    let e = a
        .batch_execute("select set_config(current_user, 'x', false)")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{e:?}");
}

async fn tenant(c: &Client) -> String {
    simple_value(c, "select current_setting('myapp.tenant', true)")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// A driver's cached statement (asyncpg's statement cache, psycopg's prepare after 5
/// runs, pgjdbc's prepareThreshold) sets the parameter at every execution, with a Bind
/// and no Parse: each one is read back. Found by scripts/soak (docs/reliability.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_set_config_is_carried_at_every_execution() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.track_extra_parameters = vec!["myapp.tenant".into()];
    })
    .await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    let set = a
        .prepare("select set_config('myapp.tenant', $1, false)")
        .await
        .unwrap();
    for v in ["a1", "a2", "a3"] {
        a.query_one(&set, &[&v]).await.unwrap();
        // The pool has one connection: b's transaction runs where a's SET did.
        assert_eq!(tenant(&b).await, "", "b got a's {v}");
        assert_eq!(tenant(&a).await, v, "a lost its {v}");
    }
    // After a RESET (read back: no value) the next prepared SET must not reach b.
    a.batch_execute("reset myapp.tenant").await.unwrap();
    a.query_one(&set, &[&"a4"]).await.unwrap();
    assert_eq!(tenant(&b).await, "", "b got a's a4");
    assert_eq!(tenant(&a).await, "a4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_right_after_a_set_leaves_nothing_behind() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.auth_type = AuthType::Trust
    })
    .await;
    let direct = direct(&s.pg, DB).await;
    schemas(&direct, 2).await;
    let default_path = show(&direct, "search_path").await;
    let b = connect_trust(s.addr).await;
    b.batch_execute("select 1").await.unwrap();
    // A SET and a Terminate in one write: the relay run ends at the Terminate.
    for _ in 0..3 {
        let (mut raw, _) = raw_login(s.addr, &[("user", USER), ("database", DB)]);
        let mut msg = Vec::new();
        let sql = b"SET search_path TO s1\0";
        msg.push(b'Q');
        msg.extend_from_slice(&((4 + sql.len()) as u32).to_be_bytes());
        msg.extend_from_slice(sql);
        msg.extend_from_slice(&[b'X', 0, 0, 0, 4]);
        raw.write_all(&msg).unwrap();
        let (answer, _) = read_to_close(&mut raw);
        // The relay sees the Terminate while the SET runs: the server connection is
        // closed (not clean), or, had the answer come first, returned clean.
        let tags: Vec<u8> = backend_messages(&answer).iter().map(|m| m.0).collect();
        assert!(tags.is_empty() || tags == b"CZ", "{tags:?}");
        assert_eq!(show(&b, "search_path").await, default_path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_as_a_startup_parameter() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    schemas(&direct, 2).await;
    let mut cfg = app_config(s.addr);
    cfg.options("-c search_path=s1");
    let a = try_connect(&cfg).await.unwrap();
    let b = connect(s.addr).await;
    assert_eq!(t_value(&a).await.unwrap().as_deref(), Some("1"));
    assert_eq!(
        t_value(&b).await.map_err(|e| code(&e)).unwrap_err(),
        Some("42P01".to_owned()),
        "b has no t on its default path"
    );
    assert_eq!(t_value(&a).await.unwrap().as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parser_tells_transaction_state_from_session_state() {
    let s = setup(PoolMode::Transaction, 1).await;
    let a = connect(s.addr).await;
    a.batch_execute("select 1").await.unwrap();
    // Allowed: state that ends with the transaction.
    a.batch_execute(
        "begin;
         select pg_advisory_xact_lock(7);
         create temp table scratch(x int) on commit drop;
         insert into scratch values (1);
         set local statement_timeout = '5s';
         declare c cursor for select 1;
         commit",
    )
    .await
    .unwrap();
    // A keyword inside a string or a comment is just text.
    a.batch_execute("select 'listen x; set role postgres' /* prepare p as select 1 */")
        .await
        .unwrap();
    // Refused, each with a hint, and the connection stays usable.
    for (sql, what) in [
        ("select pg_advisory_lock(7)", "pg_advisory_lock()"),
        ("declare c cursor with hold for select 1", "WITH HOLD"),
        ("create temp table keep(x int)", "CREATE TEMPORARY TABLE"),
        ("set role postgres", "SET ROLE"),
        (
            "select 1; set statement_timeout = '1s'",
            "SET statement_timeout",
        ),
        ("select 1 into temp keep2", "CREATE TEMPORARY TABLE"),
    ] {
        let e = a.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("0A000"), "{sql}: {e:?}");
        let db = e.as_db_error().unwrap();
        assert!(db.message().contains(what), "{sql}: {}", db.message());
        assert!(db.hint().is_some(), "{sql}");
    }
    let direct = direct(&s.pg, DB).await;
    assert_eq!(
        count(
            &direct,
            "select count(*) from pg_locks where locktype = 'advisory'"
        )
        .await,
        0
    );
    assert_eq!(t_count(&a).await, 1);
}

async fn t_count(c: &Client) -> i64 {
    count(c, "select 1::bigint").await
}

/// pgbench -S with 1,000 clients through a pool of 20, each client with a search_path
/// of its own (PGOPTIONS, carried like a SET), against the same without it,
/// alternating; prints tps and pgsluice's CPU per transaction for both. The settings
/// are the same from one transaction to the next, so carrying them should cost
/// nothing. A benchmark, not a check (see [`bench_size`]: a small smoke run unless
/// `SLUICE_BENCH` is set).
#[tokio::test(flavor = "multi_thread")]
async fn carried_search_path_costs_nothing_when_unchanged_benchmark() {
    let pg = cluster();
    pgbench_init(&pg);
    let p = spawn_pooler(
        &pg,
        &[
            "--pool-mode",
            "transaction",
            "--pool-size",
            "20",
            "--auth-type",
            "trust",
        ],
        &[],
    );
    let (clients, per_client, rounds): (u64, u64, usize) = bench_size((1000, 100, 3), (50, 10, 1));
    let mut results: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for _round in 0..rounds {
        for (i, options) in ["", "-c search_path=public"].into_iter().enumerate() {
            let before = cpu_of(p.pid());
            let mut cmd = Command::new(pg_bin("pgbench"));
            cmd.args(["-S", "-n", "-j", "2", "-M", "simple", "-c"])
                .arg(clients.to_string())
                .arg("-t")
                .arg(per_client.to_string())
                .args(["-h", "127.0.0.1", "-p"])
                .arg(p.addr().port().to_string())
                .args(["-U", USER, DB]);
            clean_pg_env(&mut cmd);
            cmd.env("PGOPTIONS", options);
            let o = tokio::task::block_in_place(|| run_with_stdin(cmd, b""));
            assert!(o.status.success(), "pgbench: {}", stderr(&o));
            let cpu = cpu_of(p.pid()) - before;
            let tps = stdout(&o)
                .lines()
                .find_map(|l| l.strip_prefix("tps = "))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .expect("tps line");
            results[i].push((tps, cpu.as_secs_f64() * 1e6 / (clients * per_client) as f64));
        }
    }
    for r in &mut results {
        r.sort_by(|a, b| a.1.total_cmp(&b.1));
    }
    let (plain, carried) = (results[0][rounds / 2], results[1][rounds / 2]);
    eprintln!(
        "bench: pgbench -S, {clients} clients, pool 20: without search_path {:.0} tps, {:.1} µs CPU/txn; with a carried search_path {:.0} tps, {:.1} µs CPU/txn (medians of {rounds} x {} transactions, logins included)",
        plain.0,
        plain.1,
        carried.0,
        carried.1,
        clients * per_client
    );
}
