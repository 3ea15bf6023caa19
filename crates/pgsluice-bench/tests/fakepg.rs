//! The fake backend against real clients: tokio-postgres (simple protocol) and
//! pgbench in every query mode.

use std::process::Command;

use pgsluice_bench::fakepg;
use tokio::net::TcpListener;
use tokio_postgres::{NoTls, SimpleQueryMessage};

fn start() -> (tokio::runtime::Runtime, u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(fakepg::serve(listener));
    (rt, port)
}

#[test]
fn answers_tokio_postgres_simple_queries() {
    let (rt, port) = start();
    rt.block_on(async move {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=u dbname=d"),
            NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let rows = client
            .simple_query("select 1; set application_name to 'x'")
            .await
            .unwrap();
        let values: Vec<_> = rows
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        assert_eq!(values, vec!["1"]);
        let tags: Vec<u64> = rows
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::CommandComplete(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(tags.len(), 2, "{rows:?}");
        // A transaction block moves the status and ends cleanly.
        client
            .batch_execute("begin; select 1; commit")
            .await
            .unwrap();
        assert!(!client.is_closed());
    });
}

#[test]
fn serves_pgbench_in_every_mode() {
    let (_rt, port) = start();
    let dir = std::env::temp_dir().join(format!("pgsluice-fakepg-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("s.sql");
    std::fs::write(&script, "begin;\nselect 1;\nend;\n").unwrap();
    for mode in ["simple", "extended", "prepared"] {
        let out = Command::new(pgsluice_testkit::pg_bin("pgbench"))
            .args(["-n", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "u"])
            .args(["-c", "4", "-j", "2", "-t", "200", "-M", mode, "-f"])
            .arg(&script)
            .arg("d")
            .env("PGSSLMODE", "disable")
            .output()
            .expect("run pgbench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("number of transactions actually processed: 800/800"),
            "{mode}: {stdout}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{mode}: {stdout}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
