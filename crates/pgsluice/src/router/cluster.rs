//! A replicated database's pools for one server user: one pool per host, the hosts'
//! shared health record, and the policy that picks a host for each unit of work
//! (read/write split, target_session_attrs, load balancing, lag limit).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};

use super::hosts::{HostSet, HostState, HostView};
use crate::classify::{CacheStats, Class, Classifier, ClassifierSettings};
use crate::config::{
    replica_defaults, DatabaseConfig, LoadBalance, PrimaryReads, ReplicaLag, TargetSessionAttrs,
};
use crate::pool::{Pool, PoolKey};

/// What a unit of work may run on, as the classifier sees its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only reads: a replica may run it.
    Read,
    /// Opens a read-only transaction: a replica may run all of it.
    ReadOnlyTransaction,
    /// Anything else: the primary.
    Write,
}

/// How a replicated database spreads work (from its configuration; replaced at reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Reads to replicas, writes to the primary.
    pub split: bool,
    /// How to pick among eligible hosts.
    pub balance: LoadBalance,
    /// Which hosts serve work when reads and writes are not split.
    pub attrs: TargetSessionAttrs,
    /// A replica further behind gets no reads.
    pub max_lag: Option<ReplicaLag>,
    /// After a client's write, its reads go to the primary this long.
    pub read_your_writes: Option<Duration>,
    /// Whether the primary serves reads.
    pub primary_reads: PrimaryReads,
    /// Between health checks.
    pub check_interval: Duration,
    /// How long a health check may take.
    pub check_timeout: Duration,
    /// First ban of a failed host.
    pub ban_time: Duration,
    /// Functions that write, beyond the classifier's built-in list.
    pub write_functions: Vec<String>,
}

impl Policy {
    /// The policy `db` configures.
    pub fn of(db: &DatabaseConfig) -> Policy {
        let d = |v: Option<crate::config::Secs>, default: Duration| v.map_or(default, |s| s.0);
        Policy {
            split: db.read_write_split,
            balance: db.load_balance.unwrap_or_default(),
            attrs: db.target_session_attrs.unwrap_or_default(),
            max_lag: db.max_replica_lag,
            read_your_writes: db.read_your_writes.and_then(|s| s.non_zero()),
            primary_reads: db.primary_reads.unwrap_or_default(),
            check_interval: d(
                db.health_check_interval,
                replica_defaults::HEALTH_CHECK_INTERVAL,
            ),
            check_timeout: d(
                db.health_check_timeout,
                replica_defaults::HEALTH_CHECK_TIMEOUT,
            ),
            ban_time: d(db.ban_time, replica_defaults::BAN_TIME),
            write_functions: db.write_functions.clone(),
        }
    }
}

/// What a unit of work needs of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The primary.
    Write,
    /// A replica within the lag limit (the primary as the policy allows).
    Read,
    /// What target_session_attrs asks (no split, or a whole session).
    Attrs(TargetSessionAttrs),
}

impl Want {
    /// What the client is waiting for, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Want::Write
            | Want::Attrs(TargetSessionAttrs::ReadWrite | TargetSessionAttrs::Primary) => {
                "a primary"
            }
            Want::Read => "a replica or primary for reads",
            Want::Attrs(TargetSessionAttrs::ReadOnly | TargetSessionAttrs::Standby) => "a standby",
            Want::Attrs(TargetSessionAttrs::PreferStandby | TargetSessionAttrs::Any) => {
                "a healthy host"
            }
        }
    }
}

/// One replicated database's pools for one server user.
#[derive(Debug)]
pub struct Cluster {
    key: PoolKey,
    hosts: Arc<HostSet>,
    pools: Vec<Arc<Pool>>,
    policy: ArcSwap<Policy>,
    /// Read/write classification, when the policy splits.
    classifier: ArcSwapOption<Classifier>,
    /// Round-robin position.
    turn: AtomicUsize,
    retired: AtomicBool,
}

impl Cluster {
    /// A cluster of `pools`, one per host of `hosts`, in the same order.
    pub fn new(key: PoolKey, hosts: Arc<HostSet>, pools: Vec<Arc<Pool>>, policy: Policy) -> Self {
        debug_assert_eq!(hosts.len(), pools.len());
        Cluster {
            key,
            hosts,
            pools,
            classifier: ArcSwapOption::from(classifier_for(&policy)),
            policy: ArcSwap::from_pointee(policy),
            turn: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
        }
    }

    /// (database, server user).
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// The hosts' health record.
    pub fn hosts(&self) -> &Arc<HostSet> {
        &self.hosts
    }

    /// The pools, one per host, in configuration order.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// Each host's record with its pool, in configuration order (SHOW HOSTS, metrics).
    pub fn members(&self) -> Vec<(HostState, Arc<Pool>)> {
        self.hosts
            .states()
            .into_iter()
            .zip(self.pools.iter().cloned())
            .collect()
    }

    /// The policy in force.
    pub fn policy(&self) -> arc_swap::Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// Replaces the policy (reload).
    pub fn set_policy(&self, policy: Policy) {
        let old = self.policy.load_full();
        if *old == policy {
            return;
        }
        if (old.split, &old.write_functions) != (policy.split, &policy.write_functions) {
            self.classifier.store(classifier_for(&policy));
        }
        self.policy.store(Arc::new(policy));
    }

    /// What `request` does, for the split (`Write` when the policy does not split);
    /// `statement_text` gives the text of a named prepared statement.
    pub fn classify(
        &self,
        request: &[u8],
        statement_text: &dyn Fn(&[u8]) -> Option<Arc<str>>,
    ) -> Access {
        match &*self.classifier.load() {
            Some(c) => match c.classify_request(request, statement_text) {
                Class::Read => Access::Read,
                Class::ReadOnlyTransaction => Access::ReadOnlyTransaction,
                Class::Write => Access::Write,
            },
            None => Access::Write,
        }
    }

    /// The classifier's cache counters, when the policy splits.
    pub fn classifier_stats(&self) -> Option<CacheStats> {
        self.classifier.load().as_ref().map(|c| c.cache_stats())
    }

    /// Marks the cluster as left over from an older configuration.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        for p in &self.pools {
            p.retire();
        }
    }

    /// Whether [`Cluster::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Clients of all its pools.
    pub fn client_count(&self) -> usize {
        self.pools.iter().map(|p| p.client_count()).sum()
    }

    /// The host for `want` at `now`, or None when no host is eligible.
    pub fn pick(&self, want: Want, now: Instant) -> Option<usize> {
        let view = self.hosts.view();
        let policy = self.policy.load();
        let turn = match policy.balance {
            LoadBalance::RoundRobin => self.turn.fetch_add(1, Ordering::Relaxed),
            LoadBalance::Random => rand::random::<u32>() as usize,
            LoadBalance::LeastBusy | LoadBalance::InOrder => 0,
        };
        choose(&view, want, &policy, now, turn, |i| {
            let s = self.pools[i].status();
            s.total.saturating_sub(s.idle) + s.waiting
        })
    }

    /// The index of `pool` among the cluster's pools.
    pub fn index_of(&self, pool: &Arc<Pool>) -> Option<usize> {
        self.pools.iter().position(|p| Arc::ptr_eq(p, pool))
    }

    /// Records that connecting to host `i` failed: it is banned, and its idle
    /// connections are closed (they went to a host that is gone).
    pub fn report_failure(&self, i: usize, why: String) {
        let ban = self.policy.load().ban_time;
        self.hosts.report_failure(i, Instant::now(), ban, why);
        if let Some(p) = self.pools.get(i) {
            p.reconnect();
        }
    }
}

/// The classifier a policy needs: one when it splits reads from writes.
fn classifier_for(policy: &Policy) -> Option<Arc<Classifier>> {
    policy.split.then(|| {
        Arc::new(Classifier::new(ClassifierSettings {
            cache_capacity: replica_defaults::CLASSIFY_CACHE,
            extra_write_functions: policy.write_functions.clone(),
        }))
    })
}

/// The pool a client logging in now is listed in (and gets its server parameters
/// from): the primary if one is up, else any usable host, else the first.
pub(super) fn home_of(cluster: &Cluster, now: Instant) -> usize {
    let view = cluster.hosts().view();
    view.iter()
        .position(|h| h.usable(now) && h.is_primary())
        .or_else(|| view.iter().position(|h| h.usable(now)))
        .unwrap_or(0)
}

/// Picks a host among `view` for `want`: the eligible ones, then `policy.balance`
/// (`turn` is the round-robin or random number, `busy(i)` host i's checked-out
/// connections).
pub fn choose(
    view: &[HostView],
    want: Want,
    policy: &Policy,
    now: Instant,
    turn: usize,
    busy: impl Fn(usize) -> usize,
) -> Option<usize> {
    let primary = |h: &HostView| h.usable(now) && h.is_primary();
    let standby = |h: &HostView| h.usable(now) && h.is_standby() && h.lag_within(policy.max_lag);
    let pick = |eligible: &dyn Fn(&HostView) -> bool| -> Option<usize> {
        let n = view.iter().filter(|h| eligible(h)).count();
        if n == 0 {
            return None;
        }
        let mut hosts = view
            .iter()
            .enumerate()
            .filter(|(_, h)| eligible(h))
            .map(|(i, _)| i);
        match policy.balance {
            LoadBalance::RoundRobin | LoadBalance::Random => hosts.nth(turn % n),
            LoadBalance::InOrder => hosts.next(),
            LoadBalance::LeastBusy => hosts.min_by_key(|&i| busy(i)),
        }
    };
    match want {
        Want::Write
        | Want::Attrs(TargetSessionAttrs::ReadWrite)
        | Want::Attrs(TargetSessionAttrs::Primary) => pick(&primary),
        Want::Read => match policy.primary_reads {
            PrimaryReads::Always => pick(&|h| standby(h) || primary(h)),
            PrimaryReads::Never => pick(&standby),
            PrimaryReads::Fallback => pick(&standby).or_else(|| pick(&primary)),
        },
        Want::Attrs(TargetSessionAttrs::ReadOnly | TargetSessionAttrs::Standby) => pick(&standby),
        Want::Attrs(TargetSessionAttrs::PreferStandby) => pick(&standby).or_else(|| pick(&primary)),
        Want::Attrs(TargetSessionAttrs::Any) => pick(&|h| primary(h) || standby(h)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostRole;
    use crate::router::hosts::Role;

    fn host(role: Role, lag: u64) -> HostView {
        HostView {
            role,
            configured: HostRole::Auto,
            up: true,
            banned_until: None,
            lag_bytes: Some(lag),
            replay_age: None,
        }
    }

    fn policy() -> Policy {
        Policy::of(&DatabaseConfig::new("a,b"))
    }

    #[test]
    fn writes_go_to_the_primary_and_reads_to_replicas_in_turn() {
        let view = [
            host(Role::Standby, 0),
            host(Role::Primary, 0),
            host(Role::Standby, 0),
        ];
        let p = policy();
        let now = Instant::now();
        for turn in 0..4 {
            assert_eq!(choose(&view, Want::Write, &p, now, turn, |_| 0), Some(1));
        }
        let reads: Vec<_> = (0..4)
            .map(|t| choose(&view, Want::Read, &p, now, t, |_| 0).unwrap())
            .collect();
        assert_eq!(reads, [0, 2, 0, 2]);
    }

    #[test]
    fn reads_fall_back_to_the_primary_only_as_configured() {
        let mut view = [host(Role::Primary, 0), host(Role::Standby, 5000)];
        let mut p = policy();
        p.max_lag = Some(ReplicaLag::Bytes(1000));
        let now = Instant::now();
        assert_eq!(choose(&view, Want::Read, &p, now, 0, |_| 0), Some(0));
        p.primary_reads = PrimaryReads::Never;
        assert_eq!(choose(&view, Want::Read, &p, now, 0, |_| 0), None);
        view[1].lag_bytes = Some(10);
        assert_eq!(choose(&view, Want::Read, &p, now, 0, |_| 0), Some(1));
        p.primary_reads = PrimaryReads::Always;
        let both: Vec<_> = (0..2)
            .map(|t| choose(&view, Want::Read, &p, now, t, |_| 0).unwrap())
            .collect();
        assert_eq!(both, [0, 1]);
    }

    #[test]
    fn banned_down_and_unknown_hosts_get_nothing() {
        let now = Instant::now();
        let mut banned = host(Role::Primary, 0);
        banned.banned_until = Some(now + Duration::from_secs(5));
        let mut down = host(Role::Standby, 0);
        down.up = false;
        let unknown = host(Role::Unknown, 0);
        let view = [banned, down, unknown];
        let p = policy();
        for want in [
            Want::Write,
            Want::Read,
            Want::Attrs(TargetSessionAttrs::Any),
            Want::Attrs(TargetSessionAttrs::PreferStandby),
        ] {
            assert_eq!(choose(&view, want, &p, now, 0, |_| 0), None, "{want:?}");
        }
        // The ban runs out.
        let later = now + Duration::from_secs(5);
        assert_eq!(choose(&view, Want::Write, &p, later, 0, |_| 0), Some(0));
    }

    #[test]
    fn target_session_attrs() {
        let view = [host(Role::Primary, 0), host(Role::Standby, 0)];
        let p = policy();
        let now = Instant::now();
        let one = |a| choose(&view, Want::Attrs(a), &p, now, 0, |_| 0);
        assert_eq!(one(TargetSessionAttrs::ReadWrite), Some(0));
        assert_eq!(one(TargetSessionAttrs::Primary), Some(0));
        assert_eq!(one(TargetSessionAttrs::ReadOnly), Some(1));
        assert_eq!(one(TargetSessionAttrs::Standby), Some(1));
        assert_eq!(one(TargetSessionAttrs::PreferStandby), Some(1));
        let primary_only = [host(Role::Primary, 0)];
        assert_eq!(
            choose(
                &primary_only,
                Want::Attrs(TargetSessionAttrs::PreferStandby),
                &p,
                now,
                0,
                |_| 0
            ),
            Some(0)
        );
        let any: Vec<_> = (0..2)
            .map(|t| {
                choose(
                    &view,
                    Want::Attrs(TargetSessionAttrs::Any),
                    &p,
                    now,
                    t,
                    |_| 0,
                )
            })
            .collect();
        assert_eq!(any, [Some(0), Some(1)]);
    }

    #[test]
    fn least_busy_and_in_order() {
        let view = [
            host(Role::Standby, 0),
            host(Role::Standby, 0),
            host(Role::Standby, 0),
        ];
        let mut p = policy();
        let now = Instant::now();
        p.balance = LoadBalance::LeastBusy;
        let busy = [3, 1, 2];
        assert_eq!(choose(&view, Want::Read, &p, now, 7, |i| busy[i]), Some(1));
        p.balance = LoadBalance::InOrder;
        assert_eq!(choose(&view, Want::Read, &p, now, 7, |i| busy[i]), Some(0));
    }
}
