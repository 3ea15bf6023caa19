//! The programs a cluster runs and the environment they run in: where the
//! PostgreSQL binaries are, a free TCP port, and the libpq variables that must
//! not leak from the caller's environment into psql, pg_isready or initdb.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// Environment variables that would make psql/pg_isready/initdb do something
/// other than what the testkit asks for.
const PG_ENV_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGCONNECT_TIMEOUT",
    "PGCLIENTENCODING",
    "PGTARGETSESSIONATTRS",
    "PGDATA",
    "PGAPPNAME",
    "PSQLRC",
];

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0,
/// read the port, close). Another process may grab it before you bind it;
/// [`PgCluster`](super::PgCluster) retries with a new port when that happens.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// Path of a PostgreSQL program (`postgres`, `initdb`, `psql`, `pgbench`, ...):
/// `$PG_BIN/name` if `PG_BIN` is set, else the highest-versioned
/// `/usr/lib/postgresql/*/bin/name`, else the first `name` on `PATH`, else
/// just `name`.
pub fn pg_bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join(name);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join(name).is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin.join(name);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}

/// Whether the environment variable `name` is set to something other than
/// empty, `0` or `false`.
pub(super) fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| !v.is_empty() && v != "0" && v.to_lowercase() != "false")
        .unwrap_or(false)
}

/// Removes the libpq variables that would change what a psql, pgbench or initdb run
/// does ([`PG_ENV_VARS`]) from `cmd`'s environment.
pub fn clean_pg_env(cmd: &mut Command) {
    for v in PG_ENV_VARS {
        cmd.env_remove(v);
    }
}
