//! Hostile and malformed input: each case gets the documented error and a clean close,
//! and a well-behaved client on the same pooler is not affected.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use pgsluice::config::{Config, PoolMode, Secs};
use pgsluice_protocol::backend;
use pgsluice_protocol::frame::split_message;
use pgsluice_testkit::PgCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

struct Setup {
    cluster: PgCluster,
    server: pgsluice::Instance,
}

async fn start(edit: impl FnOnce(&mut Config)) -> Setup {
    let cluster = PgCluster::start().expect("start PostgreSQL");
    cluster.create_user("app", "app").unwrap();
    cluster.create_database("app", "app").unwrap();
    let mut cfg = Config::quick(&cluster.url("app", "app", "app")).unwrap();
    cfg.general.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.general.default_pool_size = 2;
    cfg.general.pool_mode = PoolMode::Transaction;
    edit(&mut cfg);
    let server = pgsluice::Instance::start(cfg).await.unwrap();
    Setup { cluster, server }
}

impl Setup {
    fn addr(&self) -> SocketAddr {
        self.server.local_addrs()[0]
    }

    /// A well-behaved client must still get answers.
    async fn assert_healthy(&self) {
        let a = self.addr();
        let conn = format!(
            "host={} port={} user=app password=app dbname=app",
            a.ip(),
            a.port()
        );
        let (c, conn) = tokio_postgres::connect(&conn, NoTls)
            .await
            .expect("good client connects");
        tokio::spawn(conn);
        let v: i32 = c.query_one("select 41 + 1", &[]).await.unwrap().get(0);
        assert_eq!(v, 42);
    }
}

/// Sends `bytes`, then reads until EOF (bounded); returns the SQLSTATEs of the
/// ErrorResponses received.
async fn send_and_collect(addr: SocketAddr, bytes: &[u8]) -> Vec<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    read_errors(&mut s).await
}

async fn read_errors(s: &mut TcpStream) -> Vec<String> {
    let mut buf = BytesMut::new();
    let mut codes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        while let Ok(Some(m)) = split_message(&mut buf, 1 << 20) {
            if m.tag == b'E' {
                codes.push(
                    backend::parse_error_fields(&m.body)
                        .unwrap()
                        .code
                        .to_owned(),
                );
            }
        }
        match tokio::time::timeout_at(deadline, s.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return codes,
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection was not closed"),
        }
    }
}

fn startup(user: &str) -> BytesMut {
    let mut b = BytesMut::new();
    pgsluice_protocol::startup::write_startup(&mut b, &[("user", user), ("database", "app")]);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_packets() {
    let s = start(|_| {}).await;
    // Length below the minimum.
    assert_eq!(
        send_and_collect(s.addr(), &[0, 0, 0, 3]).await,
        vec!["08P01"]
    );
    // Length above PostgreSQL's 10,000-byte cap: refused before reading the body.
    assert_eq!(
        send_and_collect(s.addr(), &[0, 1, 0, 0, 0, 3, 0, 0]).await,
        vec!["08P01"]
    );
    // An HTTP request (bytes that are no startup packet at all).
    assert_eq!(
        send_and_collect(s.addr(), b"GET / HTTP/1.1\r\n\r\n").await,
        vec!["08P01"]
    );
    // A startup packet whose parameters are not NUL-terminated.
    assert_eq!(
        send_and_collect(s.addr(), &[0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r']).await,
        vec!["08P01"]
    );
    // No user name.
    let mut b = BytesMut::new();
    pgsluice_protocol::startup::write_startup(&mut b, &[("database", "app")]);
    assert_eq!(send_and_collect(s.addr(), &b).await, vec!["28000"]);
    // Protocol 2.0.
    assert_eq!(
        send_and_collect(s.addr(), &[0, 0, 0, 8, 0, 2, 0, 0]).await,
        vec!["0A000"]
    );
    // Plaintext smuggled after an SSLRequest, before the answer.
    let mut b = BytesMut::new();
    pgsluice_protocol::startup::write_ssl_request(&mut b);
    b.extend_from_slice(&startup("app"));
    assert_eq!(send_and_collect(s.addr(), &b).await, vec!["08P01"]);
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_startup_is_cut_off_by_client_login_timeout() {
    let s = start(|c| c.general.client_login_timeout = Secs(Duration::from_secs(1))).await;
    let mut slow = TcpStream::connect(s.addr()).await.unwrap();
    slow.write_all(&[0, 0, 0]).await.unwrap(); // never finishes the length
    let mut half = TcpStream::connect(s.addr()).await.unwrap();
    half.write_all(&startup("app")).await.unwrap(); // never answers the SCRAM challenge
    s.assert_healthy().await;
    assert!(
        read_errors(&mut slow).await.is_empty(),
        "closed without a word: no packet to answer"
    );
    let codes = read_errors(&mut half).await;
    assert_eq!(codes, vec!["08P01"], "login timeout is reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_flood_does_not_disturb_good_clients() {
    let s = start(|_| {}).await;
    let a = s.addr();
    let mut tasks = Vec::new();
    for i in 0..100 {
        tasks.push(tokio::spawn(async move {
            let conn = format!(
                "host={} port={} user=app password=wrong{i} dbname=app",
                a.ip(),
                a.port()
            );
            let e = tokio_postgres::connect(&conn, NoTls)
                .await
                .err()
                .expect("wrong password refused");
            e.code().map(|c| c.code().to_owned())
        }));
    }
    s.assert_healthy().await;
    for t in tasks {
        assert_eq!(t.await.unwrap().as_deref(), Some("28P01"));
    }
    s.assert_healthy().await;
}

async fn logged_in(addr: SocketAddr) -> TcpStream {
    // trust auth keeps the raw login short
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&startup("app")).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        while let Ok(Some(m)) = split_message(&mut buf, 1 << 20) {
            if m.tag == b'Z' {
                return s;
            }
            assert_ne!(m.tag, b'E', "login failed");
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_after_login() {
    let s = start(|c| {
        c.general.auth_type = pgsluice::config::AuthType::Trust;
        c.general.max_message_size = 64 * 1024;
    })
    .await;
    // A length field below 4.
    let mut c = logged_in(s.addr()).await;
    c.write_all(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    assert_eq!(read_errors(&mut c).await, vec!["08P01"]);
    // A message over max_message_size.
    let mut c = logged_in(s.addr()).await;
    c.write_all(&[b'Q', 0, 0x10, 0, 0]).await.unwrap();
    assert_eq!(read_errors(&mut c).await, vec!["08P01"]);
    // An unknown message type: 08P01, as PostgreSQL answers it, without reaching a server.
    let mut c = logged_in(s.addr()).await;
    c.write_all(&[b'?', 0, 0, 0, 4]).await.unwrap();
    assert_eq!(read_errors(&mut c).await, vec!["08P01"]);
    s.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_results_gets_back_pressure_not_buffering() {
    let s = start(|c| c.general.auth_type = pgsluice::config::AuthType::Trust).await;
    let mut c = logged_in(s.addr()).await;
    // Ask for ~200 MB of results and never read them.
    let mut q = BytesMut::new();
    for _ in 0..20 {
        pgsluice_protocol::frontend::query(&mut q, "select repeat('x', 10*1024*1024)");
    }
    c.write_all(&q).await.unwrap();
    // Back-pressure has reached PostgreSQL once its backend blocks writing the results.
    let (direct, conn) = tokio_postgres::connect(&s.cluster.superuser_url(), NoTls)
        .await
        .expect("direct connection");
    tokio::spawn(conn);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let blocked: i64 = direct
            .query_one(
                "select count(*) from pg_stat_activity where usename = 'app' \
                 and state = 'active' and wait_event = 'ClientWrite' \
                 and strpos(query, 'repeat(') > 0",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if blocked == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend never blocked writing to the pooler"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The pooler holds one fixed buffer for it, not the results: others are served.
    // (pool size 2: the stuck client holds one connection, the good client uses the other)
    s.assert_healthy().await;
    let rss_kb: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        rss_kb < 150 * 1024,
        "pooler buffered the unread results: RSS {rss_kb} kB"
    );
    drop(c);
}
