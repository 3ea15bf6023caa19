//! The processes under test: pgsluice and PgBouncer (started here as children), the
//! fake backend, plus the `/proc` readings (CPU ticks, resident set) and the file
//! descriptor limit.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgsluice_testkit::Pooler;

/// Where Debian's PgBouncer package installs the binary.
pub(crate) const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// Benchmark user, password and database (on PostgreSQL and through both poolers).
pub(crate) const USER: &str = "bench";
pub(crate) const PASSWORD: &str = "bench";
pub(crate) const DB: &str = "bench";

/// Raises RLIMIT_NOFILE (soft and, as root, hard) to at least `want`; returns the
/// soft limit now in force. Children inherit it.
pub(crate) fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit(2) writes one `rlimit` into the valid, exclusively borrowed `lim`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let mut new = lim;
    new.rlim_cur = want;
    if new.rlim_max < want {
        new.rlim_max = want;
    }
    #[allow(unsafe_code)]
    // SAFETY: setrlimit(2) only reads the valid `new`; raising the hard limit needs
    // CAP_SYS_RESOURCE and otherwise fails with EPERM, handled below.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
    if rc == 0 {
        return Ok(want);
    }
    // Not root: go as high as the hard limit allows.
    new.rlim_max = lim.rlim_max;
    new.rlim_cur = lim.rlim_max;
    #[allow(unsafe_code)]
    // SAFETY: as above, setrlimit(2) only reads the valid `new`.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_max)
}

/// Clock ticks per second of `/proc/PID/stat` times.
pub(crate) fn clock_ticks() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf(3) takes an integer name and touches no memory of ours.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process (all its threads), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The effective uid.
pub(crate) fn geteuid() -> u32 {
    #[allow(unsafe_code)]
    // SAFETY: geteuid(2) has no arguments, cannot fail and touches no memory of ours.
    unsafe {
        libc::geteuid()
    }
}

/// A private temp directory, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> io::Result<TempDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("pgsluice-bench-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        // PgBouncer may run as the `postgres` user and must read its files here.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        Ok(TempDir(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Where a pooler forwards to.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub(crate) port: u16,
    pub(crate) dbname: String,
}

/// A running pooler with what is needed to measure it.
#[derive(Debug)]
pub(crate) struct RunningPooler {
    pub(crate) proc: Pooler,
    _dir: Option<TempDir>,
}

impl RunningPooler {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.proc.addr()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stops the process (SIGTERM, then SIGKILL on drop if it lingers).
    pub(crate) fn stop(mut self) {
        let _ = self.proc.signal(libc::SIGTERM);
        let _ = self.proc.wait_exit(Duration::from_secs(5));
    }
}

/// Starts pgsluice in quick mode in front of `backend` (clients log in as
/// bench/bench with SCRAM; database name `backend.dbname`), with `env` added to its
/// environment (`PGSLUICE_*` settings).
pub(crate) fn start_pgsluice(
    bin: &Path,
    backend: &Backend,
    pool_size: u32,
    workers: Option<usize>,
    env: &[(&str, String)],
) -> io::Result<RunningPooler> {
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{}",
        backend.port, backend.dbname
    );
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--backend", &url])
        .args(["--pool-mode", "transaction", "--auth-type", "scram-sha-256"])
        .args(["--pool-size", &pool_size.to_string()])
        .args(["--max-client-conn", "20000"])
        // Per-connection login/logout lines off (PgBouncer gets log_connections = 0);
        // the "listening on" line is still needed.
        .args(["--log-level", "warn,pgsluice::app=info"])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(w) = workers {
        cmd.args(["--workers", &w.to_string()]);
    }
    Ok(RunningPooler {
        proc: Pooler::spawn_command(cmd)?,
        _dir: None,
    })
}

/// The `pgbouncer --version` first line, or None when it is not installed.
pub(crate) fn pgbouncer_version() -> Option<String> {
    let out = Command::new(PGBOUNCER).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

/// Starts PgBouncer with a generated pgbouncer.ini and userlist.txt (auth_type
/// scram-sha-256, transaction pooling) in a temp dir. `secret` goes into userlist.txt:
/// the SCRAM verifier as stored in PostgreSQL's pg_authid, which is how PgBouncer is
/// usually set up (with a plaintext password it would run the SCRAM key derivation
/// for every login). `extra_ini` is appended to the `[pgbouncer]` section.
pub(crate) fn start_pgbouncer(
    backend: &Backend,
    pool_size: u32,
    secret: &str,
    extra_ini: &str,
) -> io::Result<RunningPooler> {
    let dir = TempDir::new("pgbouncer")?;
    let port = pgsluice_testkit::free_port();
    let userlist = dir.path().join("userlist.txt");
    fs::write(&userlist, format!("\"{USER}\" \"{secret}\"\n"))?;
    let ini = format!(
        "[databases]\n\
         {db} = host=127.0.0.1 port={bport} dbname={db}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = {userlist}\n\
         pool_mode = transaction\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = 20000\n\
         max_db_connections = 0\n\
         log_connections = 0\n\
         log_disconnections = 0\n\
         log_stats = 0\n\
         ignore_startup_parameters = extra_float_digits\n\
         {extra_ini}",
        db = backend.dbname,
        bport = backend.port,
        userlist = userlist.display(),
    );
    let ini_path = dir.path().join("pgbouncer.ini");
    fs::write(&ini_path, ini)?;
    for f in [&userlist, &ini_path] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o644))?;
    }
    let mut cmd = Command::new(PGBOUNCER);
    // PgBouncer refuses to run as root; -u switches to an unprivileged user.
    if geteuid() == 0 {
        cmd.args(["-u", "postgres"]);
    }
    cmd.arg(&ini_path);
    Ok(RunningPooler {
        proc: Pooler::spawn_command(cmd)?,
        _dir: Some(dir),
    })
}

/// Starts the fake backend (this executable with `--serve-fakepg`).
pub(crate) fn start_fakepg() -> io::Result<Pooler> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["--serve-fakepg", "127.0.0.1:0"]);
    Pooler::spawn_command(cmd)
}

/// Finds (and unless `build` is false, first builds) the release pgsluice binary.
pub(crate) fn pgsluice_binary(explicit: Option<&Path>, build: bool) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("--pgsluice {}: no such file", p.display()))
        };
    }
    let root = crate::args::repo_root();
    if build {
        crate::progress(format_args!(
            "building pgsluice: cargo build --release -p pgsluice"
        ));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "pgsluice"])
            .current_dir(&root)
            .status()
            .map_err(|e| format!("running cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "cargo build --release -p pgsluice failed ({status})"
            ));
        }
    }
    // Next to this executable (same target dir and profile), else the default target dir.
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent().filter(|d| d.ends_with("release")) {
            candidates.push(dir.join("pgsluice"));
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release/pgsluice"));
    }
    candidates.push(root.join("target/release/pgsluice"));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "pgsluice release binary not found: run `cargo build --release -p pgsluice` \
         or pass --pgsluice PATH"
            .to_owned()
    })
}
