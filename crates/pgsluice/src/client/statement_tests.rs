//! The relay in statement mode, over fake sockets: one request per run, the rest held
//! for the next; a transaction block refused with its ReadyForQuery withheld.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::StatementGate;
use crate::client::prepared::{ClientStatements, ExtState, StatementRegistry};
use crate::client::relay::{ExtCx, Relay, RelayEnd};
use crate::net::Stream;
use crate::params::ParamSet;

async fn pair() -> (Stream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
    (Stream::from(a.unwrap()), b.unwrap().0)
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// What one relay run in statement mode did.
struct Run {
    end: RelayEnd,
    held: Option<Vec<u8>>,
    /// What the server peer received.
    server_got: Vec<u8>,
    /// What the client peer received.
    client_got: Vec<u8>,
}

/// Runs the relay with `sent` from the client; the server peer reads `request_len`
/// bytes and answers `reply`.
async fn run(sent: &[u8], request_len: usize, reply: Vec<u8>) -> Run {
    let (mut client, mut client_peer) = pair().await;
    let (mut server, mut server_peer) = pair().await;
    let (mut c2s, mut s2c) = (vec![0u8; 1024], vec![0u8; 1024]);
    let (mut cp, mut sp) = (ParamSet::default(), ParamSet::default());
    let mut state = ExtState::new(1 << 20, 10);
    let mut stmts = ClientStatements::default();
    let registry = StatementRegistry::default();
    let ext = ExtCx {
        state: &mut state,
        client: &mut stmts,
        registry: &registry,
        gate: Some(StatementGate::new()),
    };
    let server_side = tokio::spawn(async move {
        let mut got = vec![0u8; request_len];
        server_peer.read_exact(&mut got).await.unwrap();
        server_peer.write_all(&reply).await.unwrap();
        (server_peer, got)
    });
    let mut relay = Relay::new(
        &mut client,
        &mut server,
        &mut c2s,
        &mut s2c,
        sent,
        1 << 20,
        &mut cp,
        &mut sp,
        Some(ext),
    )
    .unwrap();
    relay.release_at_idle(true);
    let end = std::future::poll_fn(|cx| relay.poll_relay(cx)).await;
    let held = relay.take_held().map(|b| b.to_vec());
    drop(relay);
    drop(client);
    let (server_peer, mut server_got) = server_side.await.unwrap();
    // The run is over: whatever else reached the server is there already.
    let mut more = vec![0u8; 4096];
    if let Ok(n) = server_peer.try_read(&mut more) {
        server_got.extend_from_slice(&more[..n]);
    }
    let mut client_got = Vec::new();
    client_peer.read_to_end(&mut client_got).await.unwrap();
    Run {
        end,
        held,
        server_got,
        client_got,
    }
}

#[tokio::test]
async fn one_request_per_run_the_rest_held() {
    let first = [
        msg(b'P', b"\0select 1\0\0\0"),
        msg(b'B', b"\0\0\0\0\0\0\0\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]
    .concat();
    let rest = [msg(b'Q', b"select 2\0"), msg(b'X', b"")].concat();
    let sent = [first.clone(), rest.clone()].concat();
    let reply = [
        msg(b'1', b""),
        msg(b'2', b""),
        msg(b'C', b"SELECT 1\0"),
        msg(b'Z', b"I"),
    ]
    .concat();
    let r = run(&sent, first.len(), reply.clone()).await;
    assert!(matches!(r.end, RelayEnd::Idle), "{:?}", r.end);
    assert_eq!(r.server_got, first);
    assert_eq!(r.held.as_deref(), Some(&rest[..]));
    assert_eq!(r.client_got, reply);
}

#[tokio::test]
async fn transaction_block_is_refused_without_its_ready_for_query() {
    let begin = msg(b'Q', b"begin\0");
    let sent = [begin.clone(), msg(b'Q', b"commit\0")].concat();
    let complete = msg(b'C', b"BEGIN\0");
    let reply = [complete.clone(), msg(b'Z', b"T")].concat();
    let r = run(&sent, begin.len(), reply).await;
    assert!(
        matches!(r.end, RelayEnd::TransactionBlock { server_quiet: true }),
        "{:?}",
        r.end
    );
    // COMMIT never reached the server; the client got all but the ReadyForQuery.
    assert_eq!(r.server_got, begin);
    assert_eq!(r.client_got, complete);
}
