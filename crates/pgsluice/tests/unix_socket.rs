//! The listening unix socket's group (`unix_socket_group`): applied after bind, so that
//! members of the group can connect when `unix_socket_mode` leaves others out; a group
//! that does not exist is a configuration error naming the key.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::*;
use pgsluice::config::os_group::group_id;
use pgsluice::config::PoolMode;

fn id(flag: &str) -> Vec<String> {
    let out = Command::new("id").arg(flag).output().expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A group this process may give a file to, other than its primary group when it can:
/// a supplementary group, or as root any group; else the primary group.
fn usable_group() -> (String, u32) {
    let primary: u32 = id("-g")[0].parse().unwrap();
    let gids: Vec<u32> = id("-G").iter().map(|g| g.parse().unwrap()).collect();
    let names = id("-Gn");
    if let Some(i) = gids.iter().position(|g| *g != primary) {
        return (names[i].clone(), gids[i]);
    }
    if id("-u")[0] == "0" {
        for name in ["nogroup", "daemon", "nobody"] {
            if let Some(gid) = group_id(name).filter(|g| *g != primary) {
                return (name.to_owned(), gid);
            }
        }
    }
    (names[0].clone(), primary)
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_gets_the_configured_group_and_mode() {
    let dir = Dir::new("unix-group");
    let (group, gid) = usable_group();
    let _s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.unix_socket_dir = Some(dir.0.display().to_string());
        c.general.unix_socket_group = Some(group.clone());
        c.general.unix_socket_mode = 0o770;
    })
    .await;
    // The port of the first listen address (0 here) names the socket.
    let path = dir.0.join(".s.PGSQL.0");
    let meta = std::fs::metadata(&path).expect("socket file");
    assert_eq!(meta.gid(), gid, "group {group}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o770);
    // The socket serves.
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(&dir.0)
        .port(0)
        .user(USER)
        .password(PASSWORD)
        .dbname(DB);
    let c = try_connect(&cfg).await.expect("login over the unix socket");
    assert_eq!(count(&c, "select 1::int8").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_group_is_a_configuration_error() {
    let pg = cluster();
    let dir = Dir::new("unix-nogroup");
    let mut cfg = config(&pg);
    cfg.general.unix_socket_dir = Some(dir.0.display().to_string());
    cfg.general.unix_socket_group = Some("no-such-group-pgsluice".into());
    let e = cfg.validate().expect_err("unknown group refused");
    assert!(e.to_string().contains("unix_socket_group"), "{e}");
    // Started without validation, the bind fails the same way and leaves no socket file.
    let e = pgsluice::Instance::start(cfg)
        .await
        .expect_err("start refused");
    assert!(e.to_string().contains("unix_socket_group"), "{e}");
    assert!(!dir.0.join(".s.PGSQL.0").exists());
}
