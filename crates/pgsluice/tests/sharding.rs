//! Sharding against real PostgreSQL servers, one per shard (issue 16's acceptance):
//! DDL reaches every shard; rows inserted through pgsluice with literals (psql), bound
//! parameters (psycopg 3 in text and binary format, tokio-postgres in binary) and
//! `\copy` land exactly where PostgreSQL's hash partitioning with modulus = shards
//! puts them (`satisfies_hash_partition()` checked on every row of every shard); reads
//! by key reach one shard, reads without it are merged; what cannot be answered
//! correctly is refused with 0A000 and the connection goes on working; pgbench with a
//! random key runs without failures; SHOW SHARDS and the metrics count the routing.

mod common;

use std::net::SocketAddr;
use std::process::Output;

use common::*;
use pgsluice::config::{PoolMode, ShardConfig, ShardedTableConfig};
use pgsluice::shard::hash::{partition_hash, shard_of_hash};
use pgsluice::shard::KeyValue;
use pgsluice::Instance;
use pgsluice_testkit::PgCluster;

/// pgsluice in front of `shards.len()` PostgreSQL servers, database [`DB`] sharded.
struct Sharded {
    server: Instance,
    addr: SocketAddr,
    shards: Vec<PgCluster>,
}

/// The part of `[databases.appdb]` the issue gives, in its TOML shape.
#[derive(serde::Deserialize)]
struct ShardsPart {
    shards: Vec<ShardConfig>,
    sharded_tables: Vec<ShardedTableConfig>,
}

async fn sharded(n: usize) -> Sharded {
    let shards: Vec<PgCluster> = (0..n).map(|_| cluster()).collect();
    let mut cfg = config(&shards[0]);
    cfg.general.pool_mode = PoolMode::Transaction;
    cfg.general.default_pool_size = 4;
    cfg.general.admin_users = vec![USER.into()];
    cfg.general.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let list: Vec<String> = shards
        .iter()
        .map(|pg| format!("{{ host = \"{}\", port = {} }}", pg.host(), pg.port()))
        .collect();
    let toml_text = format!(
        "shards = [ {} ]\n[[sharded_tables]]\ntable = \"orders\"\ncolumn = \"customer_id\"\n",
        list.join(", ")
    );
    let part: ShardsPart = toml::from_str(&toml_text).expect("the issue's TOML shape");
    let db = cfg.databases.get_mut(DB).expect("the quick database");
    db.host = String::new();
    db.shards = Some(part.shards);
    db.sharded_tables = part.sharded_tables;
    cfg.validate().expect("valid sharded config");
    let (server, addr) = start_pooler(cfg).await;
    Sharded {
        server,
        addr,
        shards,
    }
}

/// psql through pgsluice, stopping at the first error; it must succeed.
fn psql_ok(addr: SocketAddr, script: &str) -> String {
    let o = tokio::task::block_in_place(|| {
        psql(addr, USER, PASSWORD, DB, &["-v", "ON_ERROR_STOP=1"], script)
    });
    assert!(o.status.success(), "psql failed: {}\n{script}", stderr(&o));
    stdout(&o)
}

/// The shard PostgreSQL's hash partitioning gives bigint `key` among `n`.
fn shard_of(key: i64, n: usize) -> usize {
    shard_of_hash(partition_hash(&KeyValue::Int(key)), n)
}

/// Checks every row of `orders` on every shard with `satisfies_hash_partition()`
/// against a hash-partitioned parent of modulus = shards; returns the rows per shard.
fn placement(shards: &[PgCluster]) -> Vec<i64> {
    let n = shards.len();
    shards
        .iter()
        .enumerate()
        .map(|(i, pg)| {
            let out = pg_sql(
                pg,
                &format!(
                    "create table if not exists hp (customer_id bigint) partition by hash (customer_id);
                     select count(*), count(*) filter (where satisfies_hash_partition('hp'::regclass, {n}, {i}, customer_id)) from orders"
                ),
            );
            let (all, ok) = out.trim().split_once('|').expect("two counts");
            assert_eq!(all, ok, "shard {i}: {all} rows, {ok} where PostgreSQL would put them");
            all.parse().expect("a count")
        })
        .collect()
}

fn copy_script(from: i64, to: i64) -> String {
    let mut s = String::from("\\copy orders from stdin\n");
    for i in from..=to {
        s.push_str(&format!("{i}\tcopy {i}\n"));
    }
    s.push_str("\\.\n");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_two_shards() {
    let s = sharded(2).await;
    let addr = s.addr;
    psql_ok(addr, "create table orders (customer_id bigint, note text)");
    for pg in &s.shards {
        assert_eq!(
            pg_sql(pg, "select to_regclass('orders') is not null").trim(),
            "t"
        );
    }
    // 300 with literals: single-row INSERTs, and one multi-row INSERT split by shard.
    let mut script = String::new();
    for i in 1..=290 {
        script.push_str(&format!(
            "insert into orders values ({i}, 'literal {i}');\n"
        ));
    }
    let rows: Vec<String> = (291..=300)
        .map(|i| format!("({i}, 'literal {i}')"))
        .collect();
    script.push_str(&format!(
        "insert into orders (customer_id, note) values {};\n",
        rows.join(", ")
    ));
    psql_ok(addr, &script);
    // 300 with bound parameters: psycopg 3 (text, binary, named statements), then
    // tokio-postgres (binary).
    if python_has("psycopg") {
        run_python("shard_params.py", addr).await;
    } else {
        panic!("psycopg 3 is not installed: run scripts/install-deps");
    }
    let c = connect(addr).await;
    for i in 451i64..=600 {
        let n = c
            .execute(
                "insert into orders (customer_id, note) values ($1, $2)",
                &[&i, &format!("param {i}")],
            )
            .await
            .expect("insert with binary parameters");
        assert_eq!(n, 1);
    }
    // 300 by \copy.
    psql_ok(addr, &copy_script(601, 900));

    let per_shard = placement(&s.shards);
    assert_eq!(per_shard.iter().sum::<i64>(), 900, "{per_shard:?}");
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");

    assert_eq!(
        psql_ok(addr, "select note from orders where customer_id = 450"),
        "param 450"
    );
    assert_eq!(psql_ok(addr, "select count(*) from orders"), "900");
    assert_eq!(
        psql_ok(
            addr,
            "select customer_id from orders order by customer_id desc limit 3"
        ),
        "900\n899\n898"
    );
    let row = c
        .query_one("select note from orders where customer_id = $1", &[&450i64])
        .await
        .expect("select by a binary key");
    assert_eq!(row.get::<_, String>(0), "param 450");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_transactions() {
    let s = sharded(2).await;
    let addr = s.addr;
    psql_ok(addr, "create table orders (customer_id bigint, note text)");
    let a = 1i64;
    let b = (2..100)
        .find(|&k| shard_of(k, 2) != shard_of(a, 2))
        .unwrap();
    let c = connect(addr).await;
    // A transaction on one shard commits.
    c.batch_execute(&format!(
        "begin; insert into orders values ({a}, 'one'); update orders set note = 'two' where customer_id = {a}; commit"
    ))
    .await
    .expect("a one-shard transaction");
    let note: String = c
        .query_one("select note from orders where customer_id = $1", &[&a])
        .await
        .unwrap()
        .get(0);
    assert_eq!(note, "two");
    let pg_a = &s.shards[shard_of(a, 2)];
    assert_eq!(
        pg_sql(
            pg_a,
            &format!("select note from orders where customer_id = {a}")
        )
        .trim(),
        "two"
    );
    // A write transaction over two shards is refused; the block fails until ROLLBACK.
    c.batch_execute("begin").await.unwrap();
    c.batch_execute(&format!("insert into orders values ({a}, 'x')"))
        .await
        .unwrap();
    let e = c
        .batch_execute(&format!("insert into orders values ({b}, 'y')"))
        .await
        .expect_err("a second shard in the transaction");
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{}", message(&e));
    let e = c.batch_execute("select 1").await.expect_err("failed block");
    assert_eq!(code(&e).as_deref(), Some("25P02"), "{}", message(&e));
    c.batch_execute("rollback").await.unwrap();
    assert_eq!(count(&c, "select count(*) from orders").await, 1);
    // avg over several shards, an UPDATE without the key: refused, nothing touched.
    for sql in [
        "select avg(customer_id) from orders",
        "update orders set note = 'all'",
    ] {
        let e = c.batch_execute(sql).await.expect_err(sql);
        assert_eq!(code(&e).as_deref(), Some("0A000"), "{sql}: {}", message(&e));
    }
    // The connection keeps working, in both protocols.
    assert_eq!(count(&c, "select count(*) from orders").await, 1);
    let n: i64 = c
        .query_one("select count(*) from orders where customer_id = $1", &[&a])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // An explicit override routes to the shard named.
    let other = 1 - shard_of(a, 2);
    let out = psql_ok(
        addr,
        &format!(
            "set pgsluice.shard = {other};\nselect count(*) from orders where customer_id = {a};"
        ),
    );
    assert_eq!(out, "0");
    let out = psql_ok(
        addr,
        &format!(
            "/* pgsluice: shard={other} */ select count(*) from orders where customer_id = {a};"
        ),
    );
    assert_eq!(out, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_with_a_random_key_and_show_shards() {
    let s = sharded(2).await;
    let addr = s.addr;
    psql_ok(addr, "create table orders (customer_id bigint, note text)");
    psql_ok(addr, &copy_script(1, 2000));
    let script = std::env::temp_dir().join(format!(
        "pgsluice-shard-bench-{}-{}.sql",
        std::process::id(),
        addr.port()
    ));
    std::fs::write(
        &script,
        "\\set id random(1, 100000)\nselect note from orders where customer_id = :id;\n",
    )
    .unwrap();
    let path = script.clone();
    let script = script.to_string_lossy().into_owned();
    for mode in ["simple", "extended", "prepared"] {
        let o: Output = tokio::task::block_in_place(|| {
            pgbench(
                addr.port(),
                &[
                    "-n", "-c", "4", "-j", "2", "-t", "100", "-M", mode, "-f", &script,
                ],
            )
        });
        let text = format!("{}\n{}", stdout(&o), stderr(&o));
        assert!(o.status.success(), "pgbench -M {mode}:\n{text}");
        assert!(
            text.contains("number of failed transactions: 0"),
            "pgbench -M {mode}:\n{text}"
        );
    }
    let _ = std::fs::remove_file(path);
    let o = tokio::task::block_in_place(|| {
        psql(
            addr,
            USER,
            PASSWORD,
            "pgbouncer",
            &["-P", "tuples_only=off", "-P", "footer=off"],
            "SHOW SHARDS",
        )
    });
    let text = stdout(&o);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("database|user|shard|host|port|dbname|state|sv_active|sv_idle|queries_routed|cross_shard_queries"),
        "{text}\n{}",
        stderr(&o)
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 2, "{text}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], DB);
        assert_eq!(r[2], i.to_string());
        assert_eq!(r[4], s.shards[i].port().to_string());
        assert_eq!(r[6], "active");
        let routed: u64 = r[9].parse().unwrap();
        assert!(routed > 100, "{text}");
        let cross: u64 = r[10].parse().unwrap();
        assert!(cross >= 2, "the CREATE TABLE and the COPY: {text}");
    }
    // The same counts in Prometheus.
    let metrics = s.server.metrics_addr().expect("metrics endpoint");
    let body = tokio::task::block_in_place(|| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(metrics).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            c,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    });
    let sample = |series: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
    };
    for (i, row) in rows.iter().enumerate() {
        let n = sample(&format!(
            "pgsluice_shard_queries_total{{database=\"{DB}\",shard=\"{i}\"}}"
        ));
        assert_eq!(n.to_string(), row[9], "shard {i}");
    }
    assert!(
        sample(&format!(
            "pgsluice_shard_fanout_queries_total{{database=\"{DB}\"}}"
        )) >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_over_three_shards() {
    let s = sharded(3).await;
    let addr = s.addr;
    psql_ok(addr, "create table orders (customer_id bigint, note text)");
    let mut script = String::new();
    for i in 1..=200 {
        script.push_str(&format!(
            "insert into orders values ({i}, 'literal {i}');\n"
        ));
    }
    psql_ok(addr, &script);
    psql_ok(addr, &copy_script(201, 300));
    let per_shard = placement(&s.shards);
    assert_eq!(per_shard.iter().sum::<i64>(), 300, "{per_shard:?}");
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");
    for (i, n) in per_shard.iter().enumerate() {
        let expected = (1..=300).filter(|&k| shard_of(k, 3) == i).count() as i64;
        assert_eq!(*n, expected, "shard {i}");
    }
    assert_eq!(psql_ok(addr, "select count(*) from orders"), "300");
    assert_eq!(
        psql_ok(
            addr,
            "select customer_id from orders order by customer_id desc limit 3"
        ),
        "300\n299\n298"
    );
}

/// The routing cost: the same single-shard pgbench (a custom script selecting one row
/// by a random key) through pgsluice over two shards and straight to shard 0. A smoke
/// run unless `SLUICE_BENCH` is set (see `bench_size`); the figures of a full run
/// are in docs/sharding.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_cost_benchmark() {
    let s = sharded(2).await;
    let addr = s.addr;
    psql_ok(addr, "create table orders (customer_id bigint, note text)");
    psql_ok(addr, &copy_script(1, 10_000));
    psql_ok(addr, "create index on orders (customer_id)");
    let script = std::env::temp_dir().join(format!(
        "pgsluice-shard-cost-{}-{}.sql",
        std::process::id(),
        addr.port()
    ));
    std::fs::write(
        &script,
        "\\set id random(1, 10000)\nselect note from orders where customer_id = :id;\n",
    )
    .unwrap();
    let path = script.to_string_lossy().into_owned();
    let secs = bench_size("20", "2");
    let mut latency = Vec::new();
    for (name, port) in [
        ("through pgsluice", addr.port()),
        ("straight to shard 0", s.shards[0].port()),
    ] {
        let o = tokio::task::block_in_place(|| {
            pgbench(
                port,
                &[
                    "-n", "-c", "4", "-j", "2", "-T", secs, "-M", "extended", "-f", &path,
                ],
            )
        });
        let text = stdout(&o);
        assert!(
            o.status.success(),
            "pgbench {name}:\n{text}\n{}",
            stderr(&o)
        );
        let field = |label: &str| -> f64 {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {label} in:\n{text}"))
        };
        let (lat, tps) = (field("latency average ="), field("tps ="));
        println!("{name}: latency average {lat:.3} ms, {tps:.0} tps");
        latency.push(lat);
    }
    let _ = std::fs::remove_file(script);
    println!(
        "routing cost per query: {:.1} µs (4 clients, 2 shards)",
        (latency[0] - latency[1]) * 1000.0
    );
}

/// Resharding as docs/sharding.md describes it: each old shard's rows copied out
/// straight from its server and `\copy`'d into a pgsluice over the new shard count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_two_to_three() {
    let old = sharded(2).await;
    psql_ok(
        old.addr,
        "create table orders (customer_id bigint, note text)",
    );
    psql_ok(old.addr, &copy_script(1, 300));
    let new = sharded(3).await;
    psql_ok(
        new.addr,
        "create table orders (customer_id bigint, note text)",
    );
    for pg in &old.shards {
        let rows = pg_sql(pg, "copy orders to stdout");
        psql_ok(
            new.addr,
            &format!("\\copy orders from stdin\n{rows}\n\\.\n"),
        );
    }
    let per_shard = placement(&new.shards);
    assert_eq!(per_shard.iter().sum::<i64>(), 300, "{per_shard:?}");
    assert_eq!(psql_ok(new.addr, "select count(*) from orders"), "300");
    assert_eq!(
        psql_ok(new.addr, "select note from orders where customer_id = 7"),
        "copy 7"
    );
}

/// Waits until `n` backends of each shard run a `pg_sleep` (no deadline of its own: the
/// test harness's timeout ends a test that hangs).
async fn sleeping_on(shards: &[&PgCluster], n: usize) {
    let sql = "select count(*) from pg_stat_activity \
               where state = 'active' and query like '%pg_sleep%' and pid <> pg_backend_pid()";
    while shards
        .iter()
        .any(|pg| pg_sql(pg, sql).trim().parse::<usize>().unwrap_or(0) != n)
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A CancelRequest with a sharded client's key reaches the query on one shard, and
/// every shard's part of a query that runs on all of them; afterwards no backend still
/// sleeps and the client goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_every_shard_a_query_runs_on() {
    let s = sharded(2).await;
    psql_ok(
        s.addr,
        "create table orders (customer_id bigint, note text)",
    );
    let a = 1i64;
    let b = (2..100)
        .find(|&k| shard_of(k, 2) != shard_of(a, 2))
        .unwrap();
    psql_ok(
        s.addr,
        &format!("insert into orders values ({a}, 'a'), ({b}, 'b')"),
    );
    let c = connect(s.addr).await;
    let token = c.cancel_token();
    let both: Vec<&PgCluster> = s.shards.iter().collect();
    for (sql, on) in [
        (
            format!("select pg_sleep(60) from orders where customer_id = {a}"),
            vec![&s.shards[shard_of(a, 2)]],
        ),
        (
            "select pg_sleep(60), note from orders".to_owned(),
            both.clone(),
        ),
    ] {
        let run = c.batch_execute(&sql);
        let cancel = async {
            sleeping_on(&on, 1).await;
            token
                .cancel_query(tokio_postgres::NoTls)
                .await
                .expect("cancel sent");
        };
        let (ran, ()) = tokio::join!(run, cancel);
        let e = ran.expect_err("cancelled");
        assert_eq!(code(&e).as_deref(), Some("57014"), "{sql}: {}", message(&e));
        sleeping_on(&both, 0).await;
        assert_eq!(count(&c, "select count(*) from orders").await, 2, "{sql}");
    }
}
