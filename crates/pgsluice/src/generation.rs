//! Configuration generations: everything derived from one configuration (the values
//! every request reads, client secrets, TLS material) built together, validated whole,
//! and published with one store. A reader holds one generation and never sees half of
//! a reload.
//!
//! Building one is slow (SCRAM verifiers run PBKDF2, TLS reads files), so reloads build
//! it on a blocking thread; see `app::reload`.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// `track_extra_parameters`, lower-case, without the ones tracked anyway; shared
    /// by every client of this generation (None when empty).
    pub tracked_extra: Option<Arc<Vec<String>>>,
}

/// The extra parameters to carry: lower-case, not tracked anyway, no duplicates.
fn tracked_extra(g: &General) -> Option<Arc<Vec<String>>> {
    let mut names: Vec<String> = Vec::new();
    for n in &g.track_extra_parameters {
        let n = n.trim().to_ascii_lowercase();
        if !n.is_empty() && crate::params::ParamSet::index(&n).is_none() && !names.contains(&n) {
            names.push(n);
        }
    }
    (!names.is_empty()).then(|| Arc::new(names))
}

/// The `[general]` values a request reads, as plain fields (0 durations as `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotValues {
    /// What a relay run reads.
    pub relay: RelayValues,
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
            relay: RelayValues {
                max_message: g.max_message_size.min(u32::MAX as usize) as u32,
                max_prepared_statements: g.max_prepared_statements,
                query_timeout: on(g.query_timeout.0),
                idle_transaction_timeout: on(g.idle_transaction_timeout.0),
                client_idle_timeout: on(g.client_idle_timeout.0),
                transaction_timeout: on(g.transaction_timeout.0),
            },
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
            tracked_extra: tracked_extra(&config.general),
            config: Arc::new(config),
        }
    }
}

/// The generation in force, shared by every task that reads configuration.
#[derive(Debug, Clone)]
pub struct Live {
    current: Arc<ArcSwap<Generation>>,
    /// The [`HotValues`] of `current`, for the per-request path.
    hot: Arc<HotMirror>,
    /// The number the next built generation gets.
    next: Arc<AtomicU64>,
}

/// The hot values of the generation in force as plain atomics behind a sequence
/// number (a seqlock): a reader copies them in about twenty instructions instead of
/// taking an `ArcSwap` guard (about sixty), and still never sees values of two
/// generations mixed: it retries while a publish is writing.
#[derive(Debug, Default)]
struct HotMirror {
    /// Even: stable; odd: a publish is writing.
    seq: AtomicU64,
    max_message: AtomicU64,
    max_prepared_statements: AtomicU64,
    /// Durations in nanoseconds, 0 = off.
    query_timeout: AtomicU64,
    idle_transaction_timeout: AtomicU64,
    client_idle_timeout: AtomicU64,
    transaction_timeout: AtomicU64,
    query_wait_notify: AtomicU64,
    cancel_wait_timeout: AtomicU64,
    /// One writer at a time.
    writer: Mutex<()>,
}

fn nanos(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
    })
}

fn duration(n: u64) -> Option<Duration> {
    (n != 0).then(|| Duration::from_nanos(n))
}

/// The part of [`HotValues`] a relay run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayValues {
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
}

impl HotMirror {
    /// What `read` copies out, from one generation: retried while a publish writes.
    fn consistent<T>(&self, read: impl Fn(&Self) -> T) -> T {
        use Ordering::{Acquire, Relaxed};
        loop {
            let before = self.seq.load(Acquire);
            if before & 1 == 0 {
                let v = read(self);
                fence(Acquire);
                if self.seq.load(Relaxed) == before {
                    return v;
                }
            }
            std::hint::spin_loop();
        }
    }

    /// The relay's fields, each loaded on its own (callers go through `consistent`).
    fn relay_fields(&self) -> RelayValues {
        use Ordering::Relaxed;
        RelayValues {
            max_message: self.max_message.load(Relaxed) as u32,
            max_prepared_statements: self.max_prepared_statements.load(Relaxed) as usize,
            query_timeout: duration(self.query_timeout.load(Relaxed)),
            idle_transaction_timeout: duration(self.idle_transaction_timeout.load(Relaxed)),
            client_idle_timeout: duration(self.client_idle_timeout.load(Relaxed)),
            transaction_timeout: duration(self.transaction_timeout.load(Relaxed)),
        }
    }

    fn read_relay(&self) -> RelayValues {
        self.consistent(Self::relay_fields)
    }

    fn read(&self) -> HotValues {
        use Ordering::Relaxed;
        self.consistent(|m| HotValues {
            relay: m.relay_fields(),
            query_wait_notify: duration(m.query_wait_notify.load(Relaxed)),
            cancel_wait_timeout: duration(m.cancel_wait_timeout.load(Relaxed)),
        })
    }

    fn write(&self, hot: &HotValues) {
        use Ordering::{Relaxed, Release};
        let v = &hot.relay;
        let _one = crate::sync::LockExt::locked(&self.writer);
        let seq = self.seq.load(Relaxed);
        self.seq.store(seq.wrapping_add(1), Relaxed);
        fence(Release);
        self.max_message.store(u64::from(v.max_message), Relaxed);
        self.max_prepared_statements
            .store(v.max_prepared_statements as u64, Relaxed);
        self.query_timeout.store(nanos(v.query_timeout), Relaxed);
        self.idle_transaction_timeout
            .store(nanos(v.idle_transaction_timeout), Relaxed);
        self.client_idle_timeout
            .store(nanos(v.client_idle_timeout), Relaxed);
        self.transaction_timeout
            .store(nanos(v.transaction_timeout), Relaxed);
        self.query_wait_notify
            .store(nanos(hot.query_wait_notify), Relaxed);
        self.cancel_wait_timeout
            .store(nanos(hot.cancel_wait_timeout), Relaxed);
        self.seq.store(seq.wrapping_add(2), Release);
    }
}

impl Live {
    /// Starts with `first`.
    pub fn new(first: Generation) -> Live {
        let next = first.number + 1;
        let hot = HotMirror::default();
        hot.write(&first.hot);
        Live {
            current: Arc::new(ArcSwap::from_pointee(first)),
            hot: Arc::new(hot),
            next: Arc::new(AtomicU64::new(next)),
        }
    }

    /// The hot values of the generation in force, all of one generation (no guard,
    /// no reference count).
    pub fn hot(&self) -> HotValues {
        self.hot.read()
    }

    /// What a relay run reads, all of one generation: max_message_size,
    /// max_prepared_statements and the four relay timeouts (the per-request path: only
    /// these fields are copied).
    pub fn relay_values(&self) -> RelayValues {
        self.hot.read_relay()
    }

    /// client_idle_timeout in force (one atomic load: a single value is always whole).
    pub fn client_idle_timeout(&self) -> Option<Duration> {
        duration(self.hot.client_idle_timeout.load(Ordering::Relaxed))
    }

    /// query_wait_notify in force (one atomic load).
    pub fn query_wait_notify(&self) -> Option<Duration> {
        duration(self.hot.query_wait_notify.load(Ordering::Relaxed))
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

    /// Makes `g` the generation in force: one store of the generation, then its hot
    /// values (a reader of [`Live::hot`] sees the old ones or the new ones, whole).
    pub fn publish(&self, g: Arc<Generation>) {
        let hot = g.hot;
        self.current.store(g);
        self.hot.write(&hot);
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
        assert_eq!(live.load().hot.relay.query_timeout, None);
        assert_eq!(live.hot().relay.query_timeout, None);
        live.publish(Arc::new(g));
        let now = live.load();
        assert_eq!(now.number, 2);
        assert_eq!(live.hot(), now.hot);
        assert_eq!(now.hot.relay.query_timeout, Some(Duration::from_secs(7)));
        assert_eq!(now.config.general.max_client_conn, 17);
    }

    #[test]
    fn an_invalid_configuration_builds_nothing() {
        let mut cfg = Config::default();
        cfg.general.max_client_conn = 0;
        assert!(Generation::build(2, cfg).is_err());
    }

    #[test]
    fn readers_of_the_hot_values_never_see_two_generations_mixed() {
        let live = Live::new(Generation::first(Config::default()));
        let a = HotValues {
            relay: RelayValues {
                max_message: 1,
                max_prepared_statements: 1,
                query_timeout: Some(Duration::from_secs(1)),
                idle_transaction_timeout: Some(Duration::from_secs(1)),
                client_idle_timeout: Some(Duration::from_secs(1)),
                transaction_timeout: Some(Duration::from_secs(1)),
            },
            query_wait_notify: Some(Duration::from_secs(1)),
            cancel_wait_timeout: Some(Duration::from_secs(1)),
        };
        let b = HotValues {
            relay: RelayValues {
                max_message: 2,
                max_prepared_statements: 2,
                query_timeout: None,
                idle_transaction_timeout: Some(Duration::from_secs(2)),
                client_idle_timeout: None,
                transaction_timeout: Some(Duration::from_secs(2)),
            },
            query_wait_notify: None,
            cancel_wait_timeout: Some(Duration::from_secs(2)),
        };
        live.hot.write(&a);
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                for i in 0..20_000 {
                    live.hot.write(if i % 2 == 0 { &b } else { &a });
                }
            });
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        let v = live.hot();
                        assert!(v == a || v == b, "mixed values: {v:?}");
                    }
                });
            }
            writer.join().unwrap();
        });
    }
}
