//! The hub without a socket: subscriptions and the LISTEN set they ask for, fan-out
//! order, the queue bound, and what a reconnect re-LISTENs.

use bytes::{Bytes, BytesMut};

use super::*;

const BIG: Bound = Bound {
    messages: 100,
    bytes: 1 << 20,
};

/// A hub whose subscribers are named by their id and whose tokens are numbers.
fn hub() -> Hub<u64, u32> {
    let mut h = Hub::new(BIG);
    h.connected();
    h
}

fn listen(h: &mut Hub<u64, u32>, client: u64, ch: &str) -> Listened<u32> {
    h.listen(client, || client, ch, client as u32)
}

fn msg(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn drained(h: &mut Hub<u64, u32>, client: u64) -> String {
    let mut out = BytesMut::new();
    h.drain(client, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs every pending statement with `Ok`, returning them in order.
fn settle(h: &mut Hub<u64, u32>) -> Vec<Op> {
    let mut ops = Vec::new();
    while let Some(op) = h.next_op() {
        ops.push(op);
        h.op_done(Ok(()));
    }
    ops
}

#[test]
fn the_first_listener_of_a_channel_waits_for_its_listen_the_next_does_not() {
    let mut h = hub();
    assert_eq!(listen(&mut h, 1, "a"), Listened::Waiting);
    assert_eq!(h.next_op(), Some(Op::Listen("a".into())));
    // One statement at a time.
    assert_eq!(listen(&mut h, 3, "b"), Listened::Waiting);
    assert_eq!(h.next_op(), None);
    let (settled, wake) = h.op_done(Ok(()));
    assert_eq!(settled, vec![(1, Ok(()))]);
    assert!(wake.is_empty());
    assert_eq!(listen(&mut h, 2, "a"), Listened::Done(2));
    assert_eq!(settle(&mut h), vec![Op::Listen("b".into())]);
    assert_eq!(h.wanted(), vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(h.listening_clients(), 3);
}

#[test]
fn the_last_subscriber_leaving_unlistens_the_channel() {
    let mut h = hub();
    listen(&mut h, 1, "a");
    listen(&mut h, 2, "a");
    listen(&mut h, 2, "b");
    settle(&mut h);
    h.unlisten(1, "a");
    assert_eq!(settle(&mut h), vec![]);
    h.unlisten_all(2);
    assert_eq!(
        settle(&mut h),
        vec![Op::Unlisten("a".into()), Op::Unlisten("b".into())]
    );
    assert!(h.wanted().is_empty());
    assert!(h.is_idle());
}

#[test]
fn a_listen_during_the_unlisten_of_its_channel_waits_for_a_new_listen() {
    let mut h = hub();
    listen(&mut h, 1, "a");
    settle(&mut h);
    h.unlisten(1, "a");
    assert_eq!(h.next_op(), Some(Op::Unlisten("a".into())));
    // The server still listens, but is about to stop: not done yet.
    assert_eq!(listen(&mut h, 2, "a"), Listened::Waiting);
    let (settled, _) = h.op_done(Ok(()));
    assert!(settled.is_empty());
    assert_eq!(h.next_op(), Some(Op::Listen("a".into())));
    assert_eq!(h.op_done(Ok(())).0, vec![(2, Ok(()))]);
}

#[test]
fn a_subscriber_leaving_while_its_listen_is_in_flight_unlistens_afterwards() {
    let mut h = hub();
    listen(&mut h, 1, "a");
    assert_eq!(h.next_op(), Some(Op::Listen("a".into())));
    h.remove(1);
    h.op_done(Ok(()));
    assert_eq!(settle(&mut h), vec![Op::Unlisten("a".into())]);
    assert!(h.is_idle());
}

#[test]
fn notifications_fan_out_in_arrival_order_to_active_subscribers_only() {
    let mut h = hub();
    listen(&mut h, 1, "a");
    listen(&mut h, 2, "a");
    listen(&mut h, 2, "b");
    settle(&mut h);
    listen(&mut h, 3, "c");
    let fan = h.deliver("a", &msg("1"));
    assert_eq!(fan.wake, vec![1, 2]);
    // Already woken: a second message wakes no one.
    assert!(h.deliver("a", &msg("2")).wake.is_empty());
    h.deliver("b", &msg("3"));
    // Not listened yet: 3 does not get it, nor a channel nobody listens to.
    assert!(h.deliver("c", &msg("x")).wake.is_empty());
    assert!(h.deliver("zz", &msg("x")).wake.is_empty());
    assert_eq!(drained(&mut h, 1), "12");
    assert_eq!(drained(&mut h, 2), "123");
    assert_eq!(drained(&mut h, 3), "");
    assert!(!h.has_queued(2));
    assert_eq!(h.deliver("a", &msg("4")).wake, vec![1, 2]);
    h.unlisten(1, "a");
    assert!(h.deliver("a", &msg("5")).wake.is_empty());
    assert_eq!(drained(&mut h, 1), "4");
    assert_eq!(drained(&mut h, 2), "45");
}

#[test]
fn a_full_queue_overflows_once_and_stops_taking_messages() {
    let mut h: Hub<u64, u32> = Hub::new(Bound {
        messages: 3,
        bytes: 1 << 20,
    });
    h.connected();
    listen(&mut h, 1, "a");
    listen(&mut h, 2, "a");
    settle(&mut h);
    for i in 0..3 {
        assert!(h.deliver("a", &msg(&i.to_string())).overflow.is_empty());
    }
    assert_eq!(drained(&mut h, 2), "012");
    assert_eq!(h.deliver("a", &msg("3")).overflow, vec![1]);
    assert!(h.deliver("a", &msg("4")).overflow.is_empty());
    assert_eq!(drained(&mut h, 1), "");
    assert_eq!(drained(&mut h, 2), "34");
}

#[test]
fn the_byte_bound_counts_too() {
    let mut h: Hub<u64, u32> = Hub::new(Bound {
        messages: 100,
        bytes: 10,
    });
    h.connected();
    listen(&mut h, 1, "a");
    settle(&mut h);
    assert!(h.deliver("a", &msg("123456")).overflow.is_empty());
    assert_eq!(h.deliver("a", &msg("123456")).overflow, vec![1]);
}

#[test]
fn a_reconnect_relistens_every_channel_then_warns_who_was_listening() {
    let mut h = hub();
    listen(&mut h, 1, "a");
    listen(&mut h, 2, "b");
    listen(&mut h, 2, "c");
    settle(&mut h);
    h.unlisten(2, "c");
    h.lost();
    // Nothing to run while down; a new subscriber waits.
    assert_eq!(h.next_op(), None);
    assert_eq!(listen(&mut h, 3, "d"), Listened::Waiting);
    h.connected();
    let mut ops = Vec::new();
    let mut warned = Vec::new();
    while let Some(op) = h.next_op() {
        ops.push(op);
        warned.extend(h.op_done(Ok(())).1);
    }
    assert_eq!(
        ops,
        vec![
            Op::Listen("a".into()),
            Op::Listen("b".into()),
            Op::Listen("d".into())
        ]
    );
    // Warned once, after the last LISTEN; not 3, which was not listening yet.
    warned.sort();
    assert_eq!(warned, vec![1, 2]);
    let q = drained(&mut h, 1);
    assert!(q.starts_with('N') && q.contains(LOST_MESSAGE), "{q:?}");
    assert_eq!(drained(&mut h, 3), "");
    // Delivery works again, after the notice.
    h.deliver("b", &msg("x"));
    let q = drained(&mut h, 2);
    assert!(q.contains(LOST_MESSAGE) && q.ends_with('x'));
}

#[test]
fn failing_to_connect_fails_the_waiters_and_keeps_the_listeners() {
    let mut h: Hub<u64, u32> = Hub::new(BIG);
    assert_eq!(listen(&mut h, 1, "a"), Listened::Waiting);
    let why = Failure::Unreachable("refused".into());
    assert_eq!(h.fail_waiters(&why), vec![(1, Err(why.clone()))]);
    assert!(h.channels_of(1).is_empty());
    assert!(h.is_idle());
    // A listener from before a loss stays through failed attempts.
    h.connected();
    listen(&mut h, 2, "b");
    settle(&mut h);
    h.lost();
    assert!(h.fail_waiters(&why).is_empty());
    assert_eq!(h.channels_of(2), vec!["b".to_owned()]);
    assert_eq!(h.wanted(), vec!["b".to_owned()]);
}

#[test]
fn a_refused_listen_fails_its_waiters_only() {
    let mut h = hub();
    listen(&mut h, 1, "a");
    listen(&mut h, 2, "a");
    assert_eq!(h.next_op(), Some(Op::Listen("a".into())));
    let why = Failure::Rejected {
        code: "25006".into(),
        message: "cannot execute LISTEN during recovery".into(),
    };
    let (settled, _) = h.op_done(Err(why.clone()));
    assert_eq!(settled, vec![(1, Err(why.clone())), (2, Err(why))]);
    assert!(h.channels_of(1).is_empty());
    assert!(h.is_idle());
}

#[test]
fn channel_names_are_truncated_and_quoted_as_the_server_does() {
    let long = "é".repeat(40);
    let short = channel_name(&long);
    assert_eq!(short.len(), 62);
    assert_eq!(channel_name("a"), "a");
    assert_eq!(Op::Listen("a\"b".into()).sql(), "LISTEN \"a\"\"b\"");
    assert_eq!(Op::Unlisten("x".into()).sql(), "UNLISTEN \"x\"");
}
