//! A pooler (pgsluice, PgBouncer, ...) child process for process-level tests.

use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sys;

/// How long [`Pooler::spawn`] waits for the "listening on" line.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The child's stdout.
    Stdout,
    /// The child's stderr.
    Stderr,
}

#[derive(Default)]
struct OutputState {
    lines: Vec<(Stream, String)>,
    open_streams: usize,
}

struct Shared {
    state: Mutex<OutputState>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, OutputState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pooler child process. Its stdout and stderr are read line by line in
/// background threads, kept for assertions and echoed to the test's stderr
/// (prefixed with `[pooler PID]`). ANSI colour codes are stripped, and
/// `NO_COLOR=1` is set for the child unless `envs` sets it.
///
/// Dropping it SIGKILLs the process if it is still running.
pub struct Pooler {
    child: Mutex<Child>,
    pid: u32,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pooler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooler")
            .field("pid", &self.pid)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Pooler {
    /// Spawns `bin args...` with `envs` added to the environment, and waits
    /// (deadline 30 s) until an output line contains `listening on <addr>`
    /// (case-insensitive; on stderr or stdout), parsing `<addr>`. Returns Err
    /// with the collected output if the process exits first or the deadline
    /// passes (the process is killed then).
    pub fn spawn(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> io::Result<Pooler> {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        if !envs.iter().any(|(k, _)| *k == "NO_COLOR") {
            cmd.env("NO_COLOR", "1");
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Self::spawn_command(cmd)
    }

    /// Like [`Pooler::spawn`] for a prepared command (stdin, stdout and
    /// stderr are overridden).
    pub fn spawn_command(mut cmd: Command) -> io::Result<Pooler> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawning {program}: {e}")))?;
        let pid = child.id();
        let shared = Arc::new(Shared {
            state: Mutex::new(OutputState {
                lines: Vec::new(),
                open_streams: 2,
            }),
            changed: Condvar::new(),
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        spawn_reader(stdout, Stream::Stdout, pid, shared.clone());
        spawn_reader(stderr, Stream::Stderr, pid, shared.clone());

        let mut pooler = Pooler {
            child: Mutex::new(child),
            pid,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            shared,
        };
        let deadline = Instant::now() + LISTEN_DEADLINE;
        let mut scanned = 0;
        let mut state = pooler.shared.lock();
        loop {
            while scanned < state.lines.len() {
                if let Some(addr) = parse_listening(&state.lines[scanned].1) {
                    drop(state);
                    pooler.addr = addr;
                    return Ok(pooler);
                }
                scanned += 1;
            }
            let exited = state.open_streams == 0 || pooler.try_wait()?.is_some();
            if exited || Instant::now() >= deadline {
                drop(state);
                let status = if exited {
                    let _ = pooler.wait_exit(Duration::from_secs(2));
                    let s = pooler.try_wait()?;
                    format!("exited ({})", s.map_or("?".into(), |s| s.to_string()))
                } else {
                    format!("printed no 'listening on <addr>' line within {LISTEN_DEADLINE:?}")
                };
                let output = pooler.output().join("\n");
                // Drop kills it if still running.
                return Err(io::Error::other(format!(
                    "pooler {program} (pid {pid}) {status}; output:\n{output}"
                )));
            }
            state = pooler
                .shared
                .changed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The address from the "listening on" line (an unspecified IP such as
    /// 0.0.0.0 is replaced by the loopback address, so it can be dialled).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends a signal (e.g. `libc::SIGHUP`). Err if the process has exited.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // Hold the lock so the process cannot be reaped (and its pid reused)
        // between the check and the kill.
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("pooler {} already exited ({status})", self.pid),
            ));
        }
        sys::kill(self.pid, sig)
    }

    /// Non-blocking exit check.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
    }

    /// Waits up to `timeout` for the process to exit; `Ok(None)` if it is
    /// still running. After an exit, also waits (≤ 2 s) until its output
    /// has been read completely.
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let eof_deadline = Instant::now() + Duration::from_secs(2);
        let mut state = self.shared.lock();
        while state.open_streams > 0 {
            let left = eof_deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(Some(status))
    }

    /// All output lines so far, stderr and stdout merged in arrival order.
    pub fn output(&self) -> Vec<String> {
        self.shared
            .lock()
            .lines
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Only the stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.lines_of(Stream::Stderr)
    }

    /// Only the stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines_of(Stream::Stdout)
    }

    fn lines_of(&self, stream: Stream) -> Vec<String> {
        self.shared
            .lock()
            .lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Number of output lines so far (use with [`Pooler::wait_for_line_since`]).
    pub fn line_count(&self) -> usize {
        self.shared.lock().lines.len()
    }

    /// Waits until some output line (already seen or new) contains `needle`.
    /// False on timeout or when the process closed its output without it.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_line_since(0, needle, timeout).is_some()
    }

    /// Waits until an output line with index ≥ `since` contains `needle` and
    /// returns it.
    pub fn wait_for_line_since(
        &self,
        since: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut scanned = since;
        let mut state = self.shared.lock();
        loop {
            while scanned < state.lines.len() {
                if state.lines[scanned].1.contains(needle) {
                    return Some(state.lines[scanned].1.clone());
                }
                scanned += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.open_streams == 0 || left.is_zero() {
                return None;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

fn spawn_reader(pipe: impl Read + Send + 'static, stream: Stream, pid: u32, shared: Arc<Shared>) {
    let name = format!("pooler-{pid}-{stream:?}").to_lowercase();
    let spawned = std::thread::Builder::new().name(name).spawn({
        let shared = shared.clone();
        move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let raw = String::from_utf8_lossy(&buf);
                        let line = strip_ansi(raw.trim_end_matches(['\n', '\r']));
                        eprintln!("[pooler {pid}] {line}");
                        shared.lock().lines.push((stream, line));
                        shared.changed.notify_all();
                    }
                }
            }
            shared.lock().open_streams -= 1;
            shared.changed.notify_all();
        }
    });
    if spawned.is_err() {
        shared.lock().open_streams -= 1;
        shared.changed.notify_all();
    }
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final` and two-byte `ESC x`).
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // `ESC [ params final`: skip up to a final byte in @..=~; other
        // escapes are two characters long.
        if let Some('[') = chars.next() {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// Finds `listening on <addr>` (case-insensitive) in a line and parses the
/// address.
pub(crate) fn parse_listening(line: &str) -> Option<SocketAddr> {
    const NEEDLE: &str = "listening on";
    let lower = line.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(NEEDLE) {
        let start = from + i + NEEDLE.len();
        from = start;
        let rest = line[start..].trim_start_matches([' ', '=', ':', '\t']);
        let Some(token) = rest.split_whitespace().next() else {
            continue;
        };
        // `addr=127.0.0.1:1` style (structured logging): take the value.
        let token = token.rsplit('=').next().unwrap_or(token);
        let token = token.trim_start_matches(['"', '\'', '(', '`']);
        // Keep only the characters an IP:PORT can hold, so whatever follows it
        // (`",` and `"}` in JSON lines, `)`, `;`...) is dropped.
        let end = token
            .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
            .unwrap_or(token.len());
        let token = token[..end].trim_end_matches(['.', ':']);
        if let Ok(mut addr) = token.parse::<SocketAddr>() {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            return Some(addr);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines() {
        let a = |s: &str| parse_listening(s).map(|a| a.to_string());
        assert_eq!(
            a("2024-01-01T00:00:00Z  INFO pgsluice: listening on 127.0.0.1:40123"),
            Some("127.0.0.1:40123".into())
        );
        assert_eq!(
            a("INFO Listening on \"127.0.0.1:6432\", admin off"),
            Some("127.0.0.1:6432".into())
        );
        assert_eq!(a("listening on [::1]:5000."), Some("[::1]:5000".into()));
        assert_eq!(
            a("listening on 0.0.0.0:7000"),
            Some("127.0.0.1:7000".into())
        );
        assert_eq!(
            a("listening on unix socket /tmp/.s.PGSQL.6432; listening on 127.0.0.1:1"),
            Some("127.0.0.1:1".into())
        );
        assert_eq!(
            a("INFO pgsluice: listening on addr=127.0.0.1:9 admin=false"),
            Some("127.0.0.1:9".into())
        );
        // JSON log lines end the message with `"}` or `",`.
        assert_eq!(
            a(
                r#"{"timestamp":"2024-01-01T00:00:00Z","level":"INFO","message":"listening on 127.0.0.1:33541"}"#
            ),
            Some("127.0.0.1:33541".into())
        );
        assert_eq!(
            a(r#"{"message":"listening on [::1]:6432","target":"pgsluice"}"#),
            Some("[::1]:6432".into())
        );
        assert_eq!(a("not listening"), None);
        assert_eq!(a("listening on"), None);
    }

    #[test]
    fn strips_ansi() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2024\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m listening on 1.2.3.4:5"),
            "2024  INFO listening on 1.2.3.4:5"
        );
    }

    #[test]
    fn pooler_spawn_reads_output_and_signals() {
        // The trap goes first: a SIGHUP sent as soon as "listening" is seen must not
        // find the shell without its handler.
        let script = "trap 'echo got-hup >&2' HUP; \
                      echo starting; echo 'x listening on 127.0.0.1:4321' >&2; \
                      while :; do sleep 0.05; done";
        let mut p =
            Pooler::spawn(Path::new("/bin/sh"), &["-c", script], &[("FOO", "bar")]).expect("spawn");
        assert_eq!(p.addr(), "127.0.0.1:4321".parse().unwrap());
        assert!(p.wait_for_line("starting", Duration::from_secs(5)));
        let n = p.line_count();
        p.signal(libc::SIGHUP).unwrap();
        assert!(p
            .wait_for_line_since(n, "got-hup", Duration::from_secs(5))
            .is_some());
        assert!(p.stderr_lines().iter().any(|l| l.contains("listening")));
        assert_eq!(p.stdout_lines(), vec!["starting".to_string()]);
        assert_eq!(p.wait_exit(Duration::from_millis(50)).unwrap(), None);
        p.signal(libc::SIGTERM).unwrap();
        let status = p
            .wait_exit(Duration::from_secs(5))
            .unwrap()
            .expect("exited");
        assert!(!status.success());
        assert!(p.signal(libc::SIGTERM).is_err());
    }

    #[test]
    fn pooler_spawn_reports_early_exit() {
        let err = Pooler::spawn(
            Path::new("/bin/sh"),
            &["-c", "echo 'fatal: bad config' >&2; exit 3"],
            &[],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bad config"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
    }
}
