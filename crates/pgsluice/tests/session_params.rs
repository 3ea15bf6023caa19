//! Session parameters a client sets when it connects: the `options` startup parameter
//! (PGOPTIONS), SETs that drivers send while setting up (pgjdbc's
//! `SET extra_float_digits = 3`), carried per client across server connections in
//! transaction mode; and pgjdbc itself with its default settings.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;

use common::*;
use pgsluice::config::PoolMode;
use pgsluice_testkit::pg_bin;

/// psql with `PGOPTIONS` set, printing `SHOW DateStyle`.
fn psql_with_options(addr: SocketAddr, options: &str, script: &str) -> std::process::Output {
    let mut cmd = Command::new(pg_bin("psql"));
    cmd.args(["-X", "-q", "-A", "-t", "-w", "-h", "127.0.0.1", "-p"])
        .arg(addr.port().to_string())
        .args(["-U", USER, "-d", DB, "-f", "-"]);
    clean_pg_env(&mut cmd);
    cmd.env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSFILE", "/nonexistent")
        .env("PGOPTIONS", options);
    tokio::task::block_in_place(|| run_with_stdin(cmd, script.as_bytes()))
}

/// The FATAL a pooler sends right after a startup packet with these parameters.
fn startup_refusal(addr: SocketAddr, params: &[(&str, &str)]) -> Option<(String, String)> {
    let mut s = raw_connect(addr);
    s.write_all(&startup_message(params)).unwrap();
    first_error(&read_to_close(&mut s).0)
}

#[tokio::test(flavor = "multi_thread")]
async fn pgoptions_datestyle_in_transaction_and_session_mode() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let s = setup(mode, 1).await;
        let out = psql_with_options(
            s.addr,
            "-c DateStyle=German",
            "show DateStyle;\nselect '2024-03-01'::date;\n",
        );
        assert!(out.status.success(), "{mode:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "German, DMY\n01.03.2024", "{mode:?}");
        // The long form, an escaped space, and, as in PostgreSQL, the startup
        // packet's own application_name (psql's) over the one in options. Then a
        // client without options on the same (single) server connection.
        let out = psql_with_options(
            s.addr,
            "--datestyle=SQL,\\ DMY -c TimeZone=Asia/Tokyo -c application_name=x",
            "show DateStyle;\nshow TimeZone;\nshow application_name;\n",
        );
        assert!(out.status.success(), "{mode:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "SQL, DMY\nAsia/Tokyo\npsql", "{mode:?}");
        let c = connect(s.addr).await;
        assert_eq!(
            simple_value(&c, "show DateStyle").await.unwrap().as_deref(),
            Some("ISO, MDY"),
            "{mode:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pgoptions_beyond_tracked_parameters_are_refused_or_ignored() {
    let s = setup(PoolMode::Transaction, 1).await;
    let login = |o: &'static str| [("user", USER), ("database", DB), ("options", o)];
    assert_eq!(
        startup_refusal(s.addr, &login("-c DateStyle=ISO -c work_mem=1MB")),
        Some((
            "08P01".into(),
            "unsupported startup parameter in options: work_mem".into()
        ))
    );
    assert_eq!(
        startup_refusal(s.addr, &login("-c DateStyle")),
        Some(("42601".into(), "-c DateStyle requires a value".into()))
    );
    let (code, msg) = startup_refusal(s.addr, &login("-e")).unwrap();
    assert_eq!(code, "08P01");
    assert!(
        msg.starts_with("unsupported options startup parameter"),
        "{msg}"
    );
    // psql shows the message.
    let out = psql_with_options(s.addr, "-c geqo=off", "select 1;\n");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unsupported startup parameter in options: geqo"),
        "{}",
        stderr(&out)
    );
    // extra_float_digits is ignored in options as in the startup packet.
    let out = psql_with_options(s.addr, "-c extra_float_digits=2", "select 1;\n");
    assert!(out.status.success(), "{}", stderr(&out));

    // ignore_startup_parameters: a listed name is ignored; `options` ignores whatever
    // pgsluice cannot apply, and still applies the tracked parameters.
    for ignore in ["geqo", "options"] {
        let s = setup_with(PoolMode::Transaction, 1, |cfg, _| {
            cfg.general.ignore_startup_parameters = vec![ignore.to_owned()];
        })
        .await;
        let out = psql_with_options(
            s.addr,
            "-c geqo=off -c DateStyle=German",
            "show DateStyle;\n",
        );
        assert!(out.status.success(), "{ignore}: {}", stderr(&out));
        assert_eq!(stdout(&out), "German, DMY", "{ignore}");
        if ignore == "options" {
            let out = psql_with_options(s.addr, "-e -B 10", "select 'in';\n");
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(stdout(&out), "in");
        }
    }
}

/// A client that sets `extra_float_digits` first thing, as pgjdbc does.
async fn client_with_digits(addr: SocketAddr, digits: &str) -> tokio_postgres::Client {
    let c = connect(addr).await;
    c.simple_query(&format!("SET extra_float_digits = {digits}"))
        .await
        .unwrap_or_else(|e| panic!("SET extra_float_digits = {digits}: {e:?}"));
    c
}

async fn digits(c: &tokio_postgres::Client) -> String {
    simple_value(c, "show extra_float_digits")
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_sets_are_carried_per_client_across_server_connections() {
    // One server connection for everyone: each client's value must follow the client.
    let s = setup(PoolMode::Transaction, 1).await;
    let a = client_with_digits(s.addr, "0").await;
    let b = client_with_digits(s.addr, "2").await;
    let b2 = client_with_digits(s.addr, "2").await;
    let plain = connect(s.addr).await;
    for _ in 0..2 {
        assert_eq!(digits(&a).await, "0");
        assert_eq!(digits(&b).await, "2");
        assert_eq!(digits(&plain).await, "1", "the server's default");
        // The extended protocol sees the same values.
        let row = a
            .query_one("select current_setting('extra_float_digits')", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "0");
    }

    // A bad value during setup: PostgreSQL's error, nothing recorded.
    let c = connect(s.addr).await;
    let e = c
        .simple_query("SET extra_float_digits = 99")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("22023"), "{e:?}");
    assert_eq!(digits(&c).await, "1");

    // After setup, an untracked SET is refused as before; a RESET is carried.
    let e = a
        .simple_query("SET extra_float_digits = 3")
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{e:?}");
    assert_eq!(digits(&a).await, "0");
    a.simple_query("RESET extra_float_digits").await.unwrap();
    assert_eq!(digits(&a).await, "1");
    assert_eq!(digits(&b).await, "2");

    // DISCARD ALL through the ordinary path forgets the client's values, and the server
    // connection's record of them: the next client with the same value gets it back.
    assert_eq!(digits(&b).await, "2");
    b.simple_query("DISCARD ALL").await.unwrap();
    assert_eq!(digits(&b2).await, "2");
    assert_eq!(digits(&b).await, "1");
    let d = client_with_digits(s.addr, "3").await;
    assert_eq!(digits(&d).await, "3");
    d.simple_query("RESET ALL").await.unwrap();
    assert_eq!(digits(&d).await, "1");

    // A setup SET of a custom parameter, then ordinary work.
    let e = connect(s.addr).await;
    e.simple_query("SET myapp.tenant = 'acme'; SET statement_timeout TO '5s'")
        .await
        .unwrap();
    assert_eq!(count(&e, "select 41::bigint + 1").await, 42);
    assert_eq!(
        simple_value(
            &e,
            "select current_setting('myapp.tenant') || ' ' || current_setting('statement_timeout')"
        )
        .await
        .unwrap()
        .as_deref(),
        Some("acme 5s")
    );
    assert_eq!(
        simple_value(&plain, "show statement_timeout")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pgjdbc_with_default_settings_in_transaction_mode() {
    let s = setup(PoolMode::Transaction, 2).await;
    let lines = run_java("JdbcDefaults.java", s.addr);
    assert_eq!(
        lines,
        [
            "extra_float_digits=3",
            "application_name=PostgreSQL JDBC Driver",
            "prepared_sum=110",
            "server_prepared=true",
            "transaction_rows=3",
            "extra_float_digits=3",
            "OK"
        ]
    );
    // Another client on the same pool keeps the server's default.
    let c = connect(s.addr).await;
    assert_eq!(digits(&c).await, "1");
}
