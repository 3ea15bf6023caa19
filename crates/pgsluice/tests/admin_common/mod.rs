//! Helpers shared by the admin console tests: a PostgreSQL cluster with an `app`
//! database, a configuration with admin and stats users, psql and a raw
//! simple-protocol client (to see column type OIDs), and polling with a deadline.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use pgsluice::config::{Config, DatabaseConfig, UserConfig};
use pgsluice_testkit::{pg_bin, ClusterOptions, HostAuth, PgCluster};

/// Passwords of the test users.
pub(crate) const APP_PW: &str = "app-secret";
pub(crate) const ADMIN_PW: &str = "admin-secret";
pub(crate) const STATS_PW: &str = "stats-secret";

/// A cluster with role `app` (password [`APP_PW`]) owning database `app`.
pub(crate) fn pg_with_app() -> PgCluster {
    let pg = PgCluster::start_with(ClusterOptions::with_auth(HostAuth::Scram)).expect("start pg");
    pg.create_user("app", APP_PW).expect("create user");
    pg.create_database("app", "app").expect("create db");
    pg
}

/// pgsluice configuration: database `app` on `pg`, users app/admin/stats, admin_users
/// = admin, stats_users = stats, listening on 127.0.0.1:0.
pub(crate) fn base_config(pg: &PgCluster) -> Config {
    let mut cfg = Config::default();
    cfg.general.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.general.admin_users = vec!["admin".into()];
    cfg.general.stats_users = vec!["stats".into()];
    let mut db = DatabaseConfig::new("127.0.0.1");
    db.port = pg.port();
    cfg.databases.insert("app".into(), db);
    for (name, pw) in [("app", APP_PW), ("admin", ADMIN_PW), ("stats", STATS_PW)] {
        cfg.users.insert(
            name.into(),
            UserConfig {
                password: Some(pw.into()),
                ..UserConfig::default()
            },
        );
    }
    cfg.validate().expect("valid config");
    cfg
}

/// What psql printed.
#[derive(Debug, Clone)]
pub(crate) struct Psql {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs psql (unaligned, `|`-separated, no footer) against `addr`.
pub(crate) fn psql(addr: SocketAddr, user: &str, password: &str, db: &str, sql: &str) -> Psql {
    let out = Command::new(pg_bin("psql"))
        .args([
            "-X",
            "-A",
            "-F",
            "|",
            "-P",
            "footer=off",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-U", user, "-d", db, "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSFILE")
        .env_remove("PGSERVICE")
        .env_remove("PSQLRC")
        .output()
        .expect("run psql");
    Psql {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// psql as the admin user on the `pgbouncer` database; panics on failure.
pub(crate) fn admin(addr: SocketAddr, sql: &str) -> String {
    let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", sql);
    assert!(r.ok, "{sql}: {}", r.stderr);
    r.stdout
}

/// A SHOW result through psql: header names and rows of cells.
pub(crate) fn show(addr: SocketAddr, cmd: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let text = admin(addr, cmd);
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap_or("")
        .split('|')
        .map(str::to_owned)
        .collect();
    let rows = lines
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect();
    (header, rows)
}

/// The value of column `col` in the row whose column `key_col` equals `key`.
pub(crate) fn cell(
    addr: SocketAddr,
    cmd: &str,
    key_col: &str,
    key: &str,
    col: &str,
) -> Option<String> {
    let (h, rows) = show(addr, cmd);
    let k = h.iter().position(|c| c == key_col)?;
    let c = h.iter().position(|x| x == col)?;
    rows.into_iter().find(|r| r[k] == key).map(|r| r[c].clone())
}

/// Polls `f` every 50 ms until it holds; panics with `what` after `timeout`.
pub(crate) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A column as a raw client sees it: name and type OID.
pub(crate) type Column = (String, u32);

/// A row as a raw client sees it.
pub(crate) type Row = Vec<Option<String>>;

/// A simple-protocol query over a fresh connection (trust or cleartext password
/// authentication only): the RowDescription columns and the rows.
pub(crate) fn raw_query(
    addr: SocketAddr,
    user: &str,
    password: &str,
    db: &str,
    sql: &str,
) -> Result<(Vec<Column>, Vec<Row>), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes());
    for (k, v) in [("user", user), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    s.write_all(&msg).map_err(|e| e.to_string())?;
    let mut sent_query = false;
    let mut cols = Vec::new();
    let mut rows = Vec::new();
    loop {
        let (tag, body) = read_msg(&mut s)?;
        match tag {
            b'R' => {
                let code = u32::from_be_bytes(body[..4].try_into().unwrap());
                match code {
                    0 => {}
                    3 => {
                        let mut m = vec![b'p'];
                        m.extend_from_slice(&((password.len() + 5) as u32).to_be_bytes());
                        m.extend_from_slice(password.as_bytes());
                        m.push(0);
                        s.write_all(&m).map_err(|e| e.to_string())?;
                    }
                    other => return Err(format!("unsupported auth request {other}")),
                }
            }
            b'E' => return Err(String::from_utf8_lossy(&body).into_owned()),
            b'Z' if !sent_query => {
                let mut m = vec![b'Q'];
                m.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
                m.extend_from_slice(sql.as_bytes());
                m.push(0);
                s.write_all(&m).map_err(|e| e.to_string())?;
                sent_query = true;
            }
            b'Z' => {
                let _ = s.write_all(&[b'X', 0, 0, 0, 4]);
                return Ok((cols, rows));
            }
            b'T' => {
                let n = u16::from_be_bytes([body[0], body[1]]) as usize;
                let mut p = 2;
                for _ in 0..n {
                    let end = p + body[p..].iter().position(|&b| b == 0).unwrap();
                    let name = String::from_utf8_lossy(&body[p..end]).into_owned();
                    p = end + 1;
                    let oid = u32::from_be_bytes(body[p + 6..p + 10].try_into().unwrap());
                    p += 18;
                    cols.push((name, oid));
                }
            }
            b'D' => {
                let n = u16::from_be_bytes([body[0], body[1]]) as usize;
                let mut p = 2;
                let mut row = Vec::new();
                for _ in 0..n {
                    let len = i32::from_be_bytes(body[p..p + 4].try_into().unwrap());
                    p += 4;
                    if len < 0 {
                        row.push(None);
                    } else {
                        let len = len as usize;
                        row.push(Some(
                            String::from_utf8_lossy(&body[p..p + len]).into_owned(),
                        ));
                        p += len;
                    }
                }
                rows.push(row);
            }
            _ => {}
        }
    }
}

/// Logs in with trust authentication and returns the socket, ready for queries.
pub(crate) fn raw_login(addr: SocketAddr, user: &str, db: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut body = 196608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    s.write_all(&msg).unwrap();
    loop {
        let (tag, body) = read_msg(&mut s).unwrap();
        assert_ne!(
            tag,
            b'E',
            "login failed: {}",
            String::from_utf8_lossy(&body)
        );
        if tag == b'Z' {
            return s;
        }
    }
}

/// Reads one message: (type, body).
pub(crate) fn read_msg(s: &mut TcpStream) -> Result<(u8, Vec<u8>), String> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((head[0], body))
}

/// A tokio-postgres client of database `app` through the pooler at `addr`.
pub(crate) async fn app_client(addr: SocketAddr) -> tokio_postgres::Client {
    client_of(addr, "app").await
}

/// A tokio-postgres client (user `app`) of database `db` through the pooler.
pub(crate) async fn client_of(addr: SocketAddr, db: &str) -> tokio_postgres::Client {
    let conn_str = format!(
        "host={} port={} user=app password={APP_PW} dbname={db} connect_timeout=10",
        addr.ip(),
        addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .expect("connect through pgsluice");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}
