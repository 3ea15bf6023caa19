//! PgBouncer 1.25 compatibility of the configuration: a pgbouncer.ini that sets every
//! documented key of PgBouncer 1.25 (and the ones merged for 1.26) to a value other
//! than its default starts pgsluice, and SHOW CONFIG reports each value; the admin
//! console's SET changes the keys PgBouncer lets change at run time and refuses the
//! others; `query_wait_notify` tells a queued client that it waits.

mod admin_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use admin_common::*;
use pgsluice::config::pgbouncer_keys::{pgbouncer_keys, Section};
use pgsluice::config::{PoolMode, Secs};
use pgsluice::Instance;
use pgsluice_testkit::{free_port, Pooler};

const BIN: &str = env!("CARGO_BIN_EXE_pgsluice");

/// A scratch directory, removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("pgsluice-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).to_str().unwrap().to_owned()
    }
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A self-signed certificate and key (PEM) for both TLS sides.
fn make_certificate(dir: &Dir) {
    command_output(
        "openssl",
        &[
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
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            &dir.path("tls.key"),
            "-out",
            &dir.path("tls.crt"),
        ],
    );
}

/// Every `[pgbouncer]` key with a non-default value: (key, as written, as SHOW CONFIG
/// prints it).
fn pgbouncer_section(dir: &Dir, listen_port: u16) -> Vec<(&'static str, String, String)> {
    let same = |k: &'static str, v: &str| (k, v.to_owned(), v.to_owned());
    let user = command_output("id", &["-un"]);
    let group = command_output("id", &["-gn"]);
    let auth_query = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";
    vec![
        same("admin_users", "admin"),
        same("application_name_add_host", "1"),
        same("auth_dbname", "app"),
        same("auth_file", &dir.path("userlist.txt")),
        same("auth_hba_file", &dir.path("hba.conf")),
        same("auth_ident_file", &dir.path("ident.conf")),
        same(
            "auth_ldap_options",
            "host=ldap.example.com basedn=dc=example,dc=com",
        ),
        same("auth_query", auth_query),
        same("auth_type", "scram-sha-256"),
        same("auth_user", "app"),
        same("autodb_idle_timeout", "1800"),
        same("cancel_wait_timeout", "5"),
        same("client_idle_timeout", "600"),
        same("client_login_timeout", "30"),
        same("client_tls13_ciphers", "TLS_AES_256_GCM_SHA384"),
        same("client_tls_ca_file", &dir.path("tls.crt")),
        same("client_tls_cert_file", &dir.path("tls.crt")),
        same("client_tls_ciphers", "secure"),
        same("client_tls_dheparams", "none"),
        same("client_tls_ecdhcurve", "secp384r1"),
        same("client_tls_key_file", &dir.path("tls.key")),
        same("client_tls_protocols", "tlsv1.2,tlsv1.3"),
        same("client_tls_sslmode", "prefer"),
        same("conffile", &dir.path("pgbouncer.ini")),
        same("default_pool_size", "7"),
        same("disable_pqexec", "1"),
        same("dns_max_ttl", "30"),
        same("dns_nxdomain_ttl", "20"),
        same("dns_zone_check_period", "60"),
        same("idle_transaction_timeout", "300"),
        same("ignore_startup_parameters", "extra_float_digits"),
        same("job_name", "pgsluice-compat"),
        same("listen_addr", "127.0.0.1"),
        same("listen_backlog", "256"),
        same("listen_port", &listen_port.to_string()),
        same("log_connections", "0"),
        same("log_disconnections", "0"),
        same("log_pooler_errors", "0"),
        same("log_stats", "0"),
        same("logfile", &dir.path("pgsluice.log")),
        same("max_client_conn", "50"),
        same("max_db_client_connections", "40"),
        same("max_db_connections", "30"),
        same("max_packet_size", "1048576"),
        same("max_prepared_statements", "100"),
        same("max_user_client_connections", "40"),
        same("max_user_connections", "30"),
        same("min_pool_size", "1"),
        same("peer_id", "1"),
        same("pidfile", &dir.path("pgsluice.pid")),
        same("pkt_buf", "8192"),
        same("pool_idle_timeout", "60"),
        same("pool_mode", "transaction"),
        same("query_timeout", "120"),
        same("query_wait_notify", "3"),
        same("query_wait_timeout", "60"),
        same("reserve_pool_size", "2"),
        same("reserve_pool_timeout", "2.5"),
        same("resolv_conf", "/etc/resolv.conf"),
        same("sbuf_loopcnt", "10"),
        same("scram_iterations", "8192"),
        same("server_check_delay", "10"),
        same("server_check_query", "select 2"),
        same("server_connect_timeout", "10"),
        same("server_fast_close", "1"),
        same("server_idle_timeout", "300"),
        same("server_lifetime", "1800"),
        same("server_login_retry", "5"),
        same("server_reset_query", "RESET ALL"),
        same("server_reset_query_always", "1"),
        same("server_round_robin", "1"),
        same("server_tls13_ciphers", "TLS_AES_128_GCM_SHA256"),
        same("server_tls_ca_file", &dir.path("tls.crt")),
        same("server_tls_cert_file", &dir.path("tls.crt")),
        same("server_tls_ciphers", "normal"),
        same("server_tls_key_file", &dir.path("tls.key")),
        same("server_tls_protocols", "tlsv1.2,tlsv1.3"),
        same("server_tls_sslmode", "allow"),
        same("service_name", "pgsluice-compat"),
        same("so_reuseport", "1"),
        same("stats_period", "30"),
        same("stats_users", "stats"),
        same("suspend_timeout", "20"),
        same("syslog", "1"),
        same("syslog_facility", "local0"),
        same("syslog_ident", "pgsluice"),
        same("tcp_defer_accept", "0"),
        same("tcp_keepalive", "0"),
        same("tcp_keepcnt", "5"),
        same("tcp_keepidle", "60"),
        same("tcp_keepintvl", "10"),
        same("tcp_socket_buffer", "65536"),
        same("tcp_user_timeout", "30000"),
        same("track_extra_parameters", "IntervalStyle,application_name"),
        same("transaction_timeout", "600"),
        same("unix_socket_dir", &dir.path("sock")),
        same("unix_socket_group", &group),
        same("unix_socket_mode", "0700"),
        same("user", &user),
        same("verbose", "1"),
    ]
}

/// SHOW CONFIG as key -> (value, default, changeable).
fn show_config(addr: SocketAddr) -> BTreeMap<String, (String, String, String)> {
    let (header, rows) = show(addr, "SHOW CONFIG");
    assert_eq!(header, ["key", "value", "default", "changeable"]);
    rows.into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone(), r[3].clone())))
        .collect()
}

/// A pgbouncer.ini (and the files it names) in `dir`, every key non-default.
fn write_ini(dir: &Dir, pg_port: u16, settings: &[(&str, String, String)]) -> PathBuf {
    make_certificate(dir);
    std::fs::create_dir_all(dir.path("sock")).unwrap();
    std::fs::write(
        dir.path("userlist.txt"),
        format!("\"app\" \"{APP_PW}\"\n\"admin\" \"{ADMIN_PW}\"\n\"stats\" \"{STATS_PW}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path("hba.conf"),
        "host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    std::fs::write(dir.path("ident.conf"), "# no maps\n").unwrap();
    let mut ini = format!(
        "[databases]\n\
         app = host=127.0.0.1 port={pg_port} dbname=app\n\
         full = host=127.0.0.1 port={pg_port} dbname=app user=app password={APP_PW} \
         auth_user=app auth_query='SELECT usename, passwd FROM pg_shadow WHERE usename=$1' \
         auth_dbname=app pool_size=3 min_pool_size=1 reserve_pool=1 connect_query='select 1' \
         pool_mode=session load_balance_hosts=disable max_db_connections=5 \
         max_db_client_connections=10 server_lifetime=100 client_encoding=UTF8 datestyle=ISO \
         timezone=UTC application_name=compat query_wait_timeout=30\n\
         newer = host=127.0.0.1 port={pg_port} dbname=app reserve_pool_size=2\n\
         [users]\n\
         app = pool_mode=transaction pool_size=5 reserve_pool_size=1 max_user_connections=10 \
         max_user_client_connections=20 query_timeout=100 idle_transaction_timeout=100 \
         client_idle_timeout=100 transaction_timeout=100 query_wait_timeout=30\n\
         [peers]\n\
         1 = host=127.0.0.1 port=6433 pool_size=2\n\
         [pgbouncer]\n"
    );
    for (key, value, _) in settings {
        ini += &format!("{key} = {value}\n");
    }
    let path = PathBuf::from(dir.path("pgbouncer.ini"));
    std::fs::write(&path, ini).unwrap();
    path
}

#[test]
fn every_pgbouncer_125_key_starts_and_shows_in_show_config() {
    let pg = pg_with_app();
    let dir = Dir::new("ini125");
    let port = free_port();
    let settings = pgbouncer_section(&dir, port);
    // The file covers every [pgbouncer] key pgsluice knows (the table of keys is
    // PgBouncer 1.25's list).
    for k in pgbouncer_keys()
        .iter()
        .filter(|k| k.section == Section::Pgbouncer)
    {
        assert!(
            settings.iter().any(|(key, _, _)| *key == k.name),
            "the test does not set `{}`",
            k.name
        );
    }
    let ini = write_ini(&dir, pg.port(), &settings);
    let pooler = Pooler::spawn(Path::new(BIN), &[ini.to_str().unwrap()], &[]).unwrap();
    let addr = pooler.addr();
    let out = pooler.output().join("\n");
    assert!(!out.contains("unknown"), "{out}");
    // Keys pgsluice does not implement say so, with their line.
    assert!(out.contains("key `pgbouncer.server_fast_close`"), "{out}");

    // A client goes through (SCRAM against the auth_file, transaction pooling).
    let r = psql(addr, "app", APP_PW, "app", "select 41+1");
    assert!(r.ok && r.stdout.contains("42"), "{r:?}");
    let r = psql(addr, "app", APP_PW, "full", "select current_user");
    assert!(r.ok && r.stdout.contains("app"), "{r:?}");

    let config = show_config(addr);
    for (key, _, shown) in &settings {
        let (value, default, _) = config
            .get(*key)
            .unwrap_or_else(|| panic!("SHOW CONFIG has no `{key}`"));
        assert_eq!(value, shown, "SHOW CONFIG value of {key}");
        // Without listen_addr pgsluice listens on 127.0.0.1 (PgBouncer: unix socket
        // only), the value this test needs.
        if *key != "listen_addr" {
            assert_ne!(value, default, "{key} is set to its default");
        }
    }
    let changeable = |k: &str| config[k].2.clone();
    assert_eq!(changeable("listen_port"), "no");
    assert_eq!(changeable("unix_socket_dir"), "no");
    assert_eq!(changeable("track_extra_parameters"), "no");
    assert_eq!(changeable("server_fast_close"), "yes");
    assert_eq!(changeable("query_wait_notify"), "yes");
    // pgsluice's own keys follow PgBouncer's.
    assert_eq!(changeable("workers"), "no");
    assert_eq!(config["max_message_size"].0, "1048576");
    assert_eq!(
        cell(addr, "SHOW DATABASES", "name", "full", "pool_size").as_deref(),
        Some("3")
    );

    // SET: every key PgBouncer lets change at run time, parsed as in the file.
    let set_ok = |sql: &str| {
        let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", sql);
        assert!(r.ok, "{sql}: {r:?}");
        r
    };
    for (sql, key, want) in [
        ("SET verbose = 2", "verbose", "2"),
        ("SET server_fast_close = 0", "server_fast_close", "0"),
        ("SET query_wait_notify = 4", "query_wait_notify", "4"),
        ("SET auth_dbname = full", "auth_dbname", "full"),
        ("SET auth_dbname = app", "auth_dbname", "app"),
        ("SET auth_user = admin", "auth_user", "admin"),
        ("SET query_wait_timeout = 0.5", "query_wait_timeout", "0.5"),
        ("SET max_client_conn = 60", "max_client_conn", "60"),
        ("SET tcp_keepidle = 45", "tcp_keepidle", "45"),
        ("SET log_level = info", "log_level", "info"),
    ] {
        set_ok(sql);
        assert_eq!(show_config(addr)[key].0, want, "{sql}");
    }
    // A key pgsluice does not implement is kept, with a NOTICE saying so.
    let r = set_ok("SET server_fast_close = 1");
    assert!(r.stderr.contains("not implemented"), "{r:?}");
    assert_eq!(show_config(addr)["server_fast_close"].0, "1");
    // Refused: keys PgBouncer cannot change while running, bad values, unknown keys.
    for (sql, code_text) in [
        ("SET listen_port = 7000", "cannot be changed while running"),
        (
            "SET unix_socket_dir = /tmp",
            "cannot be changed while running",
        ),
        ("SET query_wait_notify = soon", "query_wait_notify"),
        ("SET server_fast_close = maybe", "server_fast_close"),
        ("SET no_such_key = 1", "unknown configuration parameter"),
    ] {
        let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", sql);
        assert!(!r.ok && r.stderr.contains(code_text), "{sql}: {r:?}");
    }
    assert_eq!(show_config(addr)["listen_port"].0, port.to_string());
    assert_eq!(show_config(addr)["auth_dbname"].0, "app");
    // Only admins may SET.
    let r = psql(addr, "stats", STATS_PW, "pgbouncer", "SET verbose = 0");
    assert!(!r.ok, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_is_told_after_query_wait_notify() {
    use futures_util::StreamExt;
    use tokio_postgres::AsyncMessage;

    let pg = pg_with_app();
    let mut cfg = base_config(&pg);
    cfg.general.pool_mode = PoolMode::Session;
    cfg.general.default_pool_size = 1;
    cfg.general.query_wait_notify = Secs::from_secs(1);
    let server = Instance::start(cfg).await.expect("start pgsluice");
    let addr = server.local_addrs()[0];

    // The only server connection stays with this session.
    let holder = app_client(addr).await;
    holder.simple_query("select 1").await.unwrap();

    let conn_str = format!(
        "host={} port={} user=app password={APP_PW} dbname=app",
        addr.ip(),
        addr.port()
    );
    let (waiter, mut conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notice(n) = m {
                let _ = tx.send(n.message().to_owned());
            }
        }
    });
    let query = tokio::spawn(async move { waiter.simple_query("select 2").await.map(|_| ()) });
    let notice = tokio::time::timeout(Duration::from_secs(20), notices.recv())
        .await
        .expect("no NOTICE while queued")
        .unwrap();
    assert_eq!(
        notice,
        "No server connection available in postgres backend, client being queued"
    );
    assert!(
        !query.is_finished(),
        "the query ran before the connection was free"
    );
    // Once the connection is free, the queued query runs.
    drop(holder);
    tokio::time::timeout(Duration::from_secs(20), query)
        .await
        .expect("the queued query never ran")
        .unwrap()
        .unwrap();
}
