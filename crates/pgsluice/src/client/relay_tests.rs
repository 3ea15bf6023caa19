//! Unit tests of the relay (fake sockets on both sides).

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// A scripted exchange: the relay must stop only after the pipeline's last
/// ReadyForQuery, and must cut Terminate out of the byte stream.
#[tokio::test]
async fn releases_only_after_last_ready_for_query() {
    let (mut client, mut client_peer) = pair().await;
    let (mut server, mut server_peer) = pair().await;
    let (mut c2s, mut s2c) = (vec![0u8; 1024], vec![0u8; 1024]);
    let (mut cp, mut sp) = (ParamSet::default(), ParamSet::default());
    let mut first = msg(b'P', b"\0select 1\0\0\0");
    first.extend(msg(b'S', b""));
    first.extend(msg(b'Q', b"select 2\0"));
    let mut relay = Relay::new(
        &mut client,
        &mut server,
        &mut c2s,
        &mut s2c,
        &first,
        1 << 20,
        &mut cp,
        &mut sp,
        None,
    )
    .unwrap();
    relay.release_at_idle(true);
    let sent = first.clone();
    let server_side = tokio::spawn(async move {
        let mut got = vec![0u8; sent.len()];
        server_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, sent);
        let mut reply = msg(b'1', b"");
        reply.extend(msg(b'Z', b"I"));
        reply.extend(msg(b'S', b"TimeZone\0Asia/Tokyo\0"));
        server_peer.write_all(&reply).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        server_peer.write_all(&msg(b'Z', b"I")).await.unwrap();
        server_peer
    });
    let end = std::future::poll_fn(|cx| relay.poll_relay(cx)).await;
    assert!(matches!(end, RelayEnd::Idle), "{end:?}");
    assert_eq!(relay.queries(), 2);
    drop(relay);
    assert_eq!(cp.get("TimeZone"), Some("Asia/Tokyo"));
    assert_eq!(sp.get("timezone"), Some("Asia/Tokyo"));
    let mut seen = vec![0u8; 5 + 6 + 25 + 6];
    client_peer.read_exact(&mut seen).await.unwrap();
    let _server_peer = server_side.await.unwrap();

    // Terminate in the middle of a chunk is not forwarded.
    let mut bytes = msg(b'Q', b"select 3\0");
    bytes.extend(msg(b'X', b""));
    let mut relay = Relay::new(
        &mut client,
        &mut server,
        &mut c2s,
        &mut s2c,
        &bytes,
        1 << 20,
        &mut cp,
        &mut sp,
        None,
    )
    .unwrap();
    let end = std::future::poll_fn(|cx| relay.poll_relay(cx)).await;
    assert!(
        matches!(end, RelayEnd::Terminated { server_idle: false }),
        "{end:?}"
    );
}

/// Bytes a client sent before the relay started (with its login, say) may be longer
/// than the relay's buffer: all of them reach the server, in order, before the relay
/// reads the client again, and the relay releases only after their last answer.
#[tokio::test]
async fn a_prefix_longer_than_the_buffer_is_forwarded_whole() {
    let (mut client, _client_peer) = pair().await;
    let (mut server, mut server_peer) = pair().await;
    let (mut c2s, mut s2c) = (vec![0u8; 1024], vec![0u8; 1024]);
    let (mut cp, mut sp) = (ParamSet::default(), ParamSet::default());
    let mut prefix = Vec::new();
    for i in 0..200 {
        prefix.extend(msg(b'Q', format!("select {i}\0").as_bytes()));
    }
    assert!(prefix.len() > 2 * c2s.len());
    let expected = prefix.clone();
    let mut relay = Relay::new(
        &mut client,
        &mut server,
        &mut c2s,
        &mut s2c,
        &prefix,
        1 << 20,
        &mut cp,
        &mut sp,
        None,
    )
    .unwrap();
    relay.release_at_idle(true);
    let server_side = tokio::spawn(async move {
        let mut got = vec![0u8; expected.len()];
        server_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);
        let mut reply = Vec::new();
        for _ in 0..200 {
            reply.extend(msg(b'Z', b"I"));
        }
        server_peer.write_all(&reply).await.unwrap();
        server_peer
    });
    let relayed = std::future::poll_fn(|cx| relay.poll_relay(cx));
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), relayed)
        .await
        .expect("the relay stalled: part of the prefix never reached the server");
    assert!(matches!(end, RelayEnd::Idle), "{end:?}");
    assert_eq!(relay.queries(), 200);
    assert_eq!(relay.counts.bytes_in, prefix.len() as u64);
    drop(relay);
    server_side.await.unwrap();
}
