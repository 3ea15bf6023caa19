//! A sharded database's pools: one pool per shard for each server user, the
//! statement planner they share, what the first shard's catalog said about the
//! sharded tables, and the counters of SHOW SHARDS and the metrics.
//!
//! The pools of a sharded database all have the database's own key (as a replicated
//! database's host pools do): SHOW POOLS shows one row per (database, user) with the
//! shards' counts summed; SHOW SHARDS and SHOW SERVERS tell the shards apart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::DatabaseConfig;
use crate::pool::{Pool, PoolKey};
use crate::shard::plan::{Planner, ShardedTable, Sharding};
use crate::shard::KeyType;
use crate::sync::LockExt;

/// How many plans each sharded database's planner remembers.
const PLAN_CACHE: usize = 1024;

/// The pools and planner of one sharded database for one server user.
#[derive(Debug)]
pub struct ShardSet {
    key: PoolKey,
    pools: Vec<Arc<Pool>>,
    /// The configured tables (types from the configuration; positions unknown).
    configured: Sharding,
    planner: Mutex<Arc<Planner>>,
    /// The catalog must be read (again) before the next plan: at first, and after a
    /// statement that ran on every shard (DDL may have created or changed a table).
    catalog_stale: AtomicBool,
    /// Serialises catalog lookups (one client reads, the others wait for its result).
    pub lookup: tokio::sync::Mutex<()>,
    text_bytes_order: AtomicBool,
    two_phase_commit: bool,
    queries: Vec<AtomicU64>,
    fanout: AtomicU64,
    refused: AtomicU64,
    retired: AtomicBool,
}

/// A sharded table's key as the first shard's catalog has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CatalogKey {
    /// The key column's type (None: unknown or not a supported key type).
    pub key_type: Option<KeyType>,
    /// The key column's 0-based position among the table's columns.
    pub key_position: Option<usize>,
}

/// The sharding of a database entry as its configuration gives it.
pub fn sharding_of(db: &DatabaseConfig) -> Sharding {
    let tables = db
        .sharded_tables
        .iter()
        .map(|t| {
            let (schema, name) = match t.table.split_once('.') {
                Some((s, n)) => (Some(fold(s)), fold(n)),
                None => (None, fold(&t.table)),
            };
            ShardedTable {
                schema,
                name,
                column: fold(&t.column),
                key_type: t.key_type,
                key_position: None,
            }
        })
        .collect();
    Sharding {
        shards: db.shards.as_ref().map_or(0, Vec::len),
        tables,
    }
}

/// A name as PostgreSQL folds it: quoted names as written, others lower-cased.
fn fold(name: &str) -> String {
    let name = name.trim();
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => name.to_lowercase(),
    }
}

impl ShardSet {
    /// The set of `pools` (one per shard, in shard order) of database entry `db`.
    pub fn new(key: PoolKey, pools: Vec<Arc<Pool>>, db: &DatabaseConfig) -> ShardSet {
        let configured = sharding_of(db);
        let planner = Planner::new(configured.clone(), PLAN_CACHE);
        ShardSet {
            key,
            queries: pools.iter().map(|_| AtomicU64::new(0)).collect(),
            pools,
            configured,
            planner: Mutex::new(Arc::new(planner)),
            catalog_stale: AtomicBool::new(true),
            lookup: tokio::sync::Mutex::new(()),
            text_bytes_order: AtomicBool::new(false),
            two_phase_commit: db.two_phase_commit,
            fanout: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        }
    }

    /// The (database, server user) key the shards' pools share.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// The shards' pools, in shard order.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// The planner in force.
    pub fn planner(&self) -> Arc<Planner> {
        self.planner.locked().clone()
    }

    /// The configured sharding (key types only where the configuration names them).
    pub fn configured(&self) -> &Sharding {
        &self.configured
    }

    /// Whether the catalog should be read before the next plan.
    pub fn catalog_stale(&self) -> bool {
        self.catalog_stale.load(Ordering::Acquire)
    }

    /// Asks for a catalog lookup before the next plan (after DDL on every shard).
    pub fn mark_catalog_stale(&self) {
        self.catalog_stale.store(true, Ordering::Release);
    }

    /// What the first shard's catalog said: the key of each configured table (in
    /// order), and whether text orders as bytes. Rebuilds the planner; a type from
    /// the configuration wins over the catalog's.
    pub fn set_catalog(&self, keys: &[CatalogKey], text_bytes_order: bool) {
        let mut sharding = self.configured.clone();
        for (t, k) in sharding.tables.iter_mut().zip(keys) {
            t.key_type = t.key_type.or(k.key_type);
            t.key_position = k.key_position;
        }
        self.text_bytes_order
            .store(text_bytes_order, Ordering::Relaxed);
        *self.planner.locked() = Arc::new(Planner::new(sharding, PLAN_CACHE));
        self.catalog_stale.store(false, Ordering::Release);
    }

    /// Whether the first shard's database orders text as bytes (collation C/POSIX).
    pub fn text_bytes_order(&self) -> bool {
        self.text_bytes_order.load(Ordering::Relaxed)
    }

    /// Whether the configuration enables two-phase commit (not built: transactions
    /// over several shards are refused either way).
    pub fn two_phase_commit(&self) -> bool {
        self.two_phase_commit
    }

    /// Counts a request that ran on shard `shard` alone.
    pub fn count_single(&self, shard: usize) {
        if let Some(q) = self.queries.get(shard) {
            q.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request that ran on several shards.
    pub fn count_fanout(&self) {
        self.fanout.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused request.
    pub fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests that ran on shard `shard` alone so far.
    pub fn queries(&self, shard: usize) -> u64 {
        self.queries
            .get(shard)
            .map_or(0, |q| q.load(Ordering::Relaxed))
    }

    /// Requests that ran on several shards so far.
    pub fn fanout_queries(&self) -> u64 {
        self.fanout.load(Ordering::Relaxed)
    }

    /// Requests refused so far.
    pub fn refused_queries(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Retires every shard's pool (a reload removed or changed the database).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        for p in &self.pools {
            p.retire();
        }
    }

    /// Whether [`ShardSet::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Clients using the set (they are listed in the first shard's pool).
    pub fn client_count(&self) -> usize {
        self.pools.iter().map(|p| p.client_count()).sum()
    }
}

impl super::Router {
    /// The shard set of sharded database `db` for `server_user`, created on first use.
    pub(super) fn shard_set_for(
        &self,
        generation: &crate::generation::Generation,
        db: &DatabaseConfig,
        key: PoolKey,
        server_user: &str,
    ) -> Result<Arc<ShardSet>, crate::error::ClientNotice> {
        if let Some(s) = self.shard_sets.locked().get(&key) {
            return Ok(s.clone());
        }
        let shards = db.shard_databases();
        if shards.iter().any(|s| s.is_replicated()) {
            return Err(crate::error::ClientNotice::fatal(
                pgsluice_protocol::SqlState::FEATURE_NOT_SUPPORTED,
                format!(
                    "database \"{}\": shards with several hosts are not supported yet",
                    key.database
                ),
            ));
        }
        let cfg = &generation.config;
        let database = key.database.to_string();
        let settings = super::pool_settings(cfg, &database, server_user);
        let groups = crate::pool::Groups {
            db: self.db_group(cfg, &database),
            user: self.user_group(cfg, server_user),
        };
        let tls = generation.tls.servers.clone();
        let mut sets = self.shard_sets.locked();
        if let Some(s) = sets.get(&key) {
            return Ok(s.clone());
        }
        let paused = self.flags.locked().is_paused(&database);
        let pools = shards
            .iter()
            .map(|shard| {
                let target =
                    super::spec::server_target(cfg, shard, tls.clone(), &database, server_user);
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
        let set = Arc::new(ShardSet::new(key.clone(), pools, db));
        tracing::info!(pool = %key, shards = set.pools().len(), "sharded database: pools created");
        sets.insert(key, set.clone());
        Ok(set)
    }

    /// Every sharded database's shard set (retired ones included), sorted by key.
    pub fn shard_sets(&self) -> Vec<Arc<ShardSet>> {
        let mut v: Vec<_> = self.shard_sets.locked().values().cloned().collect();
        v.extend(self.retired_shard_sets.locked().iter().cloned());
        v.sort_by(|a, b| a.key().cmp(b.key()));
        v
    }

    /// Brings the shard sets in line with `next`: the same shards and tables keep
    /// their pools (new targets and settings in place); anything else retires the set
    /// (its clients finish on it, new ones get a new one).
    pub(super) fn apply_shard_sets(&self, next: &crate::generation::Generation) {
        let cfg = &next.config;
        let tls = next.tls.servers.clone();
        let mut gone = Vec::new();
        self.shard_sets.locked().retain(|key, set| {
            let keep = super::pool_spec(cfg, tls.clone(), &key.database, &key.user).and_then(
                |(_, settings)| {
                    let db = cfg.database(&key.database)?;
                    let shards = db.shard_databases();
                    let same = db.is_sharded()
                        && shards.len() == set.pools().len()
                        && sharding_of(&db) == *set.configured()
                        && db.two_phase_commit == set.two_phase_commit()
                        && shards.iter().all(|s| !s.is_replicated());
                    same.then_some((shards, settings))
                },
            );
            match keep {
                Some((shards, settings)) => {
                    for (pool, shard) in set.pools().iter().zip(&shards) {
                        pool.set_target(super::spec::server_target(
                            cfg,
                            shard,
                            tls.clone(),
                            &key.database,
                            &key.user,
                        ));
                        pool.set_settings(settings.clone());
                    }
                    true
                }
                None => {
                    gone.push(set.clone());
                    false
                }
            }
        });
        for s in &gone {
            tracing::info!(pool = %s.key(), clients = s.client_count(), "shard pools retired by reload; they close when their clients leave");
            s.retire();
        }
        self.retired_shard_sets.locked().extend(gone);
    }

    /// Closes the retired shard sets whose clients left.
    pub(super) fn close_retired_shard_sets(&self) {
        let done: Vec<Arc<ShardSet>> = {
            let mut retired = self.retired_shard_sets.locked();
            let (done, keep) = retired
                .drain(..)
                .partition(|s: &Arc<ShardSet>| s.client_count() == 0);
            *retired = keep;
            done
        };
        for s in done {
            tracing::info!(pool = %s.key(), "closing the shard pools of a changed database");
            for p in s.pools() {
                p.close();
            }
        }
    }
}
