//! Unit tests of the relay's timeouts, under paused time: each fires exactly at its
//! limit (not a millisecond before), counted from the moment its phase began.

use std::time::Duration;

use tokio::time::advance;

use super::testkit::*;
use super::*;

const LIMIT: Duration = Duration::from_secs(5);
const JUST_UNDER: Duration = Duration::from_millis(4_999);
const MS: Duration = Duration::from_millis(1);

/// A request unanswered for query_timeout ends the relay with QueryTimeout.
#[tokio::test(start_paused = true)]
async fn query_timeout_fires_at_its_limit_not_before() {
    for path in POOLED_PATHS {
        let (mut ends, _peers) = roomy();
        let mut relay = ends.relay(path, &query("select pg_sleep(60)"));
        relay.set_timeouts(RelayTimeouts {
            query: Some(LIMIT),
            ..RelayTimeouts::default()
        });
        expect_pending(step(&mut relay).await);
        advance(JUST_UNDER).await;
        expect_pending(step(&mut relay).await);
        advance(MS).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::QueryTimeout), "{path:?}: {end:?}");
    }
}

/// An answer just before query_timeout releases the connection normally.
#[tokio::test(start_paused = true)]
async fn query_answered_before_query_timeout_releases() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("select 1"));
        relay.set_timeouts(RelayTimeouts {
            query: Some(LIMIT),
            ..RelayTimeouts::default()
        });
        expect_pending(step(&mut relay).await);
        advance(JUST_UNDER).await;
        send(&mut peers.server, &ready(b'I')).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
    }
}

/// A client silent inside a transaction block for idle_transaction_timeout ends the
/// relay with IdleInTransactionTimeout; the clock starts at the ReadyForQuery 'T'.
#[tokio::test(start_paused = true)]
async fn idle_in_transaction_timeout_fires_at_its_limit_not_before() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("begin"));
        relay.set_timeouts(RelayTimeouts {
            idle_in_transaction: Some(LIMIT),
            ..RelayTimeouts::default()
        });
        expect_pending(step(&mut relay).await);
        // Time spent waiting for the server does not count.
        advance(LIMIT * 2).await;
        send(&mut peers.server, &ready(b'T')).await;
        expect_pending(step(&mut relay).await);
        advance(JUST_UNDER).await;
        expect_pending(step(&mut relay).await);
        advance(MS).await;
        let end = expect_end(step(&mut relay).await);
        assert!(
            matches!(end, RelayEnd::IdleInTransactionTimeout),
            "{path:?}: {end:?}"
        );
    }
}

/// Each request inside the transaction restarts idle_transaction_timeout's clock.
#[tokio::test(start_paused = true)]
async fn idle_in_transaction_timeout_restarts_after_each_request() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("begin"));
        relay.set_timeouts(RelayTimeouts {
            idle_in_transaction: Some(LIMIT),
            ..RelayTimeouts::default()
        });
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &ready(b'T')).await;
        expect_pending(step(&mut relay).await);
        advance(JUST_UNDER).await;
        send(&mut peers.client, &query("select 1")).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &ready(b'T')).await;
        expect_pending(step(&mut relay).await);
        // Past the first deadline, short of the second.
        advance(JUST_UNDER).await;
        expect_pending(step(&mut relay).await);
        advance(MS).await;
        let end = expect_end(step(&mut relay).await);
        assert!(
            matches!(end, RelayEnd::IdleInTransactionTimeout),
            "{path:?}: {end:?}"
        );
    }
}

/// Session mode: a client silent between requests for client_idle_timeout ends the
/// relay with ClientIdleTimeout.
#[tokio::test(start_paused = true)]
async fn client_idle_timeout_fires_at_its_limit_not_before() {
    let (mut ends, mut peers) = roomy();
    let mut relay = ends.relay_no_release(Path::Plain, &query("select 1"));
    relay.set_timeouts(RelayTimeouts {
        client_idle: Some(LIMIT),
        ..RelayTimeouts::default()
    });
    expect_pending(step(&mut relay).await);
    advance(LIMIT * 2).await;
    send(&mut peers.server, &ready(b'I')).await;
    expect_pending(step(&mut relay).await);
    advance(JUST_UNDER).await;
    expect_pending(step(&mut relay).await);
    advance(MS).await;
    let end = expect_end(step(&mut relay).await);
    assert!(matches!(end, RelayEnd::ClientIdleTimeout), "{end:?}");
}

/// transaction_timeout counts from the transaction's first request, whatever runs in
/// it meanwhile.
#[tokio::test(start_paused = true)]
async fn transaction_timeout_counts_from_the_first_request() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("begin"));
        relay.set_timeouts(RelayTimeouts {
            transaction: Some(LIMIT),
            ..RelayTimeouts::default()
        });
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &ready(b'T')).await;
        expect_pending(step(&mut relay).await);
        advance(Duration::from_secs(3)).await;
        send(&mut peers.client, &query("select 1")).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &ready(b'T')).await;
        expect_pending(step(&mut relay).await);
        advance(Duration::from_millis(1_999)).await;
        expect_pending(step(&mut relay).await);
        advance(MS).await;
        let end = expect_end(step(&mut relay).await);
        assert!(
            matches!(end, RelayEnd::TransactionTimeout),
            "{path:?}: {end:?}"
        );
    }
}

/// transaction_timeout stops at the transaction's end and starts afresh with the next
/// one (session mode, where the relay outlives a transaction).
#[tokio::test(start_paused = true)]
async fn transaction_timeout_restarts_with_each_transaction() {
    let (mut ends, mut peers) = roomy();
    let mut relay = ends.relay_no_release(Path::Plain, &query("begin"));
    relay.set_timeouts(RelayTimeouts {
        transaction: Some(LIMIT),
        ..RelayTimeouts::default()
    });
    expect_pending(step(&mut relay).await);
    send(&mut peers.server, &ready(b'T')).await;
    expect_pending(step(&mut relay).await);
    send(&mut peers.client, &query("commit")).await;
    expect_pending(step(&mut relay).await);
    send(&mut peers.server, &ready(b'I')).await;
    expect_pending(step(&mut relay).await);
    // Between transactions no clock runs.
    advance(LIMIT * 3).await;
    expect_pending(step(&mut relay).await);
    send(&mut peers.client, &query("begin")).await;
    expect_pending(step(&mut relay).await);
    advance(JUST_UNDER).await;
    expect_pending(step(&mut relay).await);
    advance(MS).await;
    let end = expect_end(step(&mut relay).await);
    assert!(matches!(end, RelayEnd::TransactionTimeout), "{end:?}");
}

/// With no timeout configured, nothing fires, however long a request or a
/// transaction lasts.
#[tokio::test(start_paused = true)]
async fn no_timeout_fires_when_none_is_configured() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("begin"));
        expect_pending(step(&mut relay).await);
        advance(Duration::from_secs(24 * 3600)).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &ready(b'T')).await;
        expect_pending(step(&mut relay).await);
        advance(Duration::from_secs(24 * 3600)).await;
        expect_pending(step(&mut relay).await);
    }
}
