//! A client's route: which pool or pools serve its work. A client gets one at login,
//! for its (database, user), and asks it for a [`Target`] before each checkout.
//!
//! A plain database has one pool. A replicated one has a [`Cluster`]: a pool per host
//! and a policy that sends each unit of work to the primary or a replica. Shards will
//! be one more [`Backends`] variant; the client's checkout loop and the pool stay as
//! they are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::cluster::Access;
use super::cluster::{Cluster, Want};
use super::shards::ShardSet;
use crate::config::{PoolMode, TargetSessionAttrs};
use crate::pool::{Pool, PoolKey};
use crate::server::Extension;

/// Which pool(s) serve a client, fixed at login.
#[derive(Debug, Clone)]
pub struct Route {
    /// Behind one pointer: the route sits in every idle session, and two variants
    /// inline would take a word more.
    backends: Arc<Backends>,
}

/// The pools behind a route.
#[derive(Debug)]
enum Backends {
    /// One server: every request goes to its pool.
    Single(Arc<Pool>),
    /// A replicated database: a pool per host, and the client's own routing state.
    Cluster(ClusterRoute),
    /// A sharded database: a pool per shard, and the client's own sharding state.
    Sharded(ShardedRoute),
}

/// A client's route over a sharded database.
#[derive(Debug)]
struct ShardedRoute {
    set: Arc<ShardSet>,
    /// The client's state in the sharded session driver (opaque here: the client
    /// layer owns its type), kept between requests.
    client: std::sync::Mutex<Extension>,
}

/// A client's route over a replicated database.
#[derive(Debug)]
struct ClusterRoute {
    cluster: Arc<Cluster>,
    /// The pool the client is listed in and whose server parameters it got at login.
    home: usize,
    /// When the client's last write ended (nanoseconds after `since`; 0 = never), for
    /// read-your-writes.
    wrote_at: AtomicU64,
    since: Instant,
}

/// What the client knows of the work it is about to start, for the routing decision.
#[derive(Debug, Clone, Copy)]
pub struct Work<'a> {
    /// The bytes of the request read so far (at least its first message's start).
    pub request: &'a [u8],
    /// What the request does ([`Route::classify`]; `Write` when not classified).
    pub access: Access,
    /// The time of the decision.
    pub now: Instant,
}

impl<'a> Work<'a> {
    /// Work of `request` that was not classified (it counts as a write).
    pub fn unclassified(request: &'a [u8]) -> Work<'a> {
        Work {
            request,
            access: Access::Write,
            now: Instant::now(),
        }
    }
}

/// Where one unit of work (a transaction in transaction mode, a request in statement
/// mode, the whole session in session mode) goes.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Target<'a> {
    /// One pool.
    One(&'a Arc<Pool>),
    /// No host is eligible now (failover, all replicas lagging...): wait for a change
    /// of the hosts' state ([`Route::host_changes`]) and ask again.
    Unavailable(&'static str),
}

impl Route {
    /// A route to one pool.
    pub(super) fn single(pool: Arc<Pool>) -> Route {
        Route {
            backends: Arc::new(Backends::Single(pool)),
        }
    }

    /// A route over a replicated database's hosts, listed in host `home`'s pool.
    pub(super) fn cluster(cluster: Arc<Cluster>, home: usize) -> Route {
        Route {
            backends: Arc::new(Backends::Cluster(ClusterRoute {
                cluster,
                home,
                wrote_at: AtomicU64::new(0),
                since: Instant::now(),
            })),
        }
    }

    /// A route over a sharded database's shards.
    pub(super) fn sharded(set: Arc<ShardSet>) -> Route {
        Route {
            backends: Arc::new(Backends::Sharded(ShardedRoute {
                set,
                client: std::sync::Mutex::new(Extension::default()),
            })),
        }
    }

    /// A sharded database's shards and the client's sharding state; `None` for
    /// other databases.
    pub fn shards(&self) -> Option<(&Arc<ShardSet>, &std::sync::Mutex<Extension>)> {
        match &*self.backends {
            Backends::Sharded(s) => Some((&s.set, &s.client)),
            _ => None,
        }
    }

    /// The route with a home pool on a host that is up: a client logging in right
    /// after its database's cluster was created waits (up to the health check
    /// timeout) for the first host to answer its check, and is then listed in (and
    /// gets its server parameters from) a live host rather than the first one
    /// configured.
    pub async fn settled(self) -> Route {
        let Backends::Cluster(c) = &*self.backends else {
            return self;
        };
        let cluster = c.cluster.clone();
        let home = c.home;
        let mut changes = cluster.hosts().subscribe();
        let deadline = tokio::time::Instant::now() + cluster.policy().check_timeout;
        loop {
            let now = Instant::now();
            let view = cluster.hosts().view();
            if view.get(home).is_some_and(|h| h.usable(now)) {
                return self;
            }
            if view.iter().any(|h| h.usable(now)) {
                drop(view);
                let home = super::cluster::home_of(&cluster, now);
                return Route::cluster(cluster, home);
            }
            drop(view);
            if !matches!(
                tokio::time::timeout_at(deadline, changes.changed()).await,
                Ok(Ok(()))
            ) {
                return self;
            }
        }
    }

    /// The pool the client belongs to: where it is listed (SHOW CLIENTS), whose
    /// server parameters it got at login, whose pool mode applies to it.
    pub fn home(&self) -> &Arc<Pool> {
        match &*self.backends {
            Backends::Single(p) => p,
            Backends::Cluster(c) => &c.cluster.pools()[c.home],
            // The first shard: where unsharded tables live.
            Backends::Sharded(s) => &s.set.pools()[0],
        }
    }

    /// Every pool the route may use (a passed-through credential goes to all).
    pub fn pools(&self) -> &[Arc<Pool>] {
        match &*self.backends {
            Backends::Single(p) => std::slice::from_ref(p),
            Backends::Cluster(c) => c.cluster.pools(),
            Backends::Sharded(s) => s.set.pools(),
        }
    }

    /// The home pool's key.
    pub fn key(&self) -> &PoolKey {
        self.home().key()
    }

    /// The pool mode the client's work runs in.
    pub fn mode(&self) -> PoolMode {
        self.home().mode()
    }

    /// Whether the route sends reads and writes to different hosts, so that each
    /// request must be classified first ([`Access`]). False for whole sessions.
    pub fn splits(&self) -> bool {
        match &*self.backends {
            Backends::Single(_) | Backends::Sharded(_) => false,
            Backends::Cluster(c) => c.cluster.policy().split && self.mode().shares_servers(),
        }
    }

    /// What `request` does, for a route that [`splits`](Route::splits);
    /// `statement_text` gives the text of a named prepared statement.
    pub fn classify(
        &self,
        request: &[u8],
        statement_text: &dyn Fn(&[u8]) -> Option<Arc<str>>,
    ) -> Access {
        match &*self.backends {
            Backends::Single(_) | Backends::Sharded(_) => Access::Write,
            Backends::Cluster(c) => c.cluster.classify(request, statement_text),
        }
    }

    /// Where `work` goes.
    pub fn target(&self, work: Work<'_>) -> Target<'_> {
        match &*self.backends {
            Backends::Single(p) => Target::One(p),
            Backends::Sharded(s) => Target::One(&s.set.pools()[0]),
            Backends::Cluster(c) => {
                let want = self.want(c, &work);
                match c.cluster.pick(want, work.now) {
                    Some(i) => Target::One(&c.cluster.pools()[i]),
                    None => Target::Unavailable(want.describe()),
                }
            }
        }
    }

    fn want(&self, c: &ClusterRoute, work: &Work<'_>) -> Want {
        let policy = c.cluster.policy();
        if !policy.split {
            return Want::Attrs(policy.attrs);
        }
        if !self.mode().shares_servers() {
            // A whole session may write at any point.
            return Want::Attrs(TargetSessionAttrs::ReadWrite);
        }
        let recent_write = match (policy.read_your_writes, c.wrote_at.load(Ordering::Relaxed)) {
            (Some(window), at) if at != 0 => {
                let at = c.since + Duration::from_nanos(at);
                work.now.saturating_duration_since(at) < window
            }
            _ => false,
        };
        match work.access {
            Access::Read | Access::ReadOnlyTransaction if !recent_write => Want::Read,
            _ => Want::Write,
        }
    }

    /// Records that a unit of work of `access` ended: a write starts the client's
    /// read-your-writes window.
    pub fn work_done(&self, access: Access) {
        if let (Backends::Cluster(c), Access::Write) = (&*self.backends, access) {
            if c.cluster.policy().read_your_writes.is_some() {
                let at = c.since.elapsed().as_nanos().clamp(1, u64::MAX as u128) as u64;
                c.wrote_at.store(at, Ordering::Relaxed);
            }
        }
    }

    /// A receiver that sees every change of the hosts' state (None for one pool).
    pub fn host_changes(&self) -> Option<watch::Receiver<u64>> {
        match &*self.backends {
            Backends::Single(_) | Backends::Sharded(_) => None,
            Backends::Cluster(c) => Some(c.cluster.hosts().subscribe()),
        }
    }

    /// Records that connecting through `pool` failed, so that the host is left out
    /// until it is healthy again. Returns whether another host may be tried.
    pub fn report_failure(&self, pool: &Arc<Pool>, why: String) -> bool {
        match &*self.backends {
            Backends::Single(_) | Backends::Sharded(_) => false,
            Backends::Cluster(c) => match c.cluster.index_of(pool) {
                Some(i) => {
                    c.cluster.report_failure(i, why);
                    true
                }
                None => false,
            },
        }
    }

    /// How long a client may wait for an eligible host.
    pub fn wait_limit(&self) -> Duration {
        self.home()
            .settings()
            .wait_timeout
            .unwrap_or(Duration::from_secs(120))
    }
}
