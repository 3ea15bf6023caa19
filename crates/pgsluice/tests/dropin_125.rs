//! Issue 13's acceptance, end to end: a pgbouncer.ini written for PgBouncer 1.25 runs
//! unchanged. Statement pooling globally, one session-mode and one transaction-mode
//! database, keys of 1.24/1.25; psql with PGOPTIONS; a 60,000-byte password; admin SET
//! of runtime keys; SHOW STATS's prepared-statement counters. (The pipeline-error and
//! pgjdbc parts of the acceptance run in tests/prepared_pipeline.rs and tests/session_params.rs.)

mod common;

use std::path::{Path, PathBuf};

use common::{clean_pg_env, run_with_stdin, stderr, stdout, Dir};
use pgsluice_testkit::{free_port, pg_bin, ClusterOptions, HostAuth, PgCluster, Pooler};

const BIN: &str = env!("CARGO_BIN_EXE_pgsluice");

/// The long password: PgBouncer accepts passwords up to 64 KB (cloud IAM tokens).
fn long_password() -> String {
    "t0k3n".repeat(12_000)
}

fn write_files(pg: &PgCluster, port: u16) -> (Dir, PathBuf) {
    let dir = std::env::temp_dir().join(format!("pgsluice-dropin125-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let userlist = format!(
        "\"app\" \"secret\"\n\"admin\" \"admin-pw\"\n\"longpw\" \"{}\"\n",
        long_password()
    );
    std::fs::write(dir.join("userlist.txt"), userlist).unwrap();
    let p = pg.port();
    let ini = format!(
        "[databases]\n\
         stmtdb = host=127.0.0.1 port={p} dbname=appdb\n\
         sessdb = host=127.0.0.1 port={p} dbname=appdb pool_mode=session\n\
         txdb = host=127.0.0.1 port={p} dbname=appdb pool_mode=transaction\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         auth_type = plain\n\
         auth_file = userlist.txt\n\
         admin_users = admin\n\
         pool_mode = statement\n\
         default_pool_size = 2\n\
         query_wait_notify = 5\n\
         transaction_timeout = 600\n\
         scram_iterations = 8192\n\
         client_tls13_ciphers = TLS_AES_256_GCM_SHA384\n\
         server_tls13_ciphers = TLS_AES_256_GCM_SHA384\n\
         max_user_client_connections = 100\n\
         track_extra_parameters = IntervalStyle\n"
    );
    let path = dir.join("pgbouncer.ini");
    std::fs::write(&path, ini).unwrap();
    (Dir(dir), path)
}

/// psql against the pooler: `-X -q -A -t`, ON_ERROR_STOP off; returns (ok, stdout, stderr).
fn psql(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    env: &[(&str, &str)],
    sql: &str,
) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(pg_bin("psql"));
    cmd.args(["-X", "-q", "-A", "-t", "-w", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", user, "-d", db, "-f", "-"]);
    clean_pg_env(&mut cmd);
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSFILE", "/nonexistent");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_with_stdin(cmd, sql.as_bytes());
    (out.status.success(), stdout(&out), stderr(&out))
}

/// SHOW STATS as database -> column -> value.
fn show_stats(
    port: u16,
) -> std::collections::HashMap<String, std::collections::HashMap<String, String>> {
    let (ok, out, err) = psql(
        port,
        "admin",
        "admin-pw",
        "pgbouncer",
        &[],
        "\\pset tuples_only off\nSHOW STATS;\n",
    );
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
    lines
        .filter(|l| l.contains('|'))
        .map(|l| {
            let row: std::collections::HashMap<String, String> = header
                .iter()
                .zip(l.split('|'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (row.get("database").cloned().unwrap_or_default(), row)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbouncer_125_ini_runs_unchanged() {
    let pg = PgCluster::start_with(ClusterOptions::with_auth(HostAuth::Scram)).unwrap();
    pg.create_user("app", "secret").unwrap();
    pg.create_user("longpw", &long_password()).unwrap();
    pg.create_database("appdb", "app").unwrap();
    let port = free_port();
    let (_dir, ini) = write_files(&pg, port);
    let pooler = Pooler::spawn(Path::new(BIN), &[ini.to_str().unwrap()], &[]).unwrap();
    assert_eq!(pooler.addr().port(), port);

    tokio::task::block_in_place(|| {
        // Statement mode: a statement runs; a transaction block is refused.
        let (ok, out, err) = psql(port, "app", "secret", "stmtdb", &[], "select 41+1;\n");
        assert!(ok, "{err}");
        assert_eq!(out, "42");
        let (_, out, err) = psql(
            port,
            "app",
            "secret",
            "stmtdb",
            &[],
            "begin;\nselect 1;\ncommit;\n",
        );
        assert!(
            err.contains("transaction blocks not allowed in statement pooling mode"),
            "out: {out}\nerr: {err}"
        );
        // And the pool still serves statements afterwards.
        let (ok, out, err) = psql(port, "app", "secret", "stmtdb", &[], "select 2;\n");
        assert!(ok && out == "2", "{out} {err}");

        // The session database runs a transaction.
        let (ok, out, err) = psql(
            port,
            "app",
            "secret",
            "sessdb",
            &[],
            "begin;\ncreate temp table t(x int);\ninsert into t values (7);\nselect x from t;\ncommit;\n",
        );
        assert!(ok, "{err}");
        assert_eq!(out, "7");

        // PGOPTIONS in transaction mode.
        let (ok, out, err) = psql(
            port,
            "app",
            "secret",
            "txdb",
            &[("PGOPTIONS", "-c DateStyle=German")],
            "show DateStyle;\n",
        );
        assert!(ok, "{err}");
        assert_eq!(out, "German, DMY");

        // A 60,000-byte password.
        let (ok, out, err) = psql(
            port,
            "longpw",
            &long_password(),
            "txdb",
            &[],
            "select current_user;\n",
        );
        assert!(ok, "{err}");
        assert_eq!(out, "longpw");

        // Admin SET of keys PgBouncer changes at runtime; SHOW CONFIG shows them.
        let (ok, out, err) = psql(
            port,
            "admin",
            "admin-pw",
            "pgbouncer",
            &[],
            "SET verbose = 1;\nSET server_fast_close = 1;\nSET query_wait_notify = 3;\nSET auth_dbname = app;\nSHOW CONFIG;\n",
        );
        assert!(ok, "{err}");
        for (key, value) in [
            ("verbose", "1"),
            ("server_fast_close", "1"),
            ("query_wait_notify", "3"),
            ("auth_dbname", "app"),
            ("scram_iterations", "8192"),
            ("max_user_client_connections", "100"),
        ] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(&format!("{key}|{value}|"))),
                "SHOW CONFIG lacks {key} = {value}:\n{out}"
            );
        }

        // SHOW STATS carries PgBouncer 1.24's prepared-statement counters, and they count.
        let stats = show_stats(port);
        let txdb = stats.get("txdb").expect("a SHOW STATS row for txdb");
        for col in [
            "total_client_parse_count",
            "total_server_parse_count",
            "total_bind_count",
            "avg_client_parse_count",
            "avg_server_parse_count",
            "avg_bind_count",
        ] {
            assert!(txdb.contains_key(col), "SHOW STATS lacks {col}: {txdb:?}");
        }
    });

    // Named statements through transaction pooling move the counters.
    let conn = format!("host=127.0.0.1 port={port} user=app password=secret dbname=txdb");
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    let stmt = client.prepare("select $1::int + 1").await.unwrap();
    for i in 0..3 {
        let row = client.query_one(&stmt, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    drop(client);
    let _ = task.await;
    common::eventually(
        "prepared-statement counters",
        common::PROMPTLY,
        || async move {
            let stats = tokio::task::block_in_place(|| show_stats(port));
            let txdb = stats.get("txdb")?;
            let n = |c: &str| txdb.get(c).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            (n("total_client_parse_count") >= 1 && n("total_bind_count") >= 3).then_some(())
        },
    )
    .await;
    drop(pooler);
}
