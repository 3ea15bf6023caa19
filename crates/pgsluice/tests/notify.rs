//! LISTEN/NOTIFY through a pool that shares server connections: clients LISTEN through
//! the pool's listener connection and get notifications between their transactions,
//! parked or not, across a PostgreSQL restart, and a client that never reads is
//! dropped without harming the others.

mod common;

use common::*;
use pgsluice::config::PoolMode;
use pgsluice::Instance;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::AsyncMessage;

/// A notification's channel and payload.
type Note = (String, String);

/// The next notification `conn` gets (notices skipped), within [`PROMPTLY`].
async fn next_note(messages: &mut UnboundedReceiver<AsyncMessage>) -> Note {
    loop {
        let m = tokio::time::timeout(PROMPTLY, messages.recv())
            .await
            .expect("no notification arrived")
            .expect("the connection ended");
        if let AsyncMessage::Notification(n) = m {
            return (n.channel().to_owned(), n.payload().to_owned());
        }
    }
}

fn note(ch: &str, payload: &str) -> Note {
    (ch.to_owned(), payload.to_owned())
}

/// How many clients listen through the pooler's hubs.
fn listening(server: &Instance) -> usize {
    server
        .app()
        .pools()
        .iter()
        .filter_map(|p| p.notify_hub_if_any().map(|h| h.listening_clients()))
        .sum()
}

async fn listener(addr: std::net::SocketAddr, channels: &[&str]) -> Conn {
    let c = connect_full(addr).await;
    for ch in channels {
        c.client
            .batch_execute(&format!("LISTEN {ch}"))
            .await
            .unwrap();
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_listeners_in_transaction_mode() {
    let s = setup(PoolMode::Transaction, 2).await;
    let server = s.server.as_ref().unwrap();
    let mut a = listener(s.addr, &["ch"]).await;
    let mut b = listener(s.addr, &["ch", "other"]).await;
    let c = connect(s.addr).await;
    let d = connect(s.addr).await;
    assert_eq!(listening(server), 2);

    c.batch_execute("NOTIFY ch, 'one'").await.unwrap();
    c.batch_execute("select pg_notify('ch', 'two')")
        .await
        .unwrap();
    for conn in [&mut a, &mut b] {
        assert_eq!(next_note(&mut conn.messages).await, note("ch", "one"));
        assert_eq!(next_note(&mut conn.messages).await, note("ch", "two"));
    }

    // Inside a transaction: delivered at COMMIT, not before (a notification sent
    // after it, outside, arrives first).
    c.batch_execute("BEGIN; NOTIFY ch, 'in-tx'").await.unwrap();
    d.batch_execute("NOTIFY ch, 'outside'").await.unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("ch", "outside"));
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("ch", "in-tx"));
    // Not at all after ROLLBACK.
    c.batch_execute("BEGIN; NOTIFY ch, 'rolled-back'; ROLLBACK")
        .await
        .unwrap();
    c.batch_execute("NOTIFY ch, 'after'").await.unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("ch", "after"));
    for p in ["outside", "in-tx", "after"] {
        assert_eq!(next_note(&mut b.messages).await, note("ch", p));
    }

    // UNLISTEN stops delivery to that client only.
    b.client.batch_execute("UNLISTEN ch").await.unwrap();
    c.batch_execute("NOTIFY ch, 'x'; NOTIFY other, 'y'")
        .await
        .unwrap();
    assert_eq!(next_note(&mut b.messages).await, note("other", "y"));
    assert_eq!(next_note(&mut a.messages).await, note("ch", "x"));
    b.client.batch_execute("UNLISTEN *").await.unwrap();
    c.batch_execute("NOTIFY other, 'z'; NOTIFY ch, 'w'")
        .await
        .unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("ch", "w"));
    // b is still there and works; it got nothing more.
    assert_eq!(count(&b.client, "select 1::int8").await, 1);
    assert!(b.messages.try_recv().is_err());
    // DISCARD ALL unlistens too, as in PostgreSQL.
    b.client.batch_execute("LISTEN other").await.unwrap();
    b.client.batch_execute("DISCARD ALL").await.unwrap();
    c.batch_execute("NOTIFY other, 'gone'; NOTIFY ch, 'v'")
        .await
        .unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("ch", "v"));
    assert_eq!(count(&b.client, "select 1::int8").await, 1);
    assert!(b.messages.try_recv().is_err(), "nothing after DISCARD ALL");

    // A client that leaves is unsubscribed; the others carry on.
    drop(b);
    eventually("one listening client", PROMPTLY, || async {
        (listening(server) == 1).then_some(())
    })
    .await;
    c.batch_execute("NOTIFY ch, 'still'").await.unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("ch", "still"));
    // PostgreSQL never sees more backends than the pool and the listener.
    let direct = direct(&s.pg, "postgres").await;
    assert!(app_backends(&direct).await <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_over_the_extended_protocol_and_more_clients_than_servers() {
    let s = setup(PoolMode::Transaction, 1).await;
    let mut conns = Vec::new();
    for _ in 0..4 {
        let c = connect_full(s.addr).await;
        // The unnamed statement: Parse/Bind/Describe/Execute/Sync.
        let rows = c.client.query_typed("LISTEN ext", &[]).await.unwrap();
        assert!(rows.is_empty());
        conns.push(c);
    }
    let n = connect(s.addr).await;
    n.batch_execute("NOTIFY ext, '1'; NOTIFY ext, '2'")
        .await
        .unwrap();
    for c in &mut conns {
        assert_eq!(next_note(&mut c.messages).await, note("ext", "1"));
        assert_eq!(next_note(&mut c.messages).await, note("ext", "2"));
    }
    // LISTEN with other statements, or in a transaction block, stays refused.
    let e = conns[0]
        .client
        .batch_execute("LISTEN a; SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_listener_gets_its_notifications() {
    let s = setup(PoolMode::Transaction, 2).await;
    let server = s.server.as_ref().unwrap();
    let mut a = listener(s.addr, &["parked"]).await;
    let n = connect(s.addr).await;
    eventually("both clients parked", PROMPTLY, || async {
        (server.app().parked_clients() == 2).then_some(())
    })
    .await;
    n.batch_execute("NOTIFY parked, 'wake'").await.unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("parked", "wake"));
    // It parks again, and is woken again.
    eventually("both clients parked again", PROMPTLY, || async {
        (server.app().parked_clients() == 2).then_some(())
    })
    .await;
    n.batch_execute("NOTIFY parked, 'again'").await.unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("parked", "again"));
    assert_eq!(count(&a.client, "select 2::int8").await, 2);
}

/// The next notice `conn` gets (notifications skipped).
async fn next_notice(
    messages: &mut UnboundedReceiver<AsyncMessage>,
) -> tokio_postgres::error::DbError {
    loop {
        let m = tokio::time::timeout(PROMPTLY, messages.recv())
            .await
            .expect("no notice arrived")
            .expect("the connection ended");
        if let AsyncMessage::Notice(n) = m {
            return n;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_listeners_are_warned_and_served_again() {
    let mut s = setup(PoolMode::Transaction, 2).await;
    let mut a = listener(s.addr, &["r1", "r2"]).await;
    let n = connect(s.addr).await;
    n.batch_execute("NOTIFY r1, 'before'").await.unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("r1", "before"));

    tokio::task::block_in_place(|| s.pg.restart(pgsluice_testkit::StopMode::Fast)).unwrap();
    let notice = next_notice(&mut a.messages).await;
    assert_eq!(notice.code().code(), "01000");
    assert!(
        notice.message().contains("may have been lost"),
        "{notice:?}"
    );
    // The pooled connections died with the server; the client may see one failure.
    eventually("a NOTIFY after the restart", PROMPTLY, || async {
        n.batch_execute("NOTIFY r2, 'after'").await.ok()
    })
    .await;
    assert_eq!(next_note(&mut a.messages).await, note("r2", "after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_reads_is_dropped_and_others_are_not() {
    let s = setup(PoolMode::Transaction, 2).await;
    let server = s.server.as_ref().unwrap();
    // The slow reader: its connection is not polled once LISTEN is done, so nothing
    // reads its socket.
    let (slow, mut slow_conn) = app_config(s.addr)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let listen = slow.batch_execute("LISTEN flood");
    tokio::select! {
        r = listen => r.unwrap(),
        r = &mut slow_conn => panic!("connection ended: {r:?}"),
    }
    let mut good = listener(s.addr, &["flood"]).await;
    assert_eq!(listening(server), 2);
    // Far more than the queue bound (10,000), each about 1 kB: more than the socket
    // buffers hold too.
    let n = connect(s.addr).await;
    const SENT: usize = 25_000;
    n.batch_execute(&format!(
        "select pg_notify('flood', repeat('x', 1000) || i) from generate_series(1, {SENT}) i"
    ))
    .await
    .unwrap();
    eventually("the slow reader dropped", PROMPTLY, || async {
        (listening(server) == 1).then_some(())
    })
    .await;
    // The other listener got everything, in order.
    for i in 1..=SENT {
        let (ch, p) = next_note(&mut good.messages).await;
        assert_eq!(ch, "flood");
        assert_eq!(p.trim_start_matches('x'), i.to_string());
    }
    // The slow reader's connection ends (after what its socket still held).
    let ended = tokio::time::timeout(PROMPTLY, slow_conn).await;
    assert!(ended.is_ok(), "the slow reader's connection did not end");
    drop(slow);
    assert_eq!(count(&good.client, "select 1::int8").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_fails_cleanly_when_the_listener_cannot_connect() {
    let mut s = setup(PoolMode::Transaction, 2).await;
    let c = connect_full(s.addr).await;
    tokio::task::block_in_place(|| s.pg.stop(pgsluice_testkit::StopMode::Fast)).unwrap();
    let e = c.client.batch_execute("LISTEN nowhere").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("08001"), "{e}");
    tokio::task::block_in_place(|| s.pg.start_again()).unwrap();
    // Still connected, and LISTEN works once the server is back.
    eventually("LISTEN after the server is back", PROMPTLY, || async {
        c.client.batch_execute("LISTEN nowhere").await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_works_in_statement_mode_and_session_mode_is_untouched() {
    let s = setup(PoolMode::Statement, 1).await;
    let server = s.server.as_ref().unwrap();
    let mut a = listener(s.addr, &["stmt"]).await;
    let n = connect(s.addr).await;
    n.batch_execute("NOTIFY stmt, 'hi'").await.unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("stmt", "hi"));
    assert_eq!(listening(server), 1);

    // Session mode: LISTEN runs on the client's own server connection, as before.
    let s = setup(PoolMode::Session, 2).await;
    let server = s.server.as_ref().unwrap();
    let mut a = listener(s.addr, &["sess"]).await;
    let n = connect(s.addr).await;
    n.batch_execute("NOTIFY sess, 'direct'").await.unwrap();
    assert_eq!(next_note(&mut a.messages).await, note("sess", "direct"));
    assert_eq!(listening(server), 0);
}
