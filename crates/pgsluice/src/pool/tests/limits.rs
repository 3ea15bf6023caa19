//! The pool size, the reserve pool, query_wait_timeout, the database and user groups,
//! and PAUSE / RESUME, driven with given instants.

use super::*;
use crate::error::PoolError;
use crate::pool::{GroupKind, GroupLimit, ReturnAs};

#[tokio::test]
async fn at_its_size_a_pool_queues_and_the_reserve_opens_only_after_its_timeout() {
    let p = standalone(|s| {
        s.size = 2;
        s.reserve_size = 1;
        s.reserve_timeout = Some(Duration::from_secs(5));
    });
    let t0 = Instant::now();
    let (_a, _sa) = open(&p, t0);
    let (_b, _sb) = open(&p, t0);
    // The third waits (`queue` checks), and so does the fourth.
    let mut first = queue(&p, at(t0, 1));
    let mut second = queue(&p, at(t0, 2));
    assert_eq!(p.status(), status(0, 2, 2));
    p.maintain(at(t0, 5));
    assert!(
        Got::of(&mut first).is_nothing(),
        "reserve used before reserve_pool_timeout"
    );
    p.maintain(at(t0, 6));
    let _reserve = Got::of(&mut first).slot();
    assert_eq!(p.status(), status(0, 3, 1));
    p.maintain(at(t0, 60));
    assert!(
        Got::of(&mut second).is_nothing(),
        "more than reserve_pool_size connections beyond the pool size"
    );
}

#[tokio::test]
async fn query_wait_timeout_ends_the_overdue_waits_only() {
    let p = standalone(|s| {
        s.size = 1;
        s.wait_timeout = Some(Duration::from_secs(5));
    });
    let t0 = Instant::now();
    let (_a, _sa) = open(&p, t0);
    let first = queue(&p, t0);
    let mut second = queue(&p, at(t0, 3));
    p.maintain(at(t0, 4));
    assert_eq!(p.status().waiting, 2, "a wait ended early");
    p.maintain(at(t0, 5));
    let r = p.wait_for(first, None).await;
    assert!(
        matches!(r, Err(PoolError::WaitTimeout(d)) if d == Duration::from_secs(5)),
        "{r:?}"
    );
    assert!(
        Got::of(&mut second).is_nothing(),
        "the younger wait ended too"
    );
    p.maintain(at(t0, 8));
    assert!(matches!(Got::of(&mut second), Got::Expired));
    assert_eq!(p.status(), status(0, 1, 0));
}

#[tokio::test]
async fn max_db_connections_is_shared_by_the_pools_of_a_database() {
    let db = GroupLimit::new(GroupKind::Database, "d", 2);
    let groups = |user: &str| Groups {
        db: db.clone(),
        user: GroupLimit::new(GroupKind::User, user, 0),
    };
    let alice = pool("d", "alice", groups("alice"), |_| {});
    let bob = pool("d", "bob", groups("bob"), |_| {});
    let t0 = Instant::now();
    let (a1, _s1) = open(&alice, t0);
    let (_a2, _s2) = open(&alice, t0);
    assert_eq!(db.open(), 2);
    // Bob's pool is far below its own size, but the database is full.
    let mut w = queue(&bob, at(t0, 1));
    // Alice's connection comes back clean; as Bob's client waits for room in the
    // database, it is closed rather than kept idle, and Bob's client may open one.
    a1.release_at(ReturnAs::Clean, at(t0, 2));
    let _slot = Got::of(&mut w).slot();
    assert_eq!(alice.status(), status(0, 1, 0));
    assert_eq!(bob.status(), status(0, 1, 0));
    assert_eq!(db.open(), 2);
}

#[tokio::test]
async fn max_user_connections_evicts_an_idle_connection_of_another_pool() {
    let user = GroupLimit::new(GroupKind::User, "u", 1);
    let groups = |db: &str| Groups {
        db: GroupLimit::new(GroupKind::Database, db, 0),
        user: user.clone(),
    };
    let one = pool("one", "u", groups("one"), |_| {});
    let two = pool("two", "u", groups("two"), |_| {});
    let t0 = Instant::now();
    let (c, _s) = open(&one, t0);
    c.release_at(ReturnAs::Clean, at(t0, 1));
    assert_eq!(one.status(), status(1, 1, 0));
    // The user is at its cap: the other pool's idle connection makes room.
    let mut w = queue(&two, at(t0, 2));
    let _slot = Got::of(&mut w).slot();
    assert_eq!(one.status(), status(0, 0, 0));
    assert_eq!(two.status(), status(0, 1, 0));
    assert_eq!(user.open(), 1);
}

#[tokio::test]
async fn checkouts_wait_while_the_pool_is_paused_and_go_on_after_resume() {
    let p = standalone(|s| s.size = 2);
    let t0 = Instant::now();
    let (a, _sa) = open(&p, t0);
    p.pause();
    // Below its size, yet the checkout waits.
    let mut w = queue(&p, at(t0, 1));
    a.release_at(ReturnAs::Clean, at(t0, 2));
    assert!(
        Got::of(&mut w).is_nothing(),
        "a connection handed out while paused"
    );
    assert_eq!(p.status(), status(0, 0, 1), "returned while paused: closed");
    p.resume();
    let _slot = Got::of(&mut w).slot();
    assert_eq!(p.status(), status(0, 1, 0));
}
