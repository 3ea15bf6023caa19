//! Unit tests of the relay's timeouts, under paused time: each fires exactly at its
//! limit (not a millisecond before), counted from the moment its phase began (for
//! query_timeout, from the end of the query before it in a pipeline).

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

/// A pipeline of queries each shorter than query_timeout runs to its end, however
/// long the whole takes: each query has its own clock, started when the server
/// finishes the one before it.
#[tokio::test(start_paused = true)]
async fn query_timeout_counts_each_query_of_a_simple_pipeline() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let pipeline = [query("select 1"), query("select 2"), query("select 3")].concat();
        let mut relay = ends.relay(path, &pipeline);
        relay.set_timeouts(RelayTimeouts {
            query: Some(LIMIT),
            ..RelayTimeouts::default()
        });
        expect_pending(step(&mut relay).await);
        for _ in 0..2 {
            advance(JUST_UNDER).await;
            expect_pending(step(&mut relay).await);
            send(
                &mut peers.server,
                &[complete("SELECT 1"), ready(b'I')].concat(),
            )
            .await;
            expect_pending(step(&mut relay).await);
        }
        advance(JUST_UNDER).await;
        expect_pending(step(&mut relay).await);
        send(
            &mut peers.server,
            &[complete("SELECT 1"), ready(b'I')].concat(),
        )
        .await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
    }
}

/// One slow query inside a pipeline is cancelled at query_timeout counted from the
/// end of the query before it, not from the pipeline's start.
#[tokio::test(start_paused = true)]
async fn query_timeout_fires_for_a_slow_query_inside_a_pipeline() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let pipeline = [query("select 1"), query("select pg_sleep(60)")].concat();
        let mut relay = ends.relay(path, &pipeline);
        relay.set_timeouts(RelayTimeouts {
            query: Some(LIMIT),
            ..RelayTimeouts::default()
        });
        expect_pending(step(&mut relay).await);
        advance(Duration::from_secs(3)).await;
        send(
            &mut peers.server,
            &[complete("SELECT 1"), ready(b'I')].concat(),
        )
        .await;
        expect_pending(step(&mut relay).await);
        // The first deadline passes: the timer fires early and is re-armed.
        advance(JUST_UNDER).await;
        expect_pending(step(&mut relay).await);
        advance(MS).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::QueryTimeout), "{path:?}: {end:?}");
    }
}

/// Extended protocol with one Sync for several Executes (libpq's pipeline mode): each
/// CommandComplete starts the next Execute's clock; rows streamed by a slow query do
/// not.
#[tokio::test(start_paused = true)]
async fn query_timeout_restarts_at_each_execute_not_at_rows() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let one = extended("select 1");
        let without_sync = &one[..one.len() - 5];
        let pipeline = [without_sync, without_sync, &one].concat();
        let mut relay = ends.relay(path, &pipeline);
        relay.set_timeouts(RelayTimeouts {
            query: Some(LIMIT),
            ..RelayTimeouts::default()
        });
        expect_pending(step(&mut relay).await);
        let done = [msg(b'1', b""), msg(b'2', b""), complete("SELECT 1")].concat();
        for _ in 0..2 {
            advance(JUST_UNDER).await;
            expect_pending(step(&mut relay).await);
            send(&mut peers.server, &done).await;
            expect_pending(step(&mut relay).await);
        }
        // The third Execute streams rows: they leave its clock running.
        advance(JUST_UNDER).await;
        send(
            &mut peers.server,
            &[msg(b'1', b""), msg(b'2', b"")].concat(),
        )
        .await;
        send(&mut peers.server, &msg(b'D', b"\0\0")).await;
        expect_pending(step(&mut relay).await);
        advance(MS).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::QueryTimeout), "{path:?}: {end:?}");
    }
}

/// An error ends its query too: the server skips to the Sync and answers the next
/// request, which gets a clock of its own.
#[tokio::test(start_paused = true)]
async fn query_timeout_restarts_after_an_error() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let pipeline = [extended("select 1/0"), extended("select 1")].concat();
        let mut relay = ends.relay(path, &pipeline);
        relay.set_timeouts(RelayTimeouts {
            query: Some(LIMIT),
            ..RelayTimeouts::default()
        });
        expect_pending(step(&mut relay).await);
        advance(JUST_UNDER).await;
        let failed = [
            msg(b'1', b""),
            msg(b'2', b""),
            error("22012", "division by zero"),
        ];
        send(&mut peers.server, &failed.concat()).await;
        send(&mut peers.server, &ready(b'I')).await;
        expect_pending(step(&mut relay).await);
        advance(JUST_UNDER).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &extended_reply(b'I')).await;
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
