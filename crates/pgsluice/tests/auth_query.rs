//! auth_query / auth_user / auth_dbname against real PostgreSQL: users missing from
//! the auth file are looked up, checked, and their credential passed through to the
//! server (which itself requires scram-sha-256 or md5); 60,000-byte passwords through
//! SCRAM and cleartext, from the auth file and from auth_query; a RELOAD of forms
//! PgBouncer accepts.

mod common;

use std::net::SocketAddr;

use common::*;
use pgsluice::config::{AuthType, PoolMode, UserConfig};
use pgsluice_testkit::{free_port, ClusterOptions, HostAuth, PgCluster};

const LOOKUP_USER: &str = "pgsluice_lookup";
const LOOKUP_PW: &str = "lookup-pw";

/// Creates a role as the superuser, with the given password_encryption.
fn create_role(pg: &PgCluster, name: &str, password: &str, encryption: &str, extra: &str) {
    pg_sql(
        pg,
        &format!(
            "SET password_encryption = '{encryption}';\n\
             CREATE ROLE {} LOGIN PASSWORD {} {extra};",
            pgsluice_testkit::quote_ident(name),
            pgsluice_testkit::quote_literal(password)
        ),
    );
}

/// A cluster requiring `host_auth` with a superuser lookup role, and a pooler using
/// it as auth_user (auth_type `auth_type`); `app` stays in the auth file.
async fn aq_setup(host_auth: HostAuth, auth_type: AuthType) -> Setup {
    let pg = cluster_with(ClusterOptions::with_auth(host_auth));
    create_role(
        &pg,
        LOOKUP_USER,
        LOOKUP_PW,
        host_auth.password_encryption(),
        "SUPERUSER",
    );
    setup_on(pg, PoolMode::Transaction, 2, move |c, _| {
        c.general.auth_type = auth_type;
        c.general.auth_user = Some(LOOKUP_USER.into());
        c.users.insert(
            LOOKUP_USER.into(),
            UserConfig {
                password: Some(LOOKUP_PW.into()),
                ..UserConfig::default()
            },
        );
    })
    .await
}

async fn login_as(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<(), tokio_postgres::Error> {
    let c = try_connect(&client_config(addr, user, password, DB)).await?;
    let who = simple_value(&c, "select current_user").await?;
    assert_eq!(who.as_deref(), Some(user));
    assert_eq!(count(&c, "select 41 + 1::int8").await, 42);
    Ok(())
}

async fn assert_refused(addr: SocketAddr, user: &str, password: &str) {
    let e = try_connect(&client_config(addr, user, password, DB))
        .await
        .expect_err("must be refused");
    assert_eq!(code(&e).as_deref(), Some("28P01"), "{user}: {e:?}");
    assert_eq!(
        message(&e),
        format!("password authentication failed for user \"{user}\""),
        "{user}"
    );
}

fn psql_ok(addr: SocketAddr, user: &str, password: &str) {
    let out = tokio::task::block_in_place(|| {
        psql(
            addr,
            user,
            password,
            DB,
            &[],
            "select 'via psql ' || current_user;",
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("via psql {user}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_role_absent_from_auth_file_logs_in() {
    let s = aq_setup(HostAuth::Scram, AuthType::ScramSha256).await;
    create_role(&s.pg, "alice", "alice-pw", "scram-sha-256", "");
    // The server requires SCRAM: only the passed-through ClientKey can log in.
    login_as(s.addr, "alice", "alice-pw").await.unwrap();
    psql_ok(s.addr, "alice", "alice-pw");
    assert_refused(s.addr, "alice", "wrong").await;
    // Unknown users: the same answer.
    assert_refused(s.addr, "nobody", "whatever").await;
    // auth-file users are unaffected.
    login_as(s.addr, USER, PASSWORD).await.unwrap();
    // Several server connections log in with the passed-through key.
    let a = try_connect(&client_config(s.addr, "alice", "alice-pw", DB))
        .await
        .unwrap();
    let b = try_connect(&client_config(s.addr, "alice", "alice-pw", DB))
        .await
        .unwrap();
    // A's open transaction holds one server connection, so B's needs a second.
    a.batch_execute("begin; select 1").await.unwrap();
    b.batch_execute("begin; select 1").await.unwrap();
    a.batch_execute("commit").await.unwrap();
    b.batch_execute("commit").await.unwrap();
    let direct = direct(&s.pg, DB).await;
    let n: i64 = direct
        .query_one(
            "select count(*) from pg_stat_activity where usename = 'alice' and backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_nologin_and_hostile_names_are_wrong_passwords() {
    let s = aq_setup(HostAuth::Scram, AuthType::ScramSha256).await;
    create_role(
        &s.pg,
        "expired",
        "pw",
        "scram-sha-256",
        "VALID UNTIL '2000-01-01'",
    );
    create_role(
        &s.pg,
        "later",
        "pw",
        "scram-sha-256",
        "VALID UNTIL 'infinity'",
    );
    create_role(&s.pg, "nologin", "pw", "scram-sha-256", "");
    pg_sql(&s.pg, "ALTER ROLE nologin NOLOGIN;");
    assert_refused(s.addr, "expired", "pw").await;
    assert_refused(s.addr, "nologin", "pw").await;
    login_as(s.addr, "later", "pw").await.unwrap();
    for hostile in [
        "x' OR '1'='1",
        "alice'; DROP TABLE t; --",
        "\"; select 1; --",
        "$1",
    ] {
        assert_refused(s.addr, hostile, "pw").await;
    }
    // Nothing else happened: the pooler serves, the server logged no syntax error.
    login_as(s.addr, "later", "pw").await.unwrap();
    let log = s.pg.log_contents();
    assert!(!log.contains("syntax error"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn search_path_cannot_shadow_the_catalog() {
    // An unqualified custom auth_query, and an auth_user whose default search_path puts
    // a schema holding a fake pg_authid first: the lookup connection's own search_path
    // (pg_catalog, pg_temp) must win.
    let pg = cluster_with(ClusterOptions::with_auth(HostAuth::Scram));
    create_role(&pg, LOOKUP_USER, LOOKUP_PW, "scram-sha-256", "SUPERUSER");
    let fake = pgsluice_protocol::auth::scram::ScramSecret::generate("evil").encode();
    pg_sql(
        &pg,
        &format!(
            "CREATE SCHEMA evil;\n\
             CREATE TABLE evil.pg_authid (rolname name, rolpassword text, rolcanlogin bool);\n\
             INSERT INTO evil.pg_authid VALUES ('mallory', '{fake}', true);\n\
             ALTER ROLE {LOOKUP_USER} SET search_path = evil, pg_catalog;"
        ),
    );
    let s = setup_on(pg, PoolMode::Transaction, 2, |c, _| {
        c.general.auth_user = Some(LOOKUP_USER.into());
        c.general.auth_query =
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1 AND rolcanlogin".into();
        c.users.insert(
            LOOKUP_USER.into(),
            UserConfig {
                password: Some(LOOKUP_PW.into()),
                ..UserConfig::default()
            },
        );
    })
    .await;
    assert_refused(s.addr, "mallory", "evil").await;
    create_role(&s.pg, "alice", "alice-pw", "scram-sha-256", "");
    login_as(s.addr, "alice", "alice-pw").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_stored_role_with_auth_type_md5() {
    let s = aq_setup(HostAuth::Md5, AuthType::Md5).await;
    create_role(&s.pg, "bob", "bob-pw", "md5", "");
    let stored = pg_sql(
        &s.pg,
        "select rolpassword from pg_authid where rolname = 'bob'",
    );
    assert!(stored.starts_with("md5"), "{stored}");
    // The server asks md5: answered with the stored hash.
    login_as(s.addr, "bob", "bob-pw").await.unwrap();
    psql_ok(s.addr, "bob", "bob-pw");
    assert_refused(s.addr, "bob", "wrong").await;
    // A SCRAM-stored role with auth_type md5: upgraded to SCRAM both ways.
    create_role(&s.pg, "carol", "carol-pw", "scram-sha-256", "");
    login_as(s.addr, "carol", "carol-pw").await.unwrap();
    assert_refused(s.addr, "carol", "wrong").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_password_is_fetched_again() {
    let s = aq_setup(HostAuth::Scram, AuthType::ScramSha256).await;
    create_role(&s.pg, "alice", "old-pw", "scram-sha-256", "");
    login_as(s.addr, "alice", "old-pw").await.unwrap();
    pg_sql(
        &s.pg,
        "SET password_encryption = 'scram-sha-256'; ALTER ROLE alice PASSWORD 'new-pw';",
    );
    // The cached (old) secret refuses the new password once, and is dropped.
    match login_as(s.addr, "alice", "new-pw").await {
        Ok(()) => {}
        Err(e) => {
            assert_eq!(code(&e).as_deref(), Some("28P01"), "{e:?}");
            login_as(s.addr, "alice", "new-pw")
                .await
                .expect("the refreshed secret accepts the new password");
        }
    }
    assert_refused(s.addr, "alice", "old-pw").await;
    // New server connections log in with the new credential.
    let admin = direct(&s.pg, DB).await;
    admin
        .simple_query(
            "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'alice'",
        )
        .await
        .unwrap();
    eventually("alice's server connections replaced", PROMPTLY, || async {
        login_as(s.addr, "alice", "new-pw").await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_failure_is_a_clear_fatal_for_that_client_only() {
    let s = aq_setup(HostAuth::Scram, AuthType::ScramSha256).await;
    // The auth_user cannot log in: lookups fail, auth-file users still work.
    pg_sql(&s.pg, "ALTER ROLE pgsluice_lookup NOLOGIN;");
    create_role(&s.pg, "alice", "alice-pw", "scram-sha-256", "");
    let e = try_connect(&client_config(s.addr, "alice", "alice-pw", DB))
        .await
        .expect_err("the lookup cannot run");
    assert_eq!(code(&e).as_deref(), Some("08006"), "{e:?}");
    assert!(message(&e).contains("auth_query"), "{}", message(&e));
    login_as(s.addr, USER, PASSWORD).await.unwrap();
    pg_sql(&s.pg, "ALTER ROLE pgsluice_lookup LOGIN;");
    login_as(s.addr, "alice", "alice-pw").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_through_pgbouncer_ini() {
    // A non-superuser auth_user calling a SECURITY DEFINER function (PgBouncer's
    // recommended setup), with a per-database auth_query and auth_user.
    let pg = cluster_with(ClusterOptions::with_auth(HostAuth::Scram));
    create_role(&pg, "lookup2", "lookup2-pw", "scram-sha-256", "");
    pg_sql(
        &pg,
        "CREATE SCHEMA pgsluice;\n\
         CREATE FUNCTION pgsluice.user_lookup(IN i_username text, OUT uname text, OUT phash text)\n\
         RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$\n\
           SELECT rolname::text, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END\n\
           FROM pg_authid WHERE rolname = i_username AND rolcanlogin $$;\n\
         REVOKE ALL ON FUNCTION pgsluice.user_lookup(text) FROM public;\n\
         GRANT USAGE ON SCHEMA pgsluice TO lookup2;\n\
         GRANT EXECUTE ON FUNCTION pgsluice.user_lookup(text) TO lookup2;",
    );
    create_role(&pg, "dave", "dave-pw", "scram-sha-256", "");
    let dir = std::env::temp_dir().join(format!("pgsluice-authq-ini-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("userlist.txt"),
        "\"app\" \"secret\"\n\"lookup2\" \"lookup2-pw\"\n",
    )
    .unwrap();
    let port = free_port();
    let ini = format!(
        "[databases]\n\
         appdb = host=127.0.0.1 port={pg_port} dbname=appdb auth_user=lookup2 \
         auth_query='SELECT uname, phash FROM pgsluice.user_lookup($1)'\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
         auth_type = scram-sha-256\nauth_file = userlist.txt\npool_mode = transaction\n\
         default_pool_size = 2\n",
        pg_port = pg.port()
    );
    let path = dir.join("pgbouncer.ini");
    std::fs::write(&path, ini).unwrap();
    let cfg = pgsluice::config::load_file(&path, Vec::new()).expect("load pgbouncer.ini");
    let warnings = cfg.warnings();
    assert!(
        !warnings.iter().any(|w| w.contains("auth_")),
        "auth_user/auth_query must not warn: {warnings:?}"
    );
    let (_server, addr) = start_pooler(cfg).await;
    login_as(addr, "dave", "dave-pw").await.unwrap();
    psql_ok(addr, "dave", "dave-pw");
    assert_refused(addr, "dave", "wrong").await;
    assert_refused(addr, "ghost", "dave-pw").await;
    login_as(addr, USER, PASSWORD).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_file_verifier_passes_through_to_a_scram_server() {
    // Without auth_query: an auth-file user holding only the SCRAM verifier can now log
    // in to a server that requires scram-sha-256.
    let pg = cluster_with(ClusterOptions::with_auth(HostAuth::Scram));
    let verifier = pg_sql(
        &pg,
        "select rolpassword from pg_authid where rolname = 'app'",
    );
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let s = setup_on(pg, PoolMode::Transaction, 2, move |c, _| {
        c.users.get_mut(USER).unwrap().password = Some(verifier);
    })
    .await;
    login_as(s.addr, USER, PASSWORD).await.unwrap();
    psql_ok(s.addr, USER, PASSWORD);
    assert_refused(s.addr, USER, "wrong").await;
}

/// A 60,000-byte password (cloud IAM tokens are several KB; PostgreSQL and PgBouncer
/// take up to 64 KB).
fn long_password(seed: char) -> String {
    std::iter::once(seed)
        .chain("abcdefghijklmnopqrstuvwxyz0123456789".chars().cycle())
        .take(60_000)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_kilobyte_passwords_log_in() {
    // The server requires SCRAM; PostgreSQL stores a verifier of the long password.
    let s = aq_setup(HostAuth::Scram, AuthType::ScramSha256).await;
    let looked_up = long_password('L');
    let listed = long_password('U');
    create_role(&s.pg, "tokenuser", &looked_up, "scram-sha-256", "");
    create_role(&s.pg, "listed", &listed, "scram-sha-256", "");
    pg_sql(&s.pg, "GRANT ALL ON DATABASE appdb TO tokenuser, listed;");
    // auth_query + SCRAM from the client: tokio-postgres and psql (libpq).
    login_as(s.addr, "tokenuser", &looked_up).await.unwrap();
    psql_ok(s.addr, "tokenuser", &looked_up);
    assert_refused(s.addr, "tokenuser", &long_password('x')).await;

    // Cleartext `password` messages of 60 KB: from the auth file (plaintext, used to
    // log in to the server) and through auth_query (a verifier, whose ClientKey the
    // check recovers for the server login).
    let mut cfg = config(&s.pg);
    cfg.general.auth_type = AuthType::Plain;
    cfg.general.auth_user = Some(LOOKUP_USER.into());
    for (user, password) in [(LOOKUP_USER, LOOKUP_PW), ("listed", listed.as_str())] {
        cfg.users.insert(
            user.into(),
            UserConfig {
                password: Some(password.into()),
                ..UserConfig::default()
            },
        );
    }
    let (_plain, addr) = start_pooler(cfg).await;
    login_as(addr, "listed", &listed).await.unwrap();
    login_as(addr, "tokenuser", &looked_up).await.unwrap();
    assert_refused(addr, "listed", &looked_up).await;
    assert_refused(addr, "tokenuser", &listed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_accepts_auth_query_forms_pgbouncer_accepts() {
    // PgBouncer reads any auth_query text and any auth_dbname, and fails only the
    // logins that use them; so does pgsluice, on RELOAD as at startup.
    let pg = cluster_with(ClusterOptions::with_auth(HostAuth::Scram));
    create_role(&pg, "lookup3", "lookup3-pw", "scram-sha-256", "SUPERUSER");
    create_role(&pg, "erin", "erin-pw", "scram-sha-256", "");
    let dir = std::env::temp_dir().join(format!("pgsluice-authq-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("userlist.txt"),
        "\"app\" \"secret\"\n\"lookup3\" \"lookup3-pw\"\n",
    )
    .unwrap();
    let port = free_port();
    let ini = |extra_db: &str| {
        format!(
            "[databases]\n\
             appdb = host=127.0.0.1 port={pg_port} dbname=appdb\n{extra_db}\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             auth_type = scram-sha-256\nauth_file = userlist.txt\nauth_user = lookup3\n\
             pool_mode = transaction\ndefault_pool_size = 2\n",
            pg_port = pg.port()
        )
    };
    let path = dir.join("pgbouncer.ini");
    std::fs::write(&path, ini("")).unwrap();
    let cfg = pgsluice::config::load_file(&path, Vec::new()).expect("load pgbouncer.ini");
    let (server, addr) = start_pooler(cfg).await;
    login_as(addr, "erin", "erin-pw").await.unwrap();

    // A database whose auth_query does not take the user name as $1, and one whose
    // auth_dbname names no database: both were refused before.
    std::fs::write(
        &path,
        ini("nodollar = host=127.0.0.1 port={pg_port} dbname=appdb \
             auth_query='SELECT usename, passwd FROM pg_shadow WHERE usename = current_user'\n\
             nowhere = host=127.0.0.1 port={pg_port} dbname=appdb auth_dbname=missing\n")
        .replace("{pg_port}", &pg.port().to_string()),
    )
    .unwrap();
    let report = server.app().reload().await.expect("the reload is accepted");
    assert!(
        report.changes.iter().any(|c| c.contains("nodollar")),
        "{report:?}"
    );
    // The other databases work; logins that need the odd lookups get a clear FATAL.
    login_as(addr, "erin", "erin-pw").await.unwrap();
    for db in ["nodollar", "nowhere"] {
        let e = try_connect(&client_config(addr, "erin", "erin-pw", db))
            .await
            .expect_err("the lookup cannot succeed");
        assert_eq!(code(&e).as_deref(), Some("58000"), "{db}: {e:?}");
        assert!(message(&e).contains("auth_query"), "{db}: {}", message(&e));
        // Auth-file users do not need the lookup.
        let c = try_connect(&client_config(addr, USER, PASSWORD, db))
            .await
            .unwrap_or_else(|e| panic!("{db}: {e:?}"));
        assert_eq!(count(&c, "select 41 + 1::int8").await, 42);
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(pg);
}

/// A user auth_query did not find is remembered for auth_query_miss_ttl: a run of
/// logins under that name runs the query about once per TTL (counted on the server by
/// the query itself), each login gets the same 28P01 as the first, and once the role
/// exists it logs in after the TTL.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_users_are_remembered_for_the_miss_ttl() {
    const TTL: u64 = 3;
    let pg = cluster_with(ClusterOptions::with_auth(HostAuth::Scram));
    create_role(&pg, LOOKUP_USER, LOOKUP_PW, "scram-sha-256", "SUPERUSER");
    pg_sql(
        &pg,
        "CREATE SEQUENCE public.lookups;\n\
         CREATE FUNCTION public.counted_lookup(u name) \
         RETURNS TABLE(usename name, passwd text) LANGUAGE plpgsql AS $$\n\
         BEGIN\n\
           PERFORM pg_catalog.nextval('public.lookups');\n\
           RETURN QUERY SELECT a.rolname, a.rolpassword FROM pg_catalog.pg_authid a\n\
             WHERE a.rolname OPERATOR(pg_catalog.=) u AND a.rolcanlogin;\n\
         END $$;",
    );
    let s = setup_on(pg, PoolMode::Transaction, 2, |c, _| {
        c.general.auth_user = Some(LOOKUP_USER.into());
        c.general.auth_query = "SELECT usename, passwd FROM public.counted_lookup($1)".into();
        c.general.auth_query_miss_ttl = pgsluice::config::Secs::from_secs(TTL);
        c.users.insert(
            LOOKUP_USER.into(),
            UserConfig {
                password: Some(LOOKUP_PW.into()),
                ..UserConfig::default()
            },
        );
    })
    .await;
    let direct = direct(&s.pg, DB).await;
    let lookups = || async {
        count(
            &direct,
            "select case when is_called then last_value else 0 end from public.lookups",
        )
        .await
    };
    let started = std::time::Instant::now();
    const LOGINS: usize = 12;
    for _ in 0..LOGINS {
        assert_refused(s.addr, "ghost", "whatever").await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ran = lookups().await;
    // One lookup, and one more per TTL the run lasted (a slow machine may need several).
    let bound = 1 + (elapsed / TTL as f64).floor() as i64;
    assert!(
        (1..=bound).contains(&ran),
        "{ran} lookups for {LOGINS} logins in {elapsed:.1}s"
    );
    // Auth-file users never run the query.
    login_as(s.addr, USER, PASSWORD).await.unwrap();
    // Created now, the role logs in once the remembered miss has expired.
    create_role(&s.pg, "ghost", "ghost-pw", "scram-sha-256", "");
    let addr = s.addr;
    eventually("the new role found", PROMPTLY, || async move {
        login_as(addr, "ghost", "ghost-pw").await.ok()
    })
    .await;
    assert!(lookups().await > ran);
}
