//! Fault injection against real PostgreSQL: network cuts and blackholes between
//! pgsluice and the server (through the testkit's [`FaultProxy`]), a stalled
//! (SIGSTOPped) server, clients vanishing mid-COPY and mid-pipeline, and server
//! connections terminated while their client is idle.
//!
//! Every test checks what the client sees (SQLSTATE, message), that nothing is left
//! behind on the server (no transaction idle in a transaction, no lock on the table),
//! that the next client does not inherit a dirty connection, and that the pool
//! serves again within a generous bound.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use pgsluice::config::{AuthType, Config, PoolMode, Secs};
use pgsluice_testkit::FaultProxy;
use tokio_postgres::Client;

/// Upper bound for an error that should come "soon" (timeouts here are 1 s).
const ERROR_BOUND: Duration = Duration::from_secs(20);

/// Locks of any mode held on table `t`.
const LOCKS_ON_T: &str = "select count(*) from pg_locks l join pg_class c on c.oid = l.relation \
                          where c.relname = 't'";
/// Backends of the application user idle in a transaction (aborted or not).
const IDLE_IN_XACT: &str = "select count(*) from pg_stat_activity where usename = 'app' \
                            and state like 'idle in transaction%'";

/// Cluster, a fault proxy in front of it, and pgsluice whose backend is the proxy.
async fn setup_behind_proxy(
    pool_size: usize,
    edit: impl FnOnce(&mut Config),
) -> (Setup, FaultProxy) {
    let pg = cluster();
    let proxy = FaultProxy::start(pg.addr()).expect("start the fault proxy");
    let port = proxy.port();
    let s = setup_on(pg, PoolMode::Transaction, pool_size, |cfg, _| {
        for db in cfg.databases.values_mut() {
            db.host = "127.0.0.1".into();
            db.port = port;
        }
        edit(cfg);
    })
    .await;
    (s, proxy)
}

/// Waits until no transaction is left open by the application user and nothing
/// holds a lock on `t`, and no backend still runs a query containing `marker`.
async fn assert_nothing_left_behind(direct: &Client, marker: &str) {
    let sql = format!(
        "select ({IDLE_IN_XACT}) + ({LOCKS_ON_T}) + (select count(*) from pg_stat_activity \
         where usename = 'app' and state = 'active' and strpos(query, '{marker}') > 0)"
    );
    let sql = &sql;
    eventually(
        "no open transaction, lock or running query left behind",
        PROMPTLY,
        || async move { (count(direct, sql).await == 0).then_some(()) },
    )
    .await;
}

/// A client through the pooler starts from a clean connection: no transaction in
/// progress, no transaction id assigned, and it can take an exclusive lock on `t` at once.
async fn assert_next_client_is_clean(c: &Client) {
    let v = simple_value(
        c,
        "select (txid_current_if_assigned() is null and now() = statement_timestamp())::text",
    )
    .await
    .expect("query on a fresh client");
    assert_eq!(
        v.as_deref(),
        Some("true"),
        "the connection was handed over inside a transaction"
    );
    c.batch_execute(
        "begin; set local lock_timeout = '5s'; lock table t in access exclusive mode nowait; commit",
    )
    .await
    .expect("the next client could not lock t: a lock was left behind");
}

/// Connects and retries the first query until the pool serves again (bounded).
async fn wait_serving(addr: SocketAddr, connect_trust_auth: bool) -> Client {
    eventually("the pool to serve again", PROMPTLY, || async move {
        let c = if connect_trust_auth {
            tokio::time::timeout(Duration::from_secs(5), async {
                let mut cfg = tokio_postgres::Config::new();
                cfg.host("127.0.0.1")
                    .port(addr.port())
                    .user(USER)
                    .dbname(DB)
                    .connect_timeout(Duration::from_secs(5));
                try_connect(&cfg).await
            })
            .await
            .ok()?
            .ok()?
        } else {
            tokio::time::timeout(Duration::from_secs(5), try_connect(&app_config(addr)))
                .await
                .ok()?
                .ok()?
        };
        let ok = tokio::time::timeout(Duration::from_secs(5), c.simple_query("select 1"))
            .await
            .ok()?
            .is_ok();
        ok.then_some(c)
    })
    .await
}

// ---------------------------------------------------------------------------
// (a) network faults between pgsluice and PostgreSQL

/// The network between pgsluice and PostgreSQL is cut while a client's query runs
/// inside a transaction holding a lock.
#[tokio::test(flavor = "multi_thread")]
async fn network_cut_mid_query_reports_08006_and_pool_recovers_after_resume() {
    let (s, proxy) = setup_behind_proxy(1, |_| {}).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect_full(s.addr).await;
    a.client
        .batch_execute("create table t(id int); insert into t values (1)")
        .await
        .unwrap();
    a.client
        .batch_execute("begin; insert into t values (2); lock table t in share mode")
        .await
        .unwrap();
    // (A COMMIT sent in the same Query message would still run after the cut:
    // PostgreSQL executes what it has received. Here the COMMIT never leaves.)
    let client = a.client;
    let running = tokio::spawn(async move {
        client
            .batch_execute("select pg_sleep(3) /* cut-me */")
            .await?;
        client.batch_execute("commit").await
    });
    wait_active_query(&direct, "cut-me").await;
    assert!(count(&direct, LOCKS_ON_T).await >= 1, "no lock held on t");

    proxy.cut();
    let e = tokio::time::timeout(ERROR_BOUND, running)
        .await
        .expect("client not told about the cut")
        .unwrap()
        .expect_err("the query cannot succeed over a cut connection");
    assert_eq!(code(&e).as_deref(), Some("08006"), "{e:?}");
    assert_eq!(message(&e), "server closed the connection unexpectedly");
    let task_end = tokio::time::timeout(PROMPTLY, a.task)
        .await
        .expect("client connection not closed after the FATAL")
        .unwrap();
    assert!(task_end.is_err(), "the FATAL error ends the client session");

    // While the network is down, a new client gets a connection error, not a hang.
    let b = connect(s.addr).await; // login needs no server: startup data is cached
    let e = tokio::time::timeout(ERROR_BOUND, b.simple_query("select 1"))
        .await
        .expect("a query while the network is down hangs")
        .expect_err("a query cannot succeed while the network is down");
    assert!(
        matches!(code(&e).as_deref(), Some("08006") | Some("08001")),
        "expected a connection failure SQLSTATE, got {:?}: {e:?}",
        code(&e)
    );

    // PostgreSQL rolls the orphaned transaction back on its own (pg_sleep ends, the
    // write fails); nothing may survive it.
    assert_nothing_left_behind(&direct, "cut-me").await;
    assert_eq!(count(&direct, "select count(*) from t").await, 1);

    proxy.resume();
    let c = wait_serving(s.addr, false).await;
    assert_next_client_is_clean(&c).await;
    assert_eq!(count(&c, "select count(*) from t").await, 1);
}

/// A blackholed network (packets vanish, sockets stay open): with a small
/// server_connect_timeout, clients needing a new server connection get 08001 promptly,
/// both at login (cold pool) and at their first query (pool emptied by a cut).
#[tokio::test(flavor = "multi_thread")]
async fn network_blackhole_gives_new_clients_a_connect_timeout_error() {
    let (s, proxy) = setup_behind_proxy(2, |c| {
        c.general.server_connect_timeout = Secs::from_secs(1);
        // After a failed connect, logins are refused for server_login_retry (15 s by
        // default, as long as `wait_serving`'s whole budget): keep the recovery short.
        c.general.server_login_retry = Secs::from_secs(1);
    })
    .await;

    // Cold pool: the login itself needs a server connection.
    proxy.blackhole();
    let e = tokio::time::timeout(ERROR_BOUND, try_connect(&app_config(s.addr)))
        .await
        .expect("login hangs on a blackholed server")
        .expect_err("login cannot succeed while the server is unreachable");
    assert_eq!(code(&e).as_deref(), Some("08001"), "{e:?}");
    assert!(
        message(&e).contains("timed out connecting to server"),
        "{}",
        message(&e)
    );

    proxy.resume();
    let a = wait_serving(s.addr, false).await;
    a.batch_execute("create table t(id int)").await.unwrap();

    // Warm pool: a cut closes the pooled connections, then the network blackholes.
    proxy.cut();
    proxy.blackhole();
    let b = connect(s.addr).await; // served from cached startup data
    let e = tokio::time::timeout(ERROR_BOUND, b.simple_query("select 1"))
        .await
        .expect("a query hangs on a blackholed server instead of timing out")
        .expect_err("a query cannot succeed while the server is unreachable");
    assert_eq!(code(&e).as_deref(), Some("08001"), "{e:?}");
    assert!(
        message(&e).contains("timed out connecting to server"),
        "{}",
        message(&e)
    );

    proxy.resume();
    let c = wait_serving(s.addr, false).await;
    let direct = direct(&s.pg, DB).await;
    assert_nothing_left_behind(&direct, "no-marker-here").await;
    assert_next_client_is_clean(&c).await;
}

// ---------------------------------------------------------------------------
// (b) PostgreSQL stalled

/// PostgreSQL frozen (SIGSTOP): with one server connection, the client that got it
/// waits, the others get 53300 after query_wait_timeout; after SIGCONT everything
/// completes and the pool serves again.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_postgres_waiting_clients_get_53300_then_all_recovers() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.query_wait_timeout = Secs::from_secs(1);
    })
    .await;
    let direct = direct(&s.pg, DB).await;
    let clients: Vec<Client> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(connect(s.addr).await);
        }
        v
    };
    clients[0]
        .batch_execute("create table t(id int)")
        .await
        .unwrap();

    tokio::task::block_in_place(|| s.pg.pause()).expect("SIGSTOP PostgreSQL");
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let r = c
                .query_typed(&format!("select {i}::int8 + 40"), &[])
                .await
                .map(|rows| rows[0].get::<_, i64>(0));
            (i as i64, r, c)
        }));
    }
    // Two of the three cannot get the only connection: they get 53300.
    let mut waiting = Vec::new();
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + ERROR_BOUND;
    while refused < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting clients not refused within {ERROR_BOUND:?}"
        );
        let mut still = Vec::new();
        for t in tasks {
            if t.is_finished() {
                let (i, r, _) = t.await.unwrap();
                let e = r.expect_err("no query can succeed while PostgreSQL is stopped");
                assert_eq!(code(&e).as_deref(), Some("53300"), "client {i}: {e:?}");
                assert!(
                    message(&e).contains("query_wait_timeout"),
                    "{}",
                    message(&e)
                );
                refused += 1;
            } else {
                still.push(t);
            }
        }
        tasks = still;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    waiting.extend(tasks);
    assert_eq!(waiting.len(), 1, "exactly one client holds the connection");

    tokio::task::block_in_place(|| s.pg.resume()).expect("SIGCONT PostgreSQL");
    let (i, r, holder) = tokio::time::timeout(PROMPTLY, waiting.pop().unwrap())
        .await
        .expect("the client holding the connection got no answer after SIGCONT")
        .unwrap();
    assert_eq!(r.expect("its query completes after SIGCONT"), i + 40);
    assert_eq!(count(&holder, "select 5::int8").await, 5);

    assert_nothing_left_behind(&direct, "no-marker-here").await;
    let c = wait_serving(s.addr, false).await;
    assert_next_client_is_clean(&c).await;
}

// ---------------------------------------------------------------------------
// (c), (d) clients vanishing mid-COPY and mid-pipeline (raw sockets, trust auth)

/// Reads one backend message (tag, body); panics on EOF or timeout.
fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).expect("message header");
    let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).expect("message body");
    (head[0], body)
}

/// A frontend message: tag, length, body.
fn message_of(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Parse (unnamed) + Bind (unnamed portal, no parameters) + Execute for `sql`.
fn extended_query(sql: &str) -> Vec<u8> {
    let mut parse = vec![0u8]; // unnamed statement
    parse.extend_from_slice(sql.as_bytes());
    parse.push(0);
    parse.extend_from_slice(&0i16.to_be_bytes()); // no parameter types
    let mut bind = vec![0u8, 0u8]; // unnamed portal, unnamed statement
    bind.extend_from_slice(&0i16.to_be_bytes()); // parameter formats
    bind.extend_from_slice(&0i16.to_be_bytes()); // parameters
    bind.extend_from_slice(&0i16.to_be_bytes()); // result formats
    let mut execute = vec![0u8]; // unnamed portal
    execute.extend_from_slice(&0i32.to_be_bytes()); // all rows
    let mut out = message_of(b'P', &parse);
    out.extend(message_of(b'B', &bind));
    out.extend(message_of(b'E', &execute));
    out
}

async fn trust_setup() -> (Setup, Client) {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.auth_type = AuthType::Trust;
    })
    .await;
    let direct = direct(&s.pg, DB).await;
    direct
        .batch_execute("create table t(id int, v text); alter table t owner to app")
        .await
        .unwrap();
    (s, direct)
}

/// A client starts `COPY t FROM STDIN`, sends some rows and its socket closes
/// without CopyDone: the copy is rolled back, no lock or transaction remains, and the
/// next client gets a clean connection.
#[tokio::test(flavor = "multi_thread")]
async fn client_vanishing_mid_copy_leaves_no_transaction_or_lock() {
    let (s, direct) = trust_setup().await;
    let addr = s.addr;
    let sock = tokio::task::spawn_blocking(move || {
        let (mut sock, _) = raw_login(addr, &[("user", USER), ("database", DB)]);
        sock.write_all(&query_message("copy t from stdin /* copy-me */"))
            .unwrap();
        let (tag, _) = read_message(&mut sock);
        assert_eq!(tag, b'G', "expected CopyInResponse");
        for chunk in 0..10 {
            let mut rows = String::new();
            for i in 0..100 {
                rows.push_str(&format!("{}\trow\n", chunk * 100 + i));
            }
            sock.write_all(&message_of(b'd', rows.as_bytes())).unwrap();
        }
        sock
    })
    .await
    .unwrap();
    // The COPY is running and holds its lock on t.
    wait_active_query(&direct, "copy-me").await;
    assert!(
        count(&direct, LOCKS_ON_T).await >= 1,
        "COPY holds no lock on t"
    );

    drop(sock); // no CopyDone, no Terminate
    assert_nothing_left_behind(&direct, "copy-me").await;
    assert_eq!(
        count(&direct, "select count(*) from t").await,
        0,
        "rows of the abandoned COPY were committed"
    );

    let c = wait_serving(addr, true).await;
    assert_next_client_is_clean(&c).await;
    // COPY works for the next client on the same single-connection pool.
    let sink = c.copy_in("copy t from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    sink.send(bytes::Bytes::from_static(b"1\tok\n2\tok\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_eq!(count(&direct, "select count(*) from t").await, 2);
}

/// A client pipelines extended-protocol queries (BEGIN, INSERT, LOCK, a long
/// pg_sleep, ...) without reading any result and vanishes while the server works on
/// them: the running query is stopped, the transaction rolled back, and the next
/// client gets a clean connection.
#[tokio::test(flavor = "multi_thread")]
async fn client_vanishing_mid_pipeline_leaves_no_transaction_or_lock() {
    let (s, direct) = trust_setup().await;
    let addr = s.addr;
    let sock = tokio::task::spawn_blocking(move || {
        let (mut sock, _) = raw_login(addr, &[("user", USER), ("database", DB)]);
        let mut batch = Vec::new();
        for sql in [
            "begin",
            "insert into t values (1, 'pipelined')",
            "lock table t in access exclusive mode",
            // Longer than the cleanup bound: only an active cancel/close ends it in time.
            "select pg_sleep(60) /* pipe-me */",
            "insert into t values (2, 'pipelined')",
            "commit",
        ] {
            batch.extend(extended_query(sql));
        }
        batch.extend(message_of(b'S', &[]));
        sock.write_all(&batch).unwrap();
        sock
    })
    .await
    .unwrap();
    wait_active_query(&direct, "pipe-me").await;
    assert_eq!(
        count(
            &direct,
            "select count(*) from pg_locks l join pg_class c on c.oid = l.relation \
             where c.relname = 't' and l.mode = 'AccessExclusiveLock' and l.granted"
        )
        .await,
        1
    );

    drop(sock); // results never read, no Terminate
    assert_nothing_left_behind(&direct, "pipe-me").await;
    assert_eq!(
        count(&direct, "select count(*) from t").await,
        0,
        "the pipelined transaction was committed"
    );

    let c = wait_serving(addr, true).await;
    assert_next_client_is_clean(&c).await;
}

// ---------------------------------------------------------------------------
// (e) server connections terminated while their clients are idle

/// Every server connection is terminated (pg_terminate_backend) while the clients
/// are idle between transactions: their next statements, including a named prepared
/// statement, run on fresh connections, and the clients never see the FATAL.
#[tokio::test(flavor = "multi_thread")]
async fn terminated_server_connections_of_idle_clients_are_replaced_transparently() {
    let s = setup(PoolMode::Transaction, 2).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect_full(s.addr).await;
    let b = connect_full(s.addr).await;
    a.client
        .batch_execute("create table t(id int)")
        .await
        .unwrap();
    let stmt = a.client.prepare("select $1::int8 * 2").await.unwrap();
    let v: i64 = a.client.query_one(&stmt, &[&21i64]).await.unwrap().get(0);
    assert_eq!(v, 42);
    // Two server connections: A holds one in a transaction while B runs.
    a.client.batch_execute("begin").await.unwrap();
    let a_pid = count(&a.client, "select pg_backend_pid()::int8").await;
    let b_pid = count(&b.client, "select pg_backend_pid()::int8").await;
    assert_ne!(a_pid, b_pid);
    a.client.batch_execute("commit").await.unwrap();

    let killed = count(
        &direct,
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
         where usename = 'app' and backend_type = 'client backend') k",
    )
    .await;
    assert_eq!(killed, 2);
    let direct_ref = &direct;
    eventually("the terminated backends to exit", PROMPTLY, || async move {
        (app_backends(direct_ref).await == 0).then_some(())
    })
    .await;

    // The next statements just work, on new backends.
    let v: i64 = a.client.query_one(&stmt, &[&50i64]).await.unwrap().get(0);
    assert_eq!(v, 100);
    for c in [&a.client, &b.client] {
        let pid = count(c, "select pg_backend_pid()::int8").await;
        assert!(
            pid != a_pid && pid != b_pid,
            "a terminated connection was reused"
        );
        assert_next_client_is_clean(c).await;
    }
    // Neither client received the servers' FATAL 57P01 nor lost its session.
    assert!(!a.task.is_finished(), "client A's session ended");
    assert!(!b.task.is_finished(), "client B's session ended");
    let mut am = a.messages;
    assert!(
        am.try_recv().is_err(),
        "client A got an unsolicited message"
    );
    assert_nothing_left_behind(&direct, "no-marker-here").await;
}
