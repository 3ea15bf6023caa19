//! The command line: `--check-config` and `PGSLUICE_*` environment overrides.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const GOOD: &str = r#"# a valid configuration
[general]
listen = "127.0.0.1:6432"
pool_mode = "transaction"
default_pool_size = 10

[databases.app]
host = "127.0.0.1"
port = 5432

[users.app]
password = "secret"
"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgsluice-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `pgsluice args...` with no inherited PGSLUICE_* variables plus `envs`.
fn pgsluice(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(pgsluice_bin());
    cmd.args(args).env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("PGSLUICE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run pgsluice")
}

fn check(path: &Path, envs: &[(&str, &str)]) -> std::process::Output {
    pgsluice(&["--check-config", path.to_str().unwrap()], envs)
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = temp_dir("good");
    let path = dir.join("good.toml");
    std::fs::write(&path, GOOD).unwrap();
    let out = check(&path, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("configuration is valid"),
        "{}",
        stdout(&out)
    );
    // The shipped example is valid too.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pgsluice.toml");
    let out = check(&example, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = temp_dir("bad");
    let cases = [
        // (file contents, line, key)
        (
            GOOD.replace("pool_mode = ", "pool_mod = "),
            4,
            "general.pool_mod",
        ),
        (
            GOOD.replace("default_pool_size = 10", "default_pool_size = 0"),
            5,
            "general.default_pool_size",
        ),
        (
            GOOD.replace("port = 5432", "port = \"many\""),
            9,
            "databases.app.port",
        ),
        (
            GOOD.replace("pool_mode = \"transaction\"", "pool_mode = \"statements\""),
            4,
            "general.pool_mode",
        ),
    ];
    for (i, (text, line, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = check(&path, &[]);
        let err = stderr(&out);
        assert!(!out.status.success(), "case {i} accepted:\n{text}");
        assert!(
            err.contains(&format!("bad{i}.toml:{line}")),
            "case {i}: expected file:line bad{i}.toml:{line} in: {err}"
        );
        assert!(err.contains(key), "case {i}: expected key {key} in: {err}");
    }
    // A file that does not exist.
    let out = check(&dir.join("missing.toml"), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_config_applies_environment_overrides() {
    let dir = temp_dir("env");
    let path = dir.join("good.toml");
    std::fs::write(&path, GOOD).unwrap();
    let out = check(&path, &[("PGSLUICE_DEFAULT_POOL_SIZE", "many")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("PGSLUICE_DEFAULT_POOL_SIZE"), "{err}");
    assert!(err.contains("default_pool_size"), "{err}");
    // A typo in a variable name is an error, not silently ignored.
    let out = check(&path, &[("PGSLUICE_DEFAULT_POOL_SIZ", "5")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("PGSLUICE_DEFAULT_POOL_SIZ"),
        "{}",
        stderr(&out)
    );
    let out = check(&path, &[("PGSLUICE_DEFAULT_POOL_SIZE", "5")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_backend_url_is_a_clear_error() {
    let out = pgsluice(
        &["--backend", "mysql://u@h/d", "--listen", "127.0.0.1:0"],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("postgres://"), "{}", stderr(&out));
}

/// Runs `select pg_backend_pid()` on every client at once while an advisory lock held
/// by `direct` blocks each query on the server, so that all of them want a server
/// connection at the same time; lets them go once `servers` backends are blocked (the
/// pool is full). Returns the distinct backend pids and the most `app` backends
/// PostgreSQL had while the queries ran.
async fn concurrent_pids(
    clients: &[tokio_postgres::Client],
    direct: &tokio_postgres::Client,
    servers: i64,
) -> (HashSet<i64>, i64) {
    direct
        .batch_execute("select pg_advisory_lock(4242)")
        .await
        .unwrap();
    let queries = futures_util::future::join_all(clients.iter().map(|c| async move {
        count(
            c,
            "select pg_backend_pid()::int8 from pg_advisory_xact_lock_shared(4242)",
        )
        .await
    }));
    let gate = async {
        let blocked = "select count(*) from pg_stat_activity where usename = 'app' \
                       and wait_event_type = 'Lock'";
        eventually(
            &format!("{servers} backends blocked on the lock"),
            PROMPTLY,
            || async move { (count(direct, blocked).await >= servers).then_some(()) },
        )
        .await;
        direct
            .batch_execute("select pg_advisory_unlock(4242)")
            .await
            .unwrap();
    };
    // Samples the backends until every query is answered (10 ms sampling interval).
    let (pids, max) = {
        let queries = async {
            let (pids, ()) = tokio::join!(queries, gate);
            pids
        };
        tokio::pin!(queries);
        let mut max = 0;
        loop {
            max = max.max(app_backends(direct).await);
            tokio::select! {
                pids = &mut queries => break (pids, max.max(app_backends(direct).await)),
                () = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
            }
        }
    };
    (pids.into_iter().collect(), max)
}

/// PGSLUICE_DEFAULT_POOL_SIZE=2 caps the server connections of a running pooler.
#[tokio::test(flavor = "multi_thread")]
async fn env_default_pool_size_caps_server_connections() {
    let pg = cluster();
    let pooler = spawn_pooler(&pg, &[], &[("PGSLUICE_DEFAULT_POOL_SIZE", "2")]);
    let addr = pooler.addr();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(connect(addr).await);
    }
    let direct = direct(&pg, DB).await;
    let (distinct, max) = concurrent_pids(&clients, &direct, 2).await;
    assert_eq!(
        distinct.len(),
        2,
        "8 concurrent clients should share exactly 2 server connections, saw {distinct:?}"
    );
    assert!(max <= 2, "PostgreSQL saw {max} backends");
    // A command-line flag beats the environment.
    drop(pooler);
    let pooler = spawn_pooler(
        &pg,
        &["--pool-size", "3"],
        &[("PGSLUICE_DEFAULT_POOL_SIZE", "2")],
    );
    let addr = pooler.addr();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(connect(addr).await);
    }
    let (distinct, _) = concurrent_pids(&clients, &direct, 3).await;
    assert_eq!(distinct.len(), 3, "{distinct:?}");
}
