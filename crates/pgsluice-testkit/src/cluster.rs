//! Throwaway PostgreSQL clusters.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::sys;

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
    "PSQLRC",
];

/// pg_hba method for TCP connections from 127.0.0.1 (and ::1).
/// Unix-socket connections are always `trust`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostAuth {
    /// `trust`: no password asked.
    Trust,
    /// `password`: cleartext password.
    Password,
    /// `md5`; users made by [`PgCluster::create_user`] get md5-hashed passwords.
    Md5,
    /// `scram-sha-256`.
    Scram,
}

impl HostAuth {
    /// The pg_hba.conf method name.
    pub fn hba_method(self) -> &'static str {
        match self {
            HostAuth::Trust => "trust",
            HostAuth::Password => "password",
            HostAuth::Md5 => "md5",
            HostAuth::Scram => "scram-sha-256",
        }
    }

    /// The `password_encryption` the cluster uses (md5 for [`HostAuth::Md5`],
    /// scram-sha-256 otherwise).
    pub fn password_encryption(self) -> &'static str {
        match self {
            HostAuth::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }

    /// All variants, for tests that loop over them.
    pub const ALL: [HostAuth; 4] = [
        HostAuth::Trust,
        HostAuth::Password,
        HostAuth::Md5,
        HostAuth::Scram,
    ];
}

/// Options for [`PgCluster::start_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// pg_hba method for host (TCP) connections.
    pub host_auth: HostAuth,
    /// `max_connections` (must be larger than `superuser_reserved_connections`, 3).
    pub max_connections: u32,
    /// Extra postgresql.conf settings, written after the testkit's own (so they
    /// win). Values are quoted for you unless they already start with `'`.
    pub settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            host_auth: HostAuth::Scram,
            max_connections: 100,
            settings: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// Default options with the given host auth method.
    pub fn with_auth(host_auth: HostAuth) -> Self {
        ClusterOptions {
            host_auth,
            ..ClusterOptions::default()
        }
    }

    /// Adds one postgresql.conf setting (builder style).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// How to stop the server (the `pg_ctl stop -m` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopMode {
    /// SIGTERM: wait for clients to disconnect (bounded by a 60 s deadline).
    Smart,
    /// SIGINT: roll back and disconnect clients, then shut down cleanly.
    Fast,
    /// SIGQUIT: abort everything; crash recovery on the next start.
    Immediate,
}

impl StopMode {
    fn signal(self) -> i32 {
        match self {
            StopMode::Smart => libc::SIGTERM,
            StopMode::Fast => libc::SIGINT,
            StopMode::Immediate => libc::SIGQUIT,
        }
    }

    fn deadline(self) -> Duration {
        match self {
            StopMode::Smart => Duration::from_secs(60),
            StopMode::Fast => Duration::from_secs(30),
            StopMode::Immediate => Duration::from_secs(15),
        }
    }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0,
/// read the port, close). Another process may grab it before you bind it;
/// [`PgCluster`] retries with a new port when that happens.
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
        sweep_stale_dirs_once();
        let run_as = server_user()?;
        let root = make_temp_dir(CLUSTER_DIR_PREFIX)?;
        // From here on `cluster`'s Drop cleans up on any error.
        let mut cluster = PgCluster {
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

        cluster.create_data_dir()?;
        cluster.write_config()?;

        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.port = free_port();
            match cluster.launch_and_wait() {
                Ok(()) => break,
                Err(e) if attempt < PORT_ATTEMPTS && e.kind() == io::ErrorKind::AddrInUse => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
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

    /// `postgres://postgres:postgres@127.0.0.1:PORT/postgres`.
    pub fn superuser_url(&self) -> String {
        self.url(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
    }

    /// `postgres://user:password@127.0.0.1:PORT/db` (components percent-encoded).
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.port,
            percent_encode(db)
        )
    }

    /// Runs `sql` with psql as the superuser over the unix socket in database
    /// `postgres` (`-X -q -A -t -v ON_ERROR_STOP=1`, script on stdin, so several
    /// statements and psql meta-commands work). Returns trimmed stdout; Err
    /// with stderr if psql fails.
    pub fn psql(&self, sql: &str) -> io::Result<String> {
        self.psql_db("postgres", sql)
    }

    /// Like [`PgCluster::psql`], in database `db`.
    pub fn psql_db(&self, db: &str, sql: &str) -> io::Result<String> {
        let mut cmd = Command::new(pg_bin("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db, "-f", "-"]);
        clean_pg_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10");
        let out = run_with_stdin(cmd, sql.as_bytes())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(io::Error::other(format!(
                "psql failed ({}) running {sql:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// `CREATE ROLE name LOGIN PASSWORD 'password'`, hashed with md5 for
    /// [`HostAuth::Md5`] clusters and scram-sha-256 otherwise.
    pub fn create_user(&self, name: &str, password: &str) -> io::Result<()> {
        self.psql(&format!(
            "SET password_encryption = '{}';\nCREATE ROLE {} LOGIN PASSWORD {};\n",
            self.opts.host_auth.password_encryption(),
            quote_ident(name),
            quote_literal(password)
        ))
        .map(drop)
    }

    /// `CREATE DATABASE name OWNER owner`.
    pub fn create_database(&self, name: &str, owner: &str) -> io::Result<()> {
        self.psql(&format!(
            "CREATE DATABASE {} OWNER {};\n",
            quote_ident(name),
            quote_ident(owner)
        ))
        .map(drop)
    }

    /// Stops the server (see [`PgCluster::stop`]) and starts it again on the
    /// same port, waiting until it is ready.
    pub fn restart(&mut self, mode: StopMode) -> io::Result<()> {
        self.stop(mode)?;
        self.start_again()
    }

    /// Stops the server like `pg_ctl stop -m <mode>` and waits for the
    /// postmaster to exit. A paused server is resumed first. Fast and
    /// Immediate escalate to SIGKILL after their deadline; Smart returns
    /// `TimedOut` (server still running) if clients stay connected for 60 s.
    /// No-op when already stopped.
    pub fn stop(&mut self, mode: StopMode) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            self.child = None;
            return Ok(());
        }
        let pid = self.pid;
        let _ = self.resume();
        sys::kill(pid, mode.signal())?;
        let child = self.child.as_mut().expect("child present");
        if wait_child(child, mode.deadline())?.is_some() {
            self.child = None;
            return Ok(());
        }
        if mode == StopMode::Smart {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("smart shutdown of postmaster {pid} did not finish within 60 s"),
            ));
        }
        // Escalate: kill the postmaster and its children outright.
        let children = sys::children_of(pid);
        let _ = child.kill();
        for c in children {
            let _ = sys::kill(c, libc::SIGKILL);
        }
        let _ = child.wait();
        self.child = None;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{mode:?} shutdown of postmaster {pid} did not finish in {:?}; killed it",
                mode.deadline()
            ),
        ))
    }

    /// Starts a stopped server again on the same port and waits until it is
    /// ready. No-op when running.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.child = None;
        self.launch_and_wait()
    }

    /// Sends SIGSTOP to the postmaster and all its child processes: the
    /// server stops answering (TCP connects still complete in the kernel).
    pub fn pause(&self) -> io::Result<()> {
        if self.child.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "cluster is not running",
            ));
        }
        let pid = self.pid;
        sys::kill(pid, libc::SIGSTOP)?;
        // Wait until the postmaster is really stopped, so that it cannot fork
        // a child we would miss; then stop the children until none is left.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(sys::proc_stat(pid), Some(('T' | 't', _)) | None) {
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..50 {
            let running: Vec<u32> = sys::children_of(pid)
                .into_iter()
                // Stopped, or dead/zombie (exited, waiting for the stopped postmaster to reap it).
                .filter(|c| !matches!(sys::proc_stat(*c), Some(('T' | 't' | 'Z' | 'X', _)) | None))
                .collect();
            if running.is_empty() {
                break;
            }
            for c in running {
                let _ = sys::kill(c, libc::SIGSTOP);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Sends SIGCONT to the postmaster's children and the postmaster.
    pub fn resume(&self) -> io::Result<()> {
        if self.child.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "cluster is not running",
            ));
        }
        for c in sys::children_of(self.pid) {
            let _ = sys::kill(c, libc::SIGCONT);
        }
        sys::kill(self.pid, libc::SIGCONT)
    }

    /// The whole server log so far.
    pub fn log_contents(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log_contents();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn create_data_dir(&self) -> io::Result<()> {
        if env_flag("PGSLUICE_TESTKIT_NO_TEMPLATE") {
            return run_initdb(&self.root, &self.data_dir, self.run_as, self.opts.host_auth);
        }
        let mut last_err = None;
        for _ in 0..2 {
            let template = template_data_dir(self.run_as)?;
            let out = Command::new("cp")
                .arg("-a")
                .arg(&template)
                .arg(&self.data_dir)
                .stdin(Stdio::null())
                .output()?;
            if out.status.success() {
                return Ok(());
            }
            // The cached template may have been removed underneath us (tmp
            // cleaner): forget it and build a new one.
            last_err = Some(io::Error::other(format!(
                "cp -a {} {} failed: {}",
                template.display(),
                self.data_dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
            let _ = fs::remove_dir_all(&self.data_dir);
            forget_template(&template);
        }
        Err(last_err.expect("loop ran"))
    }

    fn write_config(&self) -> io::Result<()> {
        let mut conf = String::from("\n# ---- pgsluice-testkit ----\n");
        let sock = self.socket_dir.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "non-UTF-8 temp dir path")
        })?;
        let ours: Vec<(&str, String)> = vec![
            ("listen_addresses", "127.0.0.1".into()),
            ("unix_socket_directories", sock.into()),
            ("max_connections", self.opts.max_connections.to_string()),
            ("shared_buffers", "32MB".into()),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("logging_collector", "off".into()),
            ("log_destination", "stderr".into()),
            ("lc_messages", "C".into()),
            ("log_line_prefix", "%m [%p] %q%u@%d ".into()),
            (
                "password_encryption",
                self.opts.host_auth.password_encryption().into(),
            ),
        ];
        for (k, v) in &ours {
            let _ = writeln!(conf, "{k} = {}", quote_conf_value(v));
        }
        if !self.opts.settings.is_empty() {
            conf.push_str("# ---- ClusterOptions::settings ----\n");
            for (k, v) in &self.opts.settings {
                let _ = writeln!(conf, "{k} = {}", quote_conf_value(v));
            }
        }
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))?;
        f.write_all(conf.as_bytes())?;

        let m = self.opts.host_auth.hba_method();
        let hba = format!(
            "# pgsluice-testkit: unix socket trusted, TCP uses {m}\n\
             local all all trust\n\
             host all all 127.0.0.1/32 {m}\n\
             host all all ::1/128 {m}\n\
             local replication all trust\n\
             host replication all 127.0.0.1/32 {m}\n"
        );
        fs::write(self.data_dir.join("pg_hba.conf"), hba)?;
        Ok(())
    }

    /// Spawns the postmaster on `self.port` and waits until it is ready.
    /// Returns `AddrInUse` if the port was taken.
    fn launch_and_wait(&mut self) -> io::Result<()> {
        let log = fs::OpenOptions::new().append(true).open(&self.log_path)?;
        let log_offset = log.metadata()?.len();
        let mut cmd = Command::new(pg_bin("postgres"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        clean_pg_env(&mut cmd);
        cmd.env("LC_MESSAGES", "C");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        if self.detached {
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("spawning {}: {e}", pg_bin("postgres").display()),
            )
        })?;
        self.pid = child.id();
        self.child = Some(child);
        match self.wait_ready(log_offset) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some(mut child) = self.child.take() {
                    let children = sys::children_of(self.pid);
                    let _ = child.kill();
                    for c in children {
                        let _ = sys::kill(c, libc::SIGKILL);
                    }
                    let _ = child.wait();
                }
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self, log_offset: u64) -> io::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            let child = self.child.as_mut().expect("child present");
            if let Some(status) = child.try_wait()? {
                return Err(self.startup_failure(status, log_offset));
            }
            // Line 8 of postmaster.pid is the status ("starting", "ready", ...).
            let ready_in_pid_file = fs::read_to_string(&pid_file)
                .map(|s| s.lines().nth(7).map(str::trim) == Some("ready"))
                .unwrap_or(false);
            if ready_in_pid_file
                && TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)).is_ok()
                && self.pg_isready()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "PostgreSQL (pid {}, port {}) not ready within {READY_DEADLINE:?}; log:\n{}",
                        self.pid,
                        self.port,
                        self.log_tail(40)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(15));
        }
    }

    fn pg_isready(&self) -> bool {
        let mut cmd = Command::new(pg_bin("pg_isready"));
        cmd.args(["-q", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", "postgres", "-t", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        clean_pg_env(&mut cmd);
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    fn startup_failure(&self, status: ExitStatus, log_offset: u64) -> io::Error {
        let log = self.log_contents();
        let new_part = log.get(log_offset as usize..).unwrap_or(&log);
        let in_use = new_part.contains("could not bind")
            || new_part.contains("Address already in use")
            || new_part.contains("could not create any TCP/IP sockets")
            || new_part.contains("could not create lock file");
        let kind = if in_use {
            io::ErrorKind::AddrInUse
        } else {
            io::ErrorKind::Other
        };
        io::Error::new(
            kind,
            format!(
                "postgres exited ({status}) during startup on port {}; log:\n{}",
                self.port,
                self.log_tail(40)
            ),
        )
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

// ---------------------------------------------------------------------------
// helpers

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| !v.is_empty() && v != "0" && v.to_lowercase() != "false")
        .unwrap_or(false)
}

fn clean_pg_env(cmd: &mut Command) {
    for v in PG_ENV_VARS {
        cmd.env_remove(v);
    }
}

/// The (uid, gid) server processes must run as: `postgres` when we are root,
/// none (= ourselves) otherwise.
fn server_user() -> io::Result<Option<(u32, u32)>> {
    if sys::geteuid() != 0 {
        return Ok(None);
    }
    static USER: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    USER.get_or_init(|| {
        sys::lookup_user("postgres").map_err(|e| {
            format!(
                "running as root, so PostgreSQL must run as the `postgres` OS user, \
                 but looking it up failed: {e} (install PostgreSQL: scripts/install-deps)"
            )
        })
    })
    .clone()
    .map(Some)
    .map_err(io::Error::other)
}

fn chown_to(path: &Path, run_as: Option<(u32, u32)>) -> io::Result<()> {
    match run_as {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// Creates a fresh, private (0700) directory under the system temp dir.
fn make_temp_dir(prefix: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "{prefix}{}-{n}-{:x}",
            std::process::id(),
            nanos & 0xfffff
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not create a unique temp dir",
    ))
}

/// Runs initdb into `data_dir` (which must not exist; its parent `work_dir`
/// must be writable by the server user).
fn run_initdb(
    work_dir: &Path,
    data_dir: &Path,
    run_as: Option<(u32, u32)>,
    auth: HostAuth,
) -> io::Result<()> {
    let pwfile = work_dir.join("pwfile");
    fs::write(&pwfile, format!("{SUPERUSER_PASSWORD}\n"))?;
    fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))?;
    chown_to(&pwfile, run_as)?;
    let mut cmd = Command::new(pg_bin("initdb"));
    cmd.args([
        "--no-sync",
        "--no-instructions",
        "-A",
        "trust",
        "-U",
        SUPERUSER,
    ])
    .arg(format!("--auth-host={}", auth.hba_method()))
    .arg(format!("--pwfile={}", pwfile.display()))
    .args(["-E", "UTF8", "--locale=C", "-D"])
    .arg(data_dir)
    .current_dir(work_dir)
    .stdin(Stdio::null());
    clean_pg_env(&mut cmd);
    cmd.env("LC_MESSAGES", "C");
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("spawning {}: {e}", pg_bin("initdb").display()),
        )
    })?;
    let _ = fs::remove_file(&pwfile);
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Path of an initdb'd template data dir, shared by all processes of this
/// user and PostgreSQL installation: built once (atomically, via rename),
/// then copied with `cp -a` for every cluster.
fn template_data_dir(run_as: Option<(u32, u32)>) -> io::Result<PathBuf> {
    let mut cached = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cached.as_ref() {
        if p.join("PG_VERSION").is_file() {
            return Ok(p.clone());
        }
    }
    let initdb = pg_bin("initdb");
    let postgres = pg_bin("postgres");
    let mut h = DefaultHasher::new();
    for bin in [&initdb, &postgres] {
        let canonical = fs::canonicalize(bin).unwrap_or_else(|_| bin.clone());
        canonical.hash(&mut h);
        if let Ok(md) = fs::metadata(&canonical) {
            (md.len(), md.mtime(), md.mtime_nsec(), md.ino()).hash(&mut h);
        }
    }
    (sys::geteuid(), run_as).hash(&mut h);
    let final_dir = std::env::temp_dir().join(format!("{TEMPLATE_DIR_PREFIX}{:016x}", h.finish()));
    let data = final_dir.join("data");
    if !template_complete(&final_dir) {
        build_template(&final_dir, run_as)?;
    }
    *cached = Some(data.clone());
    Ok(data)
}

fn template_complete(dir: &Path) -> bool {
    dir.join("complete").is_file()
        && dir.join("data/PG_VERSION").is_file()
        && dir.join("data/global/pg_control").is_file()
}

fn build_template(final_dir: &Path, run_as: Option<(u32, u32)>) -> io::Result<()> {
    let name = final_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("template dir name");
    let staging = make_temp_dir(&format!("{name}.tmp-"))?;
    chown_to(&staging, run_as)?;
    let result = (|| {
        run_initdb(&staging, &staging.join("data"), run_as, HostAuth::Scram)?;
        fs::write(staging.join("complete"), "")?;
        fs::write(
            staging.join("owner.pid"),
            format!("{}\n", std::process::id()),
        )?;
        // A broken leftover (no `complete` marker) is in the way: remove it.
        if final_dir.exists() && !template_complete(final_dir) {
            let _ = fs::remove_dir_all(final_dir);
        }
        match fs::rename(&staging, final_dir) {
            Ok(()) => Ok(()),
            // Another process won the race: use theirs.
            Err(_) if template_complete(final_dir) => Ok(()),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!(
                    "renaming template {} -> {}: {e}",
                    staging.display(),
                    final_dir.display()
                ),
            )),
        }
    })();
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

fn forget_template(data: &Path) {
    let mut cached = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    *cached = None;
    if let Some(dir) = data.parent() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Removes cluster dirs (and half-built templates) left behind by processes
/// that no longer exist, killing a postmaster still running in one. Runs once
/// per process.
fn sweep_stale_dirs_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_cluster = name.starts_with(CLUSTER_DIR_PREFIX);
            let is_staging = name.starts_with(TEMPLATE_DIR_PREFIX) && name.contains(".tmp-");
            if !is_cluster && !is_staging {
                continue;
            }
            let dir = entry.path();
            let owner = fs::read_to_string(dir.join("owner.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .or_else(|| {
                    // Fall back to the pid in the dir name (prefix<pid>-...).
                    let rest = name.rsplit_once(".tmp-").map_or(
                        name.strip_prefix(CLUSTER_DIR_PREFIX).unwrap_or(""),
                        |(_, r)| r,
                    );
                    rest.split('-').next()?.parse().ok()
                });
            let Some(owner) = owner else { continue };
            if owner == std::process::id() || sys::process_alive(owner) {
                continue;
            }
            if is_cluster {
                kill_stale_postmaster(&dir.join("data"));
            }
            let _ = fs::remove_dir_all(&dir);
        }
    });
}

fn kill_stale_postmaster(data_dir: &Path) {
    let Some(pid) = fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok())
    else {
        return;
    };
    let Some(cmdline) = sys::cmdline(pid) else {
        return;
    };
    if !cmdline.contains(&*data_dir.to_string_lossy()) {
        return;
    }
    let children = sys::children_of(pid);
    let _ = sys::kill(pid, libc::SIGKILL);
    for c in children {
        let _ = sys::kill(c, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while sys::process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `child` until it exits or `timeout` passes.
pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_with_stdin(mut cmd: Command, input: &[u8]) -> io::Result<std::process::Output> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // psql may exit early (e.g. connection failure): ignore EPIPE.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}

/// Quotes an SQL identifier: `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal: `'text'` with embedded quotes doubled
/// (standard_conforming_strings is on).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn quote_conf_value(v: &str) -> String {
    if v.starts_with('\'') {
        v.to_string()
    } else {
        quote_literal(v)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
