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
//! TOML only (a pgbouncer.ini has no such keys). `check.rs` (`check_sharding`) validates them
//! for `Config::check`, reusing the host checks of an ordinary database for each
//! shard. A RELOAD that changes them counts as a changed database, as a `hosts`
//! change does.

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

impl ShardedTableConfig {
    /// `(schema, table)` as PostgreSQL folds the name: unquoted parts in lower case,
    /// `"quoted"` parts as written; `None` when the name is not one or two
    /// identifiers.
    pub fn folded_name(&self) -> Option<(Option<String>, String)> {
        let mut parts = fold_qualified(&self.table)?;
        let table = parts.pop()?;
        match parts.len() {
            0 => Some((None, table)),
            1 => Some((parts.pop(), table)),
            _ => None,
        }
    }

    /// The key column as PostgreSQL folds it; `None` when it is not one identifier.
    pub fn folded_column(&self) -> Option<String> {
        match fold_qualified(&self.column)?.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }
}

/// Splits a dotted name into identifiers folded as PostgreSQL's parser does:
/// unquoted ones in lower case (ASCII), `"quoted"` ones as written with `""` as
/// `"`. `None` for an empty part or an unbalanced quote.
pub fn fold_qualified(name: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = name.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c == '"' {
                    break;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
            part = part.trim().to_owned();
            if part.contains(char::is_whitespace) {
                return None;
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => {}
            Some(_) => return None,
        }
    }
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

#[cfg(test)]
#[path = "shards_tests.rs"]
mod tests;
