//! Throwaway PostgreSQL clusters: [`PgCluster`] owns one postmaster, its temp
//! dir and its port, and cleans all of it up on drop.
//!
//! This file holds the type, its start-up sequence and its accessors; the rest
//! is split by role:
//! - `options`: what a caller can choose ([`HostAuth`], [`ClusterOptions`],
//!   [`StopMode`]);
//! - `env`: finding PostgreSQL programs and a free port, and the environment
//!   those programs must not inherit;
//! - `datadir`: temp dirs, initdb and the cached template, the config files
//!   written into a data dir, and the sweep of dirs left by dead processes;
//! - `lifecycle`: launching the postmaster and waiting until it is ready,
//!   stop/restart/pause/resume by signals;
//! - `sql`: psql as the superuser, roles and databases, URLs and quoting;
//! - `replica`: streaming replicas, promotion, replay pause, catch-up waits;
//! - `lsn`: WAL positions ([`Lsn`]);
//! - `stats`: where queries ran ([`DbStats`], [`ServerIdentity`]);
//! - `poll`: waiting for a condition with a deadline.
//!
//! Nothing here may block on a server without a deadline: a test that hangs
//! tells nobody what went wrong.

mod datadir;
mod env;
mod lifecycle;
mod lsn;
mod options;
mod poll;
mod replica;
mod sql;
mod stats;

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub use env::{clean_pg_env, free_port, pg_bin};
pub use lsn::Lsn;
pub use options::{ClusterOptions, HostAuth, StopMode};
#[cfg(test)]
pub(crate) use sql::percent_encode;
pub use sql::{psql_url, quote_ident, quote_literal};
pub use stats::{DbStats, ServerIdentity};

use datadir::{chown_to, make_temp_dir, server_user, sweep_stale_dirs_once};
use env::env_flag;

/// Superuser name of every cluster.
pub const SUPERUSER: &str = "postgres";
/// Superuser password of every cluster (set with `initdb --pwfile`).
pub const SUPERUSER_PASSWORD: &str = "postgres";

/// Overall deadline for a cluster to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How many fresh ports to try when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// Prefix of per-cluster temp dirs (used by the stale-dir sweep, keep stable).
const CLUSTER_DIR_PREFIX: &str = "pgsluice-pg-";
/// Prefix of cached template data dirs. Bump the suffix when the template changes.
const TEMPLATE_DIR_PREFIX: &str = "pgsluice-testkit-template-v1-";

/// A throwaway PostgreSQL cluster: own temp dir (data dir, unix socket dir and
/// log file inside), own port on 127.0.0.1. Stopped (immediate) and deleted on
/// drop. Superuser `postgres` / password `postgres`.
///
/// When the process runs as root, initdb and postgres run as the `postgres` OS
/// user; the spawned child is the postmaster itself.
///
/// Environment knobs: `PG_BIN` (see [`pg_bin`]), `PGSLUICE_TESTKIT_KEEP=1`
/// (keep the temp dir after drop), `PGSLUICE_TESTKIT_NO_TEMPLATE=1` (run
/// initdb for every cluster instead of copying a cached template).
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    opts: ClusterOptions,
    /// (uid, gid) to run server processes as, when we are root.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    pid: u32,
    detached: bool,
}

impl PgCluster {
    /// Starts a cluster with [`ClusterOptions::default`] (scram, 100 connections).
    pub fn start() -> io::Result<PgCluster> {
        Self::start_with(ClusterOptions::default())
    }

    /// Starts a cluster with the given options and waits until it accepts
    /// connections (deadline 60 s).
    pub fn start_with(opts: ClusterOptions) -> io::Result<PgCluster> {
        Self::start_impl(opts, false)
    }

    /// Like [`PgCluster::start_with`], but the postmaster runs in its own
    /// process group, so a terminal's Ctrl-C does not reach it (the owner stops
    /// it on drop). Meant for interactive programs such as the demo; tests
    /// should prefer `start_with`, whose server dies with the test's process
    /// group if the test runner kills it.
    pub fn start_detached(opts: ClusterOptions) -> io::Result<PgCluster> {
        Self::start_impl(opts, true)
    }

    fn start_impl(opts: ClusterOptions, detached: bool) -> io::Result<PgCluster> {
        let started = Instant::now();
        // From here on `cluster`'s Drop cleans up on any error.
        let mut cluster = PgCluster::prepare(opts, detached)?;
        cluster.create_data_dir()?;
        cluster.write_config()?;
        cluster.launch_on_free_port()?;
        eprintln!(
            "pgsluice-testkit: PostgreSQL ready on 127.0.0.1:{} (pid {}, auth {}) in {:.2?}, dir {}",
            cluster.port,
            cluster.pid,
            cluster.opts.host_auth.hba_method(),
            started.elapsed(),
            cluster.root.display()
        );
        Ok(cluster)
    }

    /// A cluster with its temp dir, socket dir and log file made, but no data
    /// dir yet and no server: the common first step of a fresh cluster and a
    /// replica. Its Drop already cleans up.
    fn prepare(opts: ClusterOptions, detached: bool) -> io::Result<PgCluster> {
        sweep_stale_dirs_once();
        let run_as = server_user()?;
        let root = make_temp_dir(CLUSTER_DIR_PREFIX)?;
        let cluster = PgCluster {
            data_dir: root.join("data"),
            socket_dir: root.join("sock"),
            log_path: root.join("postgres.log"),
            root,
            port: 0,
            opts,
            run_as,
            child: None,
            pid: 0,
            detached,
        };
        fs::write(
            cluster.root.join("owner.pid"),
            format!("{}\n", std::process::id()),
        )?;
        fs::create_dir(&cluster.socket_dir)?;
        fs::File::create(&cluster.log_path)?;
        chown_to(&cluster.root, run_as)?;
        chown_to(&cluster.socket_dir, run_as)?;
        chown_to(&cluster.log_path, run_as)?;
        Ok(cluster)
    }

    /// Launches the postmaster on a fresh free port and waits until it is
    /// ready, trying another port when the chosen one was taken meanwhile.
    fn launch_on_free_port(&mut self) -> io::Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = free_port();
            match self.launch_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) if attempt < PORT_ATTEMPTS && e.kind() == io::ErrorKind::AddrInUse => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// TCP port on 127.0.0.1 (the unix socket uses the same number).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Directory holding the unix socket `.s.PGSQL.<port>`.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The cluster's temp dir (data dir, socket dir and log live inside).
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The server log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// A name no other cluster on this machine has (its temp dir's name). A
    /// replica runs with it as `cluster_name`, so the primary's
    /// `pg_stat_replication` lists the replica under this `application_name`.
    pub fn name(&self) -> &str {
        self.root
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    /// The options the cluster was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// Pid of the (current) postmaster; after a stop, the pid it had.
    pub fn postmaster_pid(&self) -> u32 {
        self.pid
    }

    /// Whether the postmaster is running (it may be paused).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl PgCluster {
    /// The whole server log so far.
    pub fn log_contents(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the server log, for error messages.
    fn log_tail(&self, lines: usize) -> String {
        let log = self.log_contents();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "pgsluice-testkit: cluster on port {} dropped during a panic; last log lines ({}):\n{}",
                self.port,
                self.log_path.display(),
                self.log_tail(30)
            );
        }
        if let Err(e) = self.stop(StopMode::Immediate) {
            eprintln!(
                "pgsluice-testkit: stopping cluster on port {}: {e}",
                self.port
            );
        }
        if env_flag("PGSLUICE_TESTKIT_KEEP") {
            eprintln!("pgsluice-testkit: keeping {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
