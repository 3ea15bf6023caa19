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
