//! Limits across pools and the timeouts around them, against real PostgreSQL:
//! max_db_connections, max_user_connections, max_db_client_connections,
//! max_user_client_connections, the reserve
//! pool, transaction_timeout, cancel_wait_timeout and server_login_retry. Instance
//! connections are counted in pg_stat_activity; bounds are generous upper limits only.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pgsluice::config::{Config, PoolMode, Secs, UserConfig};
use pgsluice_testkit::FaultProxy;
use tokio_postgres::Client;

const USER2: &str = "app2";
const PASSWORD2: &str = "secret2";
const DB2: &str = "appdb2";

/// Instance backends of the application users, counted directly on PostgreSQL.
const BACKENDS: &str =
    "select count(*) from pg_stat_activity where backend_type = 'client backend' \
                        and usename in ('app', 'app2')";

fn add_user2(cfg: &mut Config) {
    cfg.users.insert(
        USER2.into(),
        UserConfig {
            password: Some(PASSWORD2.into()),
            ..UserConfig::default()
        },
    );
}

/// Samples [`BACKENDS`] until `stop`, keeping the maximum seen.
fn watch_backends(
    direct: Client,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicI64>, tokio::task::JoinHandle<()>) {
    let max = Arc::new(AtomicI64::new(0));
    let seen = max.clone();
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let n = count(&direct, BACKENDS).await;
            seen.fetch_max(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (max, task)
}

/// Runs `rounds` short sleeping transactions on each of `clients` concurrently; returns
/// how many each client completed.
async fn run_load(clients: Vec<tokio_postgres::Config>, rounds: usize) -> Vec<usize> {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|cfg| {
            tokio::spawn(async move {
                let c = try_connect(&cfg).await.expect("client login");
                let mut done = 0;
                for _ in 0..rounds {
                    c.simple_query("select pg_sleep(0.05)")
                        .await
                        .expect("query");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("load finished")
                .expect("load task"),
        );
    }
    out
}

/// Two users on one database with max_db_connections = 2 never hold more than two
/// server connections together, and both get their work done.
#[tokio::test(flavor = "multi_thread")]
async fn max_db_connections_caps_every_pool_of_the_database() {
    let s = setup_with(PoolMode::Transaction, 5, |c, _| {
        add_user2(c);
        c.general.max_db_connections = 2;
    })
    .await;
    s.pg.create_user(USER2, PASSWORD2).unwrap();
    let direct = direct(&s.pg, DB).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (max, watcher) = watch_backends(direct, stop.clone());
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client_config(s.addr, USER, PASSWORD, DB));
        clients.push(client_config(s.addr, USER2, PASSWORD2, DB));
    }
    let done = run_load(clients, 8).await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    assert!(done.iter().all(|&n| n == 8), "{done:?}");
    let peak = max.load(Ordering::Relaxed);
    assert!((1..=2).contains(&peak), "peak server connections {peak}");
    // The admin view agrees with the cap.
    let app = s.server.as_ref().unwrap().app();
    let g = app.router().database_group(DB).expect("database group");
    assert_eq!(g.max(), 2);
    assert!(g.open() <= 2);
}

/// One user on two databases with max_user_connections = 2: same.
#[tokio::test(flavor = "multi_thread")]
async fn max_user_connections_caps_every_pool_of_the_user() {
    let s = setup_with(PoolMode::Transaction, 5, |c, _| {
        let mut d2 = c.databases[DB].clone();
        d2.dbname = Some(DB2.into());
        c.databases.insert(DB2.into(), d2);
        c.users.get_mut(USER).unwrap().max_user_connections = Some(2);
    })
    .await;
    s.pg.create_database(DB2, USER).unwrap();
    let direct = direct(&s.pg, DB).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (max, watcher) = watch_backends(direct, stop.clone());
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(client_config(s.addr, USER, PASSWORD, DB));
        clients.push(client_config(s.addr, USER, PASSWORD, DB2));
    }
    let done = run_load(clients, 8).await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    assert!(done.iter().all(|&n| n == 8), "{done:?}");
    let peak = max.load(Ordering::Relaxed);
    assert!((1..=2).contains(&peak), "peak server connections {peak}");
}

/// A pool blocked only by max_db_connections gets a connection by eviction of another
/// pool's idle one, long before server_idle_timeout.
#[tokio::test(flavor = "multi_thread")]
async fn blocked_pool_evicts_an_idle_connection_of_the_database() {
    let s = setup_with(PoolMode::Transaction, 5, |c, _| {
        add_user2(c);
        c.general.max_db_connections = 1;
        c.general.query_wait_timeout = Secs::from_secs(30);
    })
    .await;
    s.pg.create_user(USER2, PASSWORD2).unwrap();
    let direct = direct(&s.pg, DB).await;
    let a = try_connect(&client_config(s.addr, USER, PASSWORD, DB))
        .await
        .unwrap();
    assert_eq!(count(&a, "select 1::int8").await, 1);
    // app's pool now holds the database's only connection, idle.
    let b = try_connect(&client_config(s.addr, USER2, PASSWORD2, DB))
        .await
        .unwrap();
    assert_eq!(
        count(&b, "select (current_user = 'app2')::int::int8").await,
        1
    );
    let users = count(
        &direct,
        "select count(*) from pg_stat_activity where usename = 'app2' and backend_type = 'client backend'",
    )
    .await;
    assert_eq!(users, 1);
    assert!(count(&direct, BACKENDS).await <= 1);
}

/// max_db_client_connections refuses the next client of the database with 53300.
#[tokio::test(flavor = "multi_thread")]
async fn max_db_client_connections_refuses_the_next_client() {
    let s = setup_with(PoolMode::Transaction, 2, |c, _| {
        c.databases.get_mut(DB).unwrap().max_db_client_connections = Some(2);
    })
    .await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    let e = try_connect(&app_config(s.addr))
        .await
        .expect_err("3rd client refused");
    assert_eq!(code(&e).as_deref(), Some("53300"), "{e:?}");
    assert!(
        message(&e).contains("max_db_client_connections"),
        "{}",
        message(&e)
    );
    assert_eq!(count(&a, "select 1::int8").await, 1);
    drop(b);
    let addr = s.addr;
    let c = eventually("a free place", PROMPTLY, || async move {
        try_connect(&app_config(addr)).await.ok()
    })
    .await;
    assert_eq!(count(&c, "select 2::int8").await, 2);
}

/// max_user_client_connections counts the clients of a user over every database: with
/// the user's own cap of 2 (general's is 5), a third login as that user is refused with
/// 53300 whichever database it asks for, while another user still logs in.
#[tokio::test(flavor = "multi_thread")]
async fn max_user_client_connections_counts_the_user_over_every_database() {
    const ALIAS: &str = "appalias";
    let s = setup_with(PoolMode::Transaction, 2, |c, _| {
        add_user2(c);
        let alias = c.databases[DB].clone();
        c.databases.insert(ALIAS.into(), alias);
        c.general.max_user_client_connections = 5;
        c.users.get_mut(USER).unwrap().max_user_client_connections = Some(2);
    })
    .await;
    s.pg.create_user(USER2, PASSWORD2).unwrap();
    let a = connect(s.addr).await;
    let b = try_connect(&client_config(s.addr, USER, PASSWORD, ALIAS))
        .await
        .expect("2nd client, other database");
    for db in [DB, ALIAS] {
        let e = try_connect(&client_config(s.addr, USER, PASSWORD, db))
            .await
            .expect_err("3rd client of the user refused");
        assert_eq!(code(&e).as_deref(), Some("53300"), "{db}: {e:?}");
        assert!(
            message(&e).contains("max_user_client_connections"),
            "{}",
            message(&e)
        );
    }
    // Another user is under general's cap.
    let other = try_connect(&client_config(s.addr, USER2, PASSWORD2, DB))
        .await
        .expect("another user logs in");
    assert_eq!(count(&other, "select 1::int8").await, 1);
    assert_eq!(count(&a, "select 1::int8").await, 1);
    drop(b);
    let addr = s.addr;
    let c = eventually("a free place", PROMPTLY, || async move {
        try_connect(&client_config(addr, USER, PASSWORD, ALIAS))
            .await
            .ok()
    })
    .await;
    assert_eq!(count(&c, "select 2::int8").await, 2);
}

/// The reserve pool: once the pool is full, a client that waited reserve_pool_timeout
/// gets one extra connection; no more than reserve_pool_size of them.
#[tokio::test(flavor = "multi_thread")]
async fn reserve_pool_grants_extra_connections_after_the_timeout() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.reserve_pool_size = 1;
        c.general.reserve_pool_timeout = Secs::from_secs(1);
        c.general.query_wait_timeout = Secs::from_secs(60);
    })
    .await;
    let direct = direct(&s.pg, DB).await;
    let pool = || s.server.as_ref().unwrap().app().pools()[0].clone();
    // A holds the pool's only connection in a transaction.
    let a = connect(s.addr).await;
    a.batch_execute("begin; select 1").await.unwrap();
    assert_eq!(count(&direct, BACKENDS).await, 1);
    // B waits, then takes the reserve connection while A still holds its own.
    let b = connect(s.addr).await;
    let got = tokio::time::timeout(PROMPTLY, b.batch_execute("begin; select 2")).await;
    got.expect("B served from the reserve").unwrap();
    assert_eq!(count(&direct, BACKENDS).await, 2);
    // C waits too, but the reserve is used up: it keeps waiting.
    let c = connect(s.addr).await;
    let c_query = tokio::spawn(async move { c.simple_query("select 3").await.map(|_| c) });
    let p = pool();
    eventually("C waiting", PROMPTLY, || {
        let p = p.clone();
        async move { (p.status().waiting == 1).then_some(()) }
    })
    .await;
    // The wait is the scenario: C stays queued for three reserve_pool_timeouts, and a
    // pooler that granted a second reserve connection would have done so by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(p.status().waiting, 1, "no second reserve connection");
    assert_eq!(count(&direct, BACKENDS).await, 2);
    // A finishes: C gets its connection.
    a.batch_execute("commit").await.unwrap();
    tokio::time::timeout(PROMPTLY, c_query)
        .await
        .expect("C served")
        .unwrap()
        .unwrap();
    b.batch_execute("commit").await.unwrap();
}

/// transaction_timeout ends a client whose transaction runs too long with 25P04, and
/// leaves no transaction behind on the server (idle in it, or busy in it).
#[tokio::test(flavor = "multi_thread")]
async fn transaction_timeout_ends_the_client_and_rolls_back() {
    let s = setup_with(PoolMode::Transaction, 2, |c, _| {
        c.general.transaction_timeout = Secs::from_secs(1);
    })
    .await;
    let direct = direct(&s.pg, DB).await;
    let setup = connect(s.addr).await;
    setup
        .batch_execute("create table t(x int); insert into t values (1)")
        .await
        .unwrap();
    // Idle in its transaction.
    let idle = connect_full(s.addr).await;
    idle.client
        .batch_execute("begin; update t set x = 2")
        .await
        .unwrap();
    // The connection task ends with the FATAL while the client is still held.
    let Conn { client, task, .. } = idle;
    let e = tokio::time::timeout(PROMPTLY, task)
        .await
        .expect("connection ended")
        .unwrap()
        .expect_err("ended by transaction_timeout");
    drop(client);
    assert_eq!(code(&e).as_deref(), Some("25P04"), "{e:?}");
    assert!(
        message(&e).contains("transaction timeout"),
        "{}",
        message(&e)
    );
    // Busy in its transaction.
    let busy = connect_full(s.addr).await;
    busy.client
        .batch_execute("begin; update t set x = 3")
        .await
        .unwrap();
    let e = busy
        .client
        .simple_query("select pg_sleep(60)")
        .await
        .expect_err("ended by transaction_timeout");
    assert!(
        code(&e).as_deref() == Some("25P04") || e.is_closed(),
        "{e:?}"
    );
    let sql = "select count(*) from pg_stat_activity where usename = 'app' and \
               (state like 'idle in transaction%' or strpos(query, 'pg_sleep(60)') > 0) \
               and pid <> pg_backend_pid()";
    eventually("no transaction left behind", PROMPTLY, || {
        let direct = &direct;
        async move { (count(direct, sql).await == 0).then_some(()) }
    })
    .await;
    assert_eq!(count(&setup, "select x::int8 from t").await, 1);
    // Short transactions are untouched.
    for _ in 0..3 {
        setup
            .batch_execute("begin; select 1; commit")
            .await
            .unwrap();
    }
}

/// A cancel request that cannot reach the server is abandoned after
/// cancel_wait_timeout: the cancel connection closes instead of hanging.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_wait_timeout_abandons_an_unreachable_cancel() {
    let pg = cluster();
    let proxy = FaultProxy::start(pg.addr()).expect("fault proxy");
    let port = proxy.port();
    let s = setup_on(pg, PoolMode::Transaction, 2, |cfg, _| {
        for db in cfg.databases.values_mut() {
            db.host = "127.0.0.1".into();
            db.port = port;
        }
        cfg.general.cancel_wait_timeout = Secs::from_secs(1);
    })
    .await;
    let direct = direct(&s.pg, DB).await;
    let c = connect(s.addr).await;
    let token = c.cancel_token();
    let running = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await.err() });
    wait_active_query(&direct, "pg_sleep(30)").await;
    let app = s.server.as_ref().unwrap().app().clone();
    let before = app.client_tasks().live();
    proxy.blackhole();
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request sent to the pooler");
    // The cancel connection's task runs (it cannot deliver), then ends within the
    // bound (generous upper limit); without a bound it would wait forever.
    eventually("the cancel connection accepted", PROMPTLY, || {
        let app = app.clone();
        async move { (app.client_tasks().live() > before).then_some(()) }
    })
    .await;
    eventually(
        "the cancel connection closed",
        Duration::from_secs(20),
        || {
            let app = app.clone();
            async move { (app.client_tasks().live() <= before).then_some(()) }
        },
    )
    .await;
    proxy.resume();
    drop(running);
}

/// server_login_retry: after a failed server login, the next client gets the error at
/// once, without another connection attempt to the server.
#[tokio::test(flavor = "multi_thread")]
async fn server_login_retry_fails_the_next_client_fast() {
    let pg = cluster();
    let proxy = FaultProxy::start(pg.addr()).expect("fault proxy");
    let port = proxy.port();
    let s = setup_on(pg, PoolMode::Transaction, 2, |cfg, _| {
        for db in cfg.databases.values_mut() {
            db.host = "127.0.0.1".into();
            db.port = port;
        }
        // The pooler knows the wrong password: PostgreSQL refuses its logins.
        cfg.users.get_mut(USER).unwrap().password = Some("wrong".into());
        cfg.general.server_login_retry = Secs::from_secs(60);
    })
    .await;
    let login = client_config(s.addr, USER, "wrong", DB);
    let e = try_connect(&login).await.expect_err("server login fails");
    assert_eq!(code(&e).as_deref(), Some("28P01"), "{e:?}");
    let attempts = proxy.accepted();
    assert!(attempts >= 1);
    for _ in 0..3 {
        let e = try_connect(&login).await.expect_err("still failing");
        assert_eq!(code(&e).as_deref(), Some("28P01"), "{e:?}");
        assert!(
            message(&e).contains("server_login_retry"),
            "{}",
            message(&e)
        );
    }
    assert_eq!(
        proxy.accepted(),
        attempts,
        "no new attempt within server_login_retry"
    );
    // RECONNECT starts over: the next client tries again.
    for p in s.server.as_ref().unwrap().app().pools() {
        p.reconnect();
    }
    let _ = try_connect(&login).await.expect_err("fails again");
    assert!(proxy.accepted() > attempts);
}
