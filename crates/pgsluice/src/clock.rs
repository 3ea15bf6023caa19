//! The hot path's clock: one reading per turn of a relay lane's loop.
//!
//! A transaction reads the time for its statistics, the server connection's request
//! time and the pool's idle and lifetime checks. Read each time, that is three clock
//! reads and three subtractions per `select 1` (about 300 instructions, callgrind).
//! On a lane, the first call in each turn of its loop (from one return of its epoll
//! wait to the next, `tick`) reads the clock and the rest of the turn reuses that
//! reading, as PgBouncer times everything in one turn of its loop from one cached
//! reading. Lazily: a turn that asks for no time reads no clock, so a lane that wakes
//! once per message (one client) reads no more than before.
//!
//! The reading is as old as the turn (the tasks woken in it run one after another),
//! so it is for statistics, idle and lifetime checks and the admin views, never for
//! a timeout: those are tokio timers. Off a lane thread (tokio's workers, tests)
//! nothing is cached and every call reads the clock.

use std::cell::Cell;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
enum Turn {
    /// Not a lane thread (or a stopped one): every call reads the clock.
    Off,
    /// In a turn of a lane's loop, with what was read in it so far.
    On {
        mono: Option<Instant>,
        wall_us: Option<u64>,
    },
}

thread_local! {
    static TURN: Cell<Turn> = const { Cell::new(Turn::Off) };
}

/// Microseconds since the Unix epoch, read now.
pub fn wall_us_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The monotonic time: this turn's reading on a lane thread, else read now.
pub fn now() -> Instant {
    TURN.with(|t| match t.get() {
        Turn::Off => Instant::now(),
        Turn::On { mono: Some(m), .. } => m,
        Turn::On {
            mono: None,
            wall_us,
        } => {
            let m = Instant::now();
            t.set(Turn::On {
                mono: Some(m),
                wall_us,
            });
            m
        }
    })
}

/// Microseconds since the Unix epoch: this turn's reading on a lane thread, else
/// read now.
pub fn wall_us() -> u64 {
    TURN.with(|t| match t.get() {
        Turn::Off => wall_us_now(),
        Turn::On {
            wall_us: Some(w), ..
        } => w,
        Turn::On {
            mono,
            wall_us: None,
        } => {
            let w = wall_us_now();
            t.set(Turn::On {
                mono,
                wall_us: Some(w),
            });
            w
        }
    })
}

/// Starts a turn on this thread: the next call reads the clock, and later calls in
/// the turn return that reading.
pub(crate) fn tick() {
    TURN.set(Turn::On {
        mono: None,
        wall_us: None,
    });
}

/// Ends caching on this thread: every call reads the clock again.
pub(crate) fn stop() {
    TURN.set(Turn::Off);
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
        assert_ne!(wall_us(), first.1, "and the wall clock");

        // Lazily: the reading is taken by the turn's first call, not by the tick.
        let before_tick = Instant::now();
        tick();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now() >= before_tick + std::time::Duration::from_millis(2));

        stop();
        let off = now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now() > off, "after stop every call reads the clock");
    }
}
