//! Unit tests of the relay over in-memory pipes: where it releases the server
//! connection, how it ends, and that the bytes it forwards are exactly those it read.
//! Each test runs on both pooling paths (plain scanning and prepared-statement
//! rewriting) unless it says otherwise.

use super::testkit::*;
use super::*;

/// A simple query answered with ReadyForQuery 'I' releases the connection, after the
/// answer reached the client.
#[tokio::test(start_paused = true)]
async fn simple_query_releases_at_ready_for_query_idle() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let q = query("select 1");
        let mut relay = ends.relay(path, &q);
        expect_pending(step(&mut relay).await);
        assert_eq!(available(&mut peers.server).await, q, "{path:?}");
        let reply = [complete("SELECT 1"), ready(b'I')].concat();
        send(&mut peers.server, &reply).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
        assert_eq!(relay.queries(), 1);
        assert!(relay.server_idle());
        assert_eq!(relay.counts.bytes_in, q.len() as u64);
        assert_eq!(relay.counts.bytes_out, reply.len() as u64);
        drop(relay);
        assert_eq!(available(&mut peers.client).await, reply, "{path:?}");
    }
}

/// Inside BEGIN (status 'T') the connection stays with the client, however many
/// statements run; COMMIT's ReadyForQuery 'I' releases it.
#[tokio::test(start_paused = true)]
async fn transaction_block_holds_until_commit() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("begin"));
        expect_pending(step(&mut relay).await);
        send(
            &mut peers.server,
            &[complete("BEGIN"), ready(b'T')].concat(),
        )
        .await;
        expect_pending(step(&mut relay).await);
        assert_eq!(relay.status(), TxStatus::InTransaction, "{path:?}");
        assert!(!relay.busy());

        send(&mut peers.client, &query("insert into t values (1)")).await;
        expect_pending(step(&mut relay).await);
        assert!(relay.busy());
        send(
            &mut peers.server,
            &[complete("INSERT 0 1"), ready(b'T')].concat(),
        )
        .await;
        expect_pending(step(&mut relay).await);

        send(&mut peers.client, &query("commit")).await;
        expect_pending(step(&mut relay).await);
        send(
            &mut peers.server,
            &[complete("COMMIT"), ready(b'I')].concat(),
        )
        .await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
        assert_eq!(relay.queries(), 3);
        drop(relay);
        let to_server = [
            query("begin"),
            query("insert into t values (1)"),
            query("commit"),
        ]
        .concat();
        assert_eq!(available(&mut peers.server).await, to_server, "{path:?}");
    }
}

/// Simple and extended queries pipelined in one client write: the connection is
/// released only after the last ReadyForQuery, and each request is counted once.
#[tokio::test(start_paused = true)]
async fn pipeline_in_one_write_releases_after_last_ready_for_query() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let pipeline = [
            query("select 1"),
            extended("select 2"),
            query("select 3"),
            extended("select 4"),
        ]
        .concat();
        let mut relay = ends.relay(path, &pipeline);
        expect_pending(step(&mut relay).await);
        assert_eq!(available(&mut peers.server).await, pipeline, "{path:?}");
        assert_eq!(relay.queries(), 4);
        let answers = [
            [complete("SELECT 1"), ready(b'I')].concat(),
            extended_reply(b'I'),
            [complete("SELECT 1"), ready(b'I')].concat(),
        ];
        for answer in &answers {
            send(&mut peers.server, answer).await;
            expect_pending(step(&mut relay).await);
            assert!(relay.busy(), "{path:?}");
        }
        let last = extended_reply(b'I');
        send(&mut peers.server, &last).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
        assert_eq!(relay.queries(), 4);
        drop(relay);
        let to_client = [answers.concat(), last].concat();
        assert_eq!(available(&mut peers.client).await, to_client, "{path:?}");
    }
}

/// Requests the client pipelines while the first one runs are read, forwarded and
/// waited for: one server write answering all of them releases the connection.
#[tokio::test(start_paused = true)]
async fn pipeline_read_while_busy_releases_after_last_ready_for_query() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let first = query("select 1");
        let mut relay = ends.relay(path, &first);
        expect_pending(step(&mut relay).await);
        let rest = [extended("select 2"), query("select 3")].concat();
        send(&mut peers.client, &rest).await;
        expect_pending(step(&mut relay).await);
        assert_eq!(relay.queries(), 3);
        assert_eq!(
            available(&mut peers.server).await,
            [first, rest].concat(),
            "{path:?}"
        );
        // The first answer alone leaves two requests in flight.
        send(&mut peers.server, &ready(b'I')).await;
        expect_pending(step(&mut relay).await);
        send(
            &mut peers.server,
            &[extended_reply(b'I'), ready(b'I')].concat(),
        )
        .await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
    }
}

/// A Query whose 5-byte header comes in three client writes reaches the server whole,
/// and its answer releases the connection.
#[tokio::test(start_paused = true)]
async fn header_split_across_client_writes_is_relayed_whole() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let q = query("select 1");
        let mut relay = ends.relay(path, &q[..2]);
        expect_pending(step(&mut relay).await);
        send(&mut peers.client, &q[2..4]).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.client, &q[4..]).await;
        expect_pending(step(&mut relay).await);
        assert_eq!(available(&mut peers.server).await, q, "{path:?}");
        assert_eq!(relay.queries(), 1);
        send(&mut peers.server, &ready(b'I')).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
    }
}

/// Messages whose bodies are cut across client writes (a Query, then a Parse of an
/// extended request) reach the server whole; the connection is not released while a
/// message is half sent.
#[tokio::test(start_paused = true)]
async fn body_split_across_client_writes_is_relayed_whole() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let all = [query("select 1"), extended("select 2")].concat();
        // Cuts: in the Query's body, then in the Parse's body.
        let (a, b) = (9, 20);
        let mut relay = ends.relay(path, &all[..a]);
        expect_pending(step(&mut relay).await);
        send(&mut peers.client, &all[a..b]).await;
        expect_pending(step(&mut relay).await);
        // The Query is answered while the Parse is half read: no release.
        send(&mut peers.server, &ready(b'I')).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.client, &all[b..]).await;
        expect_pending(step(&mut relay).await);
        assert_eq!(available(&mut peers.server).await, all, "{path:?}");
        assert_eq!(relay.queries(), 2);
        send(&mut peers.server, &extended_reply(b'I')).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
    }
}

/// A ReadyForQuery split across server reads releases the connection only once it is
/// whole, and reaches the client whole.
#[tokio::test(start_paused = true)]
async fn ready_for_query_split_across_server_reads_releases_when_whole() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("select 1"));
        expect_pending(step(&mut relay).await);
        let reply = [complete("SELECT 1"), ready(b'I')].concat();
        let cut = reply.len() - 3;
        send(&mut peers.server, &reply[..cut]).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &reply[cut..cut + 2]).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &reply[cut + 2..]).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
        drop(relay);
        assert_eq!(available(&mut peers.client).await, reply, "{path:?}");
    }
}

/// An error inside a transaction leaves it failed (ReadyForQuery 'E'): the connection
/// stays with the client until ROLLBACK's ReadyForQuery 'I'.
#[tokio::test(start_paused = true)]
async fn error_in_transaction_holds_until_rollback() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("begin"));
        expect_pending(step(&mut relay).await);
        send(
            &mut peers.server,
            &[complete("BEGIN"), ready(b'T')].concat(),
        )
        .await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.client, &query("select 1/0")).await;
        expect_pending(step(&mut relay).await);
        let failed = [error("22012", "division by zero"), ready(b'E')].concat();
        send(&mut peers.server, &failed).await;
        expect_pending(step(&mut relay).await);
        assert_eq!(relay.status(), TxStatus::Failed, "{path:?}");
        assert!(!relay.server_idle());
        send(&mut peers.client, &query("rollback")).await;
        expect_pending(step(&mut relay).await);
        send(
            &mut peers.server,
            &[complete("ROLLBACK"), ready(b'I')].concat(),
        )
        .await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
        drop(relay);
        let to_client = [
            complete("BEGIN"),
            ready(b'T'),
            failed,
            complete("ROLLBACK"),
            ready(b'I'),
        ]
        .concat();
        assert_eq!(available(&mut peers.client).await, to_client, "{path:?}");
    }
}

/// A query cancelled outside a transaction (SQLSTATE 57014, then 'I') releases the
/// connection as any answered query does, and the error reaches the client.
#[tokio::test(start_paused = true)]
async fn cancelled_query_releases() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("select pg_sleep(60)"));
        expect_pending(step(&mut relay).await);
        let cancelled = [
            error("57014", "canceling statement due to user request"),
            ready(b'I'),
        ]
        .concat();
        send(&mut peers.server, &cancelled).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
        drop(relay);
        assert_eq!(available(&mut peers.client).await, cancelled, "{path:?}");
    }
}

/// COPY FROM STDIN: CopyData and CopyDone from the client go to the server unchanged,
/// and the connection is released at the ReadyForQuery after CommandComplete.
#[tokio::test(start_paused = true)]
async fn copy_from_stdin_releases_after_ready_for_query() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let copy = query("copy t from stdin");
        let mut relay = ends.relay(path, &copy);
        expect_pending(step(&mut relay).await);
        // CopyInResponse: text format, no columns.
        send(&mut peers.server, &msg(b'G', b"\0\0\0")).await;
        expect_pending(step(&mut relay).await);
        let rows = [msg(b'd', b"1\tone\n"), msg(b'd', b"2\ttwo\n")].concat();
        send(&mut peers.client, &rows).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.client, &msg(b'c', b"")).await;
        expect_pending(step(&mut relay).await);
        assert!(relay.busy(), "{path:?}");
        let to_server = [copy, rows, msg(b'c', b"")].concat();
        assert_eq!(available(&mut peers.server).await, to_server, "{path:?}");
        send(&mut peers.server, &complete("COPY 2")).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &ready(b'I')).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
        assert_eq!(relay.queries(), 1);
    }
}

/// The server closing its connection inside a transaction ends the relay as the
/// server's loss.
#[tokio::test(start_paused = true)]
async fn server_closing_mid_transaction_is_server_gone() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("begin"));
        expect_pending(step(&mut relay).await);
        send(
            &mut peers.server,
            &[complete("BEGIN"), ready(b'T')].concat(),
        )
        .await;
        expect_pending(step(&mut relay).await);
        drop(peers.server);
        let end = expect_end(step(&mut relay).await);
        assert!(
            matches!(end, RelayEnd::ServerGone(None)),
            "{path:?}: {end:?}"
        );
    }
}

/// The client closing its connection inside a transaction ends the relay as the
/// client's loss, with the server connection not reusable as it is.
#[tokio::test(start_paused = true)]
async fn client_closing_mid_transaction_is_client_gone() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("begin"));
        expect_pending(step(&mut relay).await);
        send(
            &mut peers.server,
            &[complete("BEGIN"), ready(b'T')].concat(),
        )
        .await;
        expect_pending(step(&mut relay).await);
        drop(peers.client);
        let end = expect_end(step(&mut relay).await);
        assert!(
            matches!(
                end,
                RelayEnd::ClientGone {
                    server_idle: false,
                    error: None
                }
            ),
            "{path:?}: {end:?}"
        );
    }
}

/// In session mode (no release) a client closing between requests leaves the server
/// connection idle and reusable.
#[tokio::test(start_paused = true)]
async fn client_closing_between_requests_leaves_server_idle() {
    let (mut ends, mut peers) = roomy();
    let mut relay = ends.relay_no_release(Path::Plain, &query("select 1"));
    expect_pending(step(&mut relay).await);
    send(&mut peers.server, &ready(b'I')).await;
    // Answered, but session mode keeps the connection.
    expect_pending(step(&mut relay).await);
    drop(peers.client);
    let end = expect_end(step(&mut relay).await);
    assert!(
        matches!(
            end,
            RelayEnd::ClientGone {
                server_idle: true,
                error: None
            }
        ),
        "{end:?}"
    );
}

/// Terminate in the middle of a client write is cut out, with all that follows it:
/// the server sees only what came before.
#[tokio::test(start_paused = true)]
async fn terminate_is_cut_out_of_the_byte_stream() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let q = query("select 3");
        let sent = [q.clone(), msg(b'X', b""), query("select 4")].concat();
        let mut relay = ends.relay(path, &sent);
        let end = expect_end(step(&mut relay).await);
        assert!(
            matches!(end, RelayEnd::Terminated { server_idle: false }),
            "{path:?}: {end:?}"
        );
        assert_eq!(relay.queries(), 1, "{path:?}");
        drop(relay);
        assert_eq!(available(&mut peers.server).await, q, "{path:?}");
    }
}

/// Terminate after every request was answered: nothing reaches the server and the
/// connection is idle.
#[tokio::test(start_paused = true)]
async fn terminate_between_requests_leaves_server_idle() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let q = query("select 1");
        let mut relay = ends.relay_no_release(path, &q);
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &ready(b'I')).await;
        expect_pending(step(&mut relay).await);
        send(&mut peers.client, &msg(b'X', b"")).await;
        let end = expect_end(step(&mut relay).await);
        assert!(
            matches!(end, RelayEnd::Terminated { server_idle: true }),
            "{path:?}: {end:?}"
        );
        drop(relay);
        assert_eq!(available(&mut peers.server).await, q, "{path:?}");
    }
}

/// A message type no client may send mid-session ends the relay as the client's
/// protocol error; a malformed ReadyForQuery as the server's.
#[tokio::test(start_paused = true)]
async fn broken_framing_ends_the_relay_with_a_protocol_error() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("select 1"));
        expect_pending(step(&mut relay).await);
        send(&mut peers.client, &msg(b'p', b"secret\0")).await;
        let end = expect_end(step(&mut relay).await);
        assert!(
            matches!(end, RelayEnd::ClientProtocol(_)),
            "{path:?}: {end:?}"
        );

        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("select 1"));
        expect_pending(step(&mut relay).await);
        send(&mut peers.server, &ready(b'?')).await;
        let end = expect_end(step(&mut relay).await);
        assert!(
            matches!(end, RelayEnd::ServerProtocol(_)),
            "{path:?}: {end:?}"
        );
    }
}

/// ParameterStatus from the server updates both the client's and the server
/// connection's parameters.
#[tokio::test(start_paused = true)]
async fn parameter_status_reaches_both_parameter_sets() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let mut relay = ends.relay(path, &query("set timezone = 'Asia/Tokyo'"));
        expect_pending(step(&mut relay).await);
        let reply = [
            complete("SET"),
            msg(b'S', b"TimeZone\0Asia/Tokyo\0"),
            ready(b'I'),
        ]
        .concat();
        send(&mut peers.server, &reply).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
        drop(relay);
        assert_eq!(ends.client_params.get("TimeZone"), Some("Asia/Tokyo"));
        assert_eq!(ends.server_params.get("timezone"), Some("Asia/Tokyo"));
        assert_eq!(available(&mut peers.client).await, reply, "{path:?}");
    }
}

/// Bytes a client sent before the relay started (with its login, say) may be longer
/// than the relay's buffer: all of them reach the server, in order, and the relay
/// releases only after their last answer.
#[tokio::test(start_paused = true)]
async fn a_prefix_longer_than_the_buffer_is_forwarded_whole() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = roomy();
        let prefix: Vec<u8> = (0..200)
            .flat_map(|i| query(&format!("select {i}")))
            .collect();
        assert!(prefix.len() > 2 * 1024);
        let mut relay = ends.relay(path, &prefix);
        expect_pending(step(&mut relay).await);
        assert_eq!(available(&mut peers.server).await, prefix, "{path:?}");
        assert_eq!(relay.queries(), 200);
        assert_eq!(relay.counts.bytes_in, prefix.len() as u64);
        let answers = ready(b'I').repeat(200);
        send(&mut peers.server, &answers).await;
        let end = expect_end(step(&mut relay).await);
        assert!(matches!(end, RelayEnd::Idle), "{path:?}: {end:?}");
    }
}

/// Pipes that take a few bytes at a time: every partial write is resumed where it
/// stopped, in both directions, and nothing is lost or sent twice.
#[tokio::test(start_paused = true)]
async fn partial_writes_are_resumed_where_they_stopped() {
    for path in POOLED_PATHS {
        let (mut ends, mut peers) = ends(7, 1024);
        let prefix: Vec<u8> = (0..10)
            .flat_map(|i| query(&format!("select {i}")))
            .collect();
        let mut relay = ends.relay(path, &prefix);
        let mut to_server = Vec::new();
        for _ in 0..prefix.len() {
            expect_pending(step(&mut relay).await);
            to_server.extend(available(&mut peers.server).await);
            if to_server.len() >= prefix.len() {
                break;
            }
        }
        assert_eq!(to_server, prefix, "{path:?}");
        // Each ReadyForQuery (6 bytes) fits the pipe; the client takes them as they come.
        let mut to_client = Vec::new();
        let mut end = None;
        for i in 0..10 {
            send(&mut peers.server, &ready(b'I')).await;
            match step(&mut relay).await {
                Poll::Pending => assert!(i < 9, "{path:?}: no release after the last"),
                Poll::Ready(e) => end = Some(e),
            }
            to_client.extend(available(&mut peers.client).await);
        }
        assert!(matches!(end, Some(RelayEnd::Idle)), "{path:?}: {end:?}");
        assert_eq!(to_client, ready(b'I').repeat(10), "{path:?}");
    }
}
