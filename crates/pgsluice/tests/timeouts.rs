//! PgBouncer's client-side timeouts: query_timeout, idle_transaction_timeout,
//! client_idle_timeout, against real PostgreSQL. Bounds are generous upper limits only.

use std::time::Duration;

use pgsluice::config::{Config, PoolMode, Secs};
use pgsluice_testkit::PgCluster;
use tokio_postgres::{Client, NoTls};

async fn start(edit: impl FnOnce(&mut Config)) -> (PgCluster, pgsluice::Instance) {
    let cluster = PgCluster::start().expect("start PostgreSQL");
    cluster.create_user("app", "app").unwrap();
    cluster.create_database("app", "app").unwrap();
    let mut cfg = Config::quick(&cluster.url("app", "app", "app")).unwrap();
    cfg.general.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.general.default_pool_size = 2;
    cfg.general.pool_mode = PoolMode::Transaction;
    edit(&mut cfg);
    let server = pgsluice::Instance::start(cfg).await.unwrap();
    (cluster, server)
}

async fn connect(server: &pgsluice::Instance) -> Client {
    let a = server.local_addrs()[0];
    let conn = format!(
        "host={} port={} user=app password=app dbname=app",
        a.ip(),
        a.port()
    );
    let (c, conn) = tokio_postgres::connect(&conn, NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no code: {e}"))
}

/// Polls `sql` on the cluster until it returns `want` (bounded).
async fn eventually(cluster: &PgCluster, sql: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = cluster.psql(sql).unwrap();
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql}: still {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_cancels_and_closes() {
    let (cluster, server) = start(|c| c.general.query_timeout = Secs(Duration::from_secs(1))).await;
    let c = connect(&server).await;
    let started = std::time::Instant::now();
    let e = c.simple_query("select pg_sleep(60)").await.unwrap_err();
    assert_eq!(code(&e), "57014", "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    eventually(
        &cluster,
        "select count(*) from pg_stat_activity where query like 'select pg_sleep(60)%'",
        "0",
    )
    .await;
    // Others are served; short queries are not affected.
    let d = connect(&server).await;
    assert_eq!(
        d.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

/// query_timeout is counted per query: five 300 ms queries sent as one pipeline (1.5 s
/// in all) pass a 1 s query_timeout, in the simple protocol (five Query messages back
/// to back) and in the extended one (five Bind/Execute/Sync, one prepared statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_counts_each_query_of_a_pipeline() {
    let (_cluster, server) =
        start(|c| c.general.query_timeout = Secs(Duration::from_secs(1))).await;
    let c = connect(&server).await;
    let started = std::time::Instant::now();
    let simple = (0..5).map(|_| c.simple_query("select pg_sleep(0.3)"));
    for r in futures_util::future::join_all(simple).await {
        r.unwrap();
    }
    // pg_sleep makes this a lower bound: the pipeline outlasted query_timeout.
    assert!(started.elapsed() >= Duration::from_millis(1_500));
    let sleep = c.prepare("select pg_sleep(0.3)").await.unwrap();
    let started = std::time::Instant::now();
    let extended = (0..5).map(|_| c.query(&sleep, &[]));
    for r in futures_util::future::join_all(extended).await {
        r.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(1_500));
}

/// One slow query inside a pipeline is cancelled by query_timeout: the queries before
/// it succeed, it gets 57014.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_cancels_a_slow_query_inside_a_pipeline() {
    let (cluster, server) = start(|c| c.general.query_timeout = Secs(Duration::from_secs(1))).await;
    let c = connect(&server).await;
    let started = std::time::Instant::now();
    let sqls = ["select pg_sleep(0.3)", "select pg_sleep(2)", "select 1"];
    let results = futures_util::future::join_all(sqls.iter().map(|sql| c.simple_query(sql))).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let e = results[1].as_ref().unwrap_err();
    assert_eq!(code(e), "57014", "{e}");
    assert!(results[2].is_err(), "the client is ended");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    eventually(
        &cluster,
        "select count(*) from pg_stat_activity where query like 'select pg_sleep(2)%'",
        "0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_rolls_back_and_frees_locks() {
    let (cluster, server) =
        start(|c| c.general.idle_transaction_timeout = Secs(Duration::from_secs(1))).await;
    let setup = connect(&server).await;
    setup
        .batch_execute("create table t(x int); insert into t values (1)")
        .await
        .unwrap();
    let c = connect(&server).await;
    c.batch_execute("begin; update t set x = 2").await.unwrap();
    // The client goes silent inside its transaction; the lock must not stay.
    eventually(
        &cluster,
        "select count(*) from pg_stat_activity where state like 'idle in transaction%'",
        "0",
    )
    .await;
    let e = c.simple_query("select 1").await.unwrap_err();
    assert!(e.is_closed() || code(&e) == "25P03", "{e}");
    assert_eq!(
        cluster.psql_db("app", "select x from t").unwrap(),
        "1",
        "rolled back"
    );
    // A client that keeps working inside its transaction is not affected. The pauses
    // are the scenario: each stays well under the 1 s timeout while the transaction as
    // a whole outlasts it (6 x 300 ms), so only a per-idle-period timer passes this.
    let d = connect(&server).await;
    d.batch_execute("begin").await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        d.batch_execute("select 1").await.unwrap();
    }
    d.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_closes_idle_clients() {
    let (_cluster, server) =
        start(|c| c.general.client_idle_timeout = Secs(Duration::from_secs(1))).await;
    let c = connect(&server).await;
    c.batch_execute("select 1").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !c.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle client was not closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New clients are served.
    let d = connect(&server).await;
    assert_eq!(
        d.query_one("select 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_client_idle_timeout() {
    let (_cluster, server) = start(|c| {
        c.general.pool_mode = PoolMode::Session;
        c.general.client_idle_timeout = Secs(Duration::from_secs(1));
    })
    .await;
    let c = connect(&server).await;
    c.batch_execute("select 1").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !c.is_closed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle session-mode client was not closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
