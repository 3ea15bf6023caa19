//! Evidence of where queries ran, for read/write-splitting and failover
//! tests: per-database counters from `pg_stat_database` ([`DbStats`], with a
//! wait that rides out the statistics delay), and the identity of the server
//! a connection landed on ([`ServerIdentity`]), asked directly or through any
//! connection URL such as a pooler's.

use std::io;
use std::time::Duration;

use super::poll::{poll_until, Check};
use super::sql::{parse_bool, psql_url, quote_literal};
use super::PgCluster;

/// How long [`PgCluster::wait_stat_database`] waits. Backends publish their
/// counters at most once a second while busy and at the latest when idle
/// or gone, so a few seconds suffice; the margin is for loaded machines.
const STATS_DEADLINE: Duration = Duration::from_secs(30);

/// Counters of one database from `pg_stat_database` on one server. A
/// standby keeps its own, so comparing a primary's and a replica's counters
/// shows where queries ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DbStats {
    /// Backends connected to the database now.
    pub numbackends: u64,
    /// Transactions committed (every read-only statement outside a
    /// transaction block counts as one).
    pub xact_commit: u64,
    /// Transactions rolled back.
    pub xact_rollback: u64,
    /// Disk blocks read.
    pub blks_read: u64,
    /// Buffer cache hits.
    pub blks_hit: u64,
    /// Rows returned by sequential scans (and index entries by index scans).
    pub tup_returned: u64,
    /// Rows fetched by index scans.
    pub tup_fetched: u64,
    /// Rows inserted.
    pub tup_inserted: u64,
    /// Rows updated.
    pub tup_updated: u64,
    /// Rows deleted.
    pub tup_deleted: u64,
}

/// The columns of `pg_stat_database` read into a [`DbStats`], in field order.
const DB_STATS_COLUMNS: &str = "numbackends, xact_commit, xact_rollback, blks_read, blks_hit, \
     tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted";

impl DbStats {
    fn from_row(row: &[String]) -> io::Result<DbStats> {
        let mut n = [0u64; 10];
        if row.len() != n.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("pg_stat_database row {row:?}"),
            ));
        }
        for (slot, text) in n.iter_mut().zip(row) {
            *slot = text.parse().map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{text:?}: {e}"))
            })?;
        }
        let [numbackends, xact_commit, xact_rollback, blks_read, blks_hit, tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted] =
            n;
        Ok(DbStats {
            numbackends,
            xact_commit,
            xact_rollback,
            blks_read,
            blks_hit,
            tup_returned,
            tup_fetched,
            tup_inserted,
            tup_updated,
            tup_deleted,
        })
    }
}

impl PgCluster {
    /// The counters of database `db` on this server, as published so far.
    ///
    /// PostgreSQL publishes a backend's counters when it goes idle (at most
    /// once a second) and when it exits, so work that just finished may not
    /// show yet: to prove that queries ran here, take a snapshot before and
    /// [`PgCluster::wait_stat_database`] for the increase. Read from database
    /// `postgres`, so these reads count only when `db` is `postgres`.
    pub fn stat_database(&self, db: &str) -> io::Result<DbStats> {
        let row = self.psql_row(&format!(
            "select {DB_STATS_COLUMNS} from pg_stat_database where datname = {}",
            quote_literal(db)
        ))?;
        DbStats::from_row(&row)
    }

    /// Polls [`PgCluster::stat_database`] until `done` accepts the counters
    /// (deadline 30 s) and returns them. Example: wait until the replica's
    /// `xact_commit` grew by the number of reads sent.
    pub fn wait_stat_database(
        &self,
        db: &str,
        mut done: impl FnMut(&DbStats) -> bool,
    ) -> io::Result<DbStats> {
        poll_until(
            &format!("pg_stat_database of {db:?} on port {}", self.port),
            STATS_DEADLINE,
            || {
                let stats = self.stat_database(db)?;
                Ok(if done(&stats) {
                    Check::Done(stats)
                } else {
                    Check::NotYet(format!("{stats:?}"))
                })
            },
        )
    }

    /// This server's identity as its own connections see it.
    pub fn identity(&self) -> io::Result<ServerIdentity> {
        ServerIdentity::from_row(&self.psql_row(ServerIdentity::SQL)?)
    }

    /// Whether `identity` (e.g. from [`ServerIdentity::through`]) is this server.
    pub fn is(&self, identity: &ServerIdentity) -> bool {
        identity.port == self.port
    }
}

/// Which server a connection reached: its port and whether it is a standby.
/// Through a pooler this shows where a statement really ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerIdentity {
    /// The server's `port` setting (the same for TCP and unix socket
    /// connections, unlike `inet_server_port()`), i.e. [`PgCluster::port`].
    pub port: u16,
    /// `pg_is_in_recovery()`: true on a standby.
    pub in_recovery: bool,
}

impl ServerIdentity {
    /// One statement returning one row `(port int4, in_recovery bool)`, for
    /// clients that run it themselves (e.g. tokio-postgres through a pooler)
    /// and build the identity with [`ServerIdentity::new`].
    pub const SQL: &'static str =
        "select current_setting('port')::int4 as port, pg_is_in_recovery() as in_recovery";

    /// The identity from the two columns of [`ServerIdentity::SQL`].
    pub fn new(port: i32, in_recovery: bool) -> io::Result<ServerIdentity> {
        let port = u16::try_from(port).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("port {port} out of range"),
            )
        })?;
        Ok(ServerIdentity { port, in_recovery })
    }

    /// Runs [`ServerIdentity::SQL`] with psql through `url` (a pooler's
    /// address, say) and returns whom it reached.
    pub fn through(url: &str) -> io::Result<ServerIdentity> {
        let out = psql_url(url, ServerIdentity::SQL)?;
        let row: Vec<String> = out
            .lines()
            .next()
            .unwrap_or_default()
            .split('|')
            .map(str::to_string)
            .collect();
        ServerIdentity::from_row(&row)
    }

    fn from_row(row: &[String]) -> io::Result<ServerIdentity> {
        let [port, in_recovery] = row else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("identity row {row:?}"),
            ));
        };
        let port = port
            .parse::<i32>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{port:?}: {e}")))?;
        ServerIdentity::new(port, parse_bool(in_recovery)?)
    }
}
