//! Test support for pgsluice: throwaway PostgreSQL clusters ([`PgCluster`])
//! and pooler child processes ([`Pooler`]) for integration tests, benchmarks
//! and the demo (`pgsluice-demo`).
//!
//! ```no_run
//! use pgsluice_testkit::{ClusterOptions, HostAuth, PgCluster};
//!
//! let pg = PgCluster::start_with(ClusterOptions::with_auth(HostAuth::Md5))?;
//! pg.create_user("app", "secret")?;
//! pg.create_database("app", "app")?;
//! assert_eq!(pg.psql("select 1")?, "1");
//! let url = pg.url("app", "secret", "app"); // postgres://app:secret@127.0.0.1:PORT/app
//! # let _ = url;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A pooler under test runs as a child process:
//!
//! ```no_run
//! use std::time::Duration;
//! use pgsluice_testkit::{PgCluster, Pooler};
//!
//! let pg = PgCluster::start()?;
//! let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/pgsluice");
//! let backend = pg.superuser_url();
//! let mut pooler = Pooler::spawn(&bin, &["--listen", "127.0.0.1:0", "--backend", &backend], &[])?;
//! let addr = pooler.addr(); // parsed from its "listening on 127.0.0.1:PORT" line
//! # let _ = addr;
//! pooler.signal(libc::SIGTERM)?;
//! assert!(pooler.wait_exit(Duration::from_secs(10))?.is_some());
//! eprintln!("pooler said: {:?}", pooler.output());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A streaming replica of a running cluster, for read/write splitting and
//! failover tests (each one is a [`PgCluster`] of its own, cleaned up on drop):
//!
//! ```no_run
//! use pgsluice_testkit::{PgCluster, ServerIdentity};
//!
//! let mut primary = PgCluster::start()?;
//! let replica = primary.start_replica()?; // streaming, in recovery
//! primary.psql("create table t(x int); insert into t values (1)")?;
//! primary.psql("create database app")?;
//! replica.wait_caught_up(&primary)?; // replayed all the primary wrote
//! assert_eq!(replica.psql("select x from t")?, "1");
//!
//! // Where did a query run? Ask through any URL (a pooler's, say) ...
//! let seen = ServerIdentity::through(&replica.superuser_url())?;
//! assert!(replica.is(&seen) && seen.in_recovery);
//! // ... or count: pg_stat_database is per server.
//! let before = replica.stat_database("app")?;
//! replica.psql_db("app", "select 1")?; // or a read through the pooler
//! replica.wait_stat_database("app", |s| s.xact_commit > before.xact_commit)?;
//!
//! replica.pause_replay()?; // WAL still arrives (wait_received), replay stops
//! replica.resume_replay()?;
//! primary.stop_immediate()?; // the primary crashes ...
//! replica.promote()?; // ... and the replica takes over, writable
//! replica.psql("insert into t values (2)")?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Network faults between a pooler and PostgreSQL come from [`FaultProxy`], a
//! TCP proxy that can cut, blackhole and resume the connections it forwards.
//!
//! Notes:
//! - PostgreSQL programs are found with [`pg_bin`] (`$PG_BIN`, else the newest
//!   `/usr/lib/postgresql/*/bin`, else `PATH`).
//! - When the tests run as root, initdb and the server run as the `postgres`
//!   OS user (the spawned child is the postmaster itself).
//! - Every cluster lives in its own temp dir `$TMPDIR/pgsluice-pg-*` (data
//!   dir, unix socket dir, `postgres.log`); the data dir is a copy of an
//!   initdb'd template cached in `$TMPDIR/pgsluice-testkit-template-*`
//!   (shared by all test processes; a start takes a few hundred ms).
//! - Drop stops the server and removes the dir. Do not keep a [`PgCluster`]
//!   in a `static`: statics are never dropped, so the server would outlive
//!   the test process (the next cluster start sweeps such leftovers up).
//! - A replica streams asynchronously over the primary's unix socket, without
//!   a replication slot; [`PgCluster::pause_replay`] needs PostgreSQL 14 or
//!   later. Dropping the primary first is fine: the replica keeps running,
//!   read-only, until it is promoted or dropped.
//! - `PGSLUICE_TESTKIT_KEEP=1` keeps the temp dirs for inspection;
//!   `PGSLUICE_TESTKIT_NO_TEMPLATE=1` runs initdb for every cluster.

mod cluster;
mod pooler;
mod proxy;
mod sys;

pub use cluster::{
    clean_pg_env, free_port, pg_bin, psql_url, quote_ident, quote_literal, ClusterOptions, DbStats,
    HostAuth, Lsn, PgCluster, ServerIdentity, StopMode, SUPERUSER, SUPERUSER_PASSWORD,
};
pub use pooler::{Pooler, Stream};
pub use proxy::{FaultProxy, ProxyMode};

/// Sends signal `sig` (e.g. `libc::SIGTERM`) to the single process `pid`.
pub fn send_signal(pid: u32, sig: i32) -> std::io::Result<()> {
    sys::kill(pid, sig)
}

/// Number of open file descriptors of process `pid` (entries of `/proc/PID/fd`).
pub fn open_fds(pid: u32) -> std::io::Result<usize> {
    sys::open_fds(pid)
}

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> std::io::Result<u64> {
    sys::rss_bytes(pid)
}

/// Raises this process's soft `RLIMIT_NOFILE` towards `wanted` (capped at the
/// hard limit, never lowered) and returns the soft limit now in force. Children
/// spawned afterwards (e.g. a [`Pooler`]) inherit it.
pub fn raise_nofile_limit(wanted: u64) -> std::io::Result<u64> {
    sys::raise_nofile_limit(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// psql over TCP (not the unix socket) with a password, as a client would.
    fn tcp_psql(pg: &PgCluster, user: &str, password: Option<&str>, sql: &str) -> (bool, String) {
        tcp_psql_timeout(pg, user, password, sql, 5)
    }

    fn tcp_psql_timeout(
        pg: &PgCluster,
        user: &str,
        password: Option<&str>,
        sql: &str,
        connect_timeout_secs: u32,
    ) -> (bool, String) {
        let mut cmd = Command::new(pg_bin("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-w", "-h", "127.0.0.1", "-p"])
            .arg(pg.port().to_string())
            .args(["-U", user, "-d", "postgres", "-c", sql])
            .env_remove("PGPASSWORD")
            .env("PGCONNECT_TIMEOUT", connect_timeout_secs.to_string())
            .env("PGPASSFILE", "/nonexistent");
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        let out = cmd.output().expect("run psql");
        let text = if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            String::from_utf8_lossy(&out.stderr).trim().to_string()
        };
        (out.status.success(), text)
    }

    #[test]
    fn proc_helpers_see_this_process() {
        let me = std::process::id();
        let before = open_fds(me).unwrap();
        let files: Vec<_> = (0..5)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        // Other test threads may open files too: at least our five are counted.
        assert!(open_fds(me).unwrap() >= before + 5);
        drop(files);
        assert!(rss_bytes(me).unwrap() > 1024 * 1024);
        let soft = raise_nofile_limit(256).unwrap();
        assert!(soft >= 256, "soft limit {soft}");
        // Never lowered.
        assert_eq!(raise_nofile_limit(16).unwrap(), soft.max(16));
    }

    #[test]
    fn pg_bin_finds_programs() {
        for name in ["postgres", "initdb", "psql", "pgbench", "pg_isready"] {
            let p = pg_bin(name);
            assert!(p.is_file(), "{name} -> {}", p.display());
        }
    }

    #[test]
    fn url_encoding() {
        let pg_port = 5432;
        let url = format!(
            "postgres://{}@127.0.0.1:{pg_port}",
            cluster::percent_encode("a b:@/")
        );
        assert_eq!(url, "postgres://a%20b%3A%40%2F@127.0.0.1:5432");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("port is free");
    }

    #[test]
    fn start_each_host_auth_and_query() {
        for auth in HostAuth::ALL {
            let started = Instant::now();
            let pg = PgCluster::start_with(ClusterOptions::with_auth(auth)).expect("start");
            eprintln!("{auth:?}: started in {:?}", started.elapsed());
            assert_eq!(pg.host(), "127.0.0.1");
            assert_eq!(pg.psql("select 1").unwrap(), "1");
            assert_eq!(
                pg.superuser_url(),
                format!(
                    "postgres://postgres:postgres@127.0.0.1:{}/postgres",
                    pg.port()
                )
            );
            assert!(pg
                .socket_dir()
                .join(format!(".s.PGSQL.{}", pg.port()))
                .exists());
            assert!(pg.data_dir().join("PG_VERSION").is_file());
            assert_eq!(
                pg.psql("show password_encryption").unwrap(),
                auth.password_encryption()
            );
            assert_eq!(pg.psql("show max_connections").unwrap(), "100");
            // The superuser logs in over TCP with its password, whatever the method.
            let (ok, out) = tcp_psql(&pg, "postgres", Some("postgres"), "select current_user");
            assert!(ok, "{auth:?}: {out}");
            assert_eq!(out, "postgres");
            // A wrong password is refused unless the method is trust.
            let (ok, out) = tcp_psql(&pg, "postgres", Some("wrong"), "select 1");
            assert_eq!(ok, auth == HostAuth::Trust, "{auth:?}: {out}");
            // The postmaster is our direct child and runs as the right user.
            let stat =
                std::fs::read_to_string(format!("/proc/{}/status", pg.postmaster_pid())).unwrap();
            let ppid_line = stat.lines().find(|l| l.starts_with("PPid:")).unwrap();
            assert_eq!(
                ppid_line.split_whitespace().nth(1).unwrap(),
                std::process::id().to_string()
            );
            if sys::geteuid() == 0 {
                let uid_line = stat.lines().find(|l| l.starts_with("Uid:")).unwrap();
                let (pg_uid, _) = sys::lookup_user("postgres").unwrap();
                assert_eq!(
                    uid_line.split_whitespace().nth(1).unwrap(),
                    pg_uid.to_string()
                );
            }
            let root = pg.root_dir().to_path_buf();
            drop(pg);
            assert!(!root.exists(), "temp dir removed on drop");
        }
    }

    #[test]
    fn options_and_settings_apply() {
        let opts = ClusterOptions {
            host_auth: HostAuth::Trust,
            max_connections: 7,
            settings: vec![("work_mem".into(), "3MB".into())],
        }
        .setting("application_name", "it's");
        let pg = PgCluster::start_with(opts).unwrap();
        assert_eq!(pg.psql("show max_connections").unwrap(), "7");
        assert_eq!(pg.psql("show work_mem").unwrap(), "3MB");
        assert_eq!(pg.psql("show fsync").unwrap(), "off");
        assert_eq!(pg.psql("show server_encoding").unwrap(), "UTF8");
        // Trust: no password needed over TCP.
        let (ok, out) = tcp_psql(&pg, "postgres", None, "select 42");
        assert!(ok, "{out}");
        assert_eq!(out, "42");
        // psql errors come back as Err with the server message.
        let err = pg.psql("select * from no_such_table").unwrap_err();
        assert!(err.to_string().contains("no_such_table"), "{err}");
        // Multi-statement scripts run in order.
        assert_eq!(
            pg.psql("create table t(x int); insert into t values (1),(2); select sum(x) from t;")
                .unwrap(),
            "3"
        );
        assert!(pg.log_contents().contains("database system is ready"));
    }

    #[test]
    fn create_user_and_login_over_tcp() {
        for auth in [HostAuth::Md5, HostAuth::Scram, HostAuth::Password] {
            let pg = PgCluster::start_with(ClusterOptions::with_auth(auth)).unwrap();
            pg.create_user("app", "s3cr'et").unwrap();
            pg.create_database("appdb", "app").unwrap();
            let stored = pg
                .psql("select left(rolpassword, 5) from pg_authid where rolname = 'app'")
                .unwrap();
            let expected = if auth == HostAuth::Md5 {
                "md5"
            } else {
                "SCRAM"
            };
            assert!(stored.starts_with(expected), "{auth:?}: {stored}");
            let (ok, out) = tcp_psql(&pg, "app", Some("s3cr'et"), "select current_user");
            assert!(ok, "{auth:?}: {out}");
            assert_eq!(out, "app");
            let (ok, out) = tcp_psql(&pg, "app", Some("nope"), "select 1");
            assert!(!ok, "{auth:?}: wrong password accepted: {out}");
            assert!(out.contains("password authentication failed"), "{out}");
            assert_eq!(
                pg.psql_db("appdb", "select current_database()").unwrap(),
                "appdb"
            );
            assert_eq!(
                pg.psql("select pg_catalog.pg_get_userbyid(datdba) from pg_database where datname = 'appdb'")
                    .unwrap(),
                "app"
            );
            assert!(pg
                .url("app", "s3cr'et", "appdb")
                .ends_with(&format!("app:s3cr%27et@127.0.0.1:{}/appdb", pg.port())));
        }
    }

    #[test]
    fn restart_and_stop_modes() {
        let mut pg = PgCluster::start().unwrap();
        pg.psql("create table kept(x int); insert into kept values (7);")
            .unwrap();
        let port = pg.port();
        let pid1 = pg.postmaster_pid();
        pg.restart(StopMode::Fast).unwrap();
        let pid2 = pg.postmaster_pid();
        assert_ne!(pid1, pid2);
        assert_eq!(pg.port(), port);
        assert!(!sys::process_alive(pid1), "old postmaster gone");
        assert_eq!(pg.psql("select x from kept").unwrap(), "7");

        pg.restart(StopMode::Immediate).unwrap();
        assert_eq!(pg.psql("select x from kept").unwrap(), "7");

        pg.stop(StopMode::Smart).unwrap();
        assert!(!pg.is_running());
        assert!(pg.psql("select 1").is_err());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        pg.stop(StopMode::Fast).unwrap(); // no-op
        pg.start_again().unwrap();
        assert_eq!(pg.port(), port);
        assert_eq!(pg.psql("select x from kept").unwrap(), "7");
        let log = pg.log_contents();
        assert!(log.contains("fast shutdown request"), "{log}");
        assert!(log.contains("immediate shutdown request"), "{log}");
        assert!(log.contains("smart shutdown request"), "{log}");
    }

    #[test]
    fn pause_and_resume() {
        let pg = PgCluster::start_with(ClusterOptions::with_auth(HostAuth::Trust)).unwrap();
        let pid = pg.postmaster_pid();
        pg.pause().unwrap();
        let stopped = |p: u32| matches!(sys::proc_stat(p), Some(('T' | 't', _)));
        assert!(stopped(pid), "postmaster stopped");
        // Exited children (zombies, e.g. the backend of the readiness check)
        // wait for the stopped postmaster to reap them.
        let children: Vec<u32> = sys::children_of(pid)
            .into_iter()
            .filter(|c| !matches!(sys::proc_stat(*c), Some(('Z' | 'X', _)) | None))
            .collect();
        assert!(!children.is_empty(), "postmaster has children");
        for c in &children {
            assert!(stopped(*c), "child {c} stopped");
        }
        // A client cannot get an answer while paused.
        let started = Instant::now();
        let (ok, out) = tcp_psql_timeout(&pg, "postgres", None, "select 1", 2);
        assert!(!ok, "query answered while paused: {out}");
        assert!(started.elapsed() >= Duration::from_secs(2), "{out}");

        pg.resume().unwrap();
        assert!(!stopped(pid));
        for c in &children {
            assert!(!stopped(*c), "child {c} resumed");
        }
        let (ok, out) = tcp_psql(&pg, "postgres", None, "select 1");
        assert!(ok, "{out}");
        assert_eq!(pg.psql("select 2").unwrap(), "2");
    }

    #[test]
    fn drop_while_paused_cleans_up() {
        let pg = PgCluster::start().unwrap();
        let pid = pg.postmaster_pid();
        let root = pg.root_dir().to_path_buf();
        pg.pause().unwrap();
        let started = Instant::now();
        drop(pg);
        assert!(started.elapsed() < Duration::from_secs(15));
        assert!(!sys::process_alive(pid));
        assert!(!root.exists());
    }

    #[test]
    fn many_clusters_in_parallel() {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| PgCluster::start().map(|pg| (pg.port(), pg))))
            .collect();
        let clusters: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        let mut ports: Vec<u16> = clusters.iter().map(|(p, _)| *p).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 4);
        for (_, pg) in &clusters {
            assert_eq!(pg.psql("select 1").unwrap(), "1");
        }
    }
}
