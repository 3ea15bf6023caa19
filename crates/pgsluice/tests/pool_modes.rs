//! Pool mode semantics. Transaction mode: clients share server connections yet each
//! keeps its own session parameters, and a transaction keeps its server until it ends.
//! Session mode: a client keeps its server while connected, and the next client gets it
//! back reset (DISCARD ALL).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use pgsluice::config::PoolMode;

async fn backend_pid(c: &tokio_postgres::Client) -> String {
    simple_value(c, "select pg_backend_pid()")
        .await
        .unwrap()
        .unwrap()
}

async fn show(c: &tokio_postgres::Client, name: &str) -> String {
    simple_value(c, &format!("show {name}"))
        .await
        .unwrap_or_else(|e| panic!("show {name}: {e:?}"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_mode_keeps_session_parameters_per_client() {
    let s = setup(PoolMode::Transaction, 1).await;
    let direct = direct(&s.pg, DB).await;
    let default_tz = show(&direct, "timezone").await;
    let default_datestyle = show(&direct, "datestyle").await;
    assert_ne!(default_tz, "Asia/Tokyo");

    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    // Pool size 1: both clients are served by the same backend.
    assert_eq!(backend_pid(&a).await, backend_pid(&b).await);

    a.simple_query("SET TimeZone = 'Asia/Tokyo'").await.unwrap();
    assert_eq!(show(&b, "timezone").await, default_tz);
    assert_eq!(show(&a, "timezone").await, "Asia/Tokyo");
    b.simple_query("SET DateStyle = 'German, DMY'")
        .await
        .unwrap();
    assert_eq!(show(&a, "datestyle").await, default_datestyle);
    assert_eq!(show(&b, "datestyle").await, "German, DMY");
    assert_eq!(show(&a, "timezone").await, "Asia/Tokyo");
    assert_eq!(show(&b, "timezone").await, default_tz);
    // The setting really applies to what the server computes for each client.
    let a_offset = simple_value(&a, "select extract(timezone_hour from now())::text")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a_offset, "9");
    // A SET inside a committed transaction persists for that client only.
    a.batch_execute("begin; set timezone = 'America/New_York'; commit")
        .await
        .unwrap();
    assert_eq!(show(&a, "timezone").await, "America/New_York");
    assert_eq!(show(&b, "timezone").await, default_tz);
    // SET LOCAL and a rolled-back SET leave nothing behind.
    b.batch_execute("begin; set local timezone = 'Asia/Kolkata'; commit")
        .await
        .unwrap();
    b.batch_execute("begin; set timezone = 'Asia/Kolkata'; rollback")
        .await
        .unwrap();
    assert_eq!(show(&b, "timezone").await, default_tz);
    assert_eq!(show(&a, "timezone").await, "America/New_York");
    // Both still on the one backend.
    assert_eq!(backend_pid(&a).await, backend_pid(&b).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_mode_application_name_per_client() {
    let s = setup(PoolMode::Transaction, 1).await;
    let mut cfg_a = app_config(s.addr);
    cfg_a.application_name("alpha");
    let mut cfg_b = app_config(s.addr);
    cfg_b.application_name("beta");
    let a = try_connect(&cfg_a).await.unwrap();
    let b = try_connect(&cfg_b).await.unwrap();
    let c = connect(s.addr).await; // no application_name at all
    let app_name = |c| async move {
        simple_value(c, "select current_setting('application_name')")
            .await
            .unwrap()
            .unwrap_or_default()
    };
    for _ in 0..3 {
        assert_eq!(app_name(&a).await, "alpha");
        assert_eq!(app_name(&b).await, "beta");
        assert_eq!(app_name(&c).await, "");
    }
    assert_eq!(backend_pid(&a).await, backend_pid(&b).await);
    a.simple_query("set application_name = 'alpha2'")
        .await
        .unwrap();
    assert_eq!(app_name(&b).await, "beta");
    assert_eq!(app_name(&a).await, "alpha2");
    assert_eq!(app_name(&c).await, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_holds_its_server_until_commit() {
    let s = setup(PoolMode::Transaction, 1).await;
    let a = connect(s.addr).await;
    a.batch_execute("create table t(x int)").await.unwrap();
    a.batch_execute("begin; insert into t values (1)")
        .await
        .unwrap();

    let b = connect(s.addr).await;
    let b_done = Arc::new(AtomicBool::new(false));
    let b_task = {
        let b_done = b_done.clone();
        tokio::spawn(async move {
            let n = count(&b, "select count(*) from t").await;
            b_done.store(true, Ordering::SeqCst);
            n
        })
    };
    // B must be waiting for the only server connection, held by A's transaction.
    wait_queued(s.server(), 1, || b_done.load(Ordering::SeqCst)).await;
    assert!(
        !b_done.load(Ordering::SeqCst),
        "client B ran while client A's transaction held the only server connection"
    );
    a.batch_execute("insert into t values (2)").await.unwrap();
    assert!(!b_done.load(Ordering::SeqCst));
    a.batch_execute("commit").await.unwrap();
    let n = tokio::time::timeout(PROMPTLY, b_task)
        .await
        .expect("client B still waiting after COMMIT")
        .unwrap();
    // B ran after the commit: it sees both rows.
    assert_eq!(n, 2);
    // Never more than one backend.
    let direct = direct(&s.pg, DB).await;
    assert_eq!(app_backends(&direct).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn session_mode_keeps_server_for_the_session() {
    let s = setup(PoolMode::Session, 1).await;
    let a = connect(s.addr).await;
    a.batch_execute("create temp table tmp_a(x int); insert into tmp_a values (1)")
        .await
        .unwrap();
    // The temp table survives across statements: same backend for the whole session.
    let pid = backend_pid(&a).await;
    assert_eq!(count(&a, "select count(*) from tmp_a").await, 1);
    assert_eq!(backend_pid(&a).await, pid);

    // A second client waits while A is connected, even though A is idle.
    let b = connect(s.addr).await;
    let b_done = Arc::new(AtomicBool::new(false));
    let b_task = {
        let b_done = b_done.clone();
        tokio::spawn(async move {
            let pid = backend_pid(&b).await;
            b_done.store(true, Ordering::SeqCst);
            (b, pid)
        })
    };
    wait_queued(s.server(), 1, || b_done.load(Ordering::SeqCst)).await;
    assert!(
        !b_done.load(Ordering::SeqCst),
        "session mode gave A's server to B while A was connected"
    );
    drop(a);
    let (_b, b_pid) = tokio::time::timeout(PROMPTLY, b_task)
        .await
        .expect("B still waiting after A left")
        .unwrap();
    assert_eq!(b_pid, pid, "B should reuse the only server connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_mode_resets_server_before_reuse() {
    let s = setup(PoolMode::Session, 1).await;
    let direct = direct(&s.pg, DB).await;
    let default_work_mem = show(&direct, "work_mem").await;
    let a = connect(s.addr).await;
    a.batch_execute(
        "create temp table tmp_a(x int);
         set work_mem = '7MB';
         set search_path = 'pg_catalog';
         prepare p as select 1;
         select pg_advisory_lock(42);
         listen some_channel;",
    )
    .await
    .unwrap();
    assert_eq!(show(&a, "work_mem").await, "7MB");
    let pid = backend_pid(&a).await;
    drop(a);

    let b = connect(s.addr).await;
    assert_eq!(backend_pid(&b).await, pid, "same server connection reused");
    assert_eq!(
        simple_value(&b, "select to_regclass('tmp_a')::text")
            .await
            .unwrap(),
        None,
        "A's temp table is visible to B"
    );
    assert_eq!(show(&b, "work_mem").await, default_work_mem);
    assert_eq!(show(&b, "search_path").await, "\"$user\", public");
    let e = b.simple_query("execute p").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("26000"), "{e:?}");
    assert_eq!(
        count(&b, "select count(*) from pg_listening_channels()").await,
        0
    );
    assert_eq!(
        count(
            &direct,
            "select count(*) from pg_locks where locktype = 'advisory'"
        )
        .await,
        0,
        "A's advisory lock survived"
    );
}

/// Creates its file when dropped, so a psql waiting for it goes on even when the test
/// fails before it lets psql go on purpose.
struct GoFile(std::path::PathBuf);

impl Drop for GoFile {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// client_encoding is per client: a LATIN1 psql and a UTF8 tokio-postgres client share
/// one backend, and each gets its own bytes for the same character.
#[tokio::test(flavor = "multi_thread")]
async fn client_encoding_per_client_in_transaction_mode() {
    let s = setup(PoolMode::Transaction, 1).await;
    let addr = s.addr;
    // psql runs its first half, then waits in a shell escape (between transactions, so
    // the backend is free) until the test creates `go`: the UTF8 client's queries run
    // on the shared backend between psql's two halves.
    let half = s.pg.root_dir().join("psql-first-half-done");
    let go = GoFile(s.pg.root_dir().join("psql-go"));
    let script = format!(
        "show client_encoding;\nselect chr(233);\n\\! touch '{half}'\n\
         \\! i=0; while [ ! -e '{go}' ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\n\
         show client_encoding;\nselect chr(233);\n",
        half = half.display(),
        go = go.0.display()
    );
    let psql_run = tokio::task::spawn_blocking(move || {
        psql(
            addr,
            USER,
            PASSWORD,
            "dbname=appdb client_encoding=LATIN1",
            &[],
            &script,
        )
    });
    eventually("psql's first half", PROMPTLY, || {
        let reached = half.exists() || psql_run.is_finished();
        async move { reached.then_some(()) }
    })
    .await;
    let b = connect(s.addr).await;
    for _ in 0..3 {
        assert_eq!(show(&b, "client_encoding").await, "UTF8");
        assert_eq!(
            simple_value(&b, "select chr(233)")
                .await
                .unwrap()
                .as_deref(),
            Some("é")
        );
    }
    assert!(
        !psql_run.is_finished(),
        "psql ended before the UTF8 client's checks ran in between its halves"
    );
    drop(go);
    let out = psql_run.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<&[u8]> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        lines,
        vec![&b"LATIN1"[..], &[0xE9][..], &b"LATIN1"[..], &[0xE9][..]],
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Session mode: a client leaving in the middle of a transaction (open or aborted)
/// leaves nothing behind for the next client.
#[tokio::test(flavor = "multi_thread")]
async fn session_mode_client_leaving_mid_transaction() {
    let s = setup(PoolMode::Session, 1).await;
    let a = connect(s.addr).await;
    a.batch_execute("create table t(x int)").await.unwrap();
    a.batch_execute("begin; insert into t values (1)")
        .await
        .unwrap();
    drop(a);
    let b = tokio::time::timeout(PROMPTLY, async {
        let b = connect(s.addr).await;
        let n = count(&b, "select count(*) from t").await;
        (b, n)
    })
    .await
    .expect("next session never got a server connection");
    let (b, n) = b;
    assert_eq!(n, 0, "the first client's uncommitted insert is visible");
    b.batch_execute("begin; insert into t values (2); commit")
        .await
        .expect("second client starts in a clean (non-transaction) state");

    // An aborted transaction left behind.
    b.batch_execute("begin").await.unwrap();
    assert!(b.batch_execute("select 1/0").await.is_err());
    drop(b);
    let c = connect(s.addr).await;
    let n = tokio::time::timeout(PROMPTLY, count(&c, "select count(*) from t"))
        .await
        .expect("third client hangs");
    assert_eq!(n, 1);
}
