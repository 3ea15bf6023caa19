//! Counted requests (see [`Book::end_read`]): the entries of a request whose replies
//! all go to the client as the server sends them and change nothing in the book are held
//! back as one byte each while nothing is queued, then counted instead of queued, and
//! the server's replies to counted requests are taken before the queue's.

use std::collections::VecDeque;

use super::{Book, Expect};

/// An entry whose reply goes to the client as the server sends it and changes nothing
/// in the book: it carries no data, so it can wait as one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::client::prepared) enum Plain {
    /// A Parse of the unnamed statement.
    Parse,
    /// A Bind of the unnamed statement.
    Bind,
    /// A Describe of the unnamed statement.
    DescribeStatement,
    DescribePortal,
    Execute,
    /// A Close of a portal or of the unnamed statement.
    Close,
    Sync,
    Query,
}

impl Plain {
    pub(super) fn of(e: &Expect) -> Option<Plain> {
        Some(match e {
            Expect::Parse {
                forward: true,
                stmt: None,
                client: None,
                creates: false,
                tied: false,
            } => Plain::Parse,
            Expect::Bind(None) => Plain::Bind,
            Expect::DescribeStatement(None) => Plain::DescribeStatement,
            Expect::DescribePortal => Plain::DescribePortal,
            Expect::Execute => Plain::Execute,
            Expect::Close {
                forward: true,
                evict: None,
            } => Plain::Close,
            Expect::Sync => Plain::Sync,
            Expect::Query => Plain::Query,
            _ => return None,
        })
    }

    pub(super) fn expect(self) -> Expect {
        match self {
            Plain::Parse => Expect::Parse {
                forward: true,
                stmt: None,
                client: None,
                creates: false,
                tied: false,
            },
            Plain::Bind => Expect::Bind(None),
            Plain::DescribeStatement => Expect::DescribeStatement(None),
            Plain::DescribePortal => Expect::DescribePortal,
            Plain::Execute => Expect::Execute,
            Plain::Close => Expect::Close {
                forward: true,
                evict: None,
            },
            Plain::Sync => Expect::Sync,
            Plain::Query => Expect::Query,
        }
    }
}

/// Most plain entries of one client read held back from the queue.
pub(super) const HELD: usize = 16;

/// The plain entries of the client read being handled, held back while nothing is
/// queued: at the end of the read they are counted ([`Book::end_read`]) or queued.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub(super) kinds: [Plain; HELD],
    pub(super) len: u8,
}

impl Held {
    pub(super) const EMPTY: Held = Held {
        kinds: [Plain::Sync; HELD],
        len: 0,
    };

    fn entries(&self) -> &[Plain] {
        &self.kinds[..self.len as usize]
    }

    /// The requests to count instead of queue: the entries end in a Sync, or are
    /// simple queries only. A simple query among extended-protocol messages is skipped
    /// with them after an error (no ReadyForQuery of its own): such a mix is queued.
    fn requests(&self) -> Option<u32> {
        let held = self.entries();
        let queries = held.iter().filter(|&&k| k == Plain::Query).count();
        if queries == held.len() {
            return (queries > 0).then_some(queries as u32);
        }
        if queries > 0 || held.last() != Some(&Plain::Sync) {
            return None;
        }
        Some(held.iter().filter(|&&k| k == Plain::Sync).count() as u32)
    }
}

impl Book {
    /// No reply expected from the server: nothing queued, nothing counted.
    pub(in crate::client::prepared) fn idle(&self) -> bool {
        self.queue.is_empty() && self.plain == 0 && self.held.len == 0
    }

    /// The entry the server's next reply answers: None when nothing is queued, or while
    /// the replies of counted requests (which come first) are still due.
    pub(in crate::client::prepared) fn front(&self) -> Option<&Expect> {
        debug_assert_eq!(self.held.len, 0, "plain entries held after a read");
        if self.plain > 0 {
            return None;
        }
        self.queue.front()
    }

    /// Entries queued (tests and the trace).
    pub(in crate::client::prepared) fn queued(&self) -> &VecDeque<Expect> {
        &self.queue
    }

    /// Called at the end of every client read. Entries whose replies all go to the
    /// client unchanged and change nothing here (unnamed Parse, Bind and Describe,
    /// Execute, a Close of the unnamed statement or a portal, Sync, simple Query) are
    /// held back while nothing is queued ([`Book::push_plain`]). When the read ends with them
    /// ending in a Sync, or made of simple queries only, and the server is not skipping
    /// after an error, they are counted instead of queued: matching their replies one
    /// by one would only pop them. This is the usual request of an extended-protocol
    /// client without named statements, and of every simple query. Otherwise they
    /// are queued. `count` false: always queued.
    pub(in crate::client::prepared) fn end_read(&mut self, count: bool) {
        if self.held.len == 0 {
            return;
        }
        let counted = if count && !self.skipping && !self.open_extended {
            self.held.requests()
        } else {
            None
        };
        match counted {
            Some(requests) => {
                self.plain += requests;
                self.held.len = 0;
            }
            None => self.queue_held(),
        }
    }

    /// [`Book::push`] of a plain entry, without making the entry unless it is queued
    /// (the usual messages of a request take this way).
    #[inline]
    pub(in crate::client::prepared) fn push_plain(&mut self, kind: Plain) {
        if self.skipping {
            if kind != Plain::Sync {
                return;
            }
            self.skipping = false;
        }
        match kind {
            Plain::Sync => {
                self.open_extended = false;
                self.epoch += 1;
            }
            Plain::Query => {}
            _ => self.open_extended = true,
        }
        if self.queue.is_empty() && (self.held.len as usize) < HELD {
            self.held.kinds[self.held.len as usize] = kind;
            self.held.len += 1;
            return;
        }
        self.queue_held();
        self.queue.push_back(kind.expect());
    }

    /// Queues the held entries, in order.
    pub(super) fn queue_held(&mut self) {
        if self.held.len == 0 {
            return;
        }
        let held = std::mem::replace(&mut self.held, Held::EMPTY);
        self.queue.extend(held.entries().iter().map(|k| k.expect()));
    }

    /// Counted requests are in flight: the server's replies are theirs.
    pub(in crate::client::prepared) fn counting(&self) -> bool {
        self.plain > 0
    }

    /// A ReadyForQuery of a counted request came: it ends the oldest one.
    pub(in crate::client::prepared) fn ready(&mut self) {
        self.plain = self.plain.saturating_sub(1);
    }
}
