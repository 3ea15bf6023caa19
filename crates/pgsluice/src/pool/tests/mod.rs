//! Unit tests of the pool's queue, hand-back, limits and upkeep, without PostgreSQL:
//! connections are [`fake_conn`]s over local socket pairs, and time is the `Instant`
//! each call is given, never the clock.

mod handback;
mod limits;
mod upkeep;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::test_support::{open, pool, standalone};
use super::{checkout, Checkout, Grant, Groups, Pool, PoolStatus, Queued, Start};
use crate::server::ServerId;

/// Seconds after `t0`.
fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

/// A checkout at `now` that must get an idle connection at once.
fn ready(p: &Arc<Pool>, now: Instant) -> Checkout {
    match p.start_checkout(None, now).expect("checkout") {
        Start::Ready(c) => c,
        Start::Open(..) => panic!("got a slot instead of an idle connection"),
        Start::Wait(_) => panic!("queued instead of getting an idle connection"),
    }
}

/// A checkout at `now` that must queue.
fn queue(p: &Arc<Pool>, now: Instant) -> Queued {
    match p.start_checkout(None, now).expect("checkout") {
        Start::Wait(q) => q,
        Start::Ready(_) => panic!("got an idle connection instead of queueing"),
        Start::Open(..) => panic!("got a slot instead of queueing"),
    }
}

/// What a queued checkout holds right now.
enum Got {
    /// Still waiting.
    Nothing,
    /// A connection.
    Conn(Checkout),
    /// Permission to open one.
    Slot(checkout::Slot),
    /// The wait timed out.
    Expired,
}

impl Got {
    fn of(q: &mut Queued) -> Got {
        match q.granted() {
            None => Got::Nothing,
            Some(Grant::Conn(c)) => Got::Conn(c),
            Some(Grant::Slot(s)) => Got::Slot(s),
            Some(Grant::Expired) => Got::Expired,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Got::Nothing => "nothing",
            Got::Conn(_) => "a connection",
            Got::Slot(_) => "a slot",
            Got::Expired => "an expiry",
        }
    }

    /// The connection granted (panics on anything else).
    fn conn(self) -> Checkout {
        match self {
            Got::Conn(c) => c,
            other => panic!("expected a connection, got {}", other.name()),
        }
    }

    /// The slot granted (panics on anything else).
    fn slot(self) -> checkout::Slot {
        match self {
            Got::Slot(s) => s,
            other => panic!("expected a slot, got {}", other.name()),
        }
    }

    fn is_nothing(&self) -> bool {
        matches!(self, Got::Nothing)
    }
}

/// The id of a checked-out connection.
fn id(c: &mut Checkout) -> ServerId {
    c.conn().id
}

fn status(idle: usize, total: usize, waiting: usize) -> PoolStatus {
    PoolStatus {
        idle,
        total,
        waiting,
    }
}

/// Ids of the idle connections, bottom of the stack first.
fn idle_ids(p: &Pool) -> Vec<ServerId> {
    p.lock().idle.iter().map(|m| m.conn.id).collect()
}
