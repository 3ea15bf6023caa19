//! The upgrade's client handover without its transport: two poolers in one test
//! process (the old and the new, same configuration, different ports); the old one
//! hands its clients over through an in-process channel, the new one adopts them, and
//! the clients (real tokio-postgres connections) go on without noticing.

mod common;

use std::time::Duration;

use common::*;
use pgsluice::client::handover::{AdoptError, Departing};
use pgsluice::config::{Config, PoolMode};
use pgsluice::Instance;
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The session-mode alias of [`DB`].
const SESSION_DB: &str = "appdb_session";

fn two_mode_config(pg: &pgsluice_testkit::PgCluster) -> Config {
    let mut cfg = config(pg);
    cfg.general.pool_mode = PoolMode::Transaction;
    cfg.general.default_pool_size = 4;
    cfg.general.admin_users = vec![USER.into()];
    let mut session = cfg.databases[DB].clone();
    session.pool_mode = Some(PoolMode::Session);
    session.dbname = Some(DB.into());
    cfg.databases.insert(SESSION_DB.into(), session);
    cfg.validate().expect("valid config");
    cfg
}

/// The next client the old pooler hands over.
async fn departing(rx: &mut mpsc::UnboundedReceiver<Departing>) -> Departing {
    tokio::time::timeout(PROMPTLY, rx.recv())
        .await
        .expect("a client handed over in time")
        .expect("the sink is open")
}

/// Clients listed in the pools of `server` (SHOW CLIENTS' rows), by user.
fn pool_clients(server: &Instance) -> usize {
    server.app().pools().iter().map(|p| p.clients().len()).sum()
}

/// SHOW CLIENTS on the admin console of the pooler at `addr`: (database, port) rows.
async fn show_clients(addr: std::net::SocketAddr) -> Vec<(String, String)> {
    let mut cfg = app_config(addr);
    cfg.dbname("pgbouncer");
    let admin = try_connect(&cfg).await.expect("admin console");
    let rows = admin
        .simple_query("SHOW CLIENTS")
        .await
        .expect("SHOW CLIENTS");
    rows.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((
                r.get("database").unwrap_or_default().to_owned(),
                r.get("port").unwrap_or_default().to_owned(),
            )),
            _ => None,
        })
        .collect()
}

async fn show(c: &Client, name: &str) -> String {
    simple_value(c, &format!("show {name}"))
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_clients_move_to_the_new_process_and_go_on() {
    let pg = cluster();
    let cfg = two_mode_config(&pg);
    let (old, old_addr) = start_pooler(cfg.clone()).await;
    let (new, new_addr) = start_pooler(cfg).await;
    // The new process's own keys stay clear of the old one's.
    new.app()
        .clients()
        .cancel
        .skip_pids_below(old.app().clients().cancel.pid_floor());
    let direct = direct(&pg, DB).await;

    // A: a named statement and a tracked parameter.
    let a = connect_full(old_addr).await;
    a.client
        .batch_execute("set search_path to pg_catalog, public; set application_name = 'moving'")
        .await
        .unwrap();
    let stmt = a.client.prepare("select $1::int4 + 1").await.unwrap();
    a.client
        .batch_execute("prepare twice(int) as select $1 * 2")
        .await
        .unwrap();
    // P: logged in, never asked anything: parked.
    let p = connect(old_addr).await;
    // T: inside a transaction.
    let t = connect(old_addr).await;
    t.batch_execute("create table if not exists moved(x int); begin; insert into moved values (1)")
        .await
        .unwrap();
    // S: session mode, holding its server connection.
    let mut s_cfg = app_config(old_addr);
    s_cfg.dbname(SESSION_DB);
    let s = try_connect(&s_cfg).await.unwrap();
    assert_eq!(count(&s, "select 5::int8").await, 5);
    eventually("a parked client", PROMPTLY, || {
        let parked = old.app().parked_clients() >= 1;
        async move { parked.then_some(()) }
    })
    .await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    old.app().begin_handover(tx);
    // A and P move (in either order); T waits for its COMMIT, S stays.
    let mut keys = Vec::new();
    for _ in 0..2 {
        let d = departing(&mut rx).await;
        assert_eq!(
            (d.image.database.as_str(), d.image.user.as_str()),
            (DB, USER)
        );
        keys.push(d.image.cancel_key);
        new.app().adopt_client(d).expect("adopted");
    }
    assert!(rx.try_recv().is_err(), "only the idle clients moved");
    assert_eq!(pool_clients(&old), 2, "T and S stay in the old process");
    assert_eq!(pool_clients(&new), 2);

    // A goes on: queries, its statement, its parameters.
    assert_eq!(count(&a.client, "select 7::int8").await, 7);
    let rows = a.client.query(&stmt, &[&41i32]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    let twice = simple_value(&a.client, "execute twice(21)").await.unwrap();
    assert_eq!(twice.as_deref(), Some("42"));
    assert_eq!(show(&a.client, "search_path").await, "pg_catalog, public");
    assert_eq!(show(&a.client, "application_name").await, "moving");
    assert_eq!(count(&p, "select 8::int8").await, 8);
    // The new admin console lists them (with their ports), the old one does not.
    let local_ports: Vec<String> = new
        .app()
        .pools()
        .iter()
        .flat_map(|p| p.clients())
        .map(|c| c.remote.port.to_string())
        .collect();
    let listed = show_clients(new_addr).await;
    for port in &local_ports {
        assert!(
            listed.iter().any(|(_, p)| p == port),
            "{listed:?} lacks {port}"
        );
    }
    assert!(
        listed.iter().all(|(db, _)| db == DB || db == "pgbouncer"),
        "{listed:?}"
    );

    // A cancel with A's key, through the new process's port, cancels its query.
    let token = a.client.cancel_token();
    let client = a.client;
    let running = tokio::spawn(async move {
        let r = client.simple_query("select pg_sleep(30)").await;
        (client, r)
    });
    wait_active_query(&direct, "pg_sleep(30)").await;
    let sock = tokio::net::TcpStream::connect(new_addr).await.unwrap();
    token
        .cancel_query_raw(sock, NoTls)
        .await
        .expect("send cancel");
    let (client, r) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("cancelled within 20 s")
        .unwrap();
    let e = r.expect_err("pg_sleep(30) was cancelled");
    assert_eq!(code(&e).as_deref(), Some("57014"), "{e:?}");
    assert_eq!(count(&client, "select 9::int8").await, 9);

    // T moves once its transaction is over, with its work committed.
    assert_eq!(count(&t, "select count(*) from moved").await, 1);
    t.batch_execute("commit").await.unwrap();
    let d = departing(&mut rx).await;
    assert!(!keys.contains(&d.image.cancel_key));
    new.app().adopt_client(d).expect("adopted");
    assert_eq!(count(&t, "select count(*) from moved").await, 1);
    assert_eq!(pool_clients(&new), 3);

    // S stays, and is served by the old process.
    assert_eq!(count(&s, "select 6::int8").await, 6);
    assert_eq!(pool_clients(&old), 1);
    assert!(rx.try_recv().is_err());
}

/// With the sink's receiver gone, nothing moves: clients stay and are served.
#[tokio::test(flavor = "multi_thread")]
async fn clients_stay_when_the_sink_is_closed() {
    let pg = cluster();
    let (old, old_addr) = start_pooler(two_mode_config(&pg)).await;
    let c = connect(old_addr).await;
    assert_eq!(count(&c, "select 1::int8").await, 1);
    let (tx, rx) = mpsc::unbounded_channel();
    drop(rx);
    old.app().begin_handover(tx);
    for i in 2..5 {
        assert_eq!(count(&c, &format!("select {i}::int8")).await, i);
    }
    assert_eq!(pool_clients(&old), 1);
}

/// A client of the unix socket moves too (its descriptor is taken for what it is).
#[tokio::test(flavor = "multi_thread")]
async fn a_unix_socket_client_moves() {
    let pg = cluster();
    let dir = Dir::new("handover-unix");
    let mut cfg = two_mode_config(&pg);
    cfg.general.unix_socket_dir = Some(dir.0.display().to_string());
    let (old, _) = start_pooler(cfg.clone()).await;
    cfg.general.unix_socket_dir = None;
    let (new, _) = start_pooler(cfg).await;
    let mut c_cfg = tokio_postgres::Config::new();
    c_cfg
        .host_path(&dir.0)
        .port(0)
        .user(USER)
        .password(PASSWORD)
        .dbname(DB);
    let c = try_connect(&c_cfg)
        .await
        .expect("connect over the unix socket");
    c.batch_execute("set application_name = 'over_unix'")
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    old.app().begin_handover(tx);
    new.app()
        .adopt_client(departing(&mut rx).await)
        .expect("adopted");
    assert_eq!(pool_clients(&old), 0);
    assert_eq!(count(&c, "select 3::int8").await, 3);
    assert_eq!(show(&c, "application_name").await, "over_unix");
    let listed = new.app().pools().iter().flat_map(|p| p.clients()).count();
    assert_eq!(listed, 1);
}

/// A user whose stored secret is only a SCRAM verifier: the pool logs in to the server
/// with what the client's login revealed (pass-through). The new process's pool has
/// had no login; the credential moves with the client.
#[tokio::test(flavor = "multi_thread")]
async fn the_pass_through_credential_moves_with_the_client() {
    let pg = cluster();
    let verifier = pg_sql(
        &pg,
        "select rolpassword from pg_authid where rolname = 'app'",
    );
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let mut cfg = two_mode_config(&pg);
    cfg.users.get_mut(USER).unwrap().password = Some(verifier);
    let (old, old_addr) = start_pooler(cfg.clone()).await;
    let (new, _) = start_pooler(cfg).await;
    let c = connect(old_addr).await;
    assert_eq!(count(&c, "select 1::int8").await, 1);
    let (tx, mut rx) = mpsc::unbounded_channel();
    old.app().begin_handover(tx);
    let d = departing(&mut rx).await;
    assert!(d.image.passthrough.is_some());
    new.app().adopt_client(d).expect("adopted");
    // Its next transaction opens the new process's first server connection.
    assert_eq!(count(&c, "select 2::int8").await, 2);
    assert_eq!(server_counts(&new).0, 1);
}

/// A client under TLS stays in the old process and is served there; a plain client
/// beside it moves.
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_client_stays() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let pg = cluster();
    let dir = Dir::new("handover-tls");
    let (cert, key) = (dir.0.join("server.crt"), dir.0.join("server.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-days",
            "30",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    let mut cfg = two_mode_config(&pg);
    cfg.general.client_tls_sslmode = pgsluice::config::TlsMode::Allow;
    cfg.general.client_tls_cert_file = Some(cert);
    cfg.general.client_tls_key_file = Some(key);
    let (old, old_addr) = start_pooler(cfg.clone()).await;
    let (new, _) = start_pooler(cfg).await;

    let conninfo = format!(
        "host=127.0.0.1 port={} user={USER} dbname={DB} sslmode=require",
        old_addr.port()
    );
    let mut cmd = Command::new(pgsluice_testkit::pg_bin("psql"));
    cmd.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        &conninfo,
    ]);
    clean_pg_env(&mut cmd);
    let mut psql = cmd
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn psql");
    let mut stdin = psql.stdin.take().unwrap();
    stdin.write_all(b"select 'before';\n").unwrap();
    let plain = connect(old_addr).await;
    eventually("both clients logged in", PROMPTLY, || {
        let both = pool_clients(&old) == 2;
        async move { both.then_some(()) }
    })
    .await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    old.app().begin_handover(tx);
    new.app()
        .adopt_client(departing(&mut rx).await)
        .expect("adopted");
    assert_eq!(count(&plain, "select 4::int8").await, 4);
    stdin.write_all(b"select 'after';\n\\q\n").unwrap();
    drop(stdin);
    let out = tokio::task::block_in_place(|| psql.wait_with_output()).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.split_whitespace().collect::<Vec<_>>(),
        ["before", "after"]
    );
    assert!(rx.try_recv().is_err(), "the TLS client did not move");
    assert_eq!(pool_clients(&new), 1);
}

/// A client whose database the new process does not serve is refused there: it is
/// told why, and its connection closes.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_pool_in_the_new_process_is_told() {
    let pg = cluster();
    let cfg = two_mode_config(&pg);
    let (old, old_addr) = start_pooler(cfg.clone()).await;
    let mut without = cfg;
    without.databases.remove(DB);
    let (new, _) = start_pooler(without).await;
    let c = connect_full(old_addr).await;
    assert_eq!(count(&c.client, "select 1::int8").await, 1);
    let (tx, mut rx) = mpsc::unbounded_channel();
    old.app().begin_handover(tx);
    let e = new
        .app()
        .adopt_client(departing(&mut rx).await)
        .unwrap_err();
    assert!(
        matches!(e, AdoptError::NoPool { ref database, .. } if database == DB),
        "{e}"
    );
    // The connection task (the client still held) reads the FATAL and ends with it.
    let ended = tokio::time::timeout(PROMPTLY, c.task)
        .await
        .expect("the connection ends")
        .unwrap();
    let e = ended.expect_err("the connection ends with the FATAL");
    assert_eq!(code(&e).as_deref(), Some("3D000"), "{e:?}");
}

/// An image alone (no old process): a client with a request already read comes in,
/// and its session serves the request at once, with the image's parameters.
#[tokio::test(flavor = "multi_thread")]
async fn an_adopted_client_with_pending_bytes_is_served_at_once() {
    use std::io::{Read, Write};
    let pg = cluster();
    let (new, _) = start_pooler(two_mode_config(&pg)).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    let sql = b"show application_name\0";
    let mut pending = vec![b'Q'];
    pending.extend_from_slice(&(4 + sql.len() as u32).to_be_bytes());
    pending.extend_from_slice(sql);
    let image = pgsluice::client::handover::ClientImage {
        database: DB.into(),
        user: USER.into(),
        cancel_key: (4242, 77),
        params: vec![("application_name".into(), "from_image".into())],
        pending,
        ..Default::default()
    };
    let image = pgsluice::client::handover::ClientImage::decode(&image.encode()).unwrap();
    new.app()
        .adopt_client(Departing {
            fd: ours.into(),
            image,
        })
        .expect("adopted");
    // RowDescription, DataRow, CommandComplete, ReadyForQuery.
    client.set_read_timeout(Some(PROMPTLY)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while !got.ends_with(b"Z\0\0\0\x05I") {
        let n = client.read(&mut buf).expect("the answer");
        assert!(n > 0, "closed: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("from_image"), "{text:?}");
    assert!(got.starts_with(b"T"), "{text:?}");
    // Listed under its cancel key's pid, as in the old process.
    let ids: Vec<u64> = new
        .app()
        .pools()
        .iter()
        .flat_map(|p| p.clients())
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, [4242]);
    client.write_all(b"X\0\0\0\x04").unwrap();
}

/// A client that LISTENs stays in the old process (its subscriptions are there) and
/// still gets its notifications; a plain client beside it moves.
#[tokio::test(flavor = "multi_thread")]
async fn a_listening_client_stays_and_is_notified() {
    let pg = cluster();
    let cfg = two_mode_config(&pg);
    let (old, old_addr) = start_pooler(cfg.clone()).await;
    let (new, _) = start_pooler(cfg).await;
    let mut listener = connect_full(old_addr).await;
    listener
        .client
        .batch_execute("listen moving")
        .await
        .unwrap();
    let plain = connect(old_addr).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    old.app().begin_handover(tx);
    new.app()
        .adopt_client(departing(&mut rx).await)
        .expect("adopted");
    assert_eq!(count(&plain, "select 1::int8").await, 1);
    assert_eq!(pool_clients(&old), 1, "the listener stays");
    let direct = direct(&pg, DB).await;
    direct
        .batch_execute("notify moving, 'hello'")
        .await
        .unwrap();
    let got = loop {
        let m = tokio::time::timeout(PROMPTLY, listener.messages.recv())
            .await
            .expect("a notification in time")
            .expect("connection open");
        if let tokio_postgres::AsyncMessage::Notification(n) = m {
            break n;
        }
    };
    assert_eq!((got.channel(), got.payload()), ("moving", "hello"));
    assert_eq!(count(&listener.client, "select 2::int8").await, 2);
    assert!(rx.try_recv().is_err());
}
