//! Authentication: clients to pgsluice (scram, md5, plain, trust) and pgsluice to
//! PostgreSQL (every pg_hba method the testkit offers).

mod common;

use common::*;
use pgsluice::config::{AuthType, PoolMode};
use pgsluice_testkit::{ClusterOptions, HostAuth};

async fn assert_login_ok(addr: std::net::SocketAddr, password: &str) {
    let c = try_connect(&client_config(addr, USER, password, DB))
        .await
        .unwrap_or_else(|e| panic!("login with password {password:?} failed: {e:?}"));
    assert_eq!(
        simple_value(&c, "select current_user")
            .await
            .unwrap()
            .as_deref(),
        Some(USER)
    );
}

async fn assert_wrong_password(addr: std::net::SocketAddr, user: &str) {
    let e = try_connect(&client_config(addr, user, "wrong", DB))
        .await
        .expect_err("a wrong password must be refused");
    assert_eq!(code(&e).as_deref(), Some("28P01"), "{e:?}");
    assert_eq!(
        message(&e),
        format!("password authentication failed for user \"{user}\"")
    );
}

async fn with_auth(auth: AuthType) -> Setup {
    setup_with(PoolMode::Transaction, 2, |c, _| c.general.auth_type = auth).await
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_right_and_wrong_password() {
    let s = setup(PoolMode::Transaction, 2).await;
    assert_login_ok(s.addr, PASSWORD).await;
    assert_wrong_password(s.addr, USER).await;
    // An unknown user is refused the same way (no user enumeration).
    assert_wrong_password(s.addr, "nobody").await;
    // No password at all.
    let mut cfg = app_config(s.addr);
    cfg.password("");
    assert!(try_connect(&cfg).await.is_err());
    // Still serving.
    assert_login_ok(s.addr, PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_right_and_wrong_password() {
    let s = with_auth(AuthType::Md5).await;
    assert_login_ok(s.addr, PASSWORD).await;
    assert_wrong_password(s.addr, USER).await;
    // psql too.
    let out =
        tokio::task::block_in_place(|| psql(s.addr, USER, PASSWORD, DB, &[], "select 'md5 ok';"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "md5 ok");
    let out = tokio::task::block_in_place(|| psql(s.addr, USER, "bad", DB, &[], "select 1;"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("password authentication failed for user \"app\""),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_hash_in_config_for_client_and_server() {
    // The server stores md5 hashes; pgsluice only knows the hash, not the password.
    let pg = cluster_with(ClusterOptions::with_auth(HostAuth::Md5));
    let hash = tokio::task::block_in_place(|| {
        pg.psql("select rolpassword from pg_authid where rolname = 'app'")
    })
    .unwrap();
    assert!(hash.starts_with("md5"), "{hash}");
    let s = setup_on(pg, PoolMode::Transaction, 2, move |c, _| {
        c.general.auth_type = AuthType::Md5;
        c.users.get_mut(USER).unwrap().password = Some(hash);
    })
    .await;
    assert_login_ok(s.addr, PASSWORD).await;
    assert_wrong_password(s.addr, USER).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_verifier_in_config() {
    // pgsluice checks clients against a SCRAM verifier; the server trusts pgsluice.
    let pg = cluster_with(ClusterOptions::with_auth(HostAuth::Trust));
    let verifier = tokio::task::block_in_place(|| {
        pg.psql("select rolpassword from pg_authid where rolname = 'app'")
    })
    .unwrap();
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let s = setup_on(pg, PoolMode::Transaction, 2, move |c, _| {
        c.users.get_mut(USER).unwrap().password = Some(verifier);
    })
    .await;
    assert_login_ok(s.addr, PASSWORD).await;
    assert_wrong_password(s.addr, USER).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_right_and_wrong_password() {
    let s = with_auth(AuthType::Plain).await;
    assert_login_ok(s.addr, PASSWORD).await;
    assert_wrong_password(s.addr, USER).await;
    let out =
        tokio::task::block_in_place(|| psql(s.addr, USER, PASSWORD, DB, &[], "select 'plain ok';"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "plain ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_needs_no_password() {
    let s = with_auth(AuthType::Trust).await;
    assert_login_ok(s.addr, "anything").await;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(s.addr.port())
        .user(USER)
        .dbname(DB);
    let c = try_connect(&cfg)
        .await
        .expect("trust login without a password");
    assert_eq!(count(&c, "select 1::int8").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_database_is_refused() {
    let s = setup(PoolMode::Transaction, 2).await;
    let e = try_connect(&client_config(s.addr, USER, PASSWORD, "nosuchdb"))
        .await
        .expect_err("unknown database must be refused");
    assert_eq!(code(&e).as_deref(), Some("3D000"), "{e:?}");
    assert!(message(&e).contains("nosuchdb"), "{}", message(&e));
    assert_login_ok(s.addr, PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_login_failure_is_reported_to_the_client() {
    // Clients are trusted; the password pgsluice uses for the server is wrong.
    let s = setup_with(PoolMode::Transaction, 2, |c, _| {
        c.general.auth_type = AuthType::Trust;
        c.users.get_mut(USER).unwrap().password = Some("not-the-password".into());
    })
    .await;
    let e = try_connect(&app_config(s.addr))
        .await
        .expect_err("the server refuses pgsluice, so the client must get an error");
    assert_eq!(code(&e).as_deref(), Some("28P01"), "{e:?}");
    assert!(
        message(&e).contains("password authentication failed"),
        "{}",
        message(&e)
    );
}

async fn behind_server_auth(auth: HostAuth) {
    let pg = cluster_with(ClusterOptions::with_auth(auth));
    let s = setup_on(pg, PoolMode::Transaction, 2, |_, _| {}).await;
    assert_login_ok(s.addr, PASSWORD).await;
    // Several server connections log in, not just the first.
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    // A's open transaction holds one server connection, so B's needs a second.
    a.batch_execute("begin; select 1").await.unwrap();
    b.batch_execute("begin; select 1").await.unwrap();
    a.batch_execute("commit").await.unwrap();
    b.batch_execute("commit").await.unwrap();
    let direct = direct(&s.pg, DB).await;
    assert_eq!(app_backends(&direct).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_auth_trust() {
    behind_server_auth(HostAuth::Trust).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_auth_password() {
    behind_server_auth(HostAuth::Password).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_auth_md5() {
    behind_server_auth(HostAuth::Md5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_auth_scram() {
    behind_server_auth(HostAuth::Scram).await;
}
