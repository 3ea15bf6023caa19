//! Protocol edges at startup, on raw sockets: encryption requests, unsupported protocol
//! versions, garbage, unsupported parameters, silent clients. Every refusal is an
//! ErrorResponse with the right SQLSTATE, then a close; the pooler keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use common::*;
use pgsluice::config::{PoolMode, Secs};

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;

fn special_request(code: i32) -> Vec<u8> {
    let mut m = 8i32.to_be_bytes().to_vec();
    m.extend_from_slice(&code.to_be_bytes());
    m
}

/// Sends `bytes` as the first thing on a new connection; returns what came back until
/// the pooler closed the connection (panics if it stays open).
fn send_and_read_all(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = raw_connect(addr);
    s.write_all(bytes).unwrap();
    let (out, closed) = read_to_close(&mut s);
    assert!(closed, "connection still open after {bytes:?}; got {out:?}");
    out
}

/// Sends `bytes` and expects one ErrorResponse with SQLSTATE `want`; returns its message.
fn expect_error(addr: SocketAddr, bytes: &[u8], want: &str) -> String {
    let out = send_and_read_all(addr, bytes);
    let (code, msg) = first_error(&out).unwrap_or_else(|| panic!("no ErrorResponse in {out:?}"));
    assert_eq!(code, want, "message: {msg}");
    let fields = error_fields(&backend_messages(&out)[0].1);
    assert!(
        fields.iter().any(|(t, v)| *t == b'S' && v == "FATAL"),
        "{fields:?}"
    );
    msg
}

/// Reads one backend message (blocking).
fn read_message(s: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).expect("read message header");
    let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).expect("read message body");
    (head[0], body)
}

/// After an encryption request answered 'N', a plaintext startup must proceed to
/// authentication (SASL for the default scram-sha-256).
fn encryption_request_then_plaintext(addr: SocketAddr, code: i32) {
    let mut s = raw_connect(addr);
    s.write_all(&special_request(code)).unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(
        &answer, b"N",
        "encryption request must be declined with 'N'"
    );
    s.write_all(&startup_message(&[("user", USER), ("database", DB)]))
        .unwrap();
    let (tag, body) = read_message(&mut s);
    assert_eq!(
        tag, b'R',
        "expected an authentication request, got {tag} {body:?}"
    );
    assert_eq!(
        i32::from_be_bytes(body[..4].try_into().unwrap()),
        10,
        "AuthenticationSASL"
    );
    assert!(String::from_utf8_lossy(&body[4..]).contains("SCRAM-SHA-256"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ssl_request_is_declined_and_login_continues() {
    let s = setup(PoolMode::Transaction, 1).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || encryption_request_then_plaintext(addr, SSL_REQUEST))
        .await
        .unwrap();
    // libpq's default sslmode=prefer falls back to plaintext; require fails clearly.
    let out = tokio::task::block_in_place(|| {
        psql(
            addr,
            USER,
            PASSWORD,
            "dbname=appdb sslmode=prefer",
            &[],
            "select 'prefer ok';",
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "prefer ok");
    let out = tokio::task::block_in_place(|| {
        psql(
            addr,
            USER,
            PASSWORD,
            "dbname=appdb sslmode=require",
            &[],
            "select 1;",
        )
    });
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("server does not support SSL"),
        "{}",
        stderr(&out)
    );
    assert_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gssenc_request_is_declined_and_login_continues() {
    let s = setup(PoolMode::Transaction, 1).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || encryption_request_then_plaintext(addr, GSSENC_REQUEST))
        .await
        .unwrap();
    assert_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn data_after_ssl_request_is_refused() {
    let s = setup(PoolMode::Transaction, 1).await;
    let addr = s.addr;
    let mut bytes = special_request(SSL_REQUEST);
    bytes.extend_from_slice(&startup_message(&[("user", USER), ("database", DB)]));
    tokio::task::spawn_blocking(move || {
        let out = send_and_read_all(addr, &bytes);
        // No 'N' may be sent before the error: the pipelined bytes are refused.
        assert_ne!(out.first(), Some(&b'N'), "{out:?}");
        let (code, _) = first_error(&out).unwrap_or_else(|| panic!("no error in {out:?}"));
        assert_eq!(code, "08P01");
    })
    .await
    .unwrap();
    assert_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_2_startup_is_refused_with_0a000() {
    let s = setup(PoolMode::Transaction, 1).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        // A v2 StartupPacket: length 296, version 2.0, fixed-size fields.
        let mut p = 296i32.to_be_bytes().to_vec();
        p.extend_from_slice(&0x0002_0000i32.to_be_bytes());
        let mut fields = vec![0u8; 288];
        fields[..5].copy_from_slice(b"appdb");
        fields[64..67].copy_from_slice(b"app");
        p.extend_from_slice(&fields);
        let msg = expect_error(addr, &p, "0A000");
        assert!(msg.contains("protocol"), "{msg}");
    })
    .await
    .unwrap();
    assert_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_first_packet_is_refused_with_08p01() {
    let s = setup(PoolMode::Transaction, 1).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        // A length far above any startup packet, then junk.
        let mut p = 100_000i32.to_be_bytes().to_vec();
        p.extend_from_slice(&[0xAB; 64]);
        expect_error(addr, &p, "08P01");
        // An HTTP request: "GET " read as a length is huge too.
        expect_error(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "08P01");
        // A length too small to hold a version.
        expect_error(addr, &[0, 0, 0, 4], "08P01");
        // A startup packet without the terminating NUL.
        let mut p = startup_message(&[("user", USER)]);
        p.pop();
        let len = (p.len() as i32).to_be_bytes();
        p[..4].copy_from_slice(&len);
        expect_error(addr, &p, "08P01");
    })
    .await
    .unwrap();
    assert_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_startup_parameter_is_refused_with_08p01() {
    let s = setup(PoolMode::Transaction, 1).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let p = startup_message(&[("user", USER), ("database", DB), ("work_mem", "1MB")]);
        let msg = expect_error(addr, &p, "08P01");
        assert!(msg.contains("work_mem"), "{msg}");
        // Tracked parameters are accepted (TimeZone, application_name, ...).
        let mut s = raw_connect(addr);
        s.write_all(&startup_message(&[
            ("user", USER),
            ("database", DB),
            ("TimeZone", "Asia/Tokyo"),
            ("application_name", "raw"),
        ]))
        .unwrap();
        let (tag, _) = read_message(&mut s);
        assert_eq!(tag, b'R');
    })
    .await
    .unwrap();
    assert_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_without_user_is_refused() {
    let s = setup(PoolMode::Transaction, 1).await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let msg = expect_error(addr, &startup_message(&[("database", DB)]), "28000");
        assert!(msg.contains("user"), "{msg}");
    })
    .await
    .unwrap();
    assert_serves(addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_client_is_dropped_after_client_login_timeout() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.client_login_timeout = Secs::from_secs(1);
    })
    .await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        // Connects and says nothing: closed once client_login_timeout passes (the
        // 10 s read timeout would report it still open).
        let mut s = raw_connect(addr);
        let (_, closed) = read_to_close(&mut s);
        assert!(closed, "silent client not disconnected");
        // Same for a client that stops in the middle of authentication.
        let mut s = raw_connect(addr);
        s.write_all(&startup_message(&[("user", USER), ("database", DB)]))
            .unwrap();
        let (bytes, closed) = read_to_close(&mut s);
        assert!(closed, "client stuck in authentication not disconnected");
        assert_eq!(bytes.first(), Some(&b'R'));
    })
    .await
    .unwrap();
    assert_serves(addr).await;
}

/// An invalid value for a tracked startup parameter: the client gets PostgreSQL's
/// 22023 (at login or at its first query), and the pool stays usable.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_startup_parameter_value_is_reported() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.auth_type = pgsluice::config::AuthType::Trust;
    })
    .await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let mut sock = raw_connect(addr);
        sock.write_all(&startup_message(&[
            ("user", USER),
            ("database", DB),
            ("TimeZone", "No/Such_Zone"),
        ]))
        .unwrap();
        let (mut bytes, mut closed) = read_until_ready_or_close(&mut sock);
        if first_error(&bytes).is_none() && !closed {
            // Accepted at login: the first query must fail instead.
            sock.write_all(&query_message("select 1")).unwrap();
            let (more, c) = read_to_close(&mut sock);
            bytes.extend_from_slice(&more);
            closed = c;
        }
        let (code, msg) = first_error(&bytes).unwrap_or_else(|| panic!("no error in {bytes:?}"));
        assert_eq!(code, "22023", "{msg}");
        assert!(
            msg.contains("No/Such_Zone") || msg.contains("time zone"),
            "{msg}"
        );
        let _ = closed;
    })
    .await
    .unwrap();
    let c = connect_trust(addr).await;
    assert_eq!(count(&c, "select 1::int8").await, 1);
}

/// Reads messages until ReadyForQuery, an ErrorResponse followed by a close, or EOF.
fn read_until_ready_or_close(s: &mut std::net::TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if backend_messages(&out).iter().any(|(t, _)| *t == b'Z') {
            return (out, false);
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Extended protocol with Flush instead of Sync (as drivers do to describe a statement
/// before binding): answers arrive at once, and in transaction mode the server
/// connection is not released before the Sync.
#[tokio::test(flavor = "multi_thread")]
async fn extended_protocol_flush_before_sync() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.auth_type = pgsluice::config::AuthType::Trust;
    })
    .await;
    let addr = s.addr;
    let other_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The other client starts only once the raw client holds the server connection;
    // the raw client goes on once the other one is queued for it (or was served).
    let (holding_tx, holding_rx) = tokio::sync::oneshot::channel::<()>();
    let (queued_tx, queued_rx) = std::sync::mpsc::channel::<()>();
    let other = {
        let done = other_done.clone();
        let addr = s.addr;
        let server = s.server();
        async move {
            holding_rx.await.expect("raw client reached Flush");
            let query = {
                let done = done.clone();
                tokio::spawn(async move {
                    let c = connect_trust(addr).await;
                    let v = count(&c, "select 5::int8").await;
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    v
                })
            };
            wait_queued(server, 1, || done.load(std::sync::atomic::Ordering::SeqCst)).await;
            queued_tx.send(()).unwrap();
            query.await.unwrap()
        }
    };
    let raw = tokio::task::spawn_blocking({
        let other_done = other_done.clone();
        move || {
            let (mut sock, _) = raw_login(addr, &[("user", USER), ("database", DB)]);
            // Parse (unnamed) + Describe statement + Flush.
            let mut out = msg(b'P', b"\0select $1::int4 + 1\0\0\0");
            out.extend(msg(b'D', b"S\0"));
            out.extend(msg(b'H', b""));
            sock.write_all(&out).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !backend_messages(&got).iter().any(|(t, _)| *t == b'T') {
                let n = sock.read(&mut buf).expect("answer to Flush");
                assert!(n > 0, "closed after Flush: {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
            let tags: Vec<u8> = backend_messages(&got).iter().map(|(t, _)| *t).collect();
            assert_eq!(
                tags, b"1tT",
                "ParseComplete, ParameterDescription, RowDescription"
            );
            // Another client wants the only server connection meanwhile; it must not
            // get it before our Sync.
            holding_tx.send(()).unwrap();
            queued_rx.recv().expect("the other client queued");
            assert!(
                !other_done.load(std::sync::atomic::Ordering::SeqCst),
                "server connection released between Flush and Sync"
            );
            // Bind (text param "41") + Execute + Sync.
            let mut bind = b"\0\0\0\0\0\x01".to_vec();
            bind.extend_from_slice(&2i32.to_be_bytes());
            bind.extend_from_slice(b"41");
            bind.extend_from_slice(b"\0\0");
            let mut out = msg(b'B', &bind);
            out.extend(msg(b'E', b"\0\0\0\0\0"));
            out.extend(msg(b'S', b""));
            sock.write_all(&out).unwrap();
            let msgs = read_until_ready(&mut sock);
            let tags: Vec<u8> = msgs.iter().map(|(t, _)| *t).collect();
            assert_eq!(tags, b"2DCZ", "{msgs:?}");
            let row = &msgs[1].1;
            assert!(row.ends_with(b"42"), "{row:?}");
            sock.write_all(&msg(b'X', b"")).unwrap();
        }
    });
    let (raw, v) = tokio::join!(raw, other);
    raw.unwrap();
    assert_eq!(v, 5);
}

/// The values of the DataRows in `bytes` (single-column rows, text format).
fn single_values(bytes: &[u8]) -> Vec<Vec<u8>> {
    backend_messages(bytes)
        .into_iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, body)| body[6..].to_vec())
        .collect()
}

/// A client in another encoding (client_encoding = LATIN1) sends text that is not
/// UTF-8, in simple and extended queries and named statements: transaction mode reads
/// query texts (for session state and statement names) and must pass them on
/// unchanged, as PostgreSQL takes them.
#[tokio::test(flavor = "multi_thread")]
async fn latin1_text_passes_in_transaction_mode() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.auth_type = pgsluice::config::AuthType::Trust;
    })
    .await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let (mut sock, _) = raw_login(
            addr,
            &[
                ("user", USER),
                ("database", DB),
                ("client_encoding", "LATIN1"),
            ],
        );
        // 0xE9 is é in LATIN1 (and not UTF-8 on its own).
        let mut out = b"Q\0\0\0\x1fselect 'caf\xe9' = 'caf' || chr(233)\0".to_vec();
        let len = (out.len() - 1) as i32;
        out[1..5].copy_from_slice(&len.to_be_bytes());
        sock.write_all(&out).unwrap();
        let (got, closed) = read_until_ready_or_close(&mut sock);
        assert!(!closed, "closed: {:?}", first_error(&got));
        assert_eq!(
            single_values(&got),
            vec![b"t".to_vec()],
            "{:?}",
            first_error(&got)
        );
        // A named statement and an unnamed one, each Bind + Execute, one Sync.
        let mut out = msg(b'P', b"s1\0select length('\xe9t\xe9')\0\0\0");
        out.extend(msg(b'B', b"\0s1\0\0\0\0\0\0\0"));
        out.extend(msg(b'E', b"\0\0\0\0\0"));
        out.extend(msg(b'P', b"\0select 'na\xefve'::text\0\0\0"));
        out.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        out.extend(msg(b'E', b"\0\0\0\0\0"));
        out.extend(msg(b'S', b""));
        sock.write_all(&out).unwrap();
        let (got, closed) = read_until_ready_or_close(&mut sock);
        assert!(!closed, "closed: {:?}", first_error(&got));
        assert_eq!(first_error(&got), None);
        // Results come back in LATIN1 too.
        assert_eq!(
            single_values(&got),
            vec![b"3".to_vec(), b"na\xefve".to_vec()]
        );
        // The named statement again, on what may be another server connection.
        let mut out = msg(b'B', b"\0s1\0\0\0\0\0\0\0");
        out.extend(msg(b'E', b"\0\0\0\0\0"));
        out.extend(msg(b'S', b""));
        sock.write_all(&out).unwrap();
        let (got, _) = read_until_ready_or_close(&mut sock);
        assert_eq!(
            single_values(&got),
            vec![b"3".to_vec()],
            "{:?}",
            first_error(&got)
        );
    })
    .await
    .unwrap();
}
