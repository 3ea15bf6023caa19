//! Client programs the integration tests run beside tokio-postgres: pgbench, Python
//! scripts (asyncpg, psycopg), Node.js scripts (node-postgres), pgjdbc programs; and
//! the helpers the benchmarks (ignored tests) share.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use pgsluice_testkit::{clean_pg_env, pg_bin, PgCluster};

use super::{pg_sql, run_with_stdin, stderr, stdout, DB, PASSWORD, USER};

/// Benchmarks (tests named `*_benchmark`) run at full size only when `SLUICE_BENCH`
/// is set (use a release build: `SLUICE_BENCH=1 cargo nextest run --release -p
/// pgsluice -E 'test(benchmark)' --no-capture`); otherwise, as in CI, they make a small
/// smoke run of the same paths, whose figures mean nothing. Returns `full` or `smoke`.
/// Not `PGSLUICE_*`: pgsluice reads every such variable as a setting, and each pooler
/// a test starts inherits the environment (an unknown key stops it).
pub fn bench_size<T>(full: T, smoke: T) -> T {
    if std::env::var_os("SLUICE_BENCH").is_some() {
        full
    } else {
        smoke
    }
}

/// pgbench against `port` on 127.0.0.1 as [`USER`] on [`DB`], with `args`; blocking
/// (call it inside `block_in_place`).
pub fn pgbench(port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new(pg_bin("pgbench"));
    cmd.args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", USER])
        .args(args)
        .arg(DB);
    clean_pg_env(&mut cmd);
    cmd.env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSFILE", "/nonexistent");
    run_with_stdin(cmd, b"")
}

/// True when python3 can import `module`.
pub fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The path of a test script: `tests/DIR/NAME`.
pub fn test_script(dir: &str, name: &str) -> String {
    format!("{}/tests/{dir}/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program script` with PGS_HOST/PGS_PORT set to `addr`; it must succeed and
/// print OK. Returns what it printed.
pub async fn run_client_program(program: &str, script: String, addr: SocketAddr) -> String {
    let p = program.to_owned();
    let s = script.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&p)
            .arg(&s)
            .env("PGS_HOST", addr.ip().to_string())
            .env("PGS_PORT", addr.port().to_string())
            .output()
            .unwrap_or_else(|e| panic!("run {p}: {e}"))
    })
    .await
    .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{script} failed:\n{text}");
    assert!(text.contains("OK"), "{script}:\n{text}");
    text
}

/// Runs tests/python/`script` against `addr` (see [`run_client_program`]).
pub async fn run_python(script: &str, addr: SocketAddr) -> String {
    run_client_program("python3", test_script("python", script), addr).await
}

/// Runs the pgjdbc program tests/java/`program` (a single-file Java source) against
/// the pooler at `addr` as [`USER`]; it must succeed. Returns its stdout lines,
/// trimmed.
pub fn run_java(program: &str, addr: SocketAddr) -> Vec<String> {
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        std::path::Path::new(jar).exists(),
        "pgjdbc is not installed ({jar}): run scripts/install-deps"
    );
    let url = format!("jdbc:postgresql://127.0.0.1:{}/{DB}", addr.port());
    let out = tokio::task::block_in_place(|| {
        Command::new("java")
            .args([
                "-cp",
                jar,
                &test_script("java", program),
                &url,
                USER,
                PASSWORD,
            ])
            .output()
            .expect("run java")
    });
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "pgjdbc failed:\n{text}");
    stdout(&out).lines().map(|l| l.trim().to_owned()).collect()
}

/// `pgbench -i -s 1` directly on the primary, readable by [`USER`].
pub fn pgbench_init(primary: &PgCluster) {
    let mut cmd = Command::new(pg_bin("pgbench"));
    cmd.args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p"])
        .arg(primary.port().to_string())
        .args(["-U", pgsluice_testkit::SUPERUSER, DB]);
    clean_pg_env(&mut cmd);
    cmd.env("PGPASSWORD", pgsluice_testkit::SUPERUSER_PASSWORD);
    let o = tokio::task::block_in_place(|| run_with_stdin(cmd, b""));
    assert!(o.status.success(), "pgbench -i: {}", stderr(&o));
    pg_sql(
        primary,
        "grant select on all tables in schema public to app",
    );
}

/// CPU time (user + system) of process `pid` so far, from /proc.
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which is in parentheses): utime is the 12th, stime
    // the 13th of what follows ") ".
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}
