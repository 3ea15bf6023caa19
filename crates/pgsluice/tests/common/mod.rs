//! Shared setup for pgsluice's integration tests: a throwaway PostgreSQL cluster with an
//! application user and database, an in-process pooler in front of it, client helpers
//! (tokio-postgres, psql, raw sockets) and polling with a deadline.
//!
//! Every test binary compiles this module; not every binary uses every helper.
#![allow(dead_code, unreachable_pub)]

use std::future::{poll_fn, Future};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgsluice::config::{Config, PoolMode};
use pgsluice::Instance;
pub use pgsluice_testkit::clean_pg_env;
use pgsluice_testkit::{pg_bin, ClusterOptions, PgCluster, Pooler};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

mod dir;
mod programs;
#[allow(unused_imports)]
pub use dir::Dir;
#[allow(unused_imports)]
pub use programs::*;

/// The application role every test cluster gets.
pub const USER: &str = "app";
/// Its password.
pub const PASSWORD: &str = "secret";
/// The application database (owned by [`USER`]).
pub const DB: &str = "appdb";

/// Generous bound for anything that should happen "promptly".
pub const PROMPTLY: Duration = Duration::from_secs(15);

/// Logs pgsluice's tracing output through the test harness (shown for failing tests).
/// `RUST_LOG` overrides the default `info` filter.
pub fn init_tracing() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// Starts a cluster with default options (scram) and creates [`USER`] and [`DB`].
pub fn cluster() -> PgCluster {
    cluster_with(ClusterOptions::default())
}

/// Starts a cluster with `opts` and creates [`USER`] and [`DB`].
pub fn cluster_with(opts: ClusterOptions) -> PgCluster {
    tokio::task::block_in_place(|| {
        let pg = PgCluster::start_with(opts).expect("start PostgreSQL");
        pg.create_user(USER, PASSWORD).expect("create user");
        pg.create_database(DB, USER).expect("create database");
        pg
    })
}

/// Runs SQL as the superuser directly on the cluster, in [`DB`] (blocking psql).
pub fn pg_sql(pg: &PgCluster, sql: &str) -> String {
    tokio::task::block_in_place(|| pg.psql_db(DB, sql)).unwrap_or_else(|e| panic!("{e}"))
}

/// A quick-mode configuration for [`USER`]/[`DB`] on `pg`, listening on 127.0.0.1:0.
pub fn config(pg: &PgCluster) -> Config {
    let mut cfg = Config::quick(&pg.url(USER, PASSWORD, DB)).expect("quick config");
    cfg.general.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg
}

/// A cluster and an in-process pooler in front of it.
pub struct Setup {
    /// The pooler (None once shut down by the test).
    pub server: Option<Instance>,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The PostgreSQL cluster (dropped last).
    pub pg: PgCluster,
}

/// Starts an in-process pooler with `cfg`.
pub async fn start_pooler(cfg: Config) -> (Instance, SocketAddr) {
    init_tracing();
    let server = Instance::start(cfg).await.expect("start pgsluice");
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// Cluster + pooler in `mode` with `pool_size`, after `edit` adjusts the configuration.
pub async fn setup_with(
    mode: PoolMode,
    pool_size: usize,
    edit: impl FnOnce(&mut Config, &PgCluster),
) -> Setup {
    let pg = cluster();
    setup_on(pg, mode, pool_size, edit).await
}

/// Like [`setup_with`] on an already started cluster.
pub async fn setup_on(
    pg: PgCluster,
    mode: PoolMode,
    pool_size: usize,
    edit: impl FnOnce(&mut Config, &PgCluster),
) -> Setup {
    let mut cfg = config(&pg);
    cfg.general.pool_mode = mode;
    cfg.general.default_pool_size = pool_size;
    edit(&mut cfg, &pg);
    let (server, addr) = start_pooler(cfg).await;
    Setup {
        server: Some(server),
        addr,
        pg,
    }
}

/// Cluster + pooler in `mode` with `pool_size`.
pub async fn setup(mode: PoolMode, pool_size: usize) -> Setup {
    setup_with(mode, pool_size, |_, _| {}).await
}

/// tokio-postgres settings for the pooler at `addr`.
pub fn client_config(
    addr: SocketAddr,
    user: &str,
    password: &str,
    db: &str,
) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(10));
    c
}

/// [`client_config`] for [`USER`]/[`PASSWORD`]/[`DB`].
pub fn app_config(addr: SocketAddr) -> tokio_postgres::Config {
    client_config(addr, USER, PASSWORD, DB)
}

/// A connected client with the handle of its connection task and its async messages.
pub struct Conn {
    /// The client.
    pub client: Client,
    /// The connection task; it ends with Err when the server sends an unsolicited
    /// error (e.g. FATAL 57P01) or the socket fails.
    pub task: JoinHandle<Result<(), tokio_postgres::Error>>,
    /// Notices and notifications.
    pub messages: mpsc::UnboundedReceiver<AsyncMessage>,
}

impl Conn {
    /// Waits (bounded) for the connection task to end and returns its result.
    pub async fn finished(self) -> Result<(), tokio_postgres::Error> {
        drop(self.client);
        tokio::time::timeout(PROMPTLY, self.task)
            .await
            .expect("connection task did not end")
            .expect("connection task panicked")
    }
}

/// Connects with `cfg`, driving the connection in a task.
pub async fn try_connect_full(cfg: &tokio_postgres::Config) -> Result<Conn, tokio_postgres::Error> {
    let (client, mut connection) = cfg.connect(NoTls).await?;
    let (tx, messages) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(m)) => {
                    let _ = tx.send(m);
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    Ok(Conn {
        client,
        task,
        messages,
    })
}

/// Connects with `cfg`; the client only.
pub async fn try_connect(cfg: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    try_connect_full(cfg).await.map(|c| c.client)
}

/// Connects to the pooler at `addr` as [`USER`]; panics on failure.
pub async fn connect(addr: SocketAddr) -> Client {
    try_connect(&app_config(addr))
        .await
        .unwrap_or_else(|e| panic!("connect to pgsluice at {addr}: {e:?}"))
}

/// Like [`connect`], keeping the connection task handle.
pub async fn connect_full(addr: SocketAddr) -> Conn {
    try_connect_full(&app_config(addr))
        .await
        .unwrap_or_else(|e| panic!("connect to pgsluice at {addr}: {e:?}"))
}

/// A superuser client connected directly to the cluster (no pooler), in database `db`.
pub async fn direct(pg: &PgCluster, db: &str) -> Client {
    let cfg: tokio_postgres::Config = pg
        .url(
            pgsluice_testkit::SUPERUSER,
            pgsluice_testkit::SUPERUSER_PASSWORD,
            db,
        )
        .parse()
        .expect("superuser url");
    try_connect(&cfg)
        .await
        .unwrap_or_else(|e| panic!("connect directly to PostgreSQL: {e:?}"))
}

/// The SQLSTATE of an error, if PostgreSQL (or pgsluice) sent one.
pub fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_owned())
}

/// The server-sent message of an error, else its Display text.
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// Runs one query returning a single bigint (`select count(*) ...`). Uses the unnamed
/// statement in one round trip (`query_typed`), so it is safe in transaction mode.
pub async fn count(c: &Client, sql: &str) -> i64 {
    let rows = c
        .query_typed(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    rows.first()
        .unwrap_or_else(|| panic!("{sql}: no row"))
        .get(0)
}

/// The first column of the first row of a simple query, as text.
pub async fn simple_value(c: &Client, sql: &str) -> Result<Option<String>, tokio_postgres::Error> {
    let msgs = c.simple_query(sql).await?;
    Ok(msgs
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
            _ => None,
        })
        .flatten())
}

/// Calls `f` until it returns Some (every 25 ms) and returns the value; panics naming
/// `what` once `timeout` has passed.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Number of client backends of [`USER`] on the cluster (seen through `direct`).
pub async fn app_backends(direct: &Client) -> i64 {
    count(
        direct,
        "select count(*) from pg_stat_activity where usename = 'app' and backend_type = 'client backend'",
    )
    .await
}

/// Waits until a backend of [`USER`] is running a query containing `needle`; returns its pid.
pub async fn wait_active_query(direct: &Client, needle: &str) -> i32 {
    let sql = "select pid from pg_stat_activity where usename = 'app' and state = 'active' \
               and strpos(query, $1) > 0 and pid <> pg_backend_pid()";
    eventually(
        &format!("a backend running {needle:?}"),
        PROMPTLY,
        || async move {
            let rows = direct
                .query(sql, &[&needle])
                .await
                .expect("pg_stat_activity");
            rows.first().map(|r| r.get::<_, i32>(0))
        },
    )
    .await
}

// ---------------------------------------------------------------------------
// Pool counters of an in-process pooler (what SHOW POOLS reports), for tests that
// must wait until a client is queued or a server connection is handed out instead
// of sleeping and hoping it happened.

impl Setup {
    /// The running pooler; panics once the test has shut it down.
    pub fn server(&self) -> &Instance {
        self.server.as_ref().expect("pooler still running")
    }
}

/// Clients queued for a server connection, over every pool (cl_waiting).
pub fn clients_waiting(server: &Instance) -> usize {
    server
        .app()
        .pools()
        .iter()
        .map(|p| p.status().waiting)
        .sum()
}

/// Instance connections (open or being opened) and how many of them sit idle in their
/// pool, over every pool; `total - idle` are handed out to clients.
pub fn server_counts(server: &Instance) -> (usize, usize) {
    server.app().pools().iter().fold((0, 0), |(t, i), p| {
        let st = p.status();
        (t + st.total, i + st.idle)
    })
}

/// Waits until at least `n` clients are queued for a server connection, or until
/// `served()` says what they wait for happened anyway, so that the caller's own
/// assertion (not a timeout) reports a pooler that let them through.
pub async fn wait_queued(server: &Instance, n: usize, served: impl Fn() -> bool) {
    eventually(
        &format!("{n} client(s) queued for a server connection"),
        PROMPTLY,
        || {
            let done = clients_waiting(server) >= n || served();
            async move { done.then_some(()) }
        },
    )
    .await;
}

/// Runs psql against the pooler at `addr` as `user` with `password`, feeding `script`
/// on stdin (`-X -q -A -t`, no ON_ERROR_STOP unless `extra` sets it). Blocking.
pub fn psql(
    addr: SocketAddr,
    user: &str,
    password: &str,
    db: &str,
    extra: &[&str],
    script: &str,
) -> Output {
    let mut cmd = Command::new(pg_bin("psql"));
    cmd.args(["-X", "-q", "-A", "-t", "-w", "-h", "127.0.0.1", "-p"])
        .arg(addr.port().to_string())
        .args(["-U", user, "-d", db])
        .args(extra)
        .args(["-f", "-"]);
    clean_pg_env(&mut cmd);
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSFILE", "/nonexistent");
    run_with_stdin(cmd, script.as_bytes())
}

/// Runs `cmd` with `input` on stdin; blocking.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

/// stdout of a finished process, trimmed.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// stderr of a finished process, trimmed.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// The pgsluice binary built for these tests.
pub fn pgsluice_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgsluice"))
}

/// Spawns pgsluice as a process in quick mode for [`USER`]/[`DB`] on `pg`, listening on
/// 127.0.0.1:0, with `extra` flags and `envs`. Blocking until it listens.
pub fn spawn_pooler(pg: &PgCluster, extra: &[&str], envs: &[(&str, &str)]) -> Pooler {
    spawn_pooler_url(&pg.url(USER, PASSWORD, DB), extra, envs)
}

/// Like [`spawn_pooler`] for any backend URL.
pub fn spawn_pooler_url(backend: &str, extra: &[&str], envs: &[(&str, &str)]) -> Pooler {
    let mut args = vec!["--listen", "127.0.0.1:0", "--backend", backend];
    args.extend_from_slice(extra);
    tokio::task::block_in_place(|| Pooler::spawn(pgsluice_bin(), &args, envs))
        .unwrap_or_else(|e| panic!("spawn pgsluice: {e}"))
}

// ---------------------------------------------------------------------------
// Raw protocol helpers (blocking std sockets).

/// A StartupMessage (protocol 3.0) with the given parameters.
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// Connects a raw socket to `addr` with 10 s read/write timeouts.
pub fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until EOF (or the read timeout, or an error such as a reset); returns the bytes
/// and whether EOF was reached.
pub fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false)
            }
            // A reset after the error message still counts as closed.
            Err(_) => return (out, true),
        }
    }
}

/// Splits backend messages `(tag, body)` out of `bytes` (stops at a partial one).
pub fn backend_messages(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let tag = bytes[i];
        let len = i32::from_be_bytes(bytes[i + 1..i + 5].try_into().unwrap()) as usize;
        if len < 4 || i + 1 + len > bytes.len() {
            break;
        }
        out.push((tag, bytes[i + 5..i + 1 + len].to_vec()));
        i += 1 + len;
    }
    out
}

/// Parses the fields of an ErrorResponse/NoticeResponse body: (field type, value).
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let t = body[i];
        let end = body[i + 1..]
            .iter()
            .position(|b| *b == 0)
            .map_or(body.len(), |p| i + 1 + p);
        out.push((t, String::from_utf8_lossy(&body[i + 1..end]).into_owned()));
        i = end + 1;
    }
    out
}

/// The first ErrorResponse in `bytes`: its SQLSTATE (`C`) and message (`M`).
pub fn first_error(bytes: &[u8]) -> Option<(String, String)> {
    let (_, body) = backend_messages(bytes)
        .into_iter()
        .find(|(t, _)| *t == b'E')?;
    let fields = error_fields(&body);
    let get = |t: u8| {
        fields
            .iter()
            .find(|(f, _)| *f == t)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    Some((get(b'C'), get(b'M')))
}

/// Checks that the pooler still serves a normal client (after bad input, etc.).
pub async fn assert_serves(addr: SocketAddr) {
    let c = connect(addr).await;
    assert_eq!(count(&c, "select 7::bigint").await, 7);
}

/// A simple Query message.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

/// Reads backend messages until ReadyForQuery (included); panics on EOF or timeout.
pub fn read_until_ready(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head)
            .unwrap_or_else(|e| panic!("reading a message after {out:?}: {e}"));
        let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).expect("message body");
        let done = head[0] == b'Z';
        out.push((head[0], body));
        if done {
            return out;
        }
    }
}

/// Logs in on a raw socket to a pooler using `auth_type = trust`; returns the socket
/// and the messages up to the first ReadyForQuery.
pub fn raw_login(addr: SocketAddr, params: &[(&str, &str)]) -> (TcpStream, Vec<(u8, Vec<u8>)>) {
    let mut s = raw_connect(addr);
    s.write_all(&startup_message(params)).unwrap();
    let msgs = read_until_ready(&mut s);
    (s, msgs)
}

/// Connects to a pooler using `auth_type = trust` as [`USER`] with no password.
pub async fn connect_trust(addr: SocketAddr) -> Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user(USER)
        .dbname(DB)
        .connect_timeout(Duration::from_secs(10));
    try_connect(&cfg)
        .await
        .unwrap_or_else(|e| panic!("trust connect to {addr}: {e:?}"))
}
