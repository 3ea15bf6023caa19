//! Connections coming back: to waiters first (FIFO), else the idle stack (LIFO); never
//! to anyone before a ROLLBACK or reset succeeded; closed when dirty.

use super::*;
use crate::config::PoolMode;
use crate::pool::ReturnAs;

/// The Terminate message a closed connection gets.
const TERMINATE: &[u8] = b"X\0\0\0\x04";

#[tokio::test]
async fn returned_connections_go_to_waiters_in_arrival_order() {
    let p = standalone(|s| s.size = 3);
    let t0 = Instant::now();
    let (mut a, _sa) = open(&p, t0);
    let (mut b, _sb) = open(&p, t0);
    let (mut c, _sc) = open(&p, t0);
    let (ia, ib, ic) = (id(&mut a), id(&mut b), id(&mut c));
    let mut first = queue(&p, at(t0, 1));
    let mut second = queue(&p, at(t0, 2));
    let mut third = queue(&p, at(t0, 3));
    assert_eq!(p.status(), status(0, 3, 3));
    // Handed back in another order than they were opened: c, a, b.
    c.release_at(ReturnAs::Clean, at(t0, 4));
    assert!(Got::of(&mut second).is_nothing() && Got::of(&mut third).is_nothing());
    a.release_at(ReturnAs::Clean, at(t0, 5));
    b.release_at(ReturnAs::Clean, at(t0, 6));
    let mut got: Vec<Checkout> = [&mut first, &mut second, &mut third]
        .into_iter()
        .map(|q| Got::of(q).conn())
        .collect();
    let ids: Vec<ServerId> = got.iter_mut().map(id).collect();
    assert_eq!(ids, [ic, ia, ib], "first come, first served");
    assert_eq!(p.status(), status(0, 3, 0));
}

#[tokio::test]
async fn without_waiters_a_clean_connection_is_kept_idle_and_the_latest_is_reused_first() {
    let p = standalone(|_| {});
    let t0 = Instant::now();
    let (mut a, _sa) = open(&p, t0);
    let (mut b, _sb) = open(&p, t0);
    let (ia, ib) = (id(&mut a), id(&mut b));
    a.release_at(ReturnAs::Clean, at(t0, 1));
    b.release_at(ReturnAs::Clean, at(t0, 2));
    assert_eq!(p.status(), status(2, 2, 0));
    assert_eq!(idle_ids(&p), [ia, ib]);
    // A stack: the connection returned last is the warmest.
    let mut first = ready(&p, at(t0, 3));
    assert_eq!(id(&mut first), ib);
    assert_eq!(
        first.conn().last_used,
        at(t0, 2),
        "idle since its hand-back"
    );
    let mut second = ready(&p, at(t0, 3));
    assert_eq!(id(&mut second), ia);
    assert_eq!(p.status(), status(0, 2, 0));
}

#[tokio::test]
async fn a_connection_returned_for_closing_never_reaches_a_waiter() {
    let p = standalone(|s| s.size = 1);
    let t0 = Instant::now();
    let (a, mut sa) = open(&p, t0);
    let mut w = queue(&p, at(t0, 1));
    a.release_at(ReturnAs::Close, at(t0, 2));
    // The waiter may open a connection of its own instead.
    let _slot = Got::of(&mut w).slot();
    assert_eq!(p.status(), status(0, 1, 0));
    // Closing is a tracked task: Terminate, then the socket closes.
    assert_eq!(p.background().live(), 1);
    assert_eq!(sa.until_closed().await, TERMINATE);
    p.background().wait().await;
}

#[tokio::test]
async fn a_connection_in_a_transaction_reaches_a_waiter_only_after_its_rollback() {
    let p = standalone(|s| s.size = 1);
    let t0 = Instant::now();
    let (mut a, mut sa) = open(&p, t0);
    let ia = id(&mut a);
    let mut w = queue(&p, at(t0, 1));
    a.release_at(ReturnAs::Rollback, at(t0, 2));
    assert!(
        Got::of(&mut w).is_nothing(),
        "handed over before its ROLLBACK"
    );
    assert_eq!(
        p.background().live(),
        1,
        "the ROLLBACK runs in a tracked task"
    );
    assert_eq!(sa.query().await, "ROLLBACK");
    assert!(
        Got::of(&mut w).is_nothing(),
        "handed over before the answer"
    );
    sa.answer(true).await;
    p.background().wait().await;
    let mut c = Got::of(&mut w).conn();
    assert_eq!(id(&mut c), ia);
}

#[tokio::test]
async fn a_connection_whose_rollback_fails_is_closed_and_the_waiter_opens_one() {
    let p = standalone(|s| s.size = 1);
    let t0 = Instant::now();
    let (a, mut sa) = open(&p, t0);
    let mut w = queue(&p, at(t0, 1));
    a.release_at(ReturnAs::Rollback, at(t0, 2));
    assert_eq!(sa.query().await, "ROLLBACK");
    sa.answer(false).await;
    p.background().wait().await;
    let _slot = Got::of(&mut w).slot();
    assert_eq!(sa.until_closed().await, TERMINATE);
    assert_eq!(p.status(), status(0, 1, 0));
}

#[tokio::test]
async fn the_reset_query_runs_in_a_tracked_task_before_the_connection_is_idle() {
    let p = standalone(|s| {
        s.mode = PoolMode::Session;
        s.reset_query = Some("DISCARD ALL".into());
    });
    let t0 = Instant::now();
    let (mut a, mut sa) = open(&p, t0);
    let ia = id(&mut a);
    a.release_at(ReturnAs::Reset, at(t0, 1));
    assert_eq!(p.status(), status(0, 1, 0), "idle before its reset");
    assert_eq!(p.counts().sv_tested, 1);
    assert_eq!(p.background().live(), 1);
    assert_eq!(sa.query().await, "DISCARD ALL");
    sa.answer(true).await;
    p.background().wait().await;
    assert_eq!(idle_ids(&p), [ia]);
}

#[tokio::test]
async fn an_idle_connection_the_server_wrote_on_is_closed_instead_of_handed_out() {
    let p = standalone(|_| {});
    let t0 = Instant::now();
    let (mut a, mut sa) = open(&p, t0);
    let ia = id(&mut a);
    a.release_at(ReturnAs::Clean, at(t0, 1));
    sa.chatter().await;
    // Wait (without reading) until the reactor has seen the byte arrive.
    std::future::poll_fn(|cx| p.lock().idle[0].conn.stream.poll_read_ready(cx))
        .await
        .expect("readable");
    let (mut b, _sb) = open(&p, at(t0, 2));
    assert_ne!(id(&mut b), ia);
    assert_eq!(p.status(), status(0, 1, 0));
    assert_eq!(sa.until_closed().await, TERMINATE);
}
