//! Soak: thousands of short-lived clients over a pool of 10 in transaction mode, in
//! waves, with churn (clients vanishing mid-transaction, mid-query, right after
//! login). Asserts zero errors for well-behaved clients, exact commit counts, nothing
//! left open on PostgreSQL, and that the pgsluice process's open file descriptors and
//! resident memory come back close to their baseline afterwards.
//!
//! pgsluice runs as a child process (testkit `Pooler`) so its `/proc/PID` can be read.
//!
//! Short version (CI, ~2,000 clients): `cargo test -p pgsluice --test soak`.
//! Long version: `SOAK_SECONDS=600 cargo test --release -p pgsluice --test soak -- --nocapture`
//! (waves continue until the time is up; progress is printed every wave batch).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgsluice_testkit::{open_fds, raise_nofile_limit, rss_bytes, Pooler};

/// Pool size under test.
const POOL_SIZE: usize = 10;
/// Clients in the short (CI) version.
const CI_CLIENTS: usize = 2_000;
/// Clients per wave (all connected at once), unless the fd limit asks for fewer.
const WAVE: usize = 200;
/// Allowed fd growth over the baseline once the churn is over.
const FD_SLACK: usize = 5;
/// Allowed RSS growth over the baseline once the churn is over.
const RSS_SLACK: u64 = 50 * 1024 * 1024;

/// What one soak client does, by its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Simple and extended queries plus one committed insert; clean Terminate.
    WellBehaved,
    /// A named prepared statement executed twice, then one committed insert.
    Prepared,
    /// Opens a transaction, inserts, and its socket closes (no Terminate).
    VanishInTransaction,
    /// Sends a query and its socket closes before the answer.
    VanishMidQuery,
    /// Logs in and its socket closes at once.
    VanishAfterLogin,
}

fn kind_of(i: usize) -> Kind {
    match i % 10 {
        0..=4 => Kind::WellBehaved,
        5 | 6 => Kind::Prepared,
        7 => Kind::VanishInTransaction,
        8 => Kind::VanishMidQuery,
        _ => Kind::VanishAfterLogin,
    }
}

fn commits(kind: Kind) -> bool {
    matches!(kind, Kind::WellBehaved | Kind::Prepared)
}

async fn trust_connect(addr: SocketAddr) -> Result<Conn, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user(USER)
        .dbname(DB)
        .connect_timeout(Duration::from_secs(30));
    try_connect_full(&cfg)
        .await
        .map_err(|e| format!("connect: {e:?}"))
}

/// Runs soak client `i`; Err describes an unexpected outcome.
async fn soak_client(addr: SocketAddr, i: usize) -> Result<(), String> {
    let conn = trust_connect(addr).await?;
    let c = &conn.client;
    let id = i as i64;
    match kind_of(i) {
        Kind::WellBehaved => {
            let v = simple_value(c, &format!("select {id} * 2"))
                .await
                .map_err(|e| format!("simple: {e:?}"))?;
            if v.as_deref() != Some(&(id * 2).to_string()) {
                return Err(format!("simple query answered {v:?}"));
            }
            let rows = c
                .query_typed(
                    "select $1::int8 + 1",
                    &[(&id, tokio_postgres::types::Type::INT8)],
                )
                .await
                .map_err(|e| format!("extended: {e:?}"))?;
            if rows[0].get::<_, i64>(0) != id + 1 {
                return Err("extended query answered wrong".into());
            }
            c.batch_execute(&format!("begin; insert into soak values ({id}); commit"))
                .await
                .map_err(|e| format!("transaction: {e:?}"))?;
            // Simple protocol: in a transaction this statement started, now() equals
            // statement_timestamp() (not so for Parse/Bind/Execute, each restamped).
            let idle = simple_value(
                c,
                "select (txid_current_if_assigned() is null and now() = statement_timestamp())::text",
            )
            .await
            .map_err(|e| format!("state check: {e:?}"))?;
            if idle.as_deref() != Some("true") {
                return Err("client got a connection inside a transaction".into());
            }
        }
        Kind::Prepared => {
            let stmt = c
                .prepare("select $1::int8 * 3")
                .await
                .map_err(|e| format!("prepare: {e:?}"))?;
            for k in [id, id + 1] {
                let v: i64 = c
                    .query_one(&stmt, &[&k])
                    .await
                    .map_err(|e| format!("execute prepared: {e:?}"))?
                    .get(0);
                if v != k * 3 {
                    return Err(format!("prepared statement answered {v} for {k}"));
                }
            }
            c.batch_execute(&format!("insert into soak values ({id})"))
                .await
                .map_err(|e| format!("insert: {e:?}"))?;
        }
        Kind::VanishInTransaction => {
            c.batch_execute(&format!("begin; insert into soak values (-{id} - 1)"))
                .await
                .map_err(|e| format!("begin: {e:?}"))?;
            conn.task.abort();
            return Ok(());
        }
        Kind::VanishMidQuery => {
            let client = conn.client;
            let q = tokio::spawn(async move { client.simple_query("select pg_sleep(0.05)").await });
            tokio::task::yield_now().await;
            conn.task.abort();
            q.abort();
            return Ok(());
        }
        Kind::VanishAfterLogin => {
            conn.task.abort();
            return Ok(());
        }
    }
    // Clean goodbye: Terminate, then the connection task ends by itself.
    conn.finished()
        .await
        .map_err(|e| format!("connection ended badly: {e:?}"))
}

/// Polls `f` until it returns the same value `n` times in a row (bounded); returns it.
async fn settled<F: FnMut() -> u64>(what: &str, mut f: F) -> u64 {
    let deadline = Instant::now() + PROMPTLY;
    let (mut last, mut same) = (f(), 0);
    while same < 10 {
        assert!(Instant::now() < deadline, "{what} did not settle: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let v = f();
        if v == last {
            same += 1;
        } else {
            (last, same) = (v, 0);
        }
    }
    last
}

/// Fills the pool to its size so the baseline includes every server connection.
async fn fill_pool(addr: SocketAddr) {
    let barrier = Arc::new(tokio::sync::Barrier::new(POOL_SIZE));
    let mut tasks = Vec::new();
    for _ in 0..POOL_SIZE {
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let conn = trust_connect(addr).await.expect("warm-up connect");
            conn.client.batch_execute("begin; select 1").await.unwrap();
            b.wait().await; // all POOL_SIZE server connections are held at once
            conn.client.batch_execute("commit").await.unwrap();
            conn.finished().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_churn_returns_fds_and_memory_to_baseline() {
    let soak_for = std::env::var("SOAK_SECONDS")
        .ok()
        .map(|s| Duration::from_secs(s.parse().expect("SOAK_SECONDS: a number of seconds")));
    // Each concurrent client costs one fd here and one in pgsluice (a child: it
    // inherits the raised limit).
    let nofile = raise_nofile_limit(8192).expect("RLIMIT_NOFILE");
    let wave = WAVE.min((nofile as usize).saturating_sub(200) / 2).max(10);

    let pg = cluster();
    pg_sql(
        &pg,
        "create table soak(id int8); alter table soak owner to app",
    );
    let direct = direct(&pg, DB).await;
    let pool_size = POOL_SIZE.to_string();
    let pooler: Pooler = spawn_pooler(
        &pg,
        &[
            "--pool-mode",
            "transaction",
            "--pool-size",
            &pool_size,
            "--auth-type",
            "trust",
        ],
        // Per-connection info lines would pile up in the test's memory on a long run.
        &[("RUST_LOG", "warn,pgsluice::app=info")],
    );
    let addr = pooler.addr();
    let pid = pooler.pid();

    fill_pool(addr).await;
    assert_eq!(app_backends(&direct).await, POOL_SIZE as i64);
    let fd_base = settled("pgsluice's fd count", || open_fds(pid).unwrap() as u64).await;
    let rss_base = rss_bytes(pid).unwrap();
    eprintln!(
        "baseline: {fd_base} fds, {} MiB RSS; waves of {wave}",
        rss_base >> 20
    );

    // Peaks, sampled every 20 ms while the clients run.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let (mut fd_peak, mut rss_peak) = (fd_base, rss_base);
        loop {
            fd_peak = fd_peak.max(open_fds(pid).unwrap_or(0) as u64);
            rss_peak = rss_peak.max(rss_bytes(pid).unwrap_or(0));
            tokio::select! {
                _ = &mut stop_rx => return (fd_peak, rss_peak),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });

    let started = Instant::now();
    let mut launched = 0usize;
    let mut errors: Vec<String> = Vec::new();
    let mut next_report = Instant::now() + Duration::from_secs(30);
    loop {
        let more = launched < CI_CLIENTS || soak_for.is_some_and(|d| started.elapsed() < d);
        if !more {
            break;
        }
        let tasks: Vec<_> = (launched..launched + wave)
            .map(|i| tokio::spawn(soak_client(addr, i)))
            .collect();
        launched += wave;
        for (t, i) in tasks.into_iter().zip(launched - wave..) {
            match tokio::time::timeout(Duration::from_secs(120), t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => errors.push(format!("client {i} ({:?}): {e}", kind_of(i))),
                Ok(Err(e)) => errors.push(format!("client {i} panicked: {e}")),
                Err(_) => errors.push(format!("client {i} hung for 120 s")),
            }
        }
        assert!(
            errors.is_empty(),
            "{} errors after {launched} clients; first: {:#?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(30);
            eprintln!(
                "{:>5} s: {launched} clients, {} fds, {} MiB RSS",
                started.elapsed().as_secs(),
                open_fds(pid).unwrap_or(0),
                rss_bytes(pid).unwrap_or(0) >> 20
            );
        }
    }
    let _ = stop_tx.send(());
    let (fd_peak, rss_peak) = sampler.await.unwrap();
    eprintln!(
        "{launched} clients in {:?}; peaks: {fd_peak} fds, {} MiB RSS",
        started.elapsed(),
        rss_peak >> 20
    );
    // The measurement saw the load (so "back to the baseline" below means something).
    assert!(
        fd_peak > fd_base + 10,
        "pgsluice never held more than {fd_peak} fds (baseline {fd_base}) during the churn"
    );

    // PostgreSQL: every well-behaved transaction committed once, no abandoned one did,
    // nothing is left open, never more backends than the pool size.
    let expected = (0..launched).filter(|i| commits(kind_of(*i))).count() as i64;
    let direct_ref = &direct;
    eventually(
        "abandoned transactions to be rolled back",
        PROMPTLY,
        || async move {
            let open = count(
                direct_ref,
                "select count(*) from pg_stat_activity where usename = 'app' \
                 and (state like 'idle in transaction%' or state = 'active')",
            )
            .await;
            (open == 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        count(&direct, "select count(*) from soak where id >= 0").await,
        expected
    );
    assert_eq!(
        count(&direct, "select count(distinct id) from soak where id >= 0").await,
        expected,
        "a transaction was committed twice"
    );
    assert_eq!(
        count(&direct, "select count(*) from soak where id < 0").await,
        0,
        "a vanished client's transaction was committed"
    );
    assert!(app_backends(&direct).await <= POOL_SIZE as i64);

    // pgsluice: descriptors and memory back near the baseline.
    let fds = eventually(
        "pgsluice's fd count to return to its baseline",
        Duration::from_secs(30),
        || async move {
            let n = open_fds(pid).unwrap() as u64;
            (n <= fd_base + FD_SLACK as u64).then_some(n)
        },
    )
    .await;
    let rss = eventually(
        "pgsluice's RSS to return near its baseline",
        Duration::from_secs(30),
        || async move {
            let r = rss_bytes(pid).unwrap();
            (r <= rss_base + RSS_SLACK).then_some(r)
        },
    )
    .await;
    eprintln!(
        "after: {fds} fds (baseline {fd_base}), {} MiB RSS (baseline {} MiB)",
        rss >> 20,
        rss_base >> 20
    );
    // And it still serves.
    let c = trust_connect(addr).await.expect("connect after the soak");
    assert_eq!(
        count(&c.client, "select count(*) from soak where id < 0").await,
        0
    );
    assert!(
        pooler.try_wait().unwrap().is_none(),
        "pgsluice exited during the soak"
    );
}
