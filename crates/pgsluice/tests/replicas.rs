//! Replicated databases against a real primary and a real streaming replica
//! (pg_basebackup -R): reads reach the replica and writes the primary, read-only
//! transactions run on the replica and read-then-write ones on the primary, a lagging
//! replica gets no reads, a dead replica's reads move to the primary, and when the
//! primary dies and the replica is promoted, writes reach the new primary without a
//! restart or RELOAD.
//!
//! Where a statement ran is read from the statement itself: `current_setting('port')`
//! and `pg_is_in_recovery()` are evaluated by the server that runs it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pgsluice::config::{Config, HostConfig, HostRole, PoolMode, ReplicaLag, Secs};
use pgsluice::Instance;
use pgsluice_testkit::PgCluster;
use tokio_postgres::Client;

/// A primary, its streaming replica, and pgsluice in front of both.
struct Replicated {
    server: Instance,
    addr: std::net::SocketAddr,
    replica: PgCluster,
    primary: PgCluster,
}

fn host_of(pg: &PgCluster) -> HostConfig {
    HostConfig {
        host: pg.host().to_owned(),
        port: pg.port(),
        role: HostRole::Auto,
    }
}

/// Starts the primary (with table `t`), the replica, and pgsluice in transaction mode
/// with both hosts; `edit` adjusts the configuration.
async fn replicated(split: bool, edit: impl FnOnce(&mut Config)) -> Replicated {
    let primary = cluster();
    pg_sql(&primary, "create table t (id int); grant all on t to app");
    let replica =
        tokio::task::block_in_place(|| primary.start_replica()).expect("start the replica");
    tokio::task::block_in_place(|| replica.wait_caught_up(&primary)).expect("replica catches up");
    let mut cfg = config(&primary);
    cfg.general.pool_mode = PoolMode::Transaction;
    cfg.general.default_pool_size = 4;
    let db = cfg.databases.get_mut(DB).expect("the quick database");
    db.host = String::new();
    db.hosts = Some(vec![host_of(&primary), host_of(&replica)]);
    db.read_write_split = split;
    db.health_check_interval = Some(Secs::from_millis(200));
    db.health_check_timeout = Some(Secs::from_millis(1000));
    db.ban_time = Some(Secs::from_millis(500));
    edit(&mut cfg);
    let (server, addr) = start_pooler(cfg).await;
    Replicated {
        server,
        addr,
        replica,
        primary,
    }
}

/// (port, in recovery) of the server that ran a simple-protocol SELECT.
async fn where_simple(c: &Client) -> Result<(u16, bool), tokio_postgres::Error> {
    let v = simple_value(
        c,
        "select current_setting('port') || ',' || pg_is_in_recovery()::text",
    )
    .await?
    .expect("a row");
    let (port, rec) = v.split_once(',').expect("port,recovery");
    Ok((port.parse().expect("port"), rec == "true"))
}

/// (port, in recovery) of the server that ran an extended-protocol SELECT.
async fn where_extended(c: &Client) -> Result<(u16, bool), tokio_postgres::Error> {
    let rows = c
        .query_typed(
            "select current_setting('port')::int4, pg_is_in_recovery()",
            &[],
        )
        .await?;
    let port: i32 = rows[0].get(0);
    Ok((port as u16, rows[0].get(1)))
}

/// Waits until pgsluice's health checks know both roles (reads reach the replica).
async fn wait_roles_known(r: &Replicated) {
    let c = connect(r.addr).await;
    let replica = r.replica.port();
    eventually("reads to reach the replica", Duration::from_secs(15), || {
        let c = &c;
        async move {
            matches!(where_simple(c).await, Ok((p, true)) if p == replica).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_reach_the_replica_and_writes_the_primary() {
    let r = replicated(true, |_| {}).await;
    wait_roles_known(&r).await;
    let c = connect(r.addr).await;
    let (primary, replica) = (r.primary.port(), r.replica.port());
    let mut on_replica = 0;
    for _ in 0..50 {
        let (p, rec) = where_simple(&c).await.expect("simple read");
        assert!(p == replica || p == primary);
        assert_eq!(rec, p == replica);
        on_replica += usize::from(p == replica);
        let (p, _) = where_extended(&c).await.expect("extended read");
        on_replica += usize::from(p == replica);
    }
    assert!(on_replica >= 90, "{on_replica} of 100 reads on the replica");
    // Writes: every one on the primary, none fails.
    for i in 0..50 {
        let rows = c
            .query_typed(
                &format!("insert into t values ({i}) returning current_setting('port')::int4"),
                &[],
            )
            .await
            .expect("insert");
        assert_eq!(rows[0].get::<_, i32>(0) as u16, primary);
        c.simple_query(&format!("insert into t values ({i})"))
            .await
            .expect("simple insert");
    }
    assert_eq!(
        count(&direct(&r.primary, DB).await, "select count(*) from t").await,
        100
    );
    // A SELECT that writes (nextval) or locks goes to the primary.
    pg_sql(&r.primary, "create sequence s; grant all on s to app");
    tokio::task::block_in_place(|| r.replica.wait_caught_up(&r.primary)).unwrap();
    let v = simple_value(&c, "select nextval('s')::text || current_setting('port')")
        .await
        .expect("nextval runs on the primary");
    assert_eq!(v.unwrap(), format!("1{primary}"));
    let v = simple_value(
        &c,
        "select current_setting('port') from t limit 1 for update",
    )
    .await
    .expect("locking read");
    assert_eq!(v.unwrap(), primary.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_stay_on_one_host_chosen_by_how_they_start() {
    let r = replicated(true, |_| {}).await;
    wait_roles_known(&r).await;
    let c = connect(r.addr).await;
    let (primary, replica) = (r.primary.port(), r.replica.port());
    // Read, then write: the whole transaction on the primary.
    c.batch_execute("begin").await.unwrap();
    assert_eq!(where_simple(&c).await.unwrap().0, primary);
    c.batch_execute("insert into t values (1)").await.unwrap();
    assert_eq!(where_extended(&c).await.unwrap().0, primary);
    c.batch_execute("commit").await.unwrap();
    // A read-only transaction on the replica, all of it.
    c.batch_execute("begin read only").await.unwrap();
    assert_eq!(where_simple(&c).await.unwrap(), (replica, true));
    assert_eq!(where_extended(&c).await.unwrap(), (replica, true));
    c.batch_execute("commit").await.unwrap();
    // A write inside a read-only transaction gets PostgreSQL's own error.
    c.batch_execute("start transaction read only")
        .await
        .unwrap();
    let e = c
        .batch_execute("insert into t values (2)")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("25006"), "{e:?}");
    c.batch_execute("rollback").await.unwrap();
    // One simple Query with a read and a write: the primary.
    let msgs = c
        .simple_query("select 1; insert into t values (3); select current_setting('port')")
        .await
        .unwrap();
    let port = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) != Some("1") => {
            r.get(0).map(str::to_owned)
        }
        _ => None,
    });
    assert_eq!(port.unwrap(), primary.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_split_a_host_list_serves_sessions_as_target_session_attrs_says() {
    let r = replicated(false, |cfg| {
        cfg.databases.get_mut(DB).unwrap().target_session_attrs =
            Some(pgsluice::config::TargetSessionAttrs::ReadWrite);
    })
    .await;
    let c = connect(r.addr).await;
    for _ in 0..10 {
        let (p, rec) = where_simple(&c).await.expect("read");
        assert_eq!((p, rec), (r.primary.port(), false));
    }
    c.simple_query("insert into t values (1)").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_replica_gets_no_reads_until_it_catches_up() {
    let r = replicated(true, |cfg| {
        cfg.databases.get_mut(DB).unwrap().max_replica_lag = Some(ReplicaLag::Bytes(1024));
    })
    .await;
    wait_roles_known(&r).await;
    let c = connect(r.addr).await;
    tokio::task::block_in_place(|| r.replica.pause_replay()).unwrap();
    // Well over 1 kB of WAL the replica does not replay.
    pg_sql(&r.primary, "insert into t select generate_series(1, 2000)");
    let primary = r.primary.port();
    eventually("reads to leave the lagging replica", Duration::from_secs(15), || {
        let c = &c;
        async move { matches!(where_simple(c).await, Ok((p, false)) if p == primary).then_some(()) }
    })
    .await;
    for _ in 0..10 {
        assert_eq!(where_simple(&c).await.unwrap().0, primary);
    }
    tokio::task::block_in_place(|| r.replica.resume_replay()).unwrap();
    wait_roles_known(&r).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_replicas_reads_move_to_the_primary() {
    let mut r = replicated(true, |_| {}).await;
    wait_roles_known(&r).await;
    tokio::task::block_in_place(|| r.replica.stop_immediate()).unwrap();
    let primary = r.primary.port();
    // A client that held a replica connection may see that connection's end once;
    // new clients' reads go to the primary.
    eventually(
        "reads on the primary",
        Duration::from_secs(15),
        || async move {
            let c = try_connect(&app_config(r.addr)).await.ok()?;
            matches!(where_simple(&c).await, Ok((p, false)) if p == primary).then_some(())
        },
    )
    .await;
    let c = connect(r.addr).await;
    for _ in 0..20 {
        assert_eq!(where_simple(&c).await.unwrap().0, primary);
    }
    c.simple_query("insert into t values (1)").await.unwrap();
    drop(r.server);
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_writes_reach_the_promoted_replica_without_a_restart() {
    let mut r = replicated(true, |_| {}).await;
    wait_roles_known(&r).await;
    let c = connect(r.addr).await;
    c.simple_query("insert into t values (1)").await.unwrap();
    // A client inside a transaction on the primary when it dies.
    let in_tx = connect(r.addr).await;
    in_tx
        .batch_execute("begin; insert into t values (2)")
        .await
        .unwrap();

    tokio::task::block_in_place(|| r.primary.stop_immediate()).unwrap();
    let stopped = Instant::now();
    tokio::task::block_in_place(|| r.replica.promote()).unwrap();

    // The transaction's client gets a clear error, as PostgreSQL would give.
    let e = in_tx
        .batch_execute("insert into t values (3)")
        .await
        .unwrap_err();
    let sqlstate = code(&e);
    assert!(
        e.is_closed() || matches!(sqlstate.as_deref(), Some("08006" | "57P01" | "57P02")),
        "{e:?}"
    );

    // A new insert through the same pgsluice succeeds, on the promoted replica.
    let new_primary = r.replica.port();
    let took = eventually(
        "an insert on the promoted replica",
        Duration::from_secs(30),
        || async move {
            let c = try_connect(&app_config(r.addr)).await.ok()?;
            let rows = c
                .query_typed(
                    "insert into t values (4) returning current_setting('port')::int4",
                    &[],
                )
                .await
                .ok()?;
            (rows[0].get::<_, i32>(0) as u16 == new_primary).then(|| stopped.elapsed())
        },
    )
    .await;
    eprintln!("failover: first insert on the promoted replica {took:?} after the primary stopped");
    // The old client's next transaction works too when it reconnects; reads now go to
    // the only host, which is the primary (fallback).
    let c = connect(r.addr).await;
    assert_eq!(where_simple(&c).await.unwrap(), (new_primary, false));
}
