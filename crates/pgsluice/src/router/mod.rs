//! The router: between clients and pools. It owns the pools (one per database and
//! server user, created on first use), the connection-limit groups they share and the
//! per-database switches (PAUSE, DISABLE...), and answers a client's login with a
//! [`Route`]: which pool or pools serve it. Every checkout a client makes starts from
//! its route's [`Target`].
//!
//! Reloads reach the pools through [`Router::apply`], with the pool settings derived
//! from the new configuration generation ([`Router::plan`], run before it is published).

mod cluster;
mod flags;
mod health;
mod hosts;
mod route;
mod shards;
mod spec;
#[cfg(test)]
pub(crate) mod test_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pgsluice_protocol::SqlState;

use crate::config::Config;
use crate::error::ClientNotice;
use crate::generation::{Generation, Live};
use crate::pool::{ClientSlot, GroupKind, GroupLimit, Groups, IdGen, Pool, PoolKey, PoolSettings};
use crate::server::ServerTarget;
use crate::shutdown::{ShutdownWatch, TaskTracker};
use crate::sync::LockExt;

pub use cluster::{choose, Access, Cluster, Policy, Want};
pub use flags::DbFlags;
pub use hosts::{Availability, HostSet, HostState, HostView, Observation, Role};
pub use route::{Route, Target, Work};
pub use shards::{sharding_of, CatalogKey, ShardSet};
pub use spec::{pool_settings, pool_spec};

/// The pools of the process and how clients reach them.
pub struct Router {
    live: Live,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    /// Replicated databases' pools, a cluster per (database, server user).
    clusters: Mutex<HashMap<PoolKey, Arc<Cluster>>>,
    /// Pools of databases or users removed by a reload, closed once their clients left.
    retired: Mutex<Vec<Arc<Pool>>>,
    /// Clusters removed or rebuilt by a reload, closed once their clients left.
    retired_clusters: Mutex<Vec<Arc<Cluster>>>,
    /// Sharded databases' pools, a set per (database, server user).
    shard_sets: Mutex<HashMap<PoolKey, Arc<ShardSet>>>,
    /// Shard sets removed or rebuilt by a reload, closed once their clients left.
    retired_shard_sets: Mutex<Vec<Arc<ShardSet>>>,
    /// max_db_connections / max_db_client_connections groups, by client-side database.
    db_groups: Mutex<HashMap<String, Arc<GroupLimit>>>,
    /// max_user_connections groups, by server-side user.
    user_groups: Mutex<HashMap<String, Arc<GroupLimit>>>,
    flags: Mutex<DbFlags>,
    ids: Arc<IdGen>,
    shutdown: ShutdownWatch,
    /// Pools' own tasks (upkeep, connection resets).
    background: TaskTracker,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("pools", &self.pools.locked().len())
            .finish_non_exhaustive()
    }
}

/// The pool part of a configuration generation: for each existing pool, its new
/// target and settings, or `None` when the configuration no longer has it.
#[derive(Debug)]
pub struct PoolPlan {
    pools: Vec<(PoolKey, Option<(ServerTarget, PoolSettings)>)>,
}

impl Router {
    /// A router without pools yet; pools read `live` and stop their upkeep on
    /// `shutdown`; their tasks are counted in `background`.
    pub fn new(
        live: Live,
        ids: Arc<IdGen>,
        shutdown: ShutdownWatch,
        background: TaskTracker,
    ) -> Router {
        Router {
            live,
            pools: Mutex::new(HashMap::new()),
            clusters: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            retired_clusters: Mutex::new(Vec::new()),
            shard_sets: Mutex::new(HashMap::new()),
            retired_shard_sets: Mutex::new(Vec::new()),
            db_groups: Mutex::new(HashMap::new()),
            user_groups: Mutex::new(HashMap::new()),
            flags: Mutex::new(DbFlags::default()),
            ids,
            shutdown,
            background,
        }
    }

    /// The route of a client logging in as `user` to `database`: its pool, created
    /// on first use.
    pub fn route(&self, database: &str, user: &str) -> Result<Route, ClientNotice> {
        let generation = self.live.current();
        let cfg = &generation.config;
        let db = cfg.database(database).ok_or_else(|| {
            ClientNotice::fatal(
                SqlState::INVALID_CATALOG_NAME,
                format!("no such database: {database}"),
            )
        })?;
        if self.flags.locked().disabled.contains(database) {
            return Err(ClientNotice::fatal(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("database \"{database}\" does not allow connections (DISABLE)"),
            ));
        }
        let server_user = db.user.clone().unwrap_or_else(|| user.to_owned());
        let key = PoolKey {
            database: database.into(),
            user: server_user.as_str().into(),
        };
        if db.is_sharded() {
            let set = self.shard_set_for(&generation, &db, key, &server_user)?;
            return Ok(Route::sharded(set));
        }
        if db.is_replicated() {
            let cluster = self.cluster_for(&generation, &db, key, &server_user);
            let home = cluster::home_of(&cluster, std::time::Instant::now());
            return Ok(Route::cluster(cluster, home));
        }
        if let Some(p) = self.lock_pools().get(&key) {
            return Ok(Route::single(p.clone()));
        }
        let target = spec::server_target(
            cfg,
            &db,
            generation.tls.servers.clone(),
            database,
            &server_user,
        );
        let settings = pool_settings(cfg, database, &server_user);
        let groups = Groups {
            db: self.db_group(cfg, database),
            user: self.user_group(cfg, &server_user),
        };
        let mut pools = self.lock_pools();
        let pool = pools
            .entry(key.clone())
            .or_insert_with(|| {
                let p = Pool::new(
                    key,
                    target,
                    settings,
                    self.ids.clone(),
                    groups,
                    self.background.clone(),
                );
                if self.flags.locked().is_paused(database) {
                    p.pause();
                }
                p.start_maintenance(self.shutdown.clone());
                p
            })
            .clone();
        Ok(Route::single(pool))
    }

    /// The cluster of a replicated database for `server_user`, created (with its
    /// health checkers) on first use.
    fn cluster_for(
        &self,
        generation: &Generation,
        db: &crate::config::DatabaseConfig,
        key: PoolKey,
        server_user: &str,
    ) -> Arc<Cluster> {
        if let Some(c) = self.clusters.locked().get(&key) {
            return c.clone();
        }
        let cfg = &generation.config;
        let database = key.database.to_string();
        let settings = pool_settings(cfg, &database, server_user);
        let groups = Groups {
            db: self.db_group(cfg, &database),
            user: self.user_group(cfg, server_user),
        };
        let tls = generation.tls.servers.clone();
        let hosts = db.host_list();
        let mut clusters = self.clusters.locked();
        if let Some(c) = clusters.get(&key) {
            return c.clone();
        }
        let paused = self.flags.locked().is_paused(&database);
        let pools = hosts
            .iter()
            .map(|h| {
                let target = spec::host_target(cfg, db, tls.clone(), &database, server_user, h);
                let p = Pool::new(
                    key.clone(),
                    target,
                    settings.clone(),
                    self.ids.clone(),
                    groups.clone(),
                    self.background.clone(),
                );
                if paused {
                    p.pause();
                }
                p.start_maintenance(self.shutdown.clone());
                p
            })
            .collect();
        let cluster = Arc::new(Cluster::new(
            key.clone(),
            Arc::new(HostSet::new(hosts)),
            pools,
            Policy::of(db),
        ));
        health::start(
            &cluster,
            self.ids.clone(),
            self.shutdown.clone(),
            &self.background,
        );
        tracing::info!(pool = %key, hosts = cluster.pools().len(), "replicated database: checking its hosts");
        clusters.insert(key, cluster.clone());
        cluster
    }

    /// Every replicated database's cluster (retired ones included), sorted by key.
    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        let mut v: Vec<_> = self.clusters.locked().values().cloned().collect();
        v.extend(self.retired_clusters.locked().iter().cloned());
        v.sort_by(|a, b| a.key().cmp(b.key()));
        v
    }

    fn lock_pools(&self) -> MutexGuard<'_, HashMap<PoolKey, Arc<Pool>>> {
        self.pools.locked()
    }

    /// Every pool that exists now (retired ones included), sorted by key.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<_> = self.lock_pools().values().cloned().collect();
        v.extend(self.retired.locked().iter().cloned());
        for c in self.clusters() {
            v.extend(c.pools().iter().cloned());
        }
        for s in self.shard_sets() {
            v.extend(s.pools().iter().cloned());
        }
        v.sort_by(|a, b| a.key().cmp(b.key()));
        v
    }

    /// Reads or changes the database switches. `f` also gets the current pools, and
    /// runs with pool creation blocked, so a pool created concurrently sees the change.
    pub fn flags<R>(&self, f: impl FnOnce(&mut DbFlags, &[Arc<Pool>]) -> R) -> R {
        let pools = self.lock_pools();
        let clusters = self.clusters.locked();
        let mut all: Vec<Arc<Pool>> = pools.values().cloned().collect();
        all.extend(self.retired.locked().iter().cloned());
        for c in clusters
            .values()
            .chain(self.retired_clusters.locked().iter())
        {
            all.extend(c.pools().iter().cloned());
        }
        let sets = self.shard_sets.locked();
        for s in sets.values().chain(self.retired_shard_sets.locked().iter()) {
            all.extend(s.pools().iter().cloned());
        }
        let mut c = self.flags.locked();
        f(&mut c, &all)
    }

    /// A copy of the database switches.
    pub fn db_flags(&self) -> DbFlags {
        self.flags.locked().clone()
    }

    /// The group of client-side database `database`, created on first use.
    fn db_group(&self, cfg: &Config, database: &str) -> Arc<GroupLimit> {
        self.db_groups
            .locked()
            .entry(database.to_owned())
            .or_insert_with(|| {
                GroupLimit::new(
                    GroupKind::Database,
                    database,
                    cfg.max_db_connections(database),
                )
            })
            .clone()
    }

    /// The group of server-side user `user`, created on first use.
    fn user_group(&self, cfg: &Config, user: &str) -> Arc<GroupLimit> {
        self.user_groups
            .locked()
            .entry(user.to_owned())
            .or_insert_with(|| {
                GroupLimit::new(GroupKind::User, user, cfg.max_user_connections(user))
            })
            .clone()
    }

    /// The group of database `database`, if one of its pools was ever used.
    pub fn database_group(&self, database: &str) -> Option<Arc<GroupLimit>> {
        self.db_groups.locked().get(database).cloned()
    }

    /// The group of server user `user`, if one of its pools was ever used.
    pub fn user_group_of(&self, user: &str) -> Option<Arc<GroupLimit>> {
        self.user_groups.locked().get(user).cloned()
    }

    /// A logged-in client's place under max_db_client_connections of `database`; the
    /// FATAL 53300 PgBouncer sends when it is full.
    pub fn admit_db_client(&self, database: &str) -> Result<ClientSlot, ClientNotice> {
        let generation = self.live.load();
        let cfg = &generation.config;
        let max = cfg.max_db_client_connections(database);
        self.db_group(cfg, database)
            .try_add_client(max)
            .ok_or_else(|| {
                ClientNotice::fatal(
                    SqlState::TOO_MANY_CONNECTIONS,
                    "no more connections allowed (max_db_client_connections)",
                )
            })
    }

    /// A logged-in client's place under max_user_client_connections of `user` (the
    /// name it logged in as, whatever user its pool's connections use), counted over
    /// every database; the FATAL 53300 when it is full.
    pub fn admit_user_client(&self, user: &str) -> Result<ClientSlot, ClientNotice> {
        let generation = self.live.load();
        let cfg = &generation.config;
        let max = cfg.max_user_client_connections(user);
        self.user_group(cfg, user)
            .try_add_client(max)
            .ok_or_else(|| {
                ClientNotice::fatal(
                    SqlState::TOO_MANY_CONNECTIONS,
                    "no more connections allowed (max_user_client_connections)",
                )
            })
    }

    /// What `next` means for the pools that exist now; pure, so that a reload
    /// computes it before publishing `next`.
    pub fn plan(&self, next: &Generation) -> PoolPlan {
        let tls = next.tls.servers.clone();
        let keys: Vec<PoolKey> = self.lock_pools().keys().cloned().collect();
        PoolPlan {
            pools: keys
                .into_iter()
                .map(|k| {
                    let spec = pool_spec(&next.config, tls.clone(), &k.database, &k.user);
                    (k, spec)
                })
                .collect(),
        }
    }

    /// Brings the pools in line with `next` (already published), using `plan` made
    /// from it: new targets and settings, retired pools, group caps, warm pools.
    pub fn apply(&self, next: &Generation, plan: PoolPlan) {
        let cfg = &next.config;
        for (name, g) in self.db_groups.locked().clone() {
            g.set_max(cfg.max_db_connections(&name));
        }
        for (name, g) in self.user_groups.locked().clone() {
            g.set_max(cfg.max_user_connections(&name));
        }
        let tls = next.tls.servers.clone();
        let mut planned: HashMap<PoolKey, Option<(ServerTarget, PoolSettings)>> =
            plan.pools.into_iter().collect();
        let mut gone = Vec::new();
        {
            let mut pools = self.lock_pools();
            pools.retain(|key, pool| {
                // A pool created after the plan was made was created from `next`
                // already, or from the one before: derive it now.
                let spec = planned
                    .remove(key)
                    .unwrap_or_else(|| pool_spec(cfg, tls.clone(), &key.database, &key.user))
                    // A database that now has several hosts gets a cluster instead.
                    .filter(|_| {
                        !cfg.database(&key.database)
                            .is_some_and(|d| d.is_replicated() || d.is_sharded())
                    });
                match spec {
                    Some((target, settings)) => {
                        pool.set_target(target);
                        pool.set_settings(settings);
                        true
                    }
                    None => {
                        gone.push(pool.clone());
                        false
                    }
                }
            });
        }
        for p in &gone {
            tracing::info!(pool = %p.key(), clients = p.client_count(), "pool retired by reload; it closes when its clients leave");
            p.retire();
        }
        self.retired.locked().extend(gone);
        self.apply_clusters(next);
        self.apply_shard_sets(next);
        self.warm_pools();
    }

    /// Brings the clusters in line with `next`: same hosts, new policy, targets and
    /// settings in place; other hosts, or a database no longer replicated (or gone),
    /// retire the cluster (its clients finish on it, new ones get a new one).
    fn apply_clusters(&self, next: &Generation) {
        let cfg = &next.config;
        let tls = next.tls.servers.clone();
        let mut gone = Vec::new();
        self.clusters.locked().retain(|key, cluster| {
            let keep =
                pool_spec(cfg, tls.clone(), &key.database, &key.user).and_then(|(_, settings)| {
                    let db = cfg.database(&key.database)?;
                    let hosts = db.host_list();
                    let same = db.is_replicated()
                        && hosts.len() == cluster.pools().len()
                        && hosts
                            .iter()
                            .enumerate()
                            .all(|(i, h)| cluster.hosts().config(i) == *h);
                    same.then_some((db, hosts, settings))
                });
            match keep {
                Some((db, hosts, settings)) => {
                    cluster.set_policy(Policy::of(&db));
                    for (pool, h) in cluster.pools().iter().zip(&hosts) {
                        pool.set_target(spec::host_target(
                            cfg,
                            &db,
                            tls.clone(),
                            &key.database,
                            &key.user,
                            h,
                        ));
                        pool.set_settings(settings.clone());
                    }
                    true
                }
                None => {
                    gone.push(cluster.clone());
                    false
                }
            }
        });
        for c in &gone {
            tracing::info!(pool = %c.key(), clients = c.client_count(), "replicated pools retired by reload; they close when their clients leave");
            c.retire();
        }
        self.retired_clusters.locked().extend(gone);
    }

    /// Opens the pools whose min_pool_size asks for warm connections.
    pub fn warm_pools(&self) {
        let cfg = self.live.config();
        for (name, db) in cfg.databases.iter().filter(|(n, _)| n.as_str() != "*") {
            if cfg.min_pool_size(name) == 0 {
                continue;
            }
            match &db.user {
                Some(user) => {
                    let _ = self.route(name, user);
                }
                None => {
                    for user in cfg.users.keys() {
                        let _ = self.route(name, user);
                    }
                }
            }
        }
    }

    /// Closes every pool's idle connections.
    pub fn close_pools(&self) {
        for p in self.pools() {
            p.close();
        }
    }

    /// Whether no pool has a client.
    pub fn no_clients(&self) -> bool {
        self.pools().iter().all(|p| p.client_count() == 0)
    }

    /// One round of upkeep: closes retired pools whose clients left.
    pub fn close_retired(&self) {
        let done: Vec<Arc<Pool>> = {
            let mut retired = self.retired.locked();
            let (done, keep) = retired
                .drain(..)
                .partition(|p: &Arc<Pool>| p.client_count() == 0);
            *retired = keep;
            done
        };
        for p in done {
            tracing::info!(pool = %p.key(), "closing the pool of a removed database or user");
            p.close();
        }
        let done: Vec<Arc<Cluster>> = {
            let mut retired = self.retired_clusters.locked();
            let (done, keep) = retired
                .drain(..)
                .partition(|c: &Arc<Cluster>| c.client_count() == 0);
            *retired = keep;
            done
        };
        for c in done {
            tracing::info!(pool = %c.key(), "closing the replicated pools of a changed database");
            for p in c.pools() {
                p.close();
            }
        }
        self.close_retired_shard_sets();
    }

    /// Closes a stats period of every pool (SHOW STATS averages).
    pub fn advance_stats(&self, period: Duration) {
        for p in self.pools() {
            p.stats.advance_window(period);
        }
    }

    /// The stats window of every pool together (the `log_stats` line).
    pub fn stats_window(&self) -> crate::stats::Window {
        self.pools()
            .iter()
            .fold(crate::stats::Window::default(), |w, p| {
                w.combine(&p.stats.window())
            })
    }

    /// The tracker of the pools' own tasks.
    pub fn background(&self) -> &TaskTracker {
        &self.background
    }
}

#[cfg(test)]
mod tests;
