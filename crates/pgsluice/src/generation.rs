//! Configuration generations: everything derived from one configuration (the values
//! every request reads, client secrets, TLS material) built together, validated whole,
//! and published with one store. A reader holds one generation and never sees half of
//! a reload.
//!
//! Building one is slow (SCRAM verifiers run PBKDF2, TLS reads files), so reloads build
//! it on a blocking thread; see `app::reload`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};

use crate::config::{Config, General};
use crate::secrets::Secrets;
use crate::tls::TlsState;

/// One immutable configuration snapshot and what is derived from it.
#[derive(Debug)]
pub struct Generation {
    /// 1 for the configuration the process started with, +1 per applied reload.
    pub number: u64,
    /// The configuration.
    pub config: Arc<Config>,
    /// The `[general]` values read on every request, copied out of `config`.
    pub hot: HotValues,
    /// Client secrets of the configured users.
    pub secrets: Arc<Secrets>,
    /// TLS toward clients and servers.
    pub tls: Arc<TlsState>,
}

/// The `[general]` values a request reads, as plain fields (0 durations as `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotValues {
    /// max_message_size, at most `u32::MAX`.
    pub max_message: u32,
    /// max_prepared_statements as configured (0: the client layer's default).
    pub max_prepared_statements: usize,
    /// query_timeout.
    pub query_timeout: Option<Duration>,
    /// idle_transaction_timeout.
    pub idle_transaction_timeout: Option<Duration>,
    /// client_idle_timeout.
    pub client_idle_timeout: Option<Duration>,
    /// transaction_timeout.
    pub transaction_timeout: Option<Duration>,
    /// query_wait_notify.
    pub query_wait_notify: Option<Duration>,
    /// cancel_wait_timeout.
    pub cancel_wait_timeout: Option<Duration>,
}

fn on(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl HotValues {
    /// The values of `g`.
    pub fn of(g: &General) -> HotValues {
        HotValues {
            max_message: g.max_message_size.min(u32::MAX as usize) as u32,
            max_prepared_statements: g.max_prepared_statements,
            query_timeout: on(g.query_timeout.0),
            idle_transaction_timeout: on(g.idle_transaction_timeout.0),
            client_idle_timeout: on(g.client_idle_timeout.0),
            transaction_timeout: on(g.transaction_timeout.0),
            query_wait_notify: on(g.query_wait_notify.0),
            cancel_wait_timeout: on(g.cancel_wait_timeout.0),
        }
    }
}

/// Why a configuration cannot become a generation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

impl Generation {
    /// The first generation, for a configuration already validated at startup. TLS
    /// files that cannot be used leave TLS off (connections that require it are refused)
    /// rather than stopping the process; `app::Instance::start` checks them first.
    pub fn first(config: Config) -> Generation {
        let tls = TlsState::load(&config.general).unwrap_or_else(|e| {
            tracing::error!(error = %e, "TLS settings unusable: TLS is off, and connections that require it are refused");
            TlsState::refusing(&config.general)
        });
        Generation::assemble(1, config, tls)
    }

    /// Validates `config` and derives the rest; blocking (file reads, PBKDF2). Nothing
    /// is published: the caller decides.
    pub fn build(number: u64, config: Config) -> Result<Generation, BuildError> {
        config.validate().map_err(|e| BuildError(e.to_string()))?;
        let tls = TlsState::load(&config.general).map_err(BuildError)?;
        Ok(Generation::assemble(number, config, tls))
    }

    fn assemble(number: u64, config: Config, tls: TlsState) -> Generation {
        Generation {
            number,
            hot: HotValues::of(&config.general),
            secrets: Arc::new(Secrets::from_config(&config)),
            tls: Arc::new(tls),
            config: Arc::new(config),
        }
    }
}

/// The generation in force, shared by every task that reads configuration.
#[derive(Debug, Clone)]
pub struct Live {
    current: Arc<ArcSwap<Generation>>,
    /// The number the next built generation gets.
    next: Arc<AtomicU64>,
}

impl Live {
    /// Starts with `first`.
    pub fn new(first: Generation) -> Live {
        let next = first.number + 1;
        Live {
            current: Arc::new(ArcSwap::from_pointee(first)),
            next: Arc::new(AtomicU64::new(next)),
        }
    }

    /// The generation in force, for a read that ends at once (no reference count
    /// touched; do not keep it across an `.await`).
    pub fn load(&self) -> Guard<Arc<Generation>> {
        self.current.load()
    }

    /// The generation in force, as an owned handle.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.current.load().config.clone()
    }

    /// A number for a generation about to be built.
    pub fn next_number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes `g` the generation in force: one store.
    pub fn publish(&self, g: Arc<Generation>) {
        self.current.store(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_generation_is_seen_whole() {
        let live = Live::new(Generation::first(Config::default()));
        assert_eq!(live.load().number, 1);
        let mut cfg = Config::default();
        cfg.general.query_timeout.0 = Duration::from_secs(7);
        cfg.general.max_client_conn = 17;
        let g = Generation::build(live.next_number(), cfg).unwrap();
        // Built but not published: readers still see the first one.
        assert_eq!(live.load().hot.query_timeout, None);
        live.publish(Arc::new(g));
        let now = live.load();
        assert_eq!(now.number, 2);
        assert_eq!(now.hot.query_timeout, Some(Duration::from_secs(7)));
        assert_eq!(now.config.general.max_client_conn, 17);
    }

    #[test]
    fn an_invalid_configuration_builds_nothing() {
        let mut cfg = Config::default();
        cfg.general.max_client_conn = 0;
        assert!(Generation::build(2, cfg).is_err());
    }
}
