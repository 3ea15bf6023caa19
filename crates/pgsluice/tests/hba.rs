//! `auth_type = hba`: rules from `auth_hba_file` choose the method per connection (real
//! PostgreSQL, tokio-postgres, psql and raw sockets): reject and no-match refusals with
//! PostgreSQL's messages, md5 and SCRAM by rule, trust for one database, hostssl rules
//! over plain TCP and TLS, `peer` over the unix socket (also with a user name map of
//! `auth_ident_file`), the admin console, reload with a changed or broken file, and a
//! broken file at startup.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pgsluice::config::load_file;
use pgsluice_testkit::{free_port, PgCluster};

/// A cluster with roles `app` (password [`PASSWORD`]) and `other` (`otherpw`).
fn cluster_two_users() -> PgCluster {
    let pg = cluster();
    tokio::task::block_in_place(|| pg.create_user("other", "otherpw")).unwrap();
    pg_sql(&pg, "grant all on database appdb to other");
    pg
}

/// A TOML configuration using `hba.conf` in `dir`: databases `appdb`, `trustdb`,
/// `unmatched`, `ssldb` (all the server's appdb) and `peerdb` (forced user app), users
/// app, other and rejected, plus `extra` [general] lines.
fn config_text(pg: &PgCluster, extra: &str) -> String {
    let port = pg.port();
    let db = |name: &str| {
        format!("[databases.{name}]\nhost = \"127.0.0.1\"\nport = {port}\ndbname = \"appdb\"\n")
    };
    format!(
        "[general]\nlisten = \"127.0.0.1:0\"\npool_mode = \"transaction\"\nauth_type = \"hba\"\n\
         auth_hba_file = \"hba.conf\"\nadmin_users = [\"app\"]\n{extra}\n\
         {}{}{}{}{}user = \"app\"\npassword = \"{PASSWORD}\"\n\
         [users.app]\npassword = \"{PASSWORD}\"\n[users.other]\npassword = \"otherpw\"\n\
         [users.rejected]\npassword = \"rpw\"\n",
        db("appdb"),
        db("trustdb"),
        db("unmatched"),
        db("ssldb"),
        db("peerdb"),
    )
}

/// The first authentication request pgsluice sends `user` for `db` over TCP (5 = md5,
/// 10 = SASL, 0 = ok), or the error it answers with: (code, message).
fn first_answer(addr: SocketAddr, user: &str, db: &str) -> Result<i32, (String, String)> {
    let mut s = raw_connect(addr);
    s.write_all(&startup_message(&[("user", user), ("database", db)]))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some((tag, body)) = backend_messages(&buf).into_iter().next() {
            return match tag {
                b'R' => Ok(i32::from_be_bytes(body[..4].try_into().unwrap())),
                b'E' => Err(first_error(&buf).unwrap()),
                t => panic!("unexpected message {:?}", t as char),
            };
        }
        let n = std::io::Read::read(&mut s, &mut chunk).expect("read");
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn login(addr: SocketAddr, user: &str, password: &str, db: &str) -> Result<(), String> {
    match try_connect(&client_config(addr, user, password, db)).await {
        Ok(c) => {
            let v = simple_value(&c, "select current_user").await.unwrap();
            assert!(v.is_some());
            Ok(())
        }
        Err(e) => Err(format!("{} {}", code(&e).unwrap_or_default(), message(&e))),
    }
}

const RULES: &str = "\
# pgsluice test rules
host    all        rejected   127.0.0.1/32            reject
host    trustdb    all        127.0.0.1/32            trust
host    appdb      app        127.0.0.1 255.255.255.255  md5
host    appdb      other      127.0.0.0/8             scram-sha-256
hostssl ssldb      all        all                     md5
host    pgbouncer  all        all                     reject
local   peerdb     all                                peer
";

#[tokio::test(flavor = "multi_thread")]
async fn rules_choose_the_method_or_refuse() {
    let pg = cluster_two_users();
    let dir = Dir::new("hba-rules");
    dir.write("hba.conf", RULES);
    let cfg = load_file(
        &dir.write("pgsluice.toml", &config_text(&pg, "")),
        Vec::new(),
    )
    .unwrap();
    let (_server, addr) = start_pooler(cfg).await;

    // md5 for app, SCRAM for other: the method of their rule, then a real login.
    assert_eq!(first_answer(addr, "app", "appdb"), Ok(5));
    assert_eq!(first_answer(addr, "other", "appdb"), Ok(10));
    login(addr, "app", PASSWORD, "appdb").await.unwrap();
    login(addr, "other", "otherpw", "appdb").await.unwrap();
    let e = login(addr, "app", "wrong", "appdb").await.unwrap_err();
    assert_eq!(e, "28P01 password authentication failed for user \"app\"");

    // reject, with PostgreSQL's message, before any password is asked.
    let refused = |user: &str, db: &str, what: &str| {
        format!("28000 {what} for host \"127.0.0.1\", user \"{user}\", database \"{db}\", no encryption")
    };
    let e = login(addr, "rejected", "rpw", "appdb").await.unwrap_err();
    assert_eq!(
        e,
        refused("rejected", "appdb", "pg_hba.conf rejects connection")
    );
    assert_eq!(
        first_answer(addr, "rejected", "trustdb"),
        Err((
            "28000".into(),
            "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"rejected\", \
             database \"trustdb\", no encryption"
                .into()
        ))
    );

    // trust for one database: no password asked, any password accepted.
    assert_eq!(first_answer(addr, "other", "trustdb"), Ok(0));
    login(addr, "other", "not the password", "trustdb")
        .await
        .unwrap();

    // No matching rule.
    let e = login(addr, "app", PASSWORD, "unmatched").await.unwrap_err();
    assert_eq!(e, refused("app", "unmatched", "no pg_hba.conf entry"));

    // psql sees the same.
    let out =
        tokio::task::block_in_place(|| psql(addr, "rejected", "rpw", "appdb", &[], "select 1"));
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("pg_hba.conf rejects connection for host \"127.0.0.1\", user \"rejected\""),
        "{}",
        stderr(&out)
    );

    // The admin console goes through the rules too.
    let e = login(addr, "app", PASSWORD, "pgbouncer").await.unwrap_err();
    assert_eq!(
        e,
        refused("app", "pgbouncer", "pg_hba.conf rejects connection")
    );
    assert_serves_app(addr).await;
}

async fn assert_serves_app(addr: SocketAddr) {
    login(addr, "app", PASSWORD, "appdb").await.unwrap();
}

/// A self-signed certificate for localhost in `dir` (`server.crt`, `server.key`).
fn self_signed(dir: &Path) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
        ])
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostssl_rules_need_tls() {
    let pg = cluster_two_users();
    let dir = Dir::new("hba-ssl");
    dir.write("hba.conf", RULES);
    self_signed(&dir.0);
    let tls = format!(
        "client_tls_sslmode = \"prefer\"\nclient_tls_cert_file = \"{0}/server.crt\"\n\
         client_tls_key_file = \"{0}/server.key\"",
        dir.0.display()
    );
    let cfg = load_file(
        &dir.write("pgsluice.toml", &config_text(&pg, &tls)),
        Vec::new(),
    )
    .unwrap();
    let (_server, addr) = start_pooler(cfg).await;
    // Plain TCP: the hostssl rule does not match.
    let e = login(addr, "app", PASSWORD, "ssldb").await.unwrap_err();
    assert_eq!(
        e,
        "28000 no pg_hba.conf entry for host \"127.0.0.1\", user \"app\", database \"ssldb\", no encryption"
    );
    // Over TLS it does (psql, sslmode=require).
    let out = tokio::task::block_in_place(|| {
        psql(
            addr,
            "app",
            PASSWORD,
            "dbname=ssldb sslmode=require",
            &[],
            "select 'tls ok'",
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "tls ok");
    // A refusal over TLS says so.
    let out = tokio::task::block_in_place(|| {
        psql(
            addr,
            "app",
            PASSWORD,
            "dbname=unmatched sslmode=require",
            &[],
            "select 1",
        )
    });
    assert!(
        stderr(&out).contains(
            "no pg_hba.conf entry for host \"127.0.0.1\", user \"app\", database \"unmatched\", SSL encryption"
        ),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_over_the_unix_socket() {
    let pg = cluster_two_users();
    let dir = Dir::new("hba-peer");
    dir.write("hba.conf", RULES);
    let port = free_port();
    let extra = format!("unix_socket_dir = \"{}\"", dir.0.display());
    let text = config_text(&pg, &extra).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let cfg = load_file(&dir.write("pgsluice.toml", &text), Vec::new()).unwrap();
    let (_server, _addr) = start_pooler(cfg).await;
    let os_user = pgsluice::net::os_user_name(my_uid()).expect("OS user name");
    let unix = |user: &str, db: &str| {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&dir.0)
            .port(port)
            .user(user)
            .password("x")
            .dbname(db);
        c
    };
    // The OS user's own name: in, without a password (peerdb logs in to the server as app).
    let c = try_connect(&unix(&os_user, "peerdb"))
        .await
        .expect("peer login");
    assert_eq!(
        simple_value(&c, "select current_user")
            .await
            .unwrap()
            .as_deref(),
        Some(USER)
    );
    // Another name: refused as PostgreSQL does.
    if os_user != "app" {
        let e = try_connect(&unix("app", "peerdb")).await.unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("28000"));
        assert_eq!(message(&e), "Peer authentication failed for user \"app\"");
    }
    // Unix-socket refusals name the host [local].
    let e = try_connect(&unix("app", "appdb")).await.unwrap_err();
    assert_eq!(
        message(&e),
        "no pg_hba.conf entry for host \"[local]\", user \"app\", database \"appdb\", no encryption"
    );
    // PgBouncer's rule stays: user pgbouncer from the pooler's own OS user is an admin
    // over the unix socket whatever the rules say.
    let c = try_connect(&unix("pgbouncer", "pgbouncer"))
        .await
        .expect("same-user admin login");
    assert!(c.simple_query("SHOW VERSION").await.is_ok());
}

/// `peer map=...`: the OS user logs in as the database user its map names (and, with a
/// map, not as its own name unless the map says so).
#[tokio::test(flavor = "multi_thread")]
async fn peer_with_a_user_name_map() {
    let pg = cluster_two_users();
    let dir = Dir::new("hba-peermap");
    let os_user = pgsluice::net::os_user_name(my_uid()).expect("OS user name");
    dir.write("hba.conf", "local  appdb ,trustdb  all  peer map=osmap\n");
    dir.write(
        "ident.conf",
        &format!("# MAPNAME SYSTEM-USERNAME PG-USERNAME\nosmap \"{os_user}\" app\n"),
    );
    let port = free_port();
    let extra = format!(
        "unix_socket_dir = \"{}\"\nauth_ident_file = \"ident.conf\"",
        dir.0.display()
    );
    let text = config_text(&pg, &extra).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let cfg = load_file(&dir.write("pgsluice.toml", &text), Vec::new()).unwrap();
    assert!(cfg.warnings().iter().all(|w| !w.contains("map=")));
    let (_server, _addr) = start_pooler(cfg).await;
    let unix = |user: &str, db: &str| {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&dir.0)
            .port(port)
            .user(user)
            .password("x")
            .dbname(db);
        c
    };
    for db in ["appdb", "trustdb"] {
        let c = try_connect(&unix("app", db))
            .await
            .unwrap_or_else(|e| panic!("{db}: mapped peer login: {e:?}"));
        assert_eq!(
            simple_value(&c, "select current_user")
                .await
                .unwrap()
                .as_deref(),
            Some(USER)
        );
    }
    for user in ["other", os_user.as_str()]
        .into_iter()
        .filter(|u| *u != "app")
    {
        let e = try_connect(&unix(user, "appdb")).await.unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("28000"), "{user}");
        assert_eq!(
            message(&e),
            format!("Peer authentication failed for user \"{user}\"")
        );
    }
}

/// This process's uid (the owner of /proc/self).
fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_reads_the_file_again_and_keeps_rules_on_errors() {
    let pg = cluster_two_users();
    let dir = Dir::new("hba-reload");
    dir.write("hba.conf", "host all app all reject\n");
    let cfg = load_file(
        &dir.write("pgsluice.toml", &config_text(&pg, "")),
        Vec::new(),
    )
    .unwrap();
    let (server, addr) = start_pooler(cfg).await;
    let e = login(addr, "app", PASSWORD, "appdb").await.unwrap_err();
    assert!(e.contains("pg_hba.conf rejects connection"), "{e}");

    dir.write("hba.conf", "host all app all scram-sha-256\n");
    let rep = server.app().reload().await.expect("reload");
    assert!(
        rep.changes.iter().any(|c| c.contains("auth_hba_file")),
        "{rep:?}"
    );
    login(addr, "app", PASSWORD, "appdb").await.unwrap();

    // A broken file is refused, naming file and line; the rules in force stay.
    dir.write(
        "hba.conf",
        "host all app all scram-sha-256\nhost all all example.com md5\n",
    );
    let e = server
        .app()
        .reload()
        .await
        .expect_err("broken file refused");
    assert!(
        e.contains("hba.conf:2:") && e.contains("example.com"),
        "{e}"
    );
    login(addr, "app", PASSWORD, "appdb").await.unwrap();
    assert_eq!(server.app().reload_counts(), (1, 1));
}

#[test]
fn broken_file_at_startup_is_a_config_error() {
    let dir = Dir::new("hba-startup");
    dir.write(
        "hba.conf",
        "local all all peer\nhost all +admins 10.0.0.0/8 md5\n",
    );
    let cfg = dir.write(
        "pgsluice.toml",
        "[general]\nlisten = \"127.0.0.1:0\"\nauth_type = \"hba\"\nauth_hba_file = \"hba.conf\"\n\
         [databases.appdb]\nhost = \"127.0.0.1\"\n",
    );
    for args in [
        vec![cfg.to_str().unwrap()],
        vec!["--check-config", cfg.to_str().unwrap()],
    ] {
        let mut child = Command::new(pgsluice_bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // It must exit at once; kill it (and fail) if it started serving instead.
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let hba = dir.0.join("hba.conf");
        assert!(
            err.contains(&format!("{}:2:", hba.display())) && err.contains("`+admins`"),
            "{args:?}: {err}"
        );
    }
}
