//! Everything on disk: private temp dirs, initdb (once per PostgreSQL build,
//! into a template shared by all test processes, then copied per cluster), the
//! testkit's postgresql.conf and pg_hba.conf, and the sweep that removes dirs
//! (and kills postmasters) left behind by test processes that died.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::env::{clean_pg_env, env_flag, pg_bin};
use super::sql::quote_literal;
use super::{
    HostAuth, PgCluster, CLUSTER_DIR_PREFIX, SUPERUSER, SUPERUSER_PASSWORD, TEMPLATE_DIR_PREFIX,
};
use crate::sys;

impl PgCluster {
    /// Fills `self.data_dir`: a copy of the template, or a fresh initdb when
    /// `PGSLUICE_TESTKIT_NO_TEMPLATE` is set.
    pub(super) fn create_data_dir(&self) -> io::Result<()> {
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

    /// Appends the testkit's settings (then the caller's) to postgresql.conf and
    /// writes pg_hba.conf for the chosen host auth method.
    pub(super) fn write_config(&self) -> io::Result<()> {
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
        self.append_conf(&conf)?;

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

    /// Appends `text` (complete `name = value` lines) to postgresql.conf;
    /// later lines win over earlier ones.
    pub(super) fn append_conf(&self, text: &str) -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir.join("postgresql.conf"))?;
        f.write_all(text.as_bytes())
    }
}

/// The (uid, gid) server processes must run as: `postgres` when we are root,
/// none (= ourselves) otherwise.
pub(super) fn server_user() -> io::Result<Option<(u32, u32)>> {
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

pub(super) fn chown_to(path: &Path, run_as: Option<(u32, u32)>) -> io::Result<()> {
    match run_as {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// Creates a fresh, private (0700) directory under the system temp dir.
pub(super) fn make_temp_dir(prefix: &str) -> io::Result<PathBuf> {
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

/// Whether `dir` holds a finished template (marker written last).
fn template_complete(dir: &Path) -> bool {
    dir.join("complete").is_file()
        && dir.join("data/PG_VERSION").is_file()
        && dir.join("data/global/pg_control").is_file()
}

/// Builds a template in a staging dir and renames it into place, so that
/// concurrent processes never see a half-built one.
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

/// Drops the cached template path and removes the template dir.
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
pub(super) fn sweep_stale_dirs_once() {
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

/// SIGKILLs the postmaster (and its children) recorded in `data_dir`, if that
/// pid still runs a postgres for this data dir.
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

/// A postgresql.conf value: quoted unless the caller already quoted it.
pub(super) fn quote_conf_value(v: &str) -> String {
    if v.starts_with('\'') {
        v.to_string()
    } else {
        quote_literal(v)
    }
}
