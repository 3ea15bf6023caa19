//! pgbench through the pooler in transaction mode: `pgbench -i` (COPY), then many
//! clients over a small pool with the simple and the extended protocol. No transaction
//! may fail, and PostgreSQL must never see more backends than the pool size.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use common::*;
use pgsluice::config::PoolMode;
use pgsluice_testkit::ClusterOptions;

const POOL_SIZE: usize = 4;
const CLIENTS: u32 = 30;
const TXNS_PER_CLIENT: u32 = 50;

/// The number after `label` on the line that starts with it (e.g.
/// "number of failed transactions: 0 (0.000%)" -> 0; "...processed: 600/600" -> 600).
fn stat(out: &str, label: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.trim_start().starts_with(label))?;
    let rest = line.trim_start()[label.len()..].trim_start_matches([':', ' ']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Samples the number of `app` backends on the cluster until stopped; returns the max.
fn sample_backends(
    direct: tokio_postgres::Client,
    stop: Arc<AtomicBool>,
    max: Arc<AtomicI64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut samples = 0;
        while !stop.load(Ordering::Relaxed) {
            let n = app_backends(&direct).await;
            max.fetch_max(n, Ordering::Relaxed);
            samples += 1;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        samples
    })
}

async fn run_bench(protocol: &str) {
    // log_connections lets us count every server connection pgsluice ever opened.
    let pg = cluster_with(ClusterOptions::default().setting("log_connections", "on"));
    let s = setup_on(pg, PoolMode::Transaction, POOL_SIZE, |_, _| {}).await;
    let direct = direct(&s.pg, "postgres").await;
    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicI64::new(0));
    let sampler = sample_backends(direct, stop.clone(), max.clone());

    // Initialisation through the pooler: DDL, client-side COPY of 100k rows, vacuum.
    let init = tokio::task::block_in_place(|| pgbench(s.addr.port(), &["-i", "-s", "1", "-q"]));
    assert!(
        init.status.success(),
        "pgbench -i failed:\n{}\n{}",
        stdout(&init),
        stderr(&init)
    );
    assert_eq!(
        pg_sql(&s.pg, "select count(*) from pgbench_accounts"),
        "100000"
    );

    let clients = CLIENTS.to_string();
    let txns = TXNS_PER_CLIENT.to_string();
    let run = tokio::task::block_in_place(|| {
        pgbench(
            s.addr.port(),
            &["-M", protocol, "-c", &clients, "-j", "2", "-t", &txns, "-n"],
        )
    });
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let text = format!("{}\n{}", stdout(&run), stderr(&run));
    assert!(
        run.status.success(),
        "pgbench -M {protocol} failed:\n{text}"
    );
    let expected = u64::from(CLIENTS * TXNS_PER_CLIENT);
    assert_eq!(
        stat(&text, "number of transactions actually processed"),
        Some(expected),
        "{text}"
    );
    assert_eq!(
        stat(&text, "number of failed transactions"),
        Some(0),
        "{text}"
    );
    // Every transaction updated pgbench_history once.
    assert_eq!(
        pg_sql(&s.pg, "select count(*) from pgbench_history"),
        expected.to_string()
    );

    let max = max.load(Ordering::Relaxed);
    eprintln!("{samples} samples, max {max} backends");
    assert!(samples > 0);
    assert!(max >= 1, "the sampler never saw a pgsluice backend");
    assert!(
        max <= POOL_SIZE as i64,
        "PostgreSQL saw {max} backends for a pool of {POOL_SIZE}"
    );
    // Nothing was closed along the way, so every connection PostgreSQL ever
    // authorized for `app` is one of the pool's.
    let log = s.pg.log_contents();
    let opened = log
        .lines()
        .filter(|l| l.contains("connection authorized: user=app database=appdb"))
        .count();
    assert!(opened >= 1, "log_connections did not log anything:\n{log}");
    assert!(
        opened <= POOL_SIZE,
        "{opened} server connections were opened for a pool of {POOL_SIZE}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_simple_protocol_transaction_mode() {
    run_bench("simple").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_extended_protocol_transaction_mode() {
    run_bench("extended").await;
}

#[test]
fn stat_parses_pgbench_lines() {
    let out = "number of transactions actually processed: 600/600\n\
               number of failed transactions: 0 (0.000%)\n";
    assert_eq!(
        stat(out, "number of transactions actually processed"),
        Some(600)
    );
    assert_eq!(stat(out, "number of failed transactions"), Some(0));
    assert_eq!(stat(out, "latency average"), None);
}
