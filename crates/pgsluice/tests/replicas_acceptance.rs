//! Issue 15's acceptance run, with the pgsluice binary in quick mode:
//! `--backend "postgres://app:app@primary,replica/app" --read-write-split` in front of
//! a real primary and its streaming replica, driven by psql, pgbench and asyncpg.
//!
//! - at least 90% of 1,000 autocommit `select count(*) from t` run on the replica (its
//!   pg_stat_database counters), 200 inserts all on the primary with no error;
//! - pgbench -S (extended protocol) reads on the replica, no failed transaction;
//! - asyncpg's named prepared reads on the replica, writes on the primary;
//! - after `pg_ctl stop -m immediate` of the primary and `pg_ctl promote` of the
//!   replica, an insert through the same process succeeds within 30 s (printed).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use pgsluice_testkit::{clean_pg_env, pg_bin, PgCluster};

fn url(primary: &PgCluster, replica: &PgCluster) -> String {
    format!(
        "postgres://{USER}:{PASSWORD}@{}:{},{}:{}/{DB}",
        primary.host(),
        primary.port(),
        replica.host(),
        replica.port()
    )
}

fn run_psql(addr: std::net::SocketAddr, script: &str) -> std::process::Output {
    tokio::task::block_in_place(|| {
        psql(addr, USER, PASSWORD, DB, &["-v", "ON_ERROR_STOP=1"], script)
    })
}

/// pgsluice in quick mode over both hosts with the split, once the first health checks
/// know the roles (until then reads may go to the primary).
async fn split_pooler(primary: &PgCluster, replica: &PgCluster) -> pgsluice_testkit::Pooler {
    let pooler = spawn_pooler_url(
        &url(primary, replica),
        &["--read-write-split", "--pool-mode", "transaction"],
        &[],
    );
    let addr = pooler.addr();
    eventually(
        "a read on the replica",
        Duration::from_secs(15),
        || async move {
            let o = run_psql(addr, "select pg_is_in_recovery();");
            (o.status.success() && stdout(&o) == "t").then_some(())
        },
    )
    .await;
    pooler
}

fn replica_commits(replica: &PgCluster) -> u64 {
    tokio::task::block_in_place(|| replica.stat_database(DB))
        .expect("replica stats")
        .xact_commit
}

fn wait_replica_commits(replica: &PgCluster, at_least: u64) -> u64 {
    tokio::task::block_in_place(|| replica.wait_stat_database(DB, |s| s.xact_commit >= at_least))
        .unwrap_or_else(|e| panic!("replica commits never reached {at_least}: {e}"))
        .xact_commit
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_mode_split_acceptance_with_psql_pgbench_asyncpg_and_failover() {
    let mut primary = cluster();
    pg_sql(&primary, "create table t (id int); grant all on t to app");
    let replica =
        tokio::task::block_in_place(|| primary.start_replica()).expect("start the replica");
    tokio::task::block_in_place(|| replica.wait_caught_up(&primary)).unwrap();
    let pooler = split_pooler(&primary, &replica).await;
    let addr = pooler.addr();

    // 1,000 autocommit reads.
    let before = replica_commits(&replica);
    let reads = "select count(*) from t;\n".repeat(1000);
    let o = run_psql(addr, &reads);
    assert!(o.status.success(), "reads failed: {}", stderr(&o));
    let after = wait_replica_commits(&replica, before + 900);
    eprintln!(
        "acceptance: {} of 1000 reads committed on the replica (its xact_commit, health checks included)",
        after - before
    );

    // 200 inserts, all on the primary, no error.
    let inserts: String = (0..200)
        .map(|i| format!("insert into t values ({i});\n"))
        .collect();
    let o = run_psql(addr, &inserts);
    assert!(o.status.success(), "inserts failed: {}", stderr(&o));
    assert_eq!(stderr(&o), "", "no error or warning");
    assert_eq!(pg_sql(&primary, "select count(*) from t"), "200");

    // pgbench -S through the split (extended protocol): reads on the replica.
    pgbench_init(&primary);
    tokio::task::block_in_place(|| replica.wait_caught_up(&primary)).unwrap();
    let before = replica_commits(&replica);
    let mut cmd = Command::new(pg_bin("pgbench"));
    cmd.args([
        "-S",
        "-M",
        "extended",
        "-n",
        "-c",
        "2",
        "-t",
        "200",
        "-h",
        "127.0.0.1",
        "-p",
    ])
    .arg(addr.port().to_string())
    .args(["-U", USER, DB]);
    clean_pg_env(&mut cmd);
    cmd.env("PGPASSWORD", PASSWORD);
    let o = tokio::task::block_in_place(|| run_with_stdin(cmd, b""));
    let text = stdout(&o);
    assert!(o.status.success(), "pgbench -S: {text}\n{}", stderr(&o));
    assert!(text.contains("number of failed transactions: 0"), "{text}");
    wait_replica_commits(&replica, before + 360);

    // asyncpg: named prepared reads on the replica, writes on the primary.
    if python_has("asyncpg") {
        let path = format!(
            "{}/tests/python/asyncpg_replicas.py",
            env!("CARGO_MANIFEST_DIR")
        );
        let o = tokio::task::block_in_place(|| {
            Command::new("python3")
                .arg(&path)
                .env("PGS_HOST", addr.ip().to_string())
                .env("PGS_PORT", addr.port().to_string())
                .env("PGS_USER", USER)
                .env("PGS_PASSWORD", PASSWORD)
                .env("PGS_DB", DB)
                .output()
                .expect("run python3")
        });
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            o.status.success() && text.contains("OK"),
            "asyncpg:\n{text}"
        );
    } else {
        panic!("asyncpg is not installed: run scripts/install-deps");
    }

    // Failover: the primary dies, the replica is promoted; the same process takes
    // writes on the new primary.
    tokio::task::block_in_place(|| primary.stop_immediate()).unwrap();
    let stopped = Instant::now();
    tokio::task::block_in_place(|| replica.promote()).unwrap();
    let took = eventually(
        "an insert after failover",
        Duration::from_secs(30),
        || async move {
            let o = run_psql(
                addr,
                "insert into t values (1000) returning pg_is_in_recovery();",
            );
            (o.status.success() && stdout(&o) == "f").then(|| stopped.elapsed())
        },
    )
    .await;
    eprintln!(
        "acceptance: first insert after failover succeeded {took:?} after the primary stopped"
    );
    assert!(took < Duration::from_secs(30));
}

/// pgbench -S through a one-host pgsluice and through a split one (reads on the
/// replica), alternating, and pgsluice's CPU per transaction for each: the difference
/// is what classifying each statement costs. A benchmark, not a check (see
/// [`bench_size`]: a small smoke run unless `SLUICE_BENCH` is set).
#[tokio::test(flavor = "multi_thread")]
async fn split_classification_overhead_benchmark() {
    let primary = cluster();
    pgbench_init(&primary);
    let replica =
        tokio::task::block_in_place(|| primary.start_replica()).expect("start the replica");
    tokio::task::block_in_place(|| replica.wait_caught_up(&primary)).unwrap();
    let one = spawn_pooler(&primary, &["--pool-mode", "transaction"], &[]);
    let split = split_pooler(&primary, &replica).await;
    let (txns, rounds): (u64, usize) = bench_size((20_000, 3), (200, 1));
    for protocol in ["simple", "extended"] {
        let mut per_txn = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            for (i, p) in [&one, &split].into_iter().enumerate() {
                let before = cpu_of(p.pid());
                let mut cmd = Command::new(pg_bin("pgbench"));
                cmd.args(["-S", "-n", "-c", "10", "-j", "2", "-M", protocol, "-t"])
                    .arg((txns / 10).to_string())
                    .args(["-h", "127.0.0.1", "-p"])
                    .arg(p.addr().port().to_string())
                    .args(["-U", USER, DB]);
                clean_pg_env(&mut cmd);
                cmd.env("PGPASSWORD", PASSWORD);
                let o = tokio::task::block_in_place(|| run_with_stdin(cmd, b""));
                assert!(o.status.success(), "pgbench: {}", stderr(&o));
                let cpu = cpu_of(p.pid()) - before;
                per_txn[i].push(cpu.as_secs_f64() * 1e6 / txns as f64);
                let _ = round;
            }
        }
        for v in &mut per_txn {
            v.sort_by(f64::total_cmp);
        }
        let (a, b) = (per_txn[0][rounds / 2], per_txn[1][rounds / 2]);
        eprintln!(
            "bench {protocol}: pgsluice CPU per transaction one host {a:.1} µs, split {b:.1} µs, difference {:.1} µs (medians of {rounds} x {txns})",
            b - a
        );
    }
}
