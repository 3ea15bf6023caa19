//! What the pgsluice process logs: login/logout and server connection lines, text or
//! JSON, and never a password.

mod common;

use std::time::Duration;

use common::*;
use pgsluice_testkit::Pooler;

/// A distinctive password, so its absence from the logs means something.
const LOG_PASSWORD: &str = "Zq9-pw-LOGTEST";

fn pooler_for_log_user(pg: &pgsluice_testkit::PgCluster, extra: &[&str]) -> Pooler {
    tokio::task::block_in_place(|| {
        pg.create_user("loguser", LOG_PASSWORD).unwrap();
        pg.create_database("logdb", "loguser").unwrap();
    });
    spawn_pooler_url(&pg.url("loguser", LOG_PASSWORD, "logdb"), extra, &[])
}

async fn one_session(pooler: &Pooler) {
    let cfg = client_config(pooler.addr(), "loguser", LOG_PASSWORD, "logdb");
    let c = try_connect(&cfg).await.expect("connect");
    assert_eq!(count(&c, "select 1::int8").await, 1);
    drop(c);
    // A refused login is logged too.
    let cfg = client_config(pooler.addr(), "loguser", "wrong", "logdb");
    assert!(try_connect(&cfg).await.is_err());
}

fn wait_line(pooler: &Pooler, needle: &str) -> String {
    tokio::task::block_in_place(|| pooler.wait_for_line_since(0, needle, Duration::from_secs(15)))
        .unwrap_or_else(|| {
            panic!(
                "no line containing {needle:?}; output:\n{}",
                pooler.output().join("\n")
            )
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn text_log_has_login_logout_and_server_lines() {
    let pg = cluster();
    let pooler = pooler_for_log_user(&pg, &[]);
    one_session(&pooler).await;
    let login = wait_line(&pooler, "client login");
    assert!(
        login.contains("loguser") && login.contains("logdb"),
        "{login}"
    );
    let opened = wait_line(&pooler, "server connection opened");
    assert!(opened.contains("logdb"), "{opened}");
    let logout = wait_line(&pooler, "client logout");
    assert!(logout.contains("INFO"), "{logout}");
    let refused = wait_line(&pooler, "28P01");
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    let output = pooler.output();
    assert!(
        !output.iter().any(|l| l.contains(LOG_PASSWORD)),
        "the password appears in the log:\n{}",
        output.join("\n")
    );
    // Text lines, not JSON.
    assert!(!output.iter().any(|l| l.starts_with('{')));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_format_writes_one_object_per_line() {
    let pg = cluster();
    let pooler = pooler_for_log_user(&pg, &["--log-format", "json"]);
    one_session(&pooler).await;
    wait_line(&pooler, "client logout");
    let login = wait_line(&pooler, "\"message\":\"client login\"");
    assert!(login.contains("\"level\":\"INFO\""), "{login}");
    assert!(login.contains("loguser"), "{login}");
    wait_line(&pooler, "\"message\":\"server connection opened\"");
    let lines = pooler.stderr_lines();
    assert!(lines.len() >= 4, "{lines:?}");
    for l in lines.iter().filter(|l| !l.trim().is_empty()) {
        assert!(
            l.starts_with('{') && l.ends_with('}') && l.contains("\"message\":"),
            "not a JSON log line: {l}"
        );
        assert!(
            !l.contains(LOG_PASSWORD),
            "the password appears in the log: {l}"
        );
    }
}

// ---------------------------------------------------------------------------
// PgBouncer's log settings in a pgbouncer.ini: `logfile` in the foreground (and its
// reopening for logrotate), `log_connections`, `log_stats`.

/// A directory with a pgbouncer.ini (relative `logfile`) and its userlist.txt, for
/// `loguser`/`logdb` on `pg`; removed on drop.
struct IniDir(std::path::PathBuf);

impl Drop for IniDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl IniDir {
    fn new(test: &str, pg: &pgsluice_testkit::PgCluster, extra: &str) -> IniDir {
        let dir = std::env::temp_dir().join(format!("pgsluice-log-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("userlist.txt"),
            format!("\"loguser\" \"{LOG_PASSWORD}\"\n"),
        )
        .unwrap();
        let ini = format!(
            "[databases]\nlogdb = host=127.0.0.1 port={} dbname=logdb\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = userlist.txt\nadmin_users = loguser\n\
             logfile = pgsluice.log\n{extra}",
            pg.port(),
            pgsluice_testkit::free_port(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        IniDir(dir)
    }

    fn spawn(&self) -> Pooler {
        let ini = self.0.join("pgbouncer.ini");
        let args = [ini.to_str().unwrap()];
        tokio::task::block_in_place(|| Pooler::spawn(common::pgsluice_bin(), &args, &[]))
            .unwrap_or_else(|e| panic!("spawn pgsluice: {e}"))
    }

    fn log(&self) -> std::path::PathBuf {
        self.0.join("pgsluice.log")
    }
}

/// Waits until the file at `path` has a line containing `needle`; returns the file.
async fn wait_file_line(path: &std::path::Path, needle: &str) -> String {
    eventually(
        &format!("a line with {needle:?} in {}", path.display()),
        Duration::from_secs(15),
        move || async move {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.contains(needle).then_some(text)
        },
    )
    .await
}

/// A cluster with `loguser` owning `logdb`.
fn log_cluster() -> pgsluice_testkit::PgCluster {
    let pg = cluster();
    tokio::task::block_in_place(|| {
        pg.create_user("loguser", LOG_PASSWORD).unwrap();
        pg.create_database("logdb", "loguser").unwrap();
    });
    pg
}

async fn admin(pooler: &Pooler) -> tokio_postgres::Client {
    let cfg = client_config(pooler.addr(), "loguser", LOG_PASSWORD, "pgbouncer");
    try_connect(&cfg).await.expect("admin console")
}

async fn login(pooler: &Pooler) {
    let cfg = client_config(pooler.addr(), "loguser", LOG_PASSWORD, "logdb");
    let c = try_connect(&cfg).await.expect("connect");
    assert_eq!(count(&c, "select 1::int8").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn logfile_is_written_in_the_foreground_and_reopened_for_logrotate() {
    let pg = log_cluster();
    let dir = IniDir::new("rotate", &pg, "");
    let pooler = dir.spawn();
    // Lines go to stderr and to the file (a relative path, next to the ini).
    login(&pooler).await;
    let text = wait_file_line(&dir.log(), "client login").await;
    assert!(text.contains("listening on"), "{text}");
    assert!(wait_line(&pooler, "client login").contains("loguser"));
    assert!(!text.contains(LOG_PASSWORD));

    // logrotate: rename, then SIGHUP; new lines go to a new file at the path.
    let rotated = dir.0.join("pgsluice.log.1");
    std::fs::rename(dir.log(), &rotated).unwrap();
    pooler.signal(libc::SIGHUP).unwrap();
    wait_file_line(&dir.log(), "configuration reloaded").await;
    login(&pooler).await;
    wait_file_line(&dir.log(), "client login").await;
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("SIGHUP received"), "{old}");
    assert!(!old.contains("configuration reloaded"), "{old}");

    // The same through the admin console's RELOAD.
    let rotated2 = dir.0.join("pgsluice.log.2");
    std::fs::rename(dir.log(), &rotated2).unwrap();
    admin(&pooler)
        .await
        .simple_query("RELOAD")
        .await
        .expect("RELOAD");
    let text = wait_file_line(&dir.log(), "configuration reloaded").await;
    assert!(!text.contains("SIGHUP"), "{text}");
    let old = std::fs::read_to_string(&rotated2).unwrap();
    assert!(old.contains("admin console login"), "{old}");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_connections_disconnections_and_pooler_errors_0_suppress_their_lines() {
    let pg = log_cluster();
    let dir = IniDir::new(
        "quiet",
        &pg,
        "log_connections = 0\nlog_disconnections = 0\nlog_pooler_errors = 0\nverbose = 1\n",
    );
    let pooler = dir.spawn();
    // verbose = 1: debug lines reach the file too.
    drop(std::net::TcpStream::connect(pooler.addr()).unwrap());
    let text = wait_file_line(&dir.log(), "client left during startup").await;
    assert!(text.contains("DEBUG"), "{text}");
    login(&pooler).await;
    let cfg = client_config(pooler.addr(), "loguser", "wrong", "logdb");
    assert!(try_connect(&cfg).await.is_err());
    // A line logged after the three would have been: a reload's.
    pooler.signal(libc::SIGHUP).unwrap();
    let text = wait_file_line(&dir.log(), "configuration reloaded").await;
    for quiet in [
        "client login",
        "client logout",
        "28P01",
        "password authentication",
    ] {
        assert!(!text.contains(quiet), "{quiet:?} was logged:\n{text}");
    }
    let out = pooler.output().join("\n");
    assert!(!out.contains("client login"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_stats_writes_pgbouncers_stats_line_every_stats_period() {
    let pg = log_cluster();
    let dir = IniDir::new("stats", &pg, "stats_period = 1\n");
    let pooler = dir.spawn();
    login(&pooler).await;
    let text = wait_file_line(&dir.log(), " xacts/s, ").await;
    let line = text.lines().find(|l| l.contains("stats: ")).unwrap();
    let stats = &line[line.find("stats: ").unwrap()..];
    let words: Vec<&str> = stats.split(' ').collect();
    // stats: N xacts/s, N queries/s, N client parses/s, N server parses/s, N binds/s,
    // in N B/s, out N B/s, xact N us, query N us, wait N us
    let shape = [
        "stats:",
        "#",
        "xacts/s,",
        "#",
        "queries/s,",
        "#",
        "client",
        "parses/s,",
        "#",
        "server",
        "parses/s,",
        "#",
        "binds/s,",
        "in",
        "#",
        "B/s,",
        "out",
        "#",
        "B/s,",
        "xact",
        "#",
        "us,",
        "query",
        "#",
        "us,",
        "wait",
        "#",
        "us",
    ];
    assert_eq!(words.len(), shape.len(), "{stats}");
    for (w, s) in words.iter().zip(shape) {
        if s == "#" {
            assert!(w.parse::<u64>().is_ok(), "{stats}");
        } else {
            assert_eq!(*w, s, "{stats}");
        }
    }
    drop(pooler);
    // log_stats = 0: no such line, though a period with a query passed (SHOW STATS
    // shows its average); the reload's line comes after the period's.
    let dir = IniDir::new("nostats", &pg, "stats_period = 1\nlog_stats = 0\n");
    let pooler = dir.spawn();
    login(&pooler).await;
    let console = &admin(&pooler).await;
    eventually(
        "a period with a query",
        Duration::from_secs(15),
        move || async move {
            let rows = console.simple_query("SHOW STATS_AVERAGES").await.unwrap();
            rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r)
                    if r.get("database") == Some("logdb")
                        && r.get("query_time").is_some_and(|v| v != "0") =>
                {
                    Some(())
                }
                _ => None,
            })
        },
    )
    .await;
    console.simple_query("RELOAD").await.expect("RELOAD");
    let text = wait_file_line(&dir.log(), "configuration reloaded").await;
    assert!(!text.contains("xacts/s"), "{text}");
}
