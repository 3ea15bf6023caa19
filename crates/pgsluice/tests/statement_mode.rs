//! Statement pool mode (PgBouncer's `pool_mode = statement`): a server connection is
//! released after each request outside a transaction block; a transaction block is
//! refused with PgBouncer's FATAL 08P01 and its server connection rolled back before
//! reuse; a pipeline with several Syncs gets one checkout per Sync; the mode can be set
//! per database in a pgbouncer.ini and from the command line.

mod common;

use common::*;
use pgsluice::config::PoolMode;
use tokio_postgres::types::{ToSql, Type};

const REFUSAL: &str = "transaction blocks not allowed in statement pooling mode";

async fn backend_pid(c: &tokio_postgres::Client) -> String {
    simple_value(c, "select pg_backend_pid()")
        .await
        .unwrap()
        .unwrap()
}

/// Backends of `app` inside a transaction block, as PostgreSQL sees them.
async fn open_transactions(direct: &tokio_postgres::Client) -> i64 {
    count(
        direct,
        "select count(*) from pg_stat_activity where usename = 'app' \
         and state in ('idle in transaction', 'idle in transaction (aborted)')",
    )
    .await
}

/// Waits until the pooler has closed `c`'s connection.
async fn closed(c: &tokio_postgres::Client) {
    eventually("the client closed", PROMPTLY, || async {
        c.is_closed().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_statements_and_prepared_queries_run() {
    let s = setup(PoolMode::Statement, 1).await;
    let c = connect(s.addr).await;
    assert_eq!(
        simple_value(&c, "select 41+1").await.unwrap().as_deref(),
        Some("42")
    );
    // Several statements in one Query message end idle: one statement to the pooler,
    // as in PgBouncer (its ReadyForQuery is what counts).
    c.batch_execute("create table t(x int); begin; insert into t values (1); commit")
        .await
        .unwrap();
    // Named prepared statements (tokio-postgres prepares every query) carry across
    // checkouts as in transaction mode.
    let stmt = c.prepare("select $1::int + 1").await.unwrap();
    for i in 0..5 {
        let row = c.query_one(&stmt, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    assert_eq!(count(&c, "select count(*) from t").await, 1);
    // Session state is refused as in transaction mode (a LISTEN on its own is served
    // by the notification hub; beside another statement it is refused).
    let e = c.batch_execute("listen chan; select 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{e:?}");
    assert_eq!(
        simple_value(&c, "select 1").await.unwrap().as_deref(),
        Some("1")
    );
}

/// COPY FROM STDIN over both protocols: the data goes with its statement (the
/// extended-protocol COPY also needs the Sync sent after CopyDone); the connection is
/// released after each COPY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_over_both_protocols() {
    use futures_util::SinkExt;
    let s = setup(PoolMode::Statement, 1).await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    a.batch_execute("create table c(x int)").await.unwrap();
    for round in 0..3 {
        let sink = a.copy_in("copy c from stdin").await.unwrap();
        let mut sink = std::pin::pin!(sink);
        sink.send(bytes::Bytes::from_static(b"1\n2\n3\n"))
            .await
            .unwrap();
        assert_eq!(sink.as_mut().finish().await.unwrap(), 3);
        // The other client shares the one connection between COPYs.
        assert_eq!(count(&b, "select count(*) from c").await, 3 * (round + 1));
    }
    let script = "\\copy c from stdin\n4\n5\n\\.\nselect count(*) from c;\n";
    let out = tokio::task::block_in_place(|| psql(s.addr, USER, PASSWORD, DB, &[], script));
    assert_eq!(stdout(&out), "11", "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_block_is_refused_and_rolled_back() {
    let s = setup(PoolMode::Statement, 1).await;
    let direct = direct(&s.pg, DB).await;
    let setup_client = connect(s.addr).await;
    setup_client
        .batch_execute("create table t(x int)")
        .await
        .unwrap();
    let used_pid = backend_pid(&setup_client).await;

    // Rows written before and after BEGIN in one Query: the Query ends inside the
    // block, so the client is refused and both inserts must be rolled back.
    let a = connect_full(s.addr).await;
    let e = a
        .client
        .batch_execute("insert into t values (1); begin; insert into t values (2)")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("08P01"), "{e:?}");
    assert_eq!(message(&e), REFUSAL);
    let db = e.as_db_error().unwrap();
    assert_eq!(db.severity(), "FATAL");
    // PgBouncer closes the client after this error; so does pgsluice.
    closed(&a.client).await;

    // The same server connection serves the next client, clean.
    let b = connect(s.addr).await;
    assert_eq!(count(&b, "select count(*) from t").await, 0);
    assert_eq!(backend_pid(&b).await, used_pid);
    assert_eq!(open_transactions(&direct).await, 0);

    // BEGIN alone, over the extended protocol: refused the same way.
    let c = connect(s.addr).await;
    let e = c.execute("begin", &[]).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("08P01"), "{e:?}");
    closed(&c).await;
    // A failed transaction block (status 'E'): the client sees its own error first,
    // then it is closed.
    let d = connect(s.addr).await;
    let e = d
        .batch_execute("begin; insert into t values (3); select 1/0")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("22012"), "{e:?}");
    closed(&d).await;

    assert_eq!(backend_pid(&b).await, used_pid);
    assert_eq!(open_transactions(&direct).await, 0);
    assert_eq!(count(&b, "select count(*) from t").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_connection_alternates_between_two_clients() {
    let s = setup(PoolMode::Statement, 1).await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    a.batch_execute("create sequence seq").await.unwrap();
    let pid = backend_pid(&a).await;
    for i in 0..5 {
        let next = |c| async move { count(c, "select nextval('seq')").await };
        assert_eq!(next(&a).await, 2 * i + 1);
        assert_eq!(next(&b).await, 2 * i + 2);
    }
    assert_eq!(backend_pid(&b).await, pid);
    // Each client keeps its own session parameters on the shared connection.
    a.batch_execute("set timezone = 'Asia/Tokyo'")
        .await
        .unwrap();
    assert_ne!(
        simple_value(&b, "show timezone").await.unwrap().as_deref(),
        Some("Asia/Tokyo")
    );
    assert_eq!(
        simple_value(&a, "show timezone").await.unwrap().as_deref(),
        Some("Asia/Tokyo")
    );
}

/// A pipeline of three Sync-terminated queries: the connection goes back after each,
/// so a client queued meanwhile runs between the pipeline's first and second query
/// (in transaction mode the pipeline would keep it to the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_releases_at_every_sync() {
    let s = setup(PoolMode::Statement, 1).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    a.batch_execute("create sequence seq").await.unwrap();
    direct
        .batch_execute("select pg_advisory_lock(7)")
        .await
        .unwrap();

    let pipeline = tokio::spawn(async move {
        // Polled together, tokio-postgres sends the three requests back to back.
        let (first, second, third) = tokio::join!(
            a.query_typed("select pg_advisory_xact_lock(7)", &[]),
            a.query_typed("select nextval('seq')", &[]),
            a.query_typed("select nextval('seq')", &[]),
        );
        first.unwrap();
        let v = |r: Result<Vec<tokio_postgres::Row>, _>| r.unwrap()[0].get::<_, i64>(0);
        (v(second), v(third))
    });
    wait_active_query(&direct, "pg_advisory_xact_lock").await;
    let pool = s.server.as_ref().unwrap().app().pools()[0].clone();
    let queued = tokio::spawn(async move { count(&b, "select nextval('seq')").await });
    eventually("the second client queued", PROMPTLY, || {
        let pool = pool.clone();
        async move { (pool.counts().cl_waiting == 1).then_some(()) }
    })
    .await;
    direct
        .batch_execute("select pg_advisory_unlock(7)")
        .await
        .unwrap();
    let b_value = queued.await.unwrap();
    let (second, third) = pipeline.await.unwrap();
    assert_eq!((b_value, second, third), (1, 2, 3));
}

/// Extended-protocol pipelines and prepared statements through a pool of one shared
/// by several clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_of_several_clients_share_one_connection() {
    let s = setup(PoolMode::Statement, 1).await;
    let mut tasks = Vec::new();
    for n in 0..4i32 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let c = connect(addr).await;
            let stmt = c.prepare("select $1::int * 10").await.unwrap();
            let int4 = Type::INT4;
            for round in 0..5i32 {
                let sum = n + round;
                let (p1, p3): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
                    ([&sum], [&round]);
                let p2: [(&(dyn ToSql + Sync), Type); 1] = [(&n, int4.clone())];
                let (x, y, z) = tokio::join!(
                    c.query_one(&stmt, &p1),
                    c.query_typed("select $1::int + 1", &p2),
                    c.query_one(&stmt, &p3),
                );
                assert_eq!(x.unwrap().get::<_, i32>(0), (n + round) * 10);
                assert_eq!(y.unwrap()[0].get::<_, i32>(0), n + 1);
                assert_eq!(z.unwrap().get::<_, i32>(0), round * 10);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_in_statement_mode_from_the_command_line() {
    let pg = cluster();
    let pooler = spawn_pooler(&pg, &["--pool-mode", "statement", "--pool-size", "1"], &[]);
    let addr = pooler.addr();
    let out = tokio::task::block_in_place(|| psql(addr, USER, PASSWORD, DB, &[], "select 41+1;\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "42");
    // psql sends each statement of a script as its own Query: BEGIN is refused.
    let out = tokio::task::block_in_place(|| {
        psql(
            addr,
            USER,
            PASSWORD,
            DB,
            &[],
            "begin;\nselect 1;\ncommit;\n",
        )
    });
    let err = stderr(&out);
    assert!(err.contains(REFUSAL), "{err}");
    assert!(!stdout(&out).contains('1'), "{}", stdout(&out));
    // The pooler goes on serving.
    let out = tokio::task::block_in_place(|| psql(addr, USER, PASSWORD, DB, &[], "select 7;\n"));
    assert_eq!(stdout(&out), "7", "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_database_statement_mode_from_pgbouncer_ini() {
    let pg = cluster();
    let dir = std::env::temp_dir().join(format!("pgsluice-stmt-ini-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("userlist.txt"),
        format!("\"{USER}\" \"{PASSWORD}\"\n"),
    )
    .unwrap();
    let server = format!("host=127.0.0.1 port={} dbname={DB}", pg.port());
    let ini = format!(
        "[databases]\n{DB} = {server}\nauto = {server} pool_mode=statement\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = scram-sha-256\n\
         auth_file = userlist.txt\nunix_socket_dir =\npool_mode = transaction\n\
         default_pool_size = 2\n"
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
    let mut cfg = pgsluice::config::load_file(&dir.join("pgbouncer.ini"), Vec::new()).unwrap();
    cfg.general.listen = vec!["127.0.0.1:0".parse().unwrap()];
    let (_server, addr) = start_pooler(cfg).await;

    // The transaction-mode database runs a transaction.
    let mut tx_client = try_connect(&client_config(addr, USER, PASSWORD, DB))
        .await
        .unwrap();
    let tx = tx_client.transaction().await.unwrap();
    tx.batch_execute("create table t(x int); insert into t values (1)")
        .await
        .unwrap();
    let row = tx.query_one("select count(*) from t", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    tx.commit().await.unwrap();

    // The statement-mode one serves statements and refuses the transaction.
    let auto = try_connect(&client_config(addr, USER, PASSWORD, "auto"))
        .await
        .unwrap();
    assert_eq!(
        simple_value(&auto, "select 41+1").await.unwrap().as_deref(),
        Some("42")
    );
    let e = auto.batch_execute("begin").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("08P01"), "{e:?}");
    assert_eq!(message(&e), REFUSAL);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_in_statement_mode() {
    let s = setup(PoolMode::Statement, 2).await;
    // pgbench -i wraps its COPY in a transaction block: initialise directly.
    let init = tokio::task::block_in_place(|| pgbench(s.pg.port(), &["-i", "-s", "1", "-q"]));
    assert!(init.status.success(), "{}", stderr(&init));
    for mode in ["simple", "prepared"] {
        let out = tokio::task::block_in_place(|| {
            pgbench(
                s.addr.port(),
                &["-S", "-M", mode, "-c", "4", "-j", "1", "-t", "50", "-n"],
            )
        });
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "pgbench -M {mode}:\n{text}\n{}",
            stderr(&out)
        );
        assert!(
            text.contains("number of transactions actually processed: 200/200"),
            "pgbench -M {mode}:\n{text}"
        );
    }
}

/// The admin console switches a running pooler to statement mode and back; SHOW POOLS
/// and SHOW CONFIG report it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_set_pool_mode_statement() {
    let s = setup_with(PoolMode::Transaction, 1, |cfg, _| {
        cfg.general.admin_users = vec!["admin".into()];
        cfg.users.insert(
            "admin".into(),
            pgsluice::config::UserConfig {
                password: Some("admin-pw".into()),
                ..Default::default()
            },
        );
    })
    .await;
    let admin = try_connect(&client_config(s.addr, "admin", "admin-pw", "pgbouncer"))
        .await
        .unwrap();
    // The value of `column` in the first row of `show` whose first cell is `key`.
    let cell = |show: &'static str, key: &'static str, column: &'static str| {
        let admin = &admin;
        async move {
            let msgs = admin.simple_query(show).await.unwrap();
            msgs.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some(key) => {
                        r.get(column).map(str::to_owned)
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{show}: no {key} row"))
        }
    };
    let app = connect(s.addr).await;
    app.batch_execute("begin; select 1; commit").await.unwrap();
    app.batch_execute("begin").await.unwrap();
    app.batch_execute("commit").await.unwrap();

    admin
        .simple_query("SET pool_mode = 'statement'")
        .await
        .unwrap();
    assert_eq!(cell("SHOW CONFIG", "pool_mode", "value").await, "statement");
    assert_eq!(cell("SHOW POOLS", DB, "pool_mode").await, "statement");
    let e = app.batch_execute("begin").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("08P01"), "{e:?}");
    assert_eq!(message(&e), REFUSAL);

    admin
        .simple_query("SET pool_mode = transaction")
        .await
        .unwrap();
    assert_eq!(cell("SHOW POOLS", DB, "pool_mode").await, "transaction");
    let app = connect(s.addr).await;
    app.batch_execute("begin").await.unwrap();
    app.batch_execute("commit").await.unwrap();
}
