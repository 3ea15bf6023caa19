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
//! TOML only (a pgbouncer.ini has no such keys). [`check_sharding`] validates them
//! for `Config::check`, reusing the host checks of an ordinary database for each
//! shard. A RELOAD that changes them counts as a changed database, as a `hosts`
//! change does.

use serde::Deserialize;

use super::check::{check_hosts, path, Issue};
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

/// The checks of `shards`, `sharded_tables` and `two_phase_commit` on database
/// `name`, and the host checks of each shard. A database without `shards` gets
/// its own host checks from the caller.
pub(super) fn check_sharding(name: &str, d: &DatabaseConfig) -> Result<(), Issue> {
    let dk = |k: &str| path(&["databases", name, k]);
    let issue = |keys: Vec<Vec<String>>, message: String| Issue { keys, message };
    let Some(shards) = &d.shards else {
        if !d.sharded_tables.is_empty() {
            return Err(issue(
                vec![dk("sharded_tables")],
                "`sharded_tables` needs `shards` (the servers to split the tables over)".into(),
            ));
        }
        if d.two_phase_commit {
            return Err(issue(
                vec![dk("two_phase_commit")],
                "`two_phase_commit` is only meaningful with `shards`".into(),
            ));
        }
        return Ok(());
    };
    if shards.is_empty() {
        return Err(issue(
            vec![dk("shards")],
            "must list at least one shard".into(),
        ));
    }
    if name == super::Config::FALLBACK_DATABASE {
        return Err(issue(
            vec![dk("shards")],
            "the fallback database `*` cannot be sharded".into(),
        ));
    }
    for key in ["host", "hosts"] {
        let set = match key {
            "host" => !d.host.trim().is_empty(),
            _ => d.hosts.is_some(),
        };
        if set {
            return Err(issue(
                vec![dk(key), dk("shards")],
                format!(
                    "a sharded database takes its servers from `shards`: leave out `{key}` \
                     (give each shard its `host` or `hosts`)"
                ),
            ));
        }
    }
    let databases = d.shard_databases();
    for (i, (shard, db)) in shards.iter().zip(&databases).enumerate() {
        let at = |message: String| issue(vec![dk("shards")], format!("shard {i}: {message}"));
        // The same checks as a database's `host` / `hosts`, blamed on `shards`.
        check_hosts(name, db).map_err(|e| at(e.message))?;
        if shard.port == Some(0) {
            return Err(at("port must be between 1 and 65535".into()));
        }
        if shard.dbname.as_deref() == Some("") {
            return Err(at(
                "`dbname` must not be empty (leave it out to use the database's)".into(),
            ));
        }
        let same = databases[..i]
            .iter()
            .position(|o| o.host_list() == db.host_list() && o.dbname == db.dbname);
        if let Some(j) = same {
            return Err(at(format!(
                "the same servers and database as shard {j}: each shard needs a database of its own"
            )));
        }
    }
    let mut seen: Vec<(Option<String>, String)> = Vec::new();
    for t in &d.sharded_tables {
        let at = |message: String| issue(vec![dk("sharded_tables")], message);
        let Some(folded) = t.folded_name() else {
            return Err(at(format!(
                "table `{}` is not a table name (`table` or `schema.table`)",
                t.table
            )));
        };
        if t.column.trim().is_empty() {
            return Err(at(format!(
                "table `{}`: `column` must not be empty",
                t.table
            )));
        }
        if t.folded_column().is_none() {
            return Err(at(format!(
                "table `{}`: `{}` is not a column name",
                t.table, t.column
            )));
        }
        if seen.contains(&folded) {
            return Err(at(format!("table `{}` is listed twice", t.table)));
        }
        seen.push(folded);
    }
    Ok(())
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
