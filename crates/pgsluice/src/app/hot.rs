//! The few settings every transaction (or every wait in a pool's queue) reads, mirrored as plain atomics: written when
//! the configuration is loaded or reloaded, read with one load each. The hot path
//! then takes no `ArcSwap` guard on the whole configuration (two of those per
//! transaction cost about 170 instructions).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::client::prepared::DEFAULT_MAX_PREPARED;
use crate::client::relay::RelayTimeouts;
use crate::config::General;

/// The per-transaction settings of `[general]`.
#[derive(Debug, Default)]
pub(crate) struct HotConfig {
    max_message: AtomicU64,
    max_prepared: AtomicU64,
    /// Timeouts in nanoseconds, 0 = off.
    query: AtomicU64,
    idle_in_transaction: AtomicU64,
    client_idle: AtomicU64,
    transaction: AtomicU64,
    query_wait_notify: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn duration(n: u64) -> Option<Duration> {
    (n != 0).then(|| Duration::from_nanos(n))
}

impl HotConfig {
    /// The mirror of `g`.
    pub(crate) fn new(g: &General) -> HotConfig {
        let hot = HotConfig::default();
        hot.set(g);
        hot
    }

    /// Mirrors `g` (a reload).
    pub(crate) fn set(&self, g: &General) {
        self.max_message
            .store(g.max_message_size.min(u32::MAX as usize) as u64, Relaxed);
        let prepared = match g.max_prepared_statements {
            0 => DEFAULT_MAX_PREPARED,
            n => n,
        };
        self.max_prepared.store(prepared as u64, Relaxed);
        self.query.store(nanos(g.query_timeout.0), Relaxed);
        self.idle_in_transaction
            .store(nanos(g.idle_transaction_timeout.0), Relaxed);
        self.client_idle
            .store(nanos(g.client_idle_timeout.0), Relaxed);
        self.transaction
            .store(nanos(g.transaction_timeout.0), Relaxed);
        self.query_wait_notify
            .store(nanos(g.query_wait_notify.0), Relaxed);
    }

    /// max_message_size, at most `u32::MAX`.
    pub(crate) fn max_message(&self) -> u32 {
        self.max_message.load(Relaxed) as u32
    }

    /// max_prepared_statements (its default for 0).
    pub(crate) fn max_prepared(&self) -> usize {
        self.max_prepared.load(Relaxed) as usize
    }

    /// client_idle_timeout, when on.
    pub(crate) fn client_idle_timeout(&self) -> Option<Duration> {
        duration(self.client_idle.load(Relaxed))
    }

    /// query_wait_notify, when on.
    pub(crate) fn query_wait_notify(&self) -> Option<Duration> {
        duration(self.query_wait_notify.load(Relaxed))
    }

    /// The timeouts a relay enforces.
    pub(crate) fn relay_timeouts(&self) -> RelayTimeouts {
        RelayTimeouts {
            query: duration(self.query.load(Relaxed)),
            idle_in_transaction: duration(self.idle_in_transaction.load(Relaxed)),
            client_idle: self.client_idle_timeout(),
            transaction: duration(self.transaction.load(Relaxed)),
        }
    }
}
