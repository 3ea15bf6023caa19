//! What PgBouncer's process-level switches do: `-d` (run in the background),
//! `-u USER` / `user` (switch to another Unix user) and `pidfile`.
//!
//! * `-d`: pgsluice starts itself again as a background process (same
//!   executable, same arguments, in a new process group, standard input from
//!   /dev/null, standard output and error appended to `logfile` (for what is
//!   printed before logging starts, or a panic; log lines go to the file through
//!   [`crate::logging`], which reopens it on SIGHUP), or to /dev/null without
//!   one) and the foreground process exits. When a `pidfile` is configured the foreground process waits until the
//!   background one has written it (or has failed) so that a failure is
//!   reported with a non-zero exit status. No `fork()` is involved: the Tokio
//!   runtime is only started in the background process.
//! * `user`: when running as root, pgsluice switches to that user (its
//!   primary group and supplementary groups too) before starting the runtime;
//!   when already running as that user nothing happens; otherwise it is an
//!   error. This needs `libc` calls, fenced in one `unsafe` block below.
//! * `pidfile`: written at startup, after switching user (refused if it
//!   names a running process), removed at exit by [`ProcessGuard`] if it still
//!   names this process. Under `--upgrade` ([`setup_upgrade`]) the running process
//!   it names is the one being replaced: it is written later, by
//!   [`ProcessGuard::write_pidfile`], once the new process listens; the old one
//!   then leaves it in place at exit.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;

/// Set in the environment of the background process started by `-d`. (Not a
/// `PGSLUICE_*` name: those are configuration overrides.)
pub const DAEMON_CHILD_ENV: &str = "_PGSLUICE_DAEMON_CHILD";

/// How long the foreground process waits for the background one's pidfile.
const PIDFILE_WAIT: Duration = Duration::from_secs(10);

/// A failure of the process setup.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The pidfile names a live process.
    #[error("pidfile {path}: pgsluice (pid {pid}) is already running")]
    AlreadyRunning {
        /// The pidfile.
        path: PathBuf,
        /// The pid it holds.
        pid: u32,
    },
    /// Switching user failed.
    #[error("cannot switch to user `{user}`: {message}")]
    User {
        /// The user asked for.
        user: String,
        /// Why.
        message: String,
    },
    /// An I/O error with some context.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// The background process stopped at once.
    #[error("the background process exited ({status}); see the logfile for why")]
    ChildFailed {
        /// Its exit status.
        status: std::process::ExitStatus,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ProcessError {
    let context = context.into();
    move |source| ProcessError::Io { context, source }
}

/// The outcome of [`setup`].
#[derive(Debug)]
pub enum Setup {
    /// This is the foreground process of `-d`: the background one runs; exit.
    Parent,
    /// Run the pooler here; keep the guard until the end.
    Run(ProcessGuard),
}

/// Removes the pidfile (if it still holds this process's pid) when dropped.
#[derive(Debug, Default)]
pub struct ProcessGuard {
    pidfile: Option<PathBuf>,
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.pidfile {
            if read_pid(p) == Some(std::process::id()) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

impl ProcessGuard {
    /// Writes this process's pid to `path` and removes it at exit (as long as it
    /// still holds this pid).
    pub fn write_pidfile(&mut self, path: &Path) -> Result<(), ProcessError> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(io_err(format!("cannot write pidfile {}", path.display())))?;
        self.pidfile = Some(path.to_owned());
        Ok(())
    }

    /// Puts `pid` back into the pidfile this guard wrote (an upgrade that failed after
    /// writing it: the old process goes on) and forgets it.
    pub fn give_back_pidfile(&mut self, pid: u32) {
        if let Some(p) = self.pidfile.take() {
            let _ = std::fs::write(&p, format!("{pid}\n"));
        }
    }
}

/// Applies `-d`, `user` and `pidfile` before the runtime starts. Must be called
/// while the process has a single thread.
pub fn setup(cfg: &mut Config, daemon: bool) -> Result<Setup, ProcessError> {
    setup_as(cfg, daemon, false)
}

/// [`setup`] for `--upgrade`: the pidfile names the running process being replaced,
/// so it is neither refused nor written here (see [`ProcessGuard::write_pidfile`]).
pub fn setup_upgrade(cfg: &mut Config, daemon: bool) -> Result<Setup, ProcessError> {
    setup_as(cfg, daemon, true)
}

fn setup_as(cfg: &mut Config, daemon: bool, upgrade: bool) -> Result<Setup, ProcessError> {
    let is_child = std::env::var_os(DAEMON_CHILD_ENV).is_some();
    if let Some(p) = cfg.general.pidfile.as_ref().filter(|_| !upgrade) {
        if let Some(pid) = read_pid(p).filter(|pid| *pid != std::process::id() && alive(*pid)) {
            return Err(ProcessError::AlreadyRunning {
                path: p.clone(),
                pid,
            });
        }
    }
    if daemon && !is_child {
        spawn_background(cfg)?;
        return Ok(Setup::Parent);
    }
    // Switch first, so that the pidfile belongs to the user who removes it.
    if let Some(user) = &cfg.general.user {
        switch_user(user)?;
    }
    let mut guard = ProcessGuard::default();
    if let Some(p) = cfg.general.pidfile.as_ref().filter(|_| !upgrade) {
        guard.write_pidfile(p)?;
    }
    Ok(Setup::Run(guard))
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process exists (Linux: /proc).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Starts this executable again in the background with the same arguments.
fn spawn_background(cfg: &Config) -> Result<(), ProcessError> {
    let exe = std::env::current_exe().map_err(io_err("cannot find the pgsluice executable"))?;
    let (out, err) = match &cfg.general.logfile {
        Some(path) => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io_err(format!("cannot open logfile {}", path.display())))?;
            let f2 = f
                .try_clone()
                .map_err(io_err(format!("cannot open logfile {}", path.display())))?;
            (Stdio::from(f), Stdio::from(f2))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DAEMON_CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(io_err("cannot start the background process"))?;
    let Some(pidfile) = &cfg.general.pidfile else {
        return Ok(());
    };
    let deadline = Instant::now() + PIDFILE_WAIT;
    while Instant::now() < deadline {
        if let Some(status) = child
            .try_wait()
            .map_err(io_err("cannot watch the background process"))?
        {
            return Err(ProcessError::ChildFailed { status });
        }
        if read_pid(pidfile) == Some(child.id()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Switches to `user` (uid, gid and supplementary groups) when running as
/// root; a no-op when already running as `user`.
#[allow(unsafe_code)]
fn switch_user(user: &str) -> Result<(), ProcessError> {
    let fail = |message: String| ProcessError::User {
        user: user.to_owned(),
        message,
    };
    let name = CString::new(user).map_err(|_| fail("the name contains a NUL byte".to_owned()))?;
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // `pwd` is plain old data that getpwnam_r fills; zeroed is a valid (if
    // meaningless) value for it. `geteuid`, `initgroups`, `setgid` and `setuid` are
    // plain system calls given valid arguments; they run before the Tokio runtime
    // starts, so no other thread exists.
    // SAFETY: every pointer passed below points to live, writable memory of the
    // stated size (`buf` outlives the call and `pwd`'s string fields, unread).
    let (rc, uid, gid, euid) = unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        (rc, pwd.pw_uid, pwd.pw_gid, libc::geteuid())
    };
    if rc != 0 {
        return Err(fail(io::Error::from_raw_os_error(rc).to_string()));
    }
    if result.is_null() {
        return Err(fail("no such user".to_owned()));
    }
    if euid == uid {
        return Ok(());
    }
    if euid != 0 {
        return Err(fail(
            "only root can switch users (pgsluice runs as another user)".to_owned(),
        ));
    }
    // SAFETY: see above; `name` is a valid NUL-terminated string.
    let step = unsafe {
        if libc::initgroups(name.as_ptr(), gid) != 0 {
            Some("initgroups")
        } else if libc::setgid(gid) != 0 {
            Some("setgid")
        } else if libc::setuid(uid) != 0 {
            Some("setuid")
        } else {
            None
        }
    };
    match step {
        Some(call) => Err(fail(format!("{call}: {}", io::Error::last_os_error()))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pgsluice-process-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn pidfile_written_and_removed() {
        let p = temp("ok.pid");
        let mut cfg = Config::default();
        cfg.general.pidfile = Some(p.clone());
        let Setup::Run(guard) = setup(&mut cfg, false).unwrap() else {
            panic!("not a daemon");
        };
        assert_eq!(read_pid(&p), Some(std::process::id()));
        drop(guard);
        assert!(!p.exists());
    }

    #[test]
    fn pidfile_of_a_live_process_is_refused() {
        let p = temp("live.pid");
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(&p, format!("{}\n", sleeper.id())).unwrap();
        let mut cfg = Config::default();
        cfg.general.pidfile = Some(p.clone());
        let e = setup(&mut cfg, false).unwrap_err();
        assert!(matches!(e, ProcessError::AlreadyRunning { .. }), "{e}");
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        // A stale pidfile (dead process) is replaced.
        let Setup::Run(_guard) = setup(&mut cfg, false).unwrap() else {
            panic!("not a daemon");
        };
        assert_eq!(read_pid(&p), Some(std::process::id()));
    }

    #[test]
    fn an_upgrade_writes_the_pidfile_late_and_can_give_it_back() {
        let p = temp("upgrade.pid");
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(&p, format!("{}\n", sleeper.id())).unwrap();
        let mut cfg = Config::default();
        cfg.general.pidfile = Some(p.clone());
        let Setup::Run(mut guard) = setup_upgrade(&mut cfg, false).unwrap() else {
            panic!("not a daemon");
        };
        // Not refused, not yet written.
        assert_eq!(read_pid(&p), Some(sleeper.id()));
        guard.write_pidfile(&p).unwrap();
        assert_eq!(read_pid(&p), Some(std::process::id()));
        guard.give_back_pidfile(sleeper.id());
        drop(guard);
        assert_eq!(read_pid(&p), Some(sleeper.id()));
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn switching_users() {
        // The current user: a no-op whoever we are.
        let me = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
        if Path::new("/proc/self").exists() && me == "root" {
            switch_user("root").unwrap();
        }
        let e = switch_user("no-such-user-pgsluice")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such user"), "{e}");
        let e = switch_user("a\0b").unwrap_err().to_string();
        assert!(e.contains("NUL"), "{e}");
    }
}
