//! Running pgbench and reading its report (and its per-transaction log for latency).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::args::Mode;
use crate::procs::{PASSWORD, USER};

/// What pgbench runs.
#[derive(Debug, Clone)]
pub(crate) enum Script {
    /// `--builtin=NAME`.
    Builtin(&'static str),
    /// `-f FILE`.
    File(PathBuf),
}

/// One pgbench invocation.
#[derive(Debug, Clone)]
pub(crate) struct Run<'a> {
    pub(crate) port: u16,
    pub(crate) dbname: &'a str,
    pub(crate) script: Script,
    pub(crate) mode: Mode,
    pub(crate) clients: u32,
    pub(crate) duration: u32,
    /// Write the per-transaction log with this prefix (`-l --log-prefix`).
    pub(crate) log_prefix: Option<PathBuf>,
    /// Where stdout/stderr go.
    pub(crate) work_dir: &'a Path,
}

/// pgbench's report of one run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub(crate) tps: f64,
    pub(crate) processed: u64,
    pub(crate) failed: u64,
    /// Clients that pgbench aborted after an error.
    pub(crate) aborted: u64,
    pub(crate) latency_ms: f64,
    pub(crate) exit_ok: bool,
    /// The first error line pgbench printed, if any.
    pub(crate) first_error: Option<String>,
}

impl Outcome {
    /// True when the run had no errors at all.
    pub(crate) fn clean(&self) -> bool {
        self.exit_ok && self.failed == 0 && self.aborted == 0 && self.processed > 0
    }
}

/// Path of pgbench: the testkit's choice (newest PostgreSQL bin dir, else PATH).
pub(crate) fn pgbench_bin() -> PathBuf {
    pgsluice_testkit::pg_bin("pgbench")
}

/// Runs pgbench -i (scale `scale`) against a database directly.
pub(crate) fn initialize(port: u16, dbname: &str, scale: u32) -> io::Result<()> {
    let out = Command::new(pgbench_bin())
        .args(["-i", "-q", "-s", &scale.to_string(), "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", USER, dbname])
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "disable")
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Runs pgbench and parses its report. Kills it if it overruns its duration by far.
pub(crate) fn run(r: &Run<'_>) -> io::Result<Outcome> {
    let stdout_path = r.work_dir.join("pgbench.out");
    let stderr_path = r.work_dir.join("pgbench.err");
    let mut cmd = Command::new(pgbench_bin());
    cmd.arg("-n")
        .args(["-h", "127.0.0.1", "-p", &r.port.to_string(), "-U", USER])
        .args(["-c", &r.clients.to_string()])
        .args(["-j", &r.clients.clamp(1, 2).to_string()])
        .args(["-T", &r.duration.to_string()])
        .args(["-M", r.mode.as_str()]);
    match &r.script {
        Script::Builtin(name) => cmd.arg(name),
        Script::File(f) => cmd.arg("-f").arg(f),
    };
    if let Some(prefix) = &r.log_prefix {
        cmd.arg("-l")
            .arg(format!("--log-prefix={}", prefix.display()));
    }
    cmd.arg(r.dbname)
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "60")
        .current_dir(r.work_dir)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path)?)
        .stderr(fs::File::create(&stderr_path)?);
    let mut child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {}: {e}", pgbench_bin().display()),
        )
    })?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(r.duration) + 180);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    let mut o = parse_report(&stdout, &stderr);
    o.exit_ok = status.is_some_and(|s| s.success());
    match status {
        None => {
            o.first_error
                .get_or_insert_with(|| "pgbench overran its deadline and was killed".into());
        }
        Some(s) if !s.success() => {
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            o.first_error.get_or_insert_with(|| {
                format!("pgbench {s}: {}", last.unwrap_or("(no message)").trim())
            });
        }
        Some(_) => {}
    }
    Ok(o)
}

/// Reads the numbers out of pgbench's stdout and counts aborted clients in stderr.
pub(crate) fn parse_report(stdout: &str, stderr: &str) -> Outcome {
    let mut o = Outcome::default();
    let num = |s: &str| -> Option<f64> {
        s.trim()
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()?
            .parse()
            .ok()
    };
    for line in stdout.lines() {
        if let Some(v) = line.strip_prefix("number of transactions actually processed:") {
            o.processed = num(v).unwrap_or(0.0) as u64;
        } else if let Some(v) = line.strip_prefix("number of failed transactions:") {
            o.failed = num(v).unwrap_or(0.0) as u64;
        } else if let Some(v) = line.strip_prefix("latency average =") {
            o.latency_ms = num(v).unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("tps =") {
            o.tps = num(v).unwrap_or(0.0);
        }
    }
    for line in stderr.lines() {
        if line.contains(" aborted ") || line.contains("aborted in command") {
            o.aborted += 1;
        }
        let is_error = line.contains("ERROR") || line.contains("error") || line.contains("FATAL");
        if is_error && o.first_error.is_none() {
            o.first_error = Some(line.trim().chars().take(200).collect());
        }
    }
    o
}

/// Reads the latencies (microseconds) from pgbench's per-transaction logs
/// `PREFIX.PID[.N]`, then deletes the files.
pub(crate) fn read_latency_logs(prefix: &Path) -> io::Result<Vec<u64>> {
    let dir = prefix.parent().unwrap_or(Path::new("."));
    let stem = prefix
        .file_name()
        .map(|s| format!("{}.", s.to_string_lossy()))
        .unwrap_or_default();
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&stem) {
            continue;
        }
        let text = fs::read_to_string(entry.path())?;
        // client_id transaction_no time(us) script_no time_epoch time_us [...]
        out.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
        );
        let _ = fs::remove_file(entry.path());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_15_report() {
        let out = "transaction type: <builtin: select only>\n\
            scaling factor: 1\nquery mode: simple\nnumber of clients: 10\n\
            number of threads: 2\nmaximum number of tries: 1\nduration: 2 s\n\
            number of transactions actually processed: 23456\n\
            number of failed transactions: 3 (0.013%)\n\
            latency average = 0.851 ms\ninitial connection time = 24.145 ms\n\
            tps = 11742.123456 (without initial connection time)\n";
        let err = "pgbench: error: client 3 aborted in command 1 (SQL) of script 0; ERROR:  x\n\
            pgbench: error: Run was aborted; the above results are incomplete.\n";
        let o = parse_report(out, err);
        assert_eq!((o.processed, o.failed, o.aborted), (23456, 3, 1));
        assert!((o.tps - 11742.123456).abs() < 1e-6);
        assert!((o.latency_ms - 0.851).abs() < 1e-9);
        assert!(o.first_error.unwrap().contains("client 3 aborted"));
    }
}
