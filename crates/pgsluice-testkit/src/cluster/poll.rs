//! Waiting for a condition on a server with a deadline: look, back off a
//! little, look again, and on timeout say what was seen last. Every wait of
//! the replication and statistics helpers goes through here.

use std::io;
use std::time::{Duration, Instant};

/// What one look at a condition found.
pub(super) enum Check<T> {
    /// The condition holds; the wait returns this value.
    Done(T),
    /// Not yet; the text describes what was seen (for the timeout error).
    NotYet(String),
}

/// Calls `look` until it returns [`Check::Done`] or `timeout` passes (then
/// `TimedOut` naming `what` and the last state seen). An error from `look`
/// ends the wait at once. Pauses between looks grow from 2 ms to 50 ms, so a
/// quick condition is seen quickly and a slow one costs few queries.
pub(super) fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut look: impl FnMut() -> io::Result<Check<T>>,
) -> io::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        match look()? {
            Check::Done(value) => return Ok(value),
            Check::NotYet(state) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what}: not done within {timeout:?}; last seen: {state}"),
                ));
            }
            Check::NotYet(_) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_done_and_reports_last_state_on_timeout() {
        let mut n = 0;
        let got = poll_until("counting", Duration::from_secs(10), || {
            n += 1;
            Ok(if n == 3 {
                Check::Done(n)
            } else {
                Check::NotYet(format!("n = {n}"))
            })
        })
        .unwrap();
        assert_eq!(got, 3);

        let err = poll_until::<()>("never", Duration::ZERO, || {
            Ok(Check::NotYet("still no".into()))
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("never"), "{err}");
        assert!(err.to_string().contains("still no"), "{err}");

        let err = poll_until::<()>("failing", Duration::from_secs(10), || {
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }
}
