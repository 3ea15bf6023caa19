//! Per-pool counters and latency histograms, updated once per transaction or wait
//! (never per message).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::stats::{Histogram, HistogramSnapshot, Totals, Window};
use crate::sync::LockExt;

/// Counters since the pool was created.
#[derive(Debug, Default)]
pub struct PoolStats {
    server_assignments: AtomicU64,
    xacts: AtomicU64,
    queries: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    xact_time_us: AtomicU64,
    query_time_us: AtomicU64,
    wait_time_us: AtomicU64,
    waits: AtomicU64,
    servers_opened: AtomicU64,
    client_connects: AtomicU64,
    client_parses: AtomicU64,
    server_parses: AtomicU64,
    binds: AtomicU64,
    /// Transaction (server hold) durations.
    pub xact_hist: Histogram,
    /// Query durations (estimated per transaction: hold time / queries).
    pub query_hist: Histogram,
    /// Waits for a server connection (every assignment, zero waits included).
    pub wait_hist: Histogram,
    window: Mutex<Window>,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatsSnapshot {
    /// Transactions (server connection checkouts in transaction mode).
    pub xacts: u64,
    /// Queries (Query and Sync messages).
    pub queries: u64,
    /// Bytes from clients.
    pub bytes_received: u64,
    /// Bytes to clients.
    pub bytes_sent: u64,
    /// Time server connections were held, microseconds.
    pub xact_time_us: u64,
    /// Time clients waited for a connection, microseconds.
    pub wait_time_us: u64,
    /// Number of waits that took any time (queue or new connection).
    pub waits: u64,
    /// Server connections opened.
    pub servers_opened: u64,
}

impl PoolStats {
    /// Records one finished checkout: `queries` queries, bytes both ways, and how long
    /// the server connection was held.
    pub fn add_xact(&self, queries: u64, received: u64, sent: u64, held: Duration) {
        let held_us = held.as_micros() as u64;
        self.xacts.fetch_add(1, Relaxed);
        self.queries.fetch_add(queries, Relaxed);
        self.bytes_received.fetch_add(received, Relaxed);
        self.bytes_sent.fetch_add(sent, Relaxed);
        self.xact_time_us.fetch_add(held_us, Relaxed);
        self.xact_hist.observe(held);
        if queries > 0 {
            self.query_time_us.fetch_add(held_us, Relaxed);
            self.query_hist
                .observe_n(held / queries.min(u32::MAX as u64) as u32, queries);
        }
    }

    /// Records a server connection assigned to a client after `waited`.
    pub fn add_wait(&self, waited: Duration) {
        self.server_assignments.fetch_add(1, Relaxed);
        if !waited.is_zero() {
            self.waits.fetch_add(1, Relaxed);
        }
        self.wait_time_us
            .fetch_add(waited.as_micros() as u64, Relaxed);
        self.wait_hist.observe(waited);
    }

    /// Records a new server connection.
    pub fn server_opened(&self) {
        self.servers_opened.fetch_add(1, Relaxed);
    }

    /// Records a relay run's prepared-statement traffic (named Parse from the client,
    /// Parse sent to the server, named Bind), once per transaction.
    pub fn add_prepared(&self, c: crate::stats::PreparedCounts) {
        for (counter, n) in [
            (&self.client_parses, c.client_parses),
            (&self.server_parses, c.server_parses),
            (&self.binds, c.binds),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    /// Records a client login.
    pub fn client_connected(&self) {
        self.client_connects.fetch_add(1, Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> PoolStatsSnapshot {
        PoolStatsSnapshot {
            xacts: self.xacts.load(Relaxed),
            queries: self.queries.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            xact_time_us: self.xact_time_us.load(Relaxed),
            wait_time_us: self.wait_time_us.load(Relaxed),
            waits: self.waits.load(Relaxed),
            servers_opened: self.servers_opened.load(Relaxed),
        }
    }

    /// The totals in SHOW STATS form.
    pub fn totals(&self) -> Totals {
        Totals {
            server_assignments: self.server_assignments.load(Relaxed),
            xacts: self.xacts.load(Relaxed),
            queries: self.queries.load(Relaxed),
            received: self.bytes_received.load(Relaxed),
            sent: self.bytes_sent.load(Relaxed),
            xact_time_us: self.xact_time_us.load(Relaxed),
            query_time_us: self.query_time_us.load(Relaxed),
            wait_time_us: self.wait_time_us.load(Relaxed),
            client_connects: self.client_connects.load(Relaxed),
            servers_opened: self.servers_opened.load(Relaxed),
            client_parses: self.client_parses.load(Relaxed),
            server_parses: self.server_parses.load(Relaxed),
            binds: self.binds.load(Relaxed),
        }
    }

    /// Closes a stats period of length `period`.
    pub fn advance_window(&self, period: Duration) {
        let now = self.totals();
        self.window.locked().advance(now, period);
    }

    /// The window the averages come from.
    pub fn window(&self) -> Window {
        *self.window.locked()
    }

    /// The three histograms: (query, transaction, wait).
    pub fn histograms(&self) -> (HistogramSnapshot, HistogramSnapshot, HistogramSnapshot) {
        (
            self.query_hist.snapshot(),
            self.xact_hist.snapshot(),
            self.wait_hist.snapshot(),
        )
    }
}
