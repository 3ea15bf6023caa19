//! The sharding counters: requests that ran on one shard, per database and shard;
//! requests that ran on several shards (fan-out, DDL, split INSERT, COPY) and requests
//! refused, per database. Summed over the database's server users; a shard set
//! retired by a reload still counts until it closes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::text::{esc, Family};
use crate::router::ShardSet;

/// Appends the sharding families.
pub(super) fn render(f: &mut Family<'_>, sets: &[Arc<ShardSet>]) {
    let mut single: BTreeMap<(String, usize), u64> = BTreeMap::new();
    let mut fanout: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    for s in sets {
        let db = s.key().database.to_string();
        for shard in 0..s.pools().len() {
            *single.entry((db.clone(), shard)).or_default() += s.queries(shard);
        }
        *fanout.entry(db.clone()).or_default() += s.fanout_queries();
        *refused.entry(db).or_default() += s.refused_queries();
    }
    f.header(
        "pgsluice_shard_queries_total",
        "counter",
        "Requests of a sharded database that ran on one shard.",
    );
    for ((db, shard), n) in &single {
        let labels = format!("database=\"{}\",shard=\"{shard}\"", esc(db));
        f.sample("pgsluice_shard_queries_total", &labels, n);
    }
    f.header(
        "pgsluice_shard_fanout_queries_total",
        "counter",
        "Requests of a sharded database that ran on several shards (merged SELECTs, DDL, split INSERTs, COPY).",
    );
    for (db, n) in &fanout {
        let labels = format!("database=\"{}\"", esc(db));
        f.sample("pgsluice_shard_fanout_queries_total", &labels, n);
    }
    f.header(
        "pgsluice_shard_refused_queries_total",
        "counter",
        "Requests of a sharded database refused as not answerable correctly over its shards.",
    );
    for (db, n) in &refused {
        let labels = format!("database=\"{}\"", esc(db));
        f.sample("pgsluice_shard_refused_queries_total", &labels, n);
    }
}
