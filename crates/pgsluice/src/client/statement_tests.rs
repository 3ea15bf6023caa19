//! The relay in statement mode, over in-memory pipes: one request per run, the rest
//! held for the next; a transaction block refused with its ReadyForQuery withheld.

use crate::client::relay::testkit::*;
use crate::client::relay::RelayEnd;

/// What one relay run in statement mode did.
struct Run {
    end: RelayEnd,
    held: Option<Vec<u8>>,
    /// What the server peer received.
    server_got: Vec<u8>,
    /// What the client peer received.
    client_got: Vec<u8>,
}

/// Runs the relay with `sent` from the client; once it has forwarded what it admits,
/// the server peer answers `reply`.
async fn run(sent: &[u8], reply: &[u8]) -> Run {
    let (mut ends, mut peers) = roomy();
    let mut relay = ends.relay(Path::Statement, sent);
    expect_pending(step(&mut relay).await);
    let mut server_got = available(&mut peers.server).await;
    send(&mut peers.server, reply).await;
    let end = expect_end(step(&mut relay).await);
    let held = relay.take_held().map(|b| b.to_vec());
    drop(relay);
    // The run is over: whatever else reached the server is there already.
    server_got.extend(available(&mut peers.server).await);
    let client_got = available(&mut peers.client).await;
    Run {
        end,
        held,
        server_got,
        client_got,
    }
}

#[tokio::test(start_paused = true)]
async fn one_request_per_run_the_rest_held() {
    let first = extended("select 1");
    let rest = [query("select 2"), msg(b'X', b"")].concat();
    let sent = [first.clone(), rest.clone()].concat();
    let reply = extended_reply(b'I');
    let r = run(&sent, &reply).await;
    assert!(matches!(r.end, RelayEnd::Idle), "{:?}", r.end);
    assert_eq!(r.server_got, first);
    assert_eq!(r.held.as_deref(), Some(&rest[..]));
    assert_eq!(r.client_got, reply);
}

#[tokio::test(start_paused = true)]
async fn transaction_block_is_refused_without_its_ready_for_query() {
    let begin = query("begin");
    let sent = [begin.clone(), query("commit")].concat();
    let done = complete("BEGIN");
    let reply = [done.clone(), ready(b'T')].concat();
    let r = run(&sent, &reply).await;
    assert!(
        matches!(r.end, RelayEnd::TransactionBlock { server_quiet: true }),
        "{:?}",
        r.end
    );
    // COMMIT never reached the server; the client got all but the ReadyForQuery.
    assert_eq!(r.server_got, begin);
    assert_eq!(r.client_got, done);
}

/// A request the client sends while one runs is read but held, not forwarded: it is
/// the start of the next run.
#[tokio::test(start_paused = true)]
async fn a_request_read_while_one_runs_is_held() {
    let (mut ends, mut peers) = roomy();
    let first = query("select 1");
    let mut relay = ends.relay(Path::Statement, &first);
    expect_pending(step(&mut relay).await);
    let second = query("select 2");
    send(&mut peers.client, &second).await;
    expect_pending(step(&mut relay).await);
    assert_eq!(available(&mut peers.server).await, first);
    send(&mut peers.server, &ready(b'I')).await;
    let end = expect_end(step(&mut relay).await);
    assert!(matches!(end, RelayEnd::Idle), "{end:?}");
    assert_eq!(relay.take_held().as_deref(), Some(&second[..]));
    drop(relay);
    assert!(available(&mut peers.server).await.is_empty());
}
