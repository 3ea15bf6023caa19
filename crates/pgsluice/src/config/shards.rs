//! The settings of a sharded database: its shards (each one server, or several as a
//! replicated shard) and the tables split over them by a key column.
//!
//! ```toml
//! [databases.app]
//! dbname = "app"
//! shards = [ { host = "10.0.0.1", port = 5432 }, { host = "10.0.0.2", port = 5432 } ]
//! [[databases.app.sharded_tables]]
//! table = "orders"
//! column = "customer_id"
//! ```
//!
//! OWNER: helper "shardhash" adds validation (config errors naming the key) and tests.

use serde::Deserialize;

use super::{DatabaseConfig, HostConfig};
use crate::shard::KeyType;

/// One shard of a sharded database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Server host (name, IP, or unix socket directory); required unless `hosts`.
    #[serde(default)]
    pub host: String,
    /// Server port; default the database's `port`.
    pub port: Option<u16>,
    /// A replicated shard's hosts (as a database's `hosts`).
    pub hosts: Option<Vec<HostConfig>>,
    /// Server-side database name on this shard; default the database's `dbname`.
    pub dbname: Option<String>,
}

/// A table split over the shards by one column.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardedTableConfig {
    /// Table name, optionally `schema.table`.
    pub table: String,
    /// The key column.
    pub column: String,
    /// The key's type (bigint, integer, smallint, text, varchar, uuid); default: read
    /// from the first shard's catalog when first needed.
    #[serde(default, rename = "type")]
    pub key_type: Option<KeyType>,
}

impl DatabaseConfig {
    /// Whether the database is split over shards.
    pub fn is_sharded(&self) -> bool {
        self.shards.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// Each shard as a database entry of its own: host, port, hosts and dbname from
    /// the shard, every other setting from this entry (shards and sharded tables
    /// cleared). Empty for a database that is not sharded.
    pub fn shard_databases(&self) -> Vec<DatabaseConfig> {
        let Some(shards) = &self.shards else {
            return Vec::new();
        };
        shards
            .iter()
            .map(|s| {
                let mut db = self.clone();
                db.shards = None;
                db.sharded_tables = Vec::new();
                db.host = s.host.clone();
                db.port = s.port.unwrap_or(self.port);
                db.hosts = s.hosts.clone();
                if s.dbname.is_some() {
                    db.dbname = s.dbname.clone();
                }
                db
            })
            .collect()
    }
}
