//! The admin console against a real PostgreSQL, through psql and a raw protocol client:
//! SHOW column lists and types, access control, PAUSE/RESUME, KILL_CLIENT, DISABLE,
//! RECONNECT, SET, statistics and the metrics endpoint.

mod admin_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use admin_common::*;
use pgsluice::Instance;

const T: Duration = Duration::from_secs(30);

fn cols(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

const SOCKET_COLS: [&str; 21] = [
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];

/// The header of every SHOW command, as PgBouncer 1.25 prints it.
fn expected_headers() -> Vec<(&'static str, Vec<String>)> {
    let mut sockets = cols(&SOCKET_COLS);
    sockets.extend(cols(&[
        "recv_pos",
        "pkt_pos",
        "pkt_remain",
        "send_pos",
        "send_remain",
        "pkt_avail",
        "send_avail",
    ]));
    vec![
        (
            "SHOW POOLS",
            cols(&[
                "database",
                "user",
                "cl_active",
                "cl_waiting",
                "cl_active_cancel_req",
                "cl_waiting_cancel_req",
                "sv_active",
                "sv_active_cancel",
                "sv_being_canceled",
                "sv_idle",
                "sv_used",
                "sv_tested",
                "sv_login",
                "maxwait",
                "maxwait_us",
                "pool_mode",
                "load_balance_hosts",
            ]),
        ),
        (
            "SHOW DATABASES",
            cols(&[
                "name",
                "host",
                "port",
                "database",
                "force_user",
                "pool_size",
                "min_pool_size",
                "reserve_pool_size",
                "server_lifetime",
                "pool_mode",
                "load_balance_hosts",
                "max_connections",
                "current_connections",
                "max_client_connections",
                "current_client_connections",
                "paused",
                "disabled",
            ]),
        ),
        ("SHOW CLIENTS", cols(&SOCKET_COLS)),
        ("SHOW SERVERS", cols(&SOCKET_COLS)),
        ("SHOW SOCKETS", sockets.clone()),
        ("SHOW ACTIVE_SOCKETS", sockets),
        (
            "SHOW USERS",
            cols(&[
                "name",
                "pool_size",
                "reserve_pool_size",
                "pool_mode",
                "max_user_connections",
                "current_connections",
                "max_user_client_connections",
                "current_client_connections",
            ]),
        ),
        (
            "SHOW STATS",
            cols(&[
                "database",
                "total_server_assignment_count",
                "total_xact_count",
                "total_query_count",
                "total_received",
                "total_sent",
                "total_xact_time",
                "total_query_time",
                "total_wait_time",
                "total_client_parse_count",
                "total_server_parse_count",
                "total_bind_count",
                "total_client_connect_count",
                "avg_server_assignment_count",
                "avg_xact_count",
                "avg_query_count",
                "avg_recv",
                "avg_sent",
                "avg_xact_time",
                "avg_query_time",
                "avg_wait_time",
                "avg_client_parse_count",
                "avg_server_parse_count",
                "avg_bind_count",
                "avg_client_connect_count",
            ]),
        ),
        (
            "SHOW STATS_TOTALS",
            cols(&[
                "database",
                "server_assignment_count",
                "xact_count",
                "query_count",
                "bytes_received",
                "bytes_sent",
                "xact_time",
                "query_time",
                "wait_time",
                "client_parse_count",
                "server_parse_count",
                "bind_count",
                "client_connect_count",
            ]),
        ),
        (
            "SHOW STATS_AVERAGES",
            cols(&[
                "database",
                "server_assignment_count",
                "xact_count",
                "query_count",
                "bytes_received",
                "bytes_sent",
                "xact_time",
                "query_time",
                "wait_time",
                "avg_client_parse_count",
                "avg_server_parse_count",
                "avg_bind_count",
                "client_connect_count",
            ]),
        ),
        ("SHOW TOTALS", cols(&["name", "value"])),
        ("SHOW LISTS", cols(&["list", "items"])),
        ("SHOW STATE", cols(&["key", "value"])),
        (
            "SHOW CONFIG",
            cols(&["key", "value", "default", "changeable"]),
        ),
        ("SHOW VERSION", cols(&["version"])),
        (
            "SHOW MEM",
            cols(&["name", "size", "used", "free", "memtotal"]),
        ),
        (
            "SHOW FDS",
            cols(&[
                "fd",
                "task",
                "user",
                "database",
                "addr",
                "port",
                "cancel",
                "link",
                "client_encoding",
                "std_strings",
                "datestyle",
                "timezone",
                "password",
                "scram_client_key",
                "scram_server_key",
            ]),
        ),
        ("SHOW DNS_HOSTS", cols(&["hostname", "ttl", "addrs"])),
        ("SHOW DNS_ZONES", cols(&["zonename", "serial", "count"])),
        (
            "SHOW PEERS",
            cols(&["peer_id", "host", "port", "pool_size"]),
        ),
        (
            "SHOW PEER_POOLS",
            cols(&[
                "peer_id",
                "cl_active_cancel_req",
                "cl_waiting_cancel_req",
                "sv_active_cancel",
                "sv_login",
            ]),
        ),
    ]
}

async fn start(cfg: pgsluice::config::Config) -> (Instance, SocketAddr) {
    let server = Instance::start(cfg).await.expect("start pgsluice");
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// Runs blocking test code (psql, raw sockets) off the runtime's workers.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_return_pgbouncer_columns_in_order() {
    let pg = pg_with_app();
    let (_server, addr) = start(base_config(&pg)).await;
    let client = app_client(addr).await;
    client.simple_query("select 1").await.unwrap();
    blocking(move || {
        for (cmd, want) in expected_headers() {
            let (header, _) = show(addr, cmd);
            assert_eq!(header, want, "{cmd}");
        }
        // Lower case, a trailing semicolon and SELECT work as in PgBouncer.
        assert_eq!(show(addr, "show version;").0, ["version"]);
        let (_, rows) = show(addr, "SHOW VERSION");
        assert!(
            rows[0][0].starts_with("PgBouncer 1.25.0 (pgsluice "),
            "{rows:?}"
        );
        // The pool of the connected client is listed with its counts.
        let (h, rows) = show(addr, "SHOW POOLS");
        let row = rows.iter().find(|r| r[0] == "app").expect("app pool");
        let at = |c: &str| row[h.iter().position(|x| x == c).unwrap()].clone();
        assert_eq!(at("user"), "app");
        assert_eq!(at("cl_active"), "1");
        assert_eq!(at("sv_idle"), "1");
        assert_eq!(at("pool_mode"), "transaction");
        // SHOW CLIENTS lists the app client and this admin session.
        let (h, rows) = show(addr, "SHOW CLIENTS");
        let db = h.iter().position(|c| c == "database").unwrap();
        let dbs: Vec<&str> = rows.iter().map(|r| r[db].as_str()).collect();
        assert!(
            dbs.contains(&"app") && dbs.contains(&"pgbouncer"),
            "{dbs:?}"
        );
        let (h, rows) = show(addr, "SHOW SERVERS");
        assert_eq!(rows.len(), 1, "{rows:?}");
        let pid = &rows[0][h.iter().position(|c| c == "remote_pid").unwrap()];
        assert!(pid.parse::<i32>().unwrap() > 0);
        // HELP is a notice.
        let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", "SHOW HELP");
        assert!(
            r.ok && r.stderr.contains("SHOW HELP|CONFIG|DATABASES"),
            "{r:?}"
        );
    })
    .await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_types_match_pgbouncer() {
    let pg = pg_with_app();
    let mut cfg = base_config(&pg);
    cfg.general.auth_type = pgsluice::config::AuthType::Plain;
    let (_server, addr) = start(cfg).await;
    blocking(move || {
        let q = |sql: &str| raw_query(addr, "admin", ADMIN_PW, "pgsluice", sql).unwrap();
        let oid = |cols: &[Column], name: &str| cols.iter().find(|c| c.0 == name).unwrap().1;
        let (c, _) = q("SHOW POOLS");
        assert_eq!(oid(&c, "database"), 25);
        assert_eq!(oid(&c, "cl_active"), 23);
        assert_eq!(oid(&c, "maxwait_us"), 23);
        let (c, rows) = q("SHOW STATS");
        assert!(c[1..].iter().all(|(_, o)| *o == 1700), "{c:?}");
        assert!(!rows.is_empty());
        let (c, _) = q("SHOW TOTALS");
        assert_eq!(c, vec![("name".into(), 25), ("value".into(), 1700)]);
        let (c, rows) = q("SHOW CLIENTS");
        assert_eq!(oid(&c, "connect_time"), 25);
        assert_eq!(oid(&c, "port"), 23);
        assert_eq!(oid(&c, "id"), 23);
        let me = &rows[0];
        assert!(me[9].as_deref().unwrap().ends_with(" UTC"), "{me:?}");
        let (c, _) = q("SHOW FDS");
        assert_eq!(oid(&c, "cancel"), 20);
        assert_eq!(oid(&c, "scram_client_key"), 17);
        let (c, _) = q("SHOW DNS_HOSTS");
        assert_eq!(oid(&c, "ttl"), 20);
        // The fixed parameters some drivers ask for.
        let (c, rows) = q("SHOW client_encoding");
        assert_eq!(c[0].0, "client_encoding");
        assert_eq!(rows[0][0].as_deref(), Some("UTF8"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_and_errors() {
    let pg = pg_with_app();
    let (_server, addr) = start(base_config(&pg)).await;
    blocking(move || {
        // stats_users may SHOW, not control.
        let r = psql(addr, "stats", STATS_PW, "pgbouncer", "SHOW POOLS");
        assert!(r.ok, "{r:?}");
        let r = psql(addr, "stats", STATS_PW, "pgbouncer", "PAUSE");
        assert!(!r.ok && r.stderr.contains("admin access needed"), "{r:?}");
        let r = psql(addr, "stats", STATS_PW, "pgbouncer", "SHOW FDS");
        assert!(!r.ok && r.stderr.contains("admin access needed"), "{r:?}");
        // Other users cannot log in, nor can a wrong password.
        let r = psql(addr, "app", APP_PW, "pgbouncer", "SHOW POOLS");
        assert!(!r.ok && r.stderr.contains("not allowed"), "{r:?}");
        let r = psql(addr, "admin", "wrong", "pgbouncer", "SHOW POOLS");
        assert!(
            !r.ok && r.stderr.contains("password authentication failed"),
            "{r:?}"
        );
        // Unknown commands and bad arguments are errors, the session goes on.
        let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", "SHOW NOTHING");
        assert!(!r.ok && r.stderr.contains("invalid command"), "{r:?}");
        let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", "PAUSE nosuchdb");
        assert!(!r.ok && r.stderr.contains("no such database"), "{r:?}");
        let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", "KILL_CLIENT abc");
        assert!(!r.ok && r.stderr.contains("invalid client id"), "{r:?}");
        let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", "RESUME");
        assert!(!r.ok && r.stderr.contains("not paused"), "{r:?}");
        // The alias works too.
        let r = psql(addr, "admin", ADMIN_PW, "pgsluice", "SHOW STATE");
        assert!(r.ok && r.stdout.contains("active|yes"), "{r:?}");
    })
    .await;
    // The extended protocol is refused with an error; the simple one works.
    let conn_str = format!(
        "host={} port={} user=admin password={ADMIN_PW} dbname=pgbouncer",
        addr.ip(),
        addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let e = client.query("SHOW POOLS", &[]).await.unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(msg.contains("simple query protocol"), "{e:?}");
    let rows = client.simple_query("SHOW LISTS").await.unwrap();
    assert!(rows.len() > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_blocks_new_queries_until_resume() {
    let pg = pg_with_app();
    let (_server, addr) = start(base_config(&pg)).await;
    let holder = app_client(addr).await;
    let waiter = app_client(addr).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    // PAUSE waits for the open transaction.
    let pause = tokio::spawn(blocking(move || admin(addr, "PAUSE")));
    blocking(move || {
        wait_until("SHOW STATE paused", T, || {
            show(addr, "SHOW STATE")
                .1
                .contains(&vec!["paused".into(), "yes".into()])
        })
    })
    .await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned with a transaction open"
    );
    // A new query waits while paused.
    let query = tokio::spawn(async move { waiter.simple_query("select 42").await.map(|_| waiter) });
    blocking(move || {
        wait_until("a waiting client", T, || {
            cell(addr, "SHOW POOLS", "database", "app", "cl_waiting").as_deref() == Some("1")
        })
    })
    .await;
    assert!(!query.is_finished());
    // The transaction in progress may finish; then PAUSE returns.
    holder.batch_execute("COMMIT").await.unwrap();
    pause.await.unwrap();
    assert!(!query.is_finished(), "query ran while paused");
    blocking(move || {
        assert_eq!(
            cell(addr, "SHOW DATABASES", "name", "app", "paused").as_deref(),
            Some("1")
        );
        assert_eq!(
            cell(addr, "SHOW POOLS", "database", "app", "sv_idle").as_deref(),
            Some("0"),
            "PAUSE closes server connections"
        );
        admin(addr, "RESUME");
    })
    .await;
    let waiter = query.await.unwrap().expect("query after RESUME");
    waiter.simple_query("select 1").await.unwrap();
    holder.simple_query("select 1").await.unwrap();

    // PAUSE db / RESUME db.
    blocking(move || {
        admin(addr, "PAUSE app");
        assert_eq!(
            cell(addr, "SHOW DATABASES", "name", "app", "paused").as_deref(),
            Some("1")
        );
        // PAUSE of every database while one is paused is refused.
        let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", "SUSPEND");
        assert!(!r.ok && r.stderr.contains("paused databases"), "{r:?}");
        admin(addr, "RESUME app");
    })
    .await;
    waiter.simple_query("select 2").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_disable_reconnect_and_kill() {
    let pg = pg_with_app();
    let (_server, addr) = start(base_config(&pg)).await;
    let victim = app_client(addr).await;
    let other = app_client(addr).await;
    victim.simple_query("select 1").await.unwrap();
    other.simple_query("select 1").await.unwrap();

    // KILL_CLIENT: the id comes from SHOW CLIENTS.
    let victim_id = blocking(move || {
        let (h, rows) = show(addr, "SHOW CLIENTS");
        let db = h.iter().position(|c| c == "database").unwrap();
        let id = h.iter().position(|c| c == "id").unwrap();
        let ids: Vec<String> = rows
            .iter()
            .filter(|r| r[db] == "app")
            .map(|r| r[id].clone())
            .collect();
        assert_eq!(ids.len(), 2, "{rows:?}");
        ids
    })
    .await;
    // Which one is the victim does not matter for the count; kill the first.
    let kill = victim_id[0].clone();
    blocking(move || admin(addr, &format!("KILL_CLIENT {kill}"))).await;
    let killed_one = {
        let a = victim.simple_query("select 1").await.is_err();
        let b = other.simple_query("select 1").await.is_err();
        assert!(a ^ b, "exactly one client is gone (victim {a}, other {b})");
        if a {
            other
        } else {
            victim
        }
    };
    blocking(move || {
        wait_until("one app client left", T, || {
            cell(addr, "SHOW POOLS", "database", "app", "cl_active").as_deref() == Some("1")
        });
        let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", "KILL_CLIENT 999999");
        assert!(!r.ok && r.stderr.contains("client not found"), "{r:?}");

        // DISABLE refuses new clients, ENABLE lets them in again.
        admin(addr, "DISABLE app");
        let r = psql(addr, "app", APP_PW, "app", "select 1");
        assert!(
            !r.ok && r.stderr.contains("does not allow connections"),
            "{r:?}"
        );
        assert_eq!(
            cell(addr, "SHOW DATABASES", "name", "app", "disabled").as_deref(),
            Some("1")
        );
        admin(addr, "ENABLE app");
        assert!(psql(addr, "app", APP_PW, "app", "select 1").ok);

        // RECONNECT: the idle server connection is replaced.
        let (h, rows) = show(addr, "SHOW SERVERS");
        let id = h.iter().position(|c| c == "id").unwrap();
        let before: Vec<String> = rows.iter().map(|r| r[id].clone()).collect();
        assert!(!before.is_empty());
        admin(addr, "RECONNECT app");
        admin(addr, "WAIT_CLOSE app");
        assert!(psql(addr, "app", APP_PW, "app", "select 1").ok);
        let (_, rows) = show(addr, "SHOW SERVERS");
        assert!(
            rows.iter().all(|r| !before.contains(&r[id])),
            "old connections remain: {rows:?}"
        );
    })
    .await;
    killed_one.simple_query("select 1").await.unwrap();

    // KILL db drops every client of the database and pauses it.
    blocking(move || admin(addr, "KILL app")).await;
    assert!(killed_one.simple_query("select 1").await.is_err());
    blocking(move || {
        assert_eq!(
            cell(addr, "SHOW DATABASES", "name", "app", "paused").as_deref(),
            Some("1")
        );
        admin(addr, "RESUME app");
        assert!(psql(addr, "app", APP_PW, "app", "select 1").ok);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_changes_settings_and_stats_count() {
    let pg = pg_with_app();
    let mut cfg = base_config(&pg);
    let app = app_labels(&pg);
    cfg.general.stats_period = pgsluice::config::Secs::from_secs(1);
    cfg.general.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let (server, addr) = start(cfg).await;
    let metrics = server.metrics_addr().expect("metrics endpoint");
    let client = app_client(addr).await;
    for _ in 0..5 {
        client.simple_query("select 1").await.unwrap();
    }
    client
        .batch_execute("BEGIN; SELECT 1; SELECT 2; COMMIT")
        .await
        .unwrap();
    blocking(move || {
        let get = |col: &str| {
            cell(addr, "SHOW STATS", "database", "app", col)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert!(get("total_xact_count") >= 6, "xacts");
        assert!(get("total_query_count") >= 6, "queries");
        assert!(get("total_received") > 0 && get("total_sent") > 0);
        assert!(get("total_server_assignment_count") >= 6);
        assert_eq!(get("total_client_connect_count"), 1);
        let totals = show(addr, "SHOW TOTALS").1;
        assert!(
            totals.iter().any(|r| r[0] == "total_xact_count"),
            "{totals:?}"
        );

        // SET changes a setting at run time; bad values are refused.
        admin(addr, "SET default_pool_size = 7");
        assert_eq!(
            cell(addr, "SHOW CONFIG", "key", "default_pool_size", "value").as_deref(),
            Some("7")
        );
        assert_eq!(
            cell(addr, "SHOW DATABASES", "name", "app", "pool_size").as_deref(),
            Some("7")
        );
        let r = psql(
            addr,
            "admin",
            ADMIN_PW,
            "pgbouncer",
            "SET default_pool_size = 0",
        );
        assert!(!r.ok && r.stderr.contains("default_pool_size"), "{r:?}");
        let r = psql(addr, "admin", ADMIN_PW, "pgbouncer", "SET no_such_key = 1");
        assert!(
            !r.ok && r.stderr.contains("unknown configuration parameter"),
            "{r:?}"
        );
        let r = psql(
            addr,
            "admin",
            ADMIN_PW,
            "pgbouncer",
            "SET listen = '127.0.0.1:1'",
        );
        assert!(!r.ok && r.stderr.contains("cannot be changed"), "{r:?}");
        // admin_users survives other SETs.
        admin(addr, "SET query_wait_timeout = '30s'");
        admin(addr, "SHOW POOLS");

        // The metrics endpoint.
        let body = http_get(metrics, "/metrics");
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        for name in [
            "pgsluice_up 1".to_owned(),
            format!("pgsluice_pool_client_connections{{{app},state=\"idle\"}} 1"),
            format!("pgsluice_pool_server_connections{{{app},state=\"idle\"}}"),
            format!("pgsluice_transactions_total{{{app}}}"),
            "pgsluice_queries_total{".to_owned(),
            "pgsluice_wait_time_seconds_total{".to_owned(),
            format!("pgsluice_query_duration_seconds_bucket{{{app},le=\"0.0005\"}}"),
            format!("pgsluice_transaction_duration_seconds_count{{{app}}}"),
            format!("pgsluice_wait_duration_seconds_bucket{{{app},le=\"+Inf\"}}"),
            "# TYPE pgsluice_query_duration_seconds histogram".to_owned(),
            format!("pgsluice_pool_size{{{app}}} 7"),
        ] {
            assert!(body.contains(&name), "missing {name} in\n{body}");
        }
        assert!(http_get(metrics, "/other").starts_with("HTTP/1.1 404"));
        let count_line = body
            .lines()
            .find(|l| l.starts_with("pgsluice_transaction_duration_seconds_count{"))
            .unwrap();
        let count: u64 = count_line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 6, "{count_line}");
    })
    .await;

    // Averages cover the last completed stats period (1 s here): keep a stream of
    // transactions going until one shows up.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let load = tokio::spawn(async move {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            client.simple_query("select 1").await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    blocking(move || {
        wait_until("a non-zero avg_xact_count", T, || {
            cell(addr, "SHOW STATS", "database", "app", "avg_xact_count")
                .is_some_and(|v| v.parse::<u64>().unwrap() > 0)
        });
        let avg = cell(addr, "SHOW STATS_AVERAGES", "database", "app", "xact_time").unwrap();
        assert!(avg.parse::<u64>().is_ok(), "{avg}");
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
}

/// The labels of the `app` pool's metric series.
fn app_labels(pg: &pgsluice_testkit::PgCluster) -> String {
    format!(
        "database=\"app\",user=\"app\",host=\"127.0.0.1:{}\"",
        pg.port()
    )
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_is_told_why() {
    let pg = pg_with_app();
    let mut cfg = base_config(&pg);
    cfg.general.auth_type = pgsluice::config::AuthType::Trust;
    let (_server, addr) = start(cfg).await;
    blocking(move || {
        let mut victim = raw_login(addr, "app", "app");
        let id = cell(addr, "SHOW CLIENTS", "database", "app", "id").expect("client listed");
        admin(addr, &format!("KILL_CLIENT {id}"));
        let (tag, body) = read_msg(&mut victim).expect("a message before the close");
        let text = String::from_utf8_lossy(&body);
        assert_eq!(tag, b'E', "{text}");
        assert!(
            text.contains("admin forced disconnect") && text.contains("57P01"),
            "{text}"
        );
        assert!(read_msg(&mut victim).is_err(), "closed after the error");
    })
    .await;
}

/// PgBouncer 1.24's prepared-statement counters: a client's named Parse (sent to the
/// server once), its Binds, and the injected Parse when the statement is needed on a
/// connection that lacks it; in SHOW STATS, STATS_TOTALS, TOTALS and /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_counters() {
    let pg = pg_with_app();
    let mut cfg = base_config(&pg);
    let app = app_labels(&pg);
    cfg.general.pool_mode = pgsluice::config::PoolMode::Transaction;
    cfg.general.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let (server, addr) = start(cfg).await;
    let metrics = server.metrics_addr().expect("metrics endpoint");
    let client = app_client(addr).await;
    let stmt = client.prepare("select $1::int4 + 1").await.unwrap();
    for i in 0..3 {
        let row = client.query_one(&stmt, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    // A second client holds the first server connection in a transaction, so the
    // first client's next Bind lands on a new connection: pgsluice parses there too.
    let other = app_client(addr).await;
    other.batch_execute("begin; select 1").await.unwrap();
    let row = client.query_one(&stmt, &[&9]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 10);
    other.batch_execute("commit").await.unwrap();
    blocking(move || {
        let get = |cmd: &str, col: &str| {
            cell(addr, cmd, "database", "app", col)
                .unwrap_or_else(|| panic!("{cmd} {col}"))
                .parse::<u64>()
                .unwrap()
        };
        // tokio-postgres names its statements: one Parse, four Binds.
        assert_eq!(get("SHOW STATS", "total_client_parse_count"), 1);
        assert_eq!(get("SHOW STATS", "total_bind_count"), 4);
        assert_eq!(get("SHOW STATS", "total_server_parse_count"), 2);
        assert_eq!(get("SHOW STATS_TOTALS", "client_parse_count"), 1);
        assert_eq!(get("SHOW STATS_TOTALS", "server_parse_count"), 2);
        assert_eq!(get("SHOW STATS_TOTALS", "bind_count"), 4);
        let totals = show(addr, "SHOW TOTALS").1;
        assert!(
            totals
                .iter()
                .any(|r| r[0] == "total_ps_bind_count" && r[1] == "4"),
            "{totals:?}"
        );
        let body = http_get(metrics, "/metrics");
        for line in [
            format!("pgsluice_prepared_client_parses_total{{{app}}} 1"),
            format!("pgsluice_prepared_server_parses_total{{{app}}} 2"),
            format!("pgsluice_prepared_binds_total{{{app}}} 4"),
        ] {
            assert!(body.lines().any(|l| l == line), "missing {line} in\n{body}");
        }
    })
    .await;
}

/// A replicated database with a host nobody listens on: SHOW HOSTS shows it down
/// or banned with the connection error and the test's PostgreSQL up as the primary;
/// SHOW POOLS keeps one row for the database; /metrics has a series per host, none
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_hosts_of_a_replicated_database() {
    use pgsluice::config::{DatabaseConfig, HostConfig, HostRole};
    let pg = pg_with_app();
    let mut cfg = base_config(&pg);
    cfg.general.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let closed = pgsluice_testkit::free_port();
    let host = |port| HostConfig {
        host: "127.0.0.1".into(),
        port,
        role: HostRole::Auto,
    };
    let mut db = DatabaseConfig::new("127.0.0.1");
    db.dbname = Some("app".into());
    // The dead host first: a login waits for the first check and takes its server
    // parameters from a live host.
    db.host = String::new();
    db.hosts = Some(vec![host(closed), host(pg.port())]);
    cfg.databases.insert("rep".into(), db);
    cfg.validate().expect("valid config");
    let (server, addr) = start(cfg).await;
    let metrics = server.metrics_addr().expect("metrics endpoint");
    let pg_port = pg.port().to_string();
    blocking(move || {
        // The first login creates the cluster; it waits for the primary's first check.
        let r = psql(addr, "app", APP_PW, "rep", "select 1");
        assert!(r.ok, "{r:?}");
        let by_port = |rows: &[Vec<String>], h: &[String], port: &str| {
            let p = h.iter().position(|c| c == "port").unwrap();
            rows.iter().find(|r| r[p] == port).cloned().expect("a row")
        };
        let closed_port = closed.to_string();
        wait_until(
            "a failed check, and the select's connection idle",
            T,
            || {
                let (h, rows) = show(addr, "SHOW HOSTS");
                let at = |port: &str, c: &str| {
                    by_port(&rows, &h, port)[h.iter().position(|x| x == c).unwrap()].clone()
                };
                at(&closed_port, "checks_failed") != "0" && at(&pg_port, "sv_idle") == "1"
            },
        );
        let (h, rows) = show(addr, "SHOW HOSTS");
        assert_eq!(rows.len(), 2, "{rows:?}");
        let dead = by_port(&rows, &h, &closed_port);
        let live = by_port(&rows, &h, &pg_port);
        let at = |row: &[String], c: &str| row[h.iter().position(|x| x == c).unwrap()].clone();
        assert_eq!(at(&dead, "database"), "rep");
        assert_eq!(at(&dead, "user"), "app");
        assert_eq!(at(&dead, "host"), "127.0.0.1");
        assert!(
            ["down", "banned"].contains(&at(&dead, "state").as_str()),
            "{dead:?}"
        );
        assert_eq!(at(&dead, "role"), "unknown");
        assert!(
            at(&dead, "last_error").contains(&closed_port)
                && !at(&dead, "last_error").contains(APP_PW),
            "{dead:?}"
        );
        assert_eq!(at(&live, "state"), "up", "{live:?}");
        assert_eq!(at(&live, "role"), "primary");
        assert_eq!(at(&live, "configured_role"), "auto");
        assert_eq!(at(&live, "lag_bytes"), "0");
        // One SHOW POOLS row for the database; SHOW SERVERS names the live host.
        let (_, rows) = show(addr, "SHOW POOLS");
        assert_eq!(rows.iter().filter(|r| r[0] == "rep").count(), 1, "{rows:?}");
        assert_eq!(
            cell(addr, "SHOW SERVERS", "database", "rep", "port").as_deref(),
            Some(pg_port.as_str())
        );

        let body = http_get(metrics, "/metrics");
        let live_labels = format!("database=\"rep\",user=\"app\",host=\"127.0.0.1:{pg_port}\"");
        let dead_labels = format!("database=\"rep\",user=\"app\",host=\"127.0.0.1:{closed}\"");
        for line in [
            format!("pgsluice_host_up{{{live_labels},role=\"primary\"}} 1"),
            format!("pgsluice_host_up{{{dead_labels},role=\"unknown\"}} 0"),
            format!("pgsluice_pool_server_connections{{{live_labels},state=\"idle\"}} 1"),
            format!("pgsluice_pool_server_connections{{{dead_labels},state=\"idle\"}} 0"),
        ] {
            assert!(body.lines().any(|l| l == line), "missing {line} in\n{body}");
        }
        let mut seen = std::collections::HashSet::new();
        let (_, text) = body.split_once("\r\n\r\n").expect("an HTTP response");
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let series = l.rsplit_once(' ').map_or(l, |(s, _)| s);
            assert!(seen.insert(series.to_owned()), "{series} twice in\n{body}");
        }
    })
    .await;
}
