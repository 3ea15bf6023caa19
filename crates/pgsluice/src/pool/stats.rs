//! Per-pool counters, updated once per transaction (never per message).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters since start.
#[derive(Debug, Default)]
pub struct PoolStats {
    xacts: AtomicU64,
    queries: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    xact_time_us: AtomicU64,
    wait_time_us: AtomicU64,
    waits: AtomicU64,
    servers_opened: AtomicU64,
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
    /// Number of waits.
    pub waits: u64,
    /// Server connections opened.
    pub servers_opened: u64,
}

impl PoolStats {
    /// Records one finished checkout.
    pub fn add_xact(&self, queries: u64, received: u64, sent: u64, held: Duration) {
        self.xacts.fetch_add(1, Relaxed);
        self.queries.fetch_add(queries, Relaxed);
        self.bytes_received.fetch_add(received, Relaxed);
        self.bytes_sent.fetch_add(sent, Relaxed);
        self.xact_time_us
            .fetch_add(held.as_micros() as u64, Relaxed);
    }

    /// Records the time a client waited for a connection.
    pub fn add_wait(&self, waited: Duration) {
        self.waits.fetch_add(1, Relaxed);
        self.wait_time_us
            .fetch_add(waited.as_micros() as u64, Relaxed);
    }

    /// Records a new server connection.
    pub fn server_opened(&self) {
        self.servers_opened.fetch_add(1, Relaxed);
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
}
