//! Statement pooling (PgBouncer's `pool_mode = statement`): a server connection serves
//! one request of a client, then goes back to the pool.
//!
//! A *request* is what one ReadyForQuery answers: a Query, a FunctionCall, or the
//! extended-protocol messages up to and including a Sync. The relay forwards the first
//! request of what the client sent and holds the rest back ([`StatementGate`]) until its
//! ReadyForQuery came: when that reports *idle*, the relay stops at the release point and
//! the held bytes start the client's next request, on whatever connection the pool
//! hands out then. A client pipelining several Syncs thus gets one checkout per Sync,
//! and nothing it sent after a request can run on the server before that request was
//! answered (so a pipelined `COMMIT` can never commit a refused transaction block).
//!
//! When the ReadyForQuery reports a transaction block (`T`) or a failed one (`E`), the
//! client opened a transaction that cannot stay on its connection: the relay withholds
//! that ReadyForQuery, the client is told PgBouncer's FATAL (SQLSTATE 08P01, see
//! [`REFUSAL`]) and closed, as PgBouncer does, and the server connection is rolled back
//! before it is reused (PgBouncer closes it; a ROLLBACK costs less than a reconnect).
//!
//! This module is sans-IO: the gate decides on message headers only; the relay applies
//! its decisions.

use bytes::BytesMut;
use pgsluice_protocol::frontend::tag as ft;

/// What the client is told when it opens a transaction block (PgBouncer's wording).
pub(crate) const REFUSAL: &str = "transaction blocks not allowed in statement pooling mode";

/// A ReadyForQuery message up to its status byte.
const READY_PREFIX: [u8; 5] = [b'Z', 0, 0, 0, 5];

/// Where the gate is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    /// Between messages.
    Boundary,
    /// Inside a message's length field: `have` of its 4 bytes seen so far.
    Length { have: u8, bytes: [u8; 4] },
    /// Inside a message body: this many bytes still to come.
    Body(usize),
}

/// Splits the client's byte stream at request boundaries: what may go to the server
/// now, and what waits for the answer to the request in flight.
#[derive(Debug)]
pub struct StatementGate {
    pos: Pos,
    /// The message at `pos` is a request (Query, Sync, FunctionCall).
    request: bool,
    /// Client bytes held back, starting at a message boundary: later requests.
    held: BytesMut,
    /// The server reported a transaction block; its ReadyForQuery was withheld.
    refused: bool,
}

impl Default for StatementGate {
    fn default() -> Self {
        Self::new()
    }
}

impl StatementGate {
    /// A gate at a message boundary, holding nothing.
    pub fn new() -> Self {
        StatementGate {
            pos: Pos::Boundary,
            request: false,
            held: BytesMut::new(),
            refused: false,
        }
    }

    /// How many bytes at the front of `data` may go to the server now. `in_flight`: no
    /// new request may go on this run, because one sent awaits its ReadyForQuery or has
    /// had it (the relay's flow counts requests once they are whole: a request whose end
    /// has not come yet is counted here instead). Messages admitted
    /// whole or in part are followed to their end across calls; a new message is
    /// admitted unless a request is in flight, except copy-in messages (CopyData,
    /// CopyDone, CopyFail), which belong to the request in flight.
    ///
    /// The caller passes the bytes admitted on and the rest to [`Self::hold`].
    pub fn admit(&mut self, data: &[u8], in_flight: bool) -> usize {
        let mut in_flight = in_flight || (self.pos != Pos::Boundary && self.request);
        let mut at = 0;
        while at < data.len() {
            match &mut self.pos {
                Pos::Boundary => {
                    let tag = data[at];
                    let copy_in = matches!(tag, ft::COPY_DATA | ft::COPY_DONE | ft::COPY_FAIL);
                    if in_flight && !copy_in {
                        return at;
                    }
                    self.request = matches!(tag, ft::QUERY | ft::SYNC | ft::FUNCTION_CALL);
                    in_flight |= self.request;
                    self.pos = Pos::Length {
                        have: 0,
                        bytes: [0; 4],
                    };
                    at += 1;
                }
                Pos::Length { have, bytes } => {
                    bytes[usize::from(*have)] = data[at];
                    *have += 1;
                    at += 1;
                    if *have == 4 {
                        // The length counts itself. A bad one (< 4) ends the message
                        // here; the protocol layer after the gate refuses it.
                        let len = u32::from_be_bytes(*bytes) as usize;
                        self.pos = match len.saturating_sub(4) {
                            0 => Pos::Boundary,
                            rest => Pos::Body(rest),
                        };
                    }
                }
                Pos::Body(rest) => {
                    let take = (*rest).min(data.len() - at);
                    at += take;
                    *rest -= take;
                    if *rest == 0 {
                        self.pos = Pos::Boundary;
                    }
                }
            }
        }
        at
    }

    /// Keeps bytes the gate did not admit (they follow any held already).
    pub fn hold(&mut self, rest: &[u8]) {
        if !rest.is_empty() {
            self.held.extend_from_slice(rest);
        }
    }

    /// Whether client bytes wait for the request in flight.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Takes the held bytes (to be admitted again, or to start the next request).
    pub fn take_held(&mut self) -> BytesMut {
        std::mem::take(&mut self.held)
    }

    /// Whether a transaction block was refused.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Records that the server reported a transaction block. `tail` is what goes to the
    /// client next; when it ends with the ReadyForQuery that reported the block, its
    /// length without it is returned, so that the client sees the error instead of an
    /// open transaction. (Only asynchronous messages could follow it, so it is last.)
    pub fn refuse(&mut self, tail: &[u8]) -> usize {
        self.refused = true;
        match tail.len().checked_sub(READY_PREFIX.len() + 1) {
            Some(cut) if tail[cut..cut + READY_PREFIX.len()] == READY_PREFIX => cut,
            _ => tail.len(),
        }
    }
}

#[cfg(test)]
#[path = "statement_tests.rs"]
mod relay_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn one_request_at_a_time() {
        let first = cat(&[
            msg(b'P', b"\0select 1\0\0\0"),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
        ]);
        let second = msg(b'Q', b"select 2\0");
        let data = cat(&[first.clone(), second.clone()]);
        let mut g = StatementGate::new();
        assert_eq!(g.admit(&data, false), first.len());
        // Nothing passes while the first request is unanswered.
        assert_eq!(g.admit(&second, true), 0);
        // Then the next one does, and what follows it waits again.
        let third = msg(b'Q', b"select 3\0");
        let rest = cat(&[second.clone(), third.clone()]);
        assert_eq!(g.admit(&rest, false), second.len());
        assert_eq!(g.admit(&third, false), third.len());
    }

    #[test]
    fn messages_split_across_reads_are_followed() {
        let q1 = msg(b'Q', b"select 1\0");
        let q2 = msg(b'Q', b"select 2\0");
        let data = cat(&[q1.clone(), q2]);
        // Every split point: the first query passes whole, nothing of the second. The
        // caller counts the first in flight only once it has all of it.
        for split in 0..=data.len() {
            let mut g = StatementGate::new();
            let a = g.admit(&data[..split], false);
            let b = if a == split {
                g.admit(&data[split..], split >= q1.len())
            } else {
                0
            };
            assert_eq!(a + b, q1.len(), "split at {split}");
        }
        // A message that is not a request does not hold the next one back.
        let p = msg(b'P', b"\0select 1\0\0\0");
        let mut g = StatementGate::new();
        assert_eq!(g.admit(&p[..3], false), 3);
        assert_eq!(
            g.admit(&cat(&[p[3..].to_vec(), q1.clone()]), false),
            p.len() - 3 + q1.len()
        );
    }

    #[test]
    fn unsynced_messages_pass_and_copy_data_follows_its_request() {
        // Parse/Describe/Flush without a Sync: nothing to wait for.
        let flushed = cat(&[
            msg(b'P', b"s\0select 1\0\0\0"),
            msg(b'D', b"Ss\0"),
            msg(b'H', b""),
        ]);
        let mut g = StatementGate::new();
        assert_eq!(g.admit(&flushed, false), flushed.len());
        // COPY FROM STDIN: the data goes with the running query; the next query waits.
        let copy = cat(&[msg(b'd', b"1\n"), msg(b'd', b"2\n"), msg(b'c', b"")]);
        let next = msg(b'Q', b"select 1\0");
        let mut g = StatementGate::new();
        assert_eq!(g.admit(&cat(&[copy.clone(), next]), true), copy.len());
        let fail = msg(b'f', b"oops\0");
        assert_eq!(g.admit(&fail, true), fail.len());
    }

    #[test]
    fn terminate_waits_behind_a_request() {
        let q = msg(b'Q', b"select 1\0");
        let x = msg(b'X', b"");
        let mut g = StatementGate::new();
        let data = cat(&[q.clone(), x.clone()]);
        let n = g.admit(&data, false);
        assert_eq!(n, q.len());
        g.hold(&data[n..]);
        assert!(g.holding());
        assert_eq!(&g.take_held()[..], &x[..]);
        assert!(!g.holding());
        // Alone, it passes.
        assert_eq!(g.admit(&x, false), x.len());
    }

    #[test]
    fn bad_lengths_do_not_stall_the_gate() {
        let mut g = StatementGate::new();
        let bad = [b'P', 0, 0, 0, 1, b'Q'];
        // The bad message ends after its length field; the next tag is a new message.
        assert_eq!(g.admit(&bad, false), bad.len());
        let mut g = StatementGate::new();
        let huge = [b'd', 0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert_eq!(g.admit(&huge, true), huge.len());
    }

    #[test]
    fn refusal_withholds_the_ready_for_query() {
        let complete = msg(b'C', b"BEGIN\0");
        let tail = cat(&[complete.clone(), msg(b'Z', b"T")]);
        let mut g = StatementGate::new();
        assert!(!g.refused());
        assert_eq!(g.refuse(&tail), complete.len());
        assert!(g.refused());
        // A notice after the ReadyForQuery: sent as it is.
        let odd = cat(&[msg(b'Z', b"E"), msg(b'N', b"\0")]);
        assert_eq!(StatementGate::new().refuse(&odd), odd.len());
        assert_eq!(StatementGate::new().refuse(b"Z"), 1);
    }
}
