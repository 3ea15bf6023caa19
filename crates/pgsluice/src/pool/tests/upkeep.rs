//! The pool's upkeep at given instants: server_idle_timeout, server_lifetime,
//! min_pool_size, server_login_retry; and its task's end.

use super::*;
use crate::pool::ReturnAs;
use crate::shutdown::{Shutdown, ShutdownKind};
use crate::sync::LockExt;

#[tokio::test]
async fn upkeep_closes_connections_idle_or_old_past_their_limits_and_keeps_the_others() {
    let p = standalone(|s| {
        s.idle_timeout = Some(Duration::from_secs(60));
        s.lifetime = Some(Duration::from_secs(1060));
    });
    let t0 = Instant::now();
    let (old, _so) = open(&p, t0);
    let (a, _sa) = open(&p, at(t0, 1000));
    let (mut b, _sb) = open(&p, at(t0, 1000));
    let (mut c, _sc) = open(&p, at(t0, 1000));
    let (ib, ic) = (id(&mut b), id(&mut c));
    a.release_at(ReturnAs::Clean, at(t0, 1000));
    b.release_at(ReturnAs::Clean, at(t0, 1030));
    c.release_at(ReturnAs::Clean, at(t0, 1050));
    old.release_at(ReturnAs::Clean, at(t0, 1055));
    p.maintain(at(t0, 1059));
    assert_eq!(p.status(), status(4, 4, 0), "closed before its limit");
    // `old` reaches server_lifetime, `a` server_idle_timeout.
    p.maintain(at(t0, 1060));
    assert_eq!(idle_ids(&p), [ib, ic]);
    assert_eq!(p.status(), status(2, 2, 0));
    p.maintain(at(t0, 1090));
    assert_eq!(idle_ids(&p), [ic]);
}

#[tokio::test]
async fn a_checkout_skips_a_connection_past_server_lifetime() {
    let p = standalone(|s| s.lifetime = Some(Duration::from_secs(100)));
    let t0 = Instant::now();
    let (mut a, _sa) = open(&p, t0);
    let ia = id(&mut a);
    a.release_at(ReturnAs::Clean, at(t0, 1));
    let mut again = ready(&p, at(t0, 99));
    assert_eq!(id(&mut again), ia);
    again.release_at(ReturnAs::Clean, at(t0, 99));
    // Too old now: closed, and a new one is opened instead.
    let (mut fresh, _sf) = open(&p, at(t0, 100));
    assert_ne!(id(&mut fresh), ia);
    assert_eq!(p.status(), status(0, 1, 0));
}

#[tokio::test]
async fn idle_timeout_keeps_min_pool_size_connections_the_latest_returned() {
    let p = standalone(|s| {
        s.idle_timeout = Some(Duration::from_secs(60));
        s.min_size = 1;
    });
    let t0 = Instant::now();
    let (a, _sa) = open(&p, t0);
    let (mut b, _sb) = open(&p, t0);
    let (c, _sc) = open(&p, t0);
    let ib = id(&mut b);
    a.release_at(ReturnAs::Clean, at(t0, 1));
    c.release_at(ReturnAs::Clean, at(t0, 2));
    b.release_at(ReturnAs::Clean, at(t0, 3));
    p.maintain(at(t0, 100));
    assert_eq!(idle_ids(&p), [ib]);
    assert_eq!(p.status(), status(1, 1, 0));
}

#[tokio::test]
async fn upkeep_opens_min_pool_size_in_tracked_tasks_and_waits_for_login_retry() {
    let p = standalone(|s| {
        s.min_size = 2;
        s.login_retry = Some(Duration::from_secs(15));
    });
    let t0 = Instant::now();
    p.maintain(t0);
    assert_eq!(p.status(), status(0, 2, 0), "two connections being opened");
    assert_eq!(p.background().live(), 2);
    // Asked again while those are being opened: no more.
    p.maintain(t0);
    assert_eq!(p.background().live(), 2);
    // Nobody listens where the pool connects: both fail.
    p.background().wait().await;
    assert_eq!(p.status(), status(0, 0, 0));
    let failed = p.login_failure.locked().as_ref().expect("failure kept").0;
    p.maintain(failed + Duration::from_secs(14));
    assert_eq!(p.status().total, 0, "retried within server_login_retry");
    assert_eq!(p.background().live(), 0);
    p.maintain(failed + Duration::from_secs(15));
    assert_eq!(p.status().total, 2);
}

#[tokio::test]
async fn the_upkeep_task_is_tracked_and_ends_at_shutdown_or_when_the_pool_closes() {
    let shutdown = Shutdown::new();
    let p = standalone(|_| {});
    p.start_maintenance(shutdown.watch());
    assert_eq!(p.background().live(), 1);
    let q = standalone(|_| {});
    q.start_maintenance(shutdown.watch());
    q.close();
    let limit = Duration::from_secs(60);
    tokio::time::timeout(limit, q.background().wait())
        .await
        .expect("the upkeep of a closed pool still runs");
    assert_eq!(p.background().live(), 1);
    shutdown.trigger(ShutdownKind::Graceful);
    tokio::time::timeout(limit, p.background().wait())
        .await
        .expect("the upkeep still runs after shutdown");
}
