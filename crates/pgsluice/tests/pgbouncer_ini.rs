//! pgsluice started the way PgBouncer is: `pgsluice pgbouncer.ini` (with an
//! auth_file in userlist.txt format), `-d` and `-u`, against a real
//! PostgreSQL cluster and a real client (tokio-postgres).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgsluice_testkit::{free_port, send_signal, ClusterOptions, HostAuth, PgCluster, Pooler};

const BIN: &str = env!("CARGO_BIN_EXE_pgsluice");

/// md5(password || user), as PostgreSQL and PgBouncer store it.
fn md5_secret(user: &str, password: &str) -> String {
    pgsluice_protocol::auth::md5::hash_password(user, password)
}

/// A fresh directory holding pgbouncer.ini and userlist.txt for `pg`.
fn write_config(test: &str, pg: &PgCluster, port: u16, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgsluice-ini-it-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let userlist = format!(
        ";; users\n\"app\" \"{}\"\n\"plain\" \"plain-pw\"\n",
        md5_secret("app", "secret")
    );
    std::fs::write(dir.join("userlist.txt"), userlist).unwrap();
    let ini = format!(
        ";; test configuration\n[databases]\nappdb = host=127.0.0.1 port={pg_port} dbname=appdb\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = md5\n\
         auth_file = userlist.txt\npool_mode = transaction\ndefault_pool_size = 2\n\
         tcp_keepidle = 30\n{extra}",
        pg_port = pg.port()
    );
    let path = dir.join("pgbouncer.ini");
    std::fs::write(&path, ini).unwrap();
    path
}

async fn query_db(port: u16, password: &str) -> Result<String, tokio_postgres::Error> {
    let conn = format!("host=127.0.0.1 port={port} user=app password={password} dbname=appdb");
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    let row = client.query_one("select current_database()", &[]).await?;
    drop(client);
    let _ = task.await;
    Ok(row.get(0))
}

/// Polls `f` until it returns true or the deadline passes.
fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn cluster() -> PgCluster {
    let pg = PgCluster::start_with(ClusterOptions::with_auth(HostAuth::Md5)).unwrap();
    pg.create_user("app", "secret").unwrap();
    pg.create_database("appdb", "app").unwrap();
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_clients_from_a_pgbouncer_ini() {
    let pg = cluster();
    let port = free_port();
    let ini = write_config("fg", &pg, port, "pidfile = pgsluice.pid\n");
    let mut pooler = Pooler::spawn(Path::new(BIN), &[ini.to_str().unwrap()], &[]).unwrap();
    assert_eq!(pooler.addr().port(), port);
    let out = pooler.output().join("\n");
    assert!(
        out.contains("pgbouncer.ini:11: key `pgbouncer.tcp_keepidle`"),
        "{out}"
    );
    let pidfile = ini.with_file_name("pgsluice.pid");
    assert_eq!(read_pid(&pidfile), Some(pooler.pid()));

    // md5 client auth against the auth_file secret; md5 server login with it.
    assert_eq!(query_db(port, "secret").await.unwrap(), "appdb");
    let e = query_db(port, "wrong").await.unwrap_err();
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("28P01"),
        "{e}"
    );

    pooler.signal(libc::SIGTERM).unwrap();
    assert!(pooler.wait_exit(Duration::from_secs(30)).unwrap().is_some());
    assert!(!pidfile.exists(), "pidfile left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_mode_writes_pidfile_and_logfile() {
    let pg = cluster();
    let port = free_port();
    let ini = write_config(
        "daemon",
        &pg,
        port,
        "pidfile = pgsluice.pid\nlogfile = pgsluice.log\n",
    );
    let pidfile = ini.with_file_name("pgsluice.pid");
    let logfile = ini.with_file_name("pgsluice.log");
    let status = Command::new(BIN)
        .arg("-d")
        .arg(&ini)
        .current_dir(ini.parent().unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    let pid = read_pid(&pidfile).expect("the foreground process waits for the pidfile");
    let guard = KillOnDrop(pid);
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read_to_string(
            &logfile
        )
        .is_ok_and(|l| l.contains("listening on"))),
        "log: {:?}",
        std::fs::read_to_string(&logfile)
    );
    assert_eq!(query_db(port, "secret").await.unwrap(), "appdb");
    // A second instance with the same pidfile refuses to start.
    let second = Command::new(BIN).arg(&ini).output().unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already running"),
        "{second:?}"
    );
    send_signal(pid, libc::SIGTERM).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || !pidfile.exists()),
        "the background process did not stop"
    );
    std::mem::forget(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_switch_as_root() {
    // Our effective uid, from /proc.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let pg = cluster();
    let port = free_port();
    let ini = write_config("user", &pg, port, "");
    if !root {
        // Not root: switching to another user must fail clearly.
        let out = Command::new(BIN)
            .args(["-u", "root"])
            .arg(&ini)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("only root can switch users"),
            "{out:?}"
        );
        return;
    }
    let dir = ini.parent().unwrap();
    let mut perms = std::fs::metadata(dir).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    std::fs::set_permissions(dir, perms).unwrap();
    let mut pooler = Pooler::spawn(
        Path::new(BIN),
        &["-u", "postgres", ini.to_str().unwrap()],
        &[],
    )
    .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pooler.pid())).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    assert!(
        !uid_line.split_whitespace().skip(1).any(|u| u == "0"),
        "{uid_line}"
    );
    assert_eq!(query_db(port, "secret").await.unwrap(), "appdb");
    pooler.signal(libc::SIGTERM).unwrap();
    assert!(pooler.wait_exit(Duration::from_secs(30)).unwrap().is_some());
}

/// Kills a background pgsluice if the test fails before stopping it.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = send_signal(self.0, libc::SIGKILL);
    }
}

/// A `[databases]` host list (issue 15) as SHOW DATABASES prints it: PgBouncer's
/// comma-separated `host`, and `load_balance_hosts` for a list only. Nothing connects
/// to the listed hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_databases_prints_host_lists() {
    use tokio_postgres::SimpleQueryMessage;
    let pg = cluster();
    let port = free_port();
    let extra = "admin_users = app\n[databases]\n\
                 listed = host=10.255.0.1,10.255.0.2 port=6000 load_balance_hosts=disable\n\
                 ports = host=10.255.0.1,::1 port=5432,5433 read_write_split=1\n";
    let ini = write_config("hosts", &pg, port, extra);
    let _pooler = Pooler::spawn(Path::new(BIN), &[ini.to_str().unwrap()], &[]).unwrap();
    let conn = format!("host=127.0.0.1 port={port} user=app password=secret dbname=pgbouncer");
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    let mut rows = Vec::new();
    for m in client.simple_query("SHOW DATABASES").await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            let col = |c: &str| r.get(c).map(str::to_owned);
            rows.push((
                col("name"),
                col("host"),
                col("port"),
                col("load_balance_hosts"),
            ));
        }
    }
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.0.as_deref() == Some(name))
            .cloned()
            .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"))
    };
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        row("listed"),
        (
            s("listed"),
            s("10.255.0.1,10.255.0.2"),
            s("6000"),
            s("disable")
        )
    );
    assert_eq!(
        row("ports"),
        (
            s("ports"),
            s("10.255.0.1:5432,[::1]:5433"),
            None,
            s("round-robin")
        )
    );
    assert_eq!(row("appdb").3, None);
    drop(client);
    let _ = task.await;
}
