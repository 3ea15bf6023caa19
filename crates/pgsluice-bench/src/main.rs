//! `pgsluice-bench`: pgsluice vs PgBouncer vs direct PostgreSQL, measured with pgbench
//! in one run (contenders alternate within each round), plus pooler CPU per
//! transaction, added latency, memory per idle client, pooler-only throughput against
//! an instant-answer fake backend, and a connection storm. Writes
//! `bench/results/<timestamp>/` (results.md, runs.csv, results.json, and SVG charts drawn
//! with plotters: chart.svg and one tps-*.svg per throughput table).
//! See bench/README.md.

mod args;
mod chart;
mod clients;
mod many;
mod model;
mod pgbench;
mod procs;
mod report;
mod run;
mod tls;

use std::process::{Command, ExitCode};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use args::{Args, Parsed, USAGE};

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Prints a progress line to stderr, prefixed with the elapsed time.
pub(crate) fn progress(msg: std::fmt::Arguments<'_>) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:7.1}s] {msg}");
}

fn main() -> ExitCode {
    STARTED.get_or_init(Instant::now);
    match args::parse(std::env::args().skip(1).collect()) {
        Err(e) => {
            eprintln!("pgsluice-bench: {e}");
            ExitCode::from(2)
        }
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Parsed::FakePg(addr)) => match pgsluice_bench::fakepg::run_blocking(&addr, 1) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pgsluice-fakepg: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Parsed::Run(a)) => match prerequisites(&a) {
            Err(e) => {
                eprintln!("pgsluice-bench: {e}");
                ExitCode::from(2)
            }
            Ok(bin) => match run::run(&a, &bin) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgsluice-bench: {e}");
                    ExitCode::FAILURE
                }
            },
        },
    }
}

/// Checks that pgbench and PgBouncer are there (saying how to get them otherwise;
/// nothing is installed), raises the file descriptor limit and finds pgsluice.
fn prerequisites(a: &Args) -> Result<std::path::PathBuf, String> {
    let mut missing = Vec::new();
    if !pgbench::pgbench_bin().is_file() {
        missing.push(
            "pgbench not found (looked in $PG_BIN, /usr/lib/postgresql/*/bin and PATH). \
             On Debian/Ubuntu it comes with the server package: `apt-get install postgresql` \
             (or set PG_BIN to a directory holding pgbench, postgres and initdb)."
                .to_owned(),
        );
    }
    if procs::pgbouncer_version().is_none() {
        missing.push(format!(
            "PgBouncer not found at {}. On Debian/Ubuntu: `apt-get install pgbouncer` \
             (the package's service need not run; the benchmark starts its own instance).",
            procs::PGBOUNCER
        ));
    }
    if !missing.is_empty() {
        return Err(format!(
            "missing prerequisites (nothing is installed automatically):\n  - {}",
            missing.join("\n  - ")
        ));
    }
    if cfg!(debug_assertions) {
        progress(format_args!(
            "warning: pgsluice-bench is a debug build; its own client load (memory and storm \
             tests) is slow. Use `cargo run --release -p pgsluice-bench`."
        ));
    }
    // The bench process and the pooler each hold one descriptor per idle client.
    let want = a.idle_clients as u64 + 4096;
    match procs::raise_nofile(want) {
        Ok(n) if n < want => progress(format_args!(
            "warning: RLIMIT_NOFILE is {n} (wanted {want}); many-client tests may fail"
        )),
        Ok(_) => {}
        Err(e) => progress(format_args!("warning: cannot raise RLIMIT_NOFILE: {e}")),
    }
    procs::pgsluice_binary(a.pgsluice.as_deref(), a.build)
}

/// First line of `program --version`.
pub(crate) fn version_of(program: &std::path::Path) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

/// UTC timestamp `YYYYMMDD-HHMMSS` (and the same in ISO form) without a date crate.
pub(crate) fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        format!("{y:04}{mo:02}{d:02}-{h:02}{m:02}{s:02}"),
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02} UTC"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let (stamp, iso) = super::utc_now();
        assert_eq!(stamp.len(), 15);
        assert!(iso.ends_with("UTC"));
        assert!(stamp.starts_with("20"));
    }
}
