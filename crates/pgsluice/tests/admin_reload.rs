//! Hot reload and signals with the pgsluice binary and a TOML file: RELOAD and SIGHUP
//! change pool sizes and databases without dropping clients, a broken file is refused
//! and the running configuration keeps serving; SIGUSR1/SIGUSR2 pause and resume;
//! SHUTDOWN and SIGQUIT stop the process.

mod admin_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use admin_common::*;
use pgsluice_testkit::{PgCluster, Pooler};

const T: Duration = Duration::from_secs(30);

fn config_text(pg: &PgCluster, pool_size: usize, extra_db: bool, with_app: bool) -> String {
    let mut t = format!(
        r#"[general]
listen = "127.0.0.1:0"
admin_users = ["admin"]
stats_users = ["stats"]
log_level = "info"

[users.app]
password = "{APP_PW}"

[users.admin]
password = "{ADMIN_PW}"

[users.stats]
password = "{STATS_PW}"
"#
    );
    if with_app {
        t += &format!(
            "\n[databases.app]\nhost = \"127.0.0.1\"\nport = {}\npool_size = {pool_size}\n",
            pg.port()
        );
    }
    if extra_db {
        t += &format!(
            "\n[databases.app2]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"app\"\n",
            pg.port()
        );
    }
    t
}

struct Setup {
    _dir: TempDir,
    file: PathBuf,
    pooler: Pooler,
    addr: SocketAddr,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spawn(text: &str, name: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("pgsluice-admin-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgsluice.toml");
    std::fs::write(&file, text).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_pgsluice"));
    let pooler = Pooler::spawn(bin, &[file.to_str().unwrap()], &[]).expect("spawn pgsluice");
    let addr = pooler.addr();
    Setup {
        _dir: TempDir(dir),
        file,
        pooler,
        addr,
    }
}

fn pools_cell(addr: SocketAddr, col: &str) -> String {
    cell(addr, "SHOW POOLS", "database", "app", col).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_pool_size_without_dropping_clients() {
    let pg = pg_with_app();
    let s = spawn(&config_text(&pg, 1, false, true), "size");
    let addr = s.addr;
    let holder = app_client(addr).await;
    let waiter = app_client(addr).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let query = tokio::spawn(async move { waiter.simple_query("select 2").await.map(|_| waiter) });
    tokio::task::spawn_blocking(move || {
        wait_until("a client waiting for the single connection", T, || {
            pools_cell(addr, "cl_waiting") == "1"
        });
        assert_eq!(pools_cell(addr, "sv_active"), "1");
        assert_eq!(
            cell(addr, "SHOW DATABASES", "name", "app", "pool_size").as_deref(),
            Some("1")
        );
    })
    .await
    .unwrap();
    assert!(!query.is_finished());

    // SIGHUP with pool_size = 2: the waiting client gets a second connection.
    std::fs::write(&s.file, config_text(&pg, 2, false, true)).unwrap();
    let since = s.pooler.line_count();
    s.pooler.signal(libc::SIGHUP).unwrap();
    let waiter = query
        .await
        .unwrap()
        .expect("waiting query served after reload");
    assert!(s
        .pooler
        .wait_for_line_since(since, "configuration reloaded", T)
        .is_some());
    tokio::task::spawn_blocking(move || {
        assert_eq!(pools_cell(addr, "sv_active"), "1");
        assert_eq!(pools_cell(addr, "sv_idle"), "1");
        assert_eq!(pools_cell(addr, "cl_waiting"), "0");
        assert_eq!(pools_cell(addr, "cl_active"), "2");
        assert_eq!(
            cell(addr, "SHOW DATABASES", "name", "app", "pool_size").as_deref(),
            Some("2")
        );
    })
    .await
    .unwrap();
    // The client in its transaction was not disturbed.
    holder.batch_execute("SELECT 3; COMMIT").await.unwrap();
    waiter.simple_query("select 4").await.unwrap();

    // RELOAD from the console, pool_size = 3.
    std::fs::write(&s.file, config_text(&pg, 3, false, true)).unwrap();
    tokio::task::spawn_blocking(move || {
        assert_eq!(admin(addr, "RELOAD").trim(), "RELOAD");
        assert_eq!(
            cell(addr, "SHOW DATABASES", "name", "app", "pool_size").as_deref(),
            Some("3")
        );
    })
    .await
    .unwrap();
    holder.simple_query("select 5").await.unwrap();

    // The log level follows the file too: at debug, a client that leaves during
    // start-up is logged.
    std::fs::write(
        &s.file,
        config_text(&pg, 3, false, true).replace("log_level = \"info\"", "log_level = \"debug\""),
    )
    .unwrap();
    let since = s.pooler.line_count();
    tokio::task::spawn_blocking(move || admin(addr, "RELOAD"))
        .await
        .unwrap();
    drop(std::net::TcpStream::connect(addr).unwrap());
    assert!(s
        .pooler
        .wait_for_line_since(since, "client left during startup", T)
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_mode_user_is_admin() {
    let pg = pg_with_app();
    let bin = Path::new(env!("CARGO_BIN_EXE_pgsluice"));
    let url = pg.url("app", APP_PW, "app");
    let pooler = Pooler::spawn(
        bin,
        &["--listen", "127.0.0.1:0", "--backend", &url],
        &[("PGSLUICE_METRICS_LISTEN", "127.0.0.1:0")],
    )
    .expect("spawn pgsluice");
    let addr = pooler.addr();
    // The metrics endpoint, enabled by the environment in quick mode.
    let line = pooler
        .wait_for_line_since(0, "metrics listening on http://", T)
        .expect("metrics endpoint started");
    let metrics: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.strip_suffix("/metrics"))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let scrape = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(scrape.contains("\r\n\r\n# HELP pgsluice_up"), "{scrape}");
    tokio::task::spawn_blocking(move || {
        let r = psql(addr, "app", APP_PW, "pgbouncer", "SHOW DATABASES");
        assert!(r.ok && r.stdout.contains("app|127.0.0.1"), "{r:?}");
        let r = psql(addr, "app", APP_PW, "pgbouncer", "RELOAD");
        assert!(
            r.ok,
            "quick mode reload re-applies the same settings: {r:?}"
        );
        let r = psql(addr, "app", "wrong", "pgbouncer", "SHOW POOLS");
        assert!(!r.ok, "{r:?}");
    })
    .await
    .unwrap();
    assert!(pooler.wait_for_line("configuration reloaded: no changes", T));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_is_refused_and_databases_come_and_go() {
    let pg = pg_with_app();
    let s = spawn(&config_text(&pg, 4, false, true), "broken");
    let addr = s.addr;
    let client = app_client(addr).await;
    client.simple_query("select 1").await.unwrap();

    // A file that does not parse, then one that does not validate.
    for broken in [
        "[general\nlisten = ".to_owned(),
        config_text(&pg, 4, false, true).replace("pool_size = 4", "pool_size = 0"),
    ] {
        std::fs::write(&s.file, &broken).unwrap();
        let r = tokio::task::spawn_blocking(move || {
            psql(addr, "admin", ADMIN_PW, "pgbouncer", "RELOAD")
        })
        .await
        .unwrap();
        assert!(!r.ok, "{r:?}");
        assert!(r.stderr.contains("RELOAD failed"), "{r:?}");
        assert!(
            r.stderr.contains("pgsluice.toml"),
            "the reason names the file: {r:?}"
        );
        let since = s.pooler.line_count();
        s.pooler.signal(libc::SIGHUP).unwrap();
        assert!(s
            .pooler
            .wait_for_line_since(since, "configuration reload failed", T)
            .is_some());
        // The running configuration still serves.
        client.simple_query("select 2").await.unwrap();
        tokio::task::spawn_blocking(move || {
            assert_eq!(
                cell(addr, "SHOW DATABASES", "name", "app", "pool_size").as_deref(),
                Some("4")
            );
            assert!(psql(addr, "app", APP_PW, "app", "select 1").ok);
        })
        .await
        .unwrap();
    }

    // A new database appears; the old one goes while a client still uses it.
    std::fs::write(&s.file, config_text(&pg, 4, true, false)).unwrap();
    tokio::task::spawn_blocking(move || {
        admin(addr, "RELOAD");
        let r = psql(addr, "app", APP_PW, "app2", "select current_database()");
        assert!(r.ok && r.stdout.contains("app"), "{r:?}");
        let r = psql(addr, "app", APP_PW, "app", "select 1");
        assert!(!r.ok && r.stderr.contains("no such database"), "{r:?}");
    })
    .await
    .unwrap();
    client
        .simple_query("select 3")
        .await
        .expect("client of a removed database keeps working");
    drop(client);
    tokio::task::spawn_blocking(move || {
        wait_until("the removed database's pool to close", T, || {
            cell(addr, "SHOW POOLS", "database", "app", "database").is_none()
        });
    })
    .await
    .unwrap();

    // SIGUSR1 pauses, SIGUSR2 resumes.
    s.pooler.signal(libc::SIGUSR1).unwrap();
    tokio::task::spawn_blocking(move || {
        wait_until("SHOW STATE paused", T, || {
            cell(addr, "SHOW STATE", "key", "paused", "value").as_deref() == Some("yes")
        })
    })
    .await
    .unwrap();
    s.pooler.signal(libc::SIGUSR2).unwrap();
    tokio::task::spawn_blocking(move || {
        wait_until("SHOW STATE active", T, || {
            cell(addr, "SHOW STATE", "key", "active", "value").as_deref() == Some("yes")
        })
    })
    .await
    .unwrap();

    // SIGQUIT stops at once, with a client connected.
    let idle = client_of(addr, "app2").await;
    idle.simple_query("select 1").await.unwrap();
    let mut pooler = s.pooler;
    pooler.signal(libc::SIGQUIT).unwrap();
    let status = pooler.wait_exit(T).unwrap().expect("exited");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_command_stops_the_process() {
    let pg = pg_with_app();
    let s = spawn(&config_text(&pg, 2, false, true), "shutdown");
    let addr = s.addr;
    let r =
        tokio::task::spawn_blocking(move || psql(addr, "admin", ADMIN_PW, "pgbouncer", "SHUTDOWN"))
            .await
            .unwrap();
    assert!(r.ok, "{r:?}");
    let mut pooler = s.pooler;
    let status = pooler.wait_exit(T).unwrap().expect("exited after SHUTDOWN");
    assert!(status.success(), "{status}");
    assert!(pooler.wait_for_line("SHUTDOWN command issued", Duration::ZERO));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wait_for_clients_waits_for_the_last_client() {
    let pg = pg_with_app();
    let s = spawn(&config_text(&pg, 2, false, true), "waitclients");
    let addr = s.addr;
    let client = app_client(addr).await;
    client.simple_query("select 1").await.unwrap();
    let r = tokio::task::spawn_blocking(move || {
        psql(
            addr,
            "admin",
            ADMIN_PW,
            "pgbouncer",
            "SHUTDOWN WAIT_FOR_CLIENTS",
        )
    })
    .await
    .unwrap();
    assert!(r.ok, "{r:?}");
    assert!(s
        .pooler
        .wait_for_line("waiting for every client to disconnect", T));
    // No new connections; the connected client is served as before.
    tokio::task::spawn_blocking(move || {
        wait_until("the listener to close", T, || {
            std::net::TcpStream::connect(addr).is_err()
        })
    })
    .await
    .unwrap();
    client.simple_query("select 2").await.unwrap();
    assert!(
        s.pooler.try_wait().unwrap().is_none(),
        "stopped with a client connected"
    );
    drop(client);
    let mut pooler = s.pooler;
    let status = pooler
        .wait_exit(T)
        .unwrap()
        .expect("exited once the client left");
    assert!(status.success(), "{status}");
}
