//! Listening on a unix socket (unix_socket_dir), and PgBouncer's admin rule there.

use std::process::{Command, Output};

use pgsluice::config::{Config, PoolMode};
use pgsluice_testkit::{free_port, pg_bin, PgCluster};
use tokio_postgres::NoTls;

async fn psql(
    dir: &str,
    port: u16,
    user: &str,
    db: &str,
    sql: &str,
    password: Option<&str>,
) -> Output {
    let args: Vec<String> = [
        "-h",
        dir,
        "-p",
        &port.to_string(),
        "-U",
        user,
        "-d",
        db,
        "-X",
        "-A",
        "-t",
        "-c",
        sql,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let password = password.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(pg_bin("psql"));
        cmd.args(&args);
        match password {
            Some(p) => cmd.env("PGPASSWORD", p),
            None => cmd.env_remove("PGPASSWORD"),
        };
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_admin_over_the_unix_socket() {
    let cluster = PgCluster::start().expect("start PostgreSQL");
    cluster.create_user("app", "app").unwrap();
    cluster.create_database("app", "app").unwrap();
    let dir = std::env::temp_dir().join(format!("pgsluice-unix-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_s = dir.to_string_lossy().into_owned();
    let port = free_port();
    let mut cfg = Config::quick(&cluster.url("app", "app", "app")).unwrap();
    cfg.general.listen = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    cfg.general.pool_mode = PoolMode::Transaction;
    cfg.general.unix_socket_dir = Some(dir_s.clone());
    cfg.general.admin_users = vec!["app".into()];
    let server = pgsluice::Instance::start(cfg).await.unwrap();
    let sock = dir.join(format!(".s.PGSQL.{port}"));
    assert!(sock.exists(), "socket file {sock:?} created");

    let out = psql(&dir_s, port, "app", "app", "select 7", Some("app")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");

    // User "pgbouncer" from the same OS user: admin console without a password.
    let out = psql(&dir_s, port, "pgbouncer", "pgbouncer", "SHOW VERSION", None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pgsluice"));
    // Over TCP the same login needs a password and is refused.
    let tcp = format!("host=127.0.0.1 port={port} user=pgbouncer password=x dbname=pgbouncer");
    assert!(tokio_postgres::connect(&tcp, NoTls).await.is_err());

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
