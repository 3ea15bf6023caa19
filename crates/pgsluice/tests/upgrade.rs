//! Zero-downtime binary upgrade (`pgsluice --upgrade CONFIG`, issue 20): real pgsluice
//! processes in front of a real PostgreSQL. The "second binary" is a copy of the built
//! one at another path.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use pgsluice_testkit::{free_port, PgCluster, Pooler};

const T: Duration = Duration::from_secs(30);

/// A pgsluice TOML configuration in `dir`: TCP on `port`, the Unix socket and the
/// pidfile in `dir`, metrics on `metrics`; `extra` goes into `[general]`.
fn config_text(pg: &PgCluster, dir: &Dir, port: u16, metrics: u16, extra: &str) -> String {
    format!(
        r#"[general]
listen = "127.0.0.1:{port}"
unix_socket_dir = "{dir}"
pidfile = "{pid}"
metrics_listen = "127.0.0.1:{metrics}"
pool_mode = "transaction"
default_pool_size = 10
{extra}
[databases.{DB}]
host = "127.0.0.1"
port = {pg_port}

[users.{USER}]
password = "{PASSWORD}"
"#,
        dir = dir.0.display(),
        pid = dir.path("pgsluice.pid"),
        pg_port = pg.port(),
    )
}

/// A copy of the pgsluice binary at another path: the "new version".
fn second_binary(dir: &Dir) -> PathBuf {
    let p = dir.0.join("pgsluice-next");
    std::fs::copy(pgsluice_bin(), &p).unwrap();
    p
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `select 1` over TCP on `port`.
async fn over_tcp(port: u16) -> Result<String, tokio_postgres::Error> {
    let c = try_connect(&app_config(([127, 0, 0, 1], port).into())).await?;
    simple_value(&c, "select 'tcp'")
        .await
        .map(Option::unwrap_or_default)
}

/// `select 1` over the Unix socket in `dir`.
async fn over_unix(dir: &Dir, port: u16) -> Result<String, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(&dir.0)
        .port(port)
        .user(USER)
        .password(PASSWORD)
        .dbname(DB)
        .connect_timeout(Duration::from_secs(10));
    let c = try_connect(&cfg).await?;
    simple_value(&c, "select 'unix'")
        .await
        .map(Option::unwrap_or_default)
}

/// The metrics endpoint answers on `port`.
fn metrics_up(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("pgsluice_up 1")
}

/// Starts `bin --upgrade config` and waits until it listens.
fn upgrade_with(bin: &Path, config: &Path) -> Pooler {
    tokio::task::block_in_place(|| {
        Pooler::spawn(bin, &["--upgrade", config.to_str().unwrap()], &[])
    })
    .unwrap_or_else(|e| panic!("pgsluice --upgrade: {e}"))
}

fn exits_ok(p: &mut Pooler) {
    let status = tokio::task::block_in_place(|| p.wait_exit(T)).unwrap();
    let status = status
        .unwrap_or_else(|| panic!("pid {} did not exit:\n{}", p.pid(), p.output().join("\n")));
    assert!(status.success(), "{status}:\n{}", p.output().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listeners_move_to_the_new_process() {
    let pg = cluster();
    let dir = Dir::new("upgrade-listeners");
    let (port, metrics) = (free_port(), free_port());
    let config = dir.write("pgsluice.toml", &config_text(&pg, &dir, port, metrics, ""));
    let pidfile = dir.0.join("pgsluice.pid");
    let control = dir.0.join(format!(".s.PGSQL.{port}.upgrade"));
    let mut old = tokio::task::block_in_place(|| {
        Pooler::spawn(pgsluice_bin(), &[config.to_str().unwrap()], &[])
    })
    .unwrap();
    assert_eq!(over_tcp(port).await.unwrap(), "tcp");
    assert_eq!(over_unix(&dir, port).await.unwrap(), "unix");
    assert_eq!(read_pid(&pidfile), Some(old.pid()));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&control).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "control socket mode");
    }
    // A client in the middle of a transaction when the upgrade starts.
    let busy = connect(([127, 0, 0, 1], port).into()).await;
    busy.batch_execute("begin; select 1").await.unwrap();

    let next = second_binary(&dir);
    let mut new = upgrade_with(&next, &config);
    assert_eq!(new.addr().port(), port);
    assert!(
        old.wait_for_line("handing clients over", T),
        "{}",
        old.output().join("\n")
    );
    assert_eq!(read_pid(&pidfile), Some(new.pid()));

    // New connections: TCP, Unix socket and metrics, all answered (by the new process).
    assert_eq!(over_tcp(port).await.unwrap(), "tcp");
    assert_eq!(over_unix(&dir, port).await.unwrap(), "unix");
    assert!(tokio::task::block_in_place(|| metrics_up(metrics)));
    // The transaction finishes where it began, then the client goes on.
    busy.batch_execute("select 2; commit").await.unwrap();
    assert_eq!(
        simple_value(&busy, "select 'still here'")
            .await
            .unwrap()
            .as_deref(),
        Some("still here")
    );

    // The old process exits once it holds nothing (that client moved at its idle
    // point); the files stay the new one's.
    exits_ok(&mut old);
    // The moved client goes on, and its cancel key works with the new process.
    let cancel = busy.cancel_token();
    let sleeping = tokio::spawn(async move {
        let r = busy.simple_query("select pg_sleep(60)").await;
        (busy, r)
    });
    eventually("the sleep runs", T, || async {
        let direct = direct(&pg, DB).await;
        (count(
            &direct,
            "select count(*) from pg_stat_activity where query = 'select pg_sleep(60)'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (busy, r) = sleeping.await.unwrap();
    assert_eq!(code(&r.unwrap_err()).as_deref(), Some("57014"));
    assert_eq!(
        simple_value(&busy, "select 'after cancel'")
            .await
            .unwrap()
            .as_deref(),
        Some("after cancel")
    );
    drop(busy);
    assert_eq!(read_pid(&pidfile), Some(new.pid()));
    assert!(
        dir.0.join(format!(".s.PGSQL.{port}")).exists(),
        "unix socket file removed"
    );
    assert_eq!(over_tcp(port).await.unwrap(), "tcp");
    assert_eq!(over_unix(&dir, port).await.unwrap(), "unix");
    assert!(tokio::task::block_in_place(|| metrics_up(metrics)));

    // The new process can be upgraded in turn (its control socket opens once the old
    // one is done).
    assert!(
        new.wait_for_line("upgrade: done", T),
        "{}",
        new.output().join("\n")
    );
    let mut third = upgrade_with(pgsluice_bin(), &config);
    exits_ok(&mut new);
    assert_eq!(read_pid(&pidfile), Some(third.pid()));
    assert_eq!(over_tcp(port).await.unwrap(), "tcp");
    // A plain stop removes what it owns.
    third.signal(libc::SIGTERM).unwrap();
    exits_ok(&mut third);
    assert!(!pidfile.exists());
    assert!(!control.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_leaves_the_old_process_serving() {
    let pg = cluster();
    let dir = Dir::new("upgrade-refused");
    let (port, metrics) = (free_port(), free_port());
    let config = dir.write("pgsluice.toml", &config_text(&pg, &dir, port, metrics, ""));
    let pidfile = dir.0.join("pgsluice.pid");
    let old = tokio::task::block_in_place(|| {
        Pooler::spawn(pgsluice_bin(), &[config.to_str().unwrap()], &[])
    })
    .unwrap();
    let client = connect(([127, 0, 0, 1], port).into()).await;
    let next = second_binary(&dir);
    let upgrade = |cfg: &Path| {
        tokio::task::block_in_place(|| {
            Command::new(&next)
                .arg("--upgrade")
                .arg(cfg)
                .output()
                .unwrap()
        })
    };

    // A configuration error: file, line and key named; nothing asked of the old process.
    let bad = dir.write(
        "bad.toml",
        &config_text(&pg, &dir, port, metrics, "pool_mode = \"sometimes\"\n")
            .replace("pool_mode = \"transaction\"\n", ""),
    );
    let out = upgrade(&bad);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml") && err.contains("pool_mode"),
        "{err}"
    );
    // A TLS file that does not exist.
    let tls = dir.write(
        "tls.toml",
        &config_text(&pg, &dir, port, metrics, "client_tls_sslmode = \"require\"\nclient_tls_key_file = \"/nonexistent/key.pem\"\nclient_tls_cert_file = \"/nonexistent/cert.pem\"\n"),
    );
    let out = upgrade(&tls);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    // No running process where the configuration points.
    let elsewhere = Dir::new("upgrade-elsewhere");
    let lost = dir.write(
        "lost.toml",
        &config_text(&pg, &elsewhere, free_port(), free_port(), ""),
    );
    let out = upgrade(&lost);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no running pgsluice to upgrade"),
        "{}",
        stderr(&out)
    );
    assert!(!old.output().iter().any(|l| l.contains("upgrade requested")));

    // A new process that gets the listeners but cannot start (an address in use):
    // it says so, and the old one goes on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = taken.local_addr().unwrap();
    let two = dir.write(
        "two.toml",
        &config_text(&pg, &dir, port, metrics, "").replace(
            &format!("listen = \"127.0.0.1:{port}\""),
            &format!("listen = [\"127.0.0.1:{port}\", \"{busy_addr}\"]"),
        ),
    );
    let out = upgrade(&two);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot start"), "{}", stderr(&out));
    assert!(
        old.wait_for_line("upgrade abandoned", T),
        "{}",
        old.output().join("\n")
    );
    // The same after the Unix socket was taken over (the metrics port comes after it):
    // its file stays where the old process serves it.
    let metrics_busy = dir.write(
        "metrics.toml",
        &config_text(&pg, &dir, port, busy_addr.port(), ""),
    );
    let seen = old.line_count();
    let out = upgrade(&metrics_busy);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(
        old.wait_for_line_since(seen, "upgrade abandoned", T)
            .is_some(),
        "{}",
        old.output().join("\n")
    );

    // The old process still serves, old and new clients, on every listener.
    assert_eq!(read_pid(&pidfile), Some(old.pid()));
    assert_eq!(
        simple_value(&client, "select 'same'")
            .await
            .unwrap()
            .as_deref(),
        Some("same")
    );
    assert_eq!(over_tcp(port).await.unwrap(), "tcp");
    assert_eq!(over_unix(&dir, port).await.unwrap(), "unix");
    assert!(tokio::task::block_in_place(|| metrics_up(metrics)));
    assert!(old.try_wait().unwrap().is_none());
}

/// The number after `label` on the pgbench output line that starts with it.
fn stat(out: &str, label: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.trim_start().starts_with(label))?;
    let rest = line.trim_start()[label.len()..].trim_start_matches([':', ' ']);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

const BENCH_CLIENTS: u32 = 100;

/// The acceptance of issue 20: pgbench, 100 clients in transaction mode, runs through an
/// upgrade to a second binary with no failed transaction and no client dropped; every
/// client moves to the new process, and the old one exits while pgbench still runs.
async fn pgbench_through_an_upgrade(protocol: &'static str) {
    let pg = cluster();
    let dir = Dir::new(&format!("upgrade-pgbench-{protocol}"));
    let (port, metrics) = (free_port(), free_port());
    let config = dir.write("pgsluice.toml", &config_text(&pg, &dir, port, metrics, ""));
    let mut old = tokio::task::block_in_place(|| {
        Pooler::spawn(pgsluice_bin(), &[config.to_str().unwrap()], &[])
    })
    .unwrap();
    let init = tokio::task::block_in_place(|| pgbench(port, &["-i", "-s", "1", "-q"]));
    assert!(init.status.success(), "pgbench -i: {}", stderr(&init));

    let clients = BENCH_CLIENTS.to_string();
    let bench = tokio::task::spawn_blocking(move || {
        let args = ["-M", protocol, "-c", &clients, "-j", "4", "-T", "15", "-n"];
        pgbench(port, &args)
    });
    // Under way: pgbench connects every client before its first transaction.
    eventually("pgbench under way", T, || async {
        let n: u64 = pg_sql(&pg, "select count(*) from pgbench_history")
            .parse()
            .unwrap();
        (n > 100).then_some(())
    })
    .await;

    let next = second_binary(&dir);
    let new = upgrade_with(&next, &config);
    exits_ok(&mut old);
    assert!(
        !bench.is_finished(),
        "the old process only exited once pgbench was done"
    );
    let out = old.output().join("\n");
    let wanted = format!("moved={BENCH_CLIENTS} lost=0");
    assert!(out.contains(&wanted), "not every client moved:\n{out}");

    let run = bench.await.unwrap();
    let text = format!("{}\n{}", stdout(&run), stderr(&run));
    assert!(run.status.success(), "pgbench -M {protocol}:\n{text}");
    assert_eq!(
        stat(&text, "number of failed transactions"),
        Some(0),
        "{text}"
    );
    assert!(stat(&text, "number of transactions actually processed").unwrap_or(0) > 0);
    assert!(!text.contains("aborted"), "{text}");
    // Only the new process is left, and it serves.
    assert!(!Path::new(&format!("/proc/{}", old.pid())).exists());
    assert!(new.try_wait().unwrap().is_none());
    assert_eq!(over_tcp(port).await.unwrap(), "tcp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_through_an_upgrade() {
    pgbench_through_an_upgrade("simple").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_extended_through_an_upgrade() {
    pgbench_through_an_upgrade("extended").await;
}
