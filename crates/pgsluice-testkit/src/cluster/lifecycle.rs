//! The postmaster's life: launching it on a port and waiting until it really
//! accepts connections, stopping it like `pg_ctl stop -m <mode>`, starting it
//! again, and freezing it with SIGSTOP to simulate a hung server. Every wait has
//! a deadline, and a failed start reports the tail of the server log.

use std::fs;
use std::io;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::env::{clean_pg_env, pg_bin};
use super::{PgCluster, StopMode, READY_DEADLINE, SUPERUSER};
use crate::sys;

impl PgCluster {
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

    /// Spawns the postmaster on `self.port` and waits until it is ready.
    /// Returns `AddrInUse` if the port was taken.
    pub(super) fn launch_and_wait(&mut self) -> io::Result<()> {
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

    /// Waits until the postmaster says "ready" in postmaster.pid and answers on
    /// TCP and to pg_isready; fails early if it exits.
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

    /// Whether `pg_isready` gets an answer over TCP.
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

    /// The error for a postmaster that exited during start-up: `AddrInUse` when
    /// the log says the port was taken (the caller retries on another port).
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

/// Polls `child` until it exits or `timeout` passes.
pub(super) fn wait_child(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
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
