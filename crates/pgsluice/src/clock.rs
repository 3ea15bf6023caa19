//! The hot path's clock: one reading per turn of a relay lane's loop.
//!
//! A transaction reads the time for its statistics, the server connection's request
//! time and the pool's idle and lifetime checks. Read each time, that is three clock
//! reads and three subtractions per `select 1` (about 300 instructions, callgrind).
//! A lane reads the clock once each time its epoll wait returns ([`tick`]), and what
//! its tasks do in that turn is timed from that reading, as PgBouncer times
//! everything in one turn of its loop from one cached reading.
//!
//! The reading is as old as the turn (the tasks woken in it run one after another),
//! so it is for statistics, idle and lifetime checks and the admin views, never for
//! a timeout: those are tokio timers. Off a lane thread (tokio's workers, tests)
//! nothing is cached and every call reads the clock.

use std::cell::Cell;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
struct Reading {
    mono: Instant,
    wall_us: u64,
}

thread_local! {
    static TURN: Cell<Option<Reading>> = const { Cell::new(None) };
}

/// Microseconds since the Unix epoch, read now.
pub fn wall_us_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The monotonic time: this turn's reading on a lane thread, else read now.
pub fn now() -> Instant {
    TURN.with(Cell::get).map_or_else(Instant::now, |r| r.mono)
}

/// Microseconds since the Unix epoch: this turn's reading on a lane thread, else
/// read now.
pub fn wall_us() -> u64 {
    TURN.with(Cell::get).map_or_else(wall_us_now, |r| r.wall_us)
}

/// Starts a turn on this thread: later calls return this reading until the next.
pub(crate) fn tick() {
    TURN.set(Some(Reading {
        mono: Instant::now(),
        wall_us: wall_us_now(),
    }));
}

/// Ends caching on this thread: every call reads the clock again.
pub(crate) fn stop() {
    TURN.set(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_holds_one_reading_until_the_next() {
        // Off a turn, two calls read the clock twice.
        let a = now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now() > a);

        tick();
        let first = (now(), wall_us());
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!((now(), wall_us()), first, "one reading for the whole turn");

        tick();
        assert!(now() > first.0, "the next turn reads the clock again");
        assert!(wall_us() > first.1);

        stop();
        let off = now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now() > off, "after stop every call reads the clock");
    }
}
