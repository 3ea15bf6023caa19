//! Unit tests for reading pgbouncer.ini files (fixtures in `testdata/`).

use super::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/config/testdata")
        .join(rel)
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

/// Writes `files` (name, text) into a fresh directory; returns the first file's path.
fn write_files(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgsluice-ini-test-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir.join(files[0].0)
}

fn load_ini(test: &str, text: &str) -> Result<Config, ConfigError> {
    load_file(&write_files(test, &[("pgbouncer.ini", text)]), no_env())
}

/// Asserts an `At` error; returns (file name, line, key, message).
#[track_caller]
fn at(r: Result<Config, ConfigError>) -> (String, usize, String, String) {
    match r {
        Err(ConfigError::At {
            file,
            line,
            key,
            message,
        }) => {
            let name = Path::new(&file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, line, key, message)
        }
        other => panic!("expected an At error, got {other:?}"),
    }
}

const BASE: &str = "[databases]\napp = host=127.0.0.1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n";

#[test]
fn full_fixture() {
    let path = testdata("full/pgbouncer.ini");
    let c = load_file(&path, no_env()).unwrap();
    let g = &c.general;
    assert_eq!(c.source.as_deref(), Some(path.as_path()));
    assert_eq!(
        g.listen,
        vec![
            "127.0.0.1:7432".parse::<SocketAddr>().unwrap(),
            "[::1]:7432".parse().unwrap()
        ]
    );
    assert_eq!(g.unix_socket_dir.as_deref(), Some("/var/run/postgresql"));
    assert_eq!(g.auth_type, AuthType::ScramSha256);
    assert_eq!(g.auth_file, Some(testdata("full/userlist.txt")));
    assert_eq!(g.admin_users, vec!["alice", "bob"]);
    assert_eq!(g.stats_users, vec!["stats"]);
    assert_eq!(g.pool_mode, PoolMode::Transaction);
    assert_eq!(g.max_client_conn, 500);
    assert_eq!(g.default_pool_size, 10);
    assert_eq!(g.min_pool_size, 1);
    assert_eq!(g.server_lifetime, Secs::from_secs(1800));
    assert_eq!(g.server_idle_timeout, Secs::from_millis(500));
    assert_eq!(g.query_wait_timeout, Secs::from_secs(30));
    assert!(g.client_login_timeout.0 >= Duration::from_secs(365 * 24 * 3600));
    assert!(g.server_reset_query_always);
    assert_eq!(
        g.ignore_startup_parameters,
        vec!["extra_float_digits", "search_path"]
    );
    assert_eq!(g.max_message_size, 65536);
    assert_eq!(g.log_level, "debug");
    // From the included file.
    assert_eq!(g.reserve_pool_size, 5);
    assert_eq!(g.max_prepared_statements, 100);

    // [databases]
    let app = &c.databases["app"];
    assert_eq!((app.host.as_str(), app.port), ("10.0.0.5", 5433));
    assert_eq!(app.dbname.as_deref(), Some("app_prod"));
    assert_eq!((app.pool_size, app.min_pool_size), (Some(15), Some(2)));
    assert_eq!(app.pool_mode, Some(PoolMode::Transaction));
    let odd = &c.databases["odd \"name\""];
    assert_eq!(odd.host, "db.internal");
    assert_eq!(odd.user.as_deref(), Some("svc"));
    assert_eq!(odd.password.as_deref(), Some("it's a \\ secret"));
    assert_eq!(odd.application_name.as_deref(), Some("my app"));
    assert_eq!(c.databases["local"].host, "/var/run/postgresql");
    let tuned = &c.databases["tuned"];
    assert_eq!(tuned.reserve_pool, Some(3));
    assert_eq!(tuned.max_db_connections, Some(40));
    assert_eq!(tuned.connect_query.as_deref(), Some("SELECT 1"));
    assert_eq!(tuned.client_encoding.as_deref(), Some("UTF8"));
    assert_eq!(tuned.datestyle.as_deref(), Some("ISO"));
    assert_eq!(tuned.timezone.as_deref(), Some("UTC"));
    assert_eq!(tuned.auth_user.as_deref(), Some("lookup"));

    // The fallback database.
    let other = c.database("reports").unwrap();
    assert!(matches!(other, std::borrow::Cow::Owned(_)));
    assert_eq!(
        (other.host.as_str(), other.port),
        ("fallback.internal", 6000)
    );
    assert_eq!(other.dbname.as_deref(), Some("reports"));
    assert_eq!(c.server_dbname("reports"), "reports");
    assert!(matches!(
        c.database("app"),
        Some(std::borrow::Cow::Borrowed(_))
    ));
    assert_eq!(c.server_dbname("app"), "app_prod");
    assert_eq!(c.pool_size("reports", "nobody"), 10);

    // [users] overrides and auth_file secrets.
    assert_eq!(c.pool_mode("app", "bob"), PoolMode::Session);
    assert_eq!(c.pool_size("app", "bob"), 3);
    assert_eq!(c.pool_size("app", "dave"), 2);
    assert_eq!(c.pool_mode("app", "alice"), PoolMode::Transaction);
    assert_eq!(c.users["carol"].max_user_connections, Some(7));
    assert_eq!(c.users["alice"].password.as_deref(), Some("alice-pw"));
    let kind = |u: &str| PasswordKind::of(c.users[u].password.as_deref().unwrap());
    assert_eq!(kind("alice"), PasswordKind::Plain);
    assert_eq!(kind("bob"), PasswordKind::Md5);
    assert_eq!(kind("carol"), PasswordKind::ScramSha256);
    assert_eq!(c.users["qu\"ote"].password.as_deref(), Some("pa\"ss"));
    assert_eq!(c.users["dave"].password, None);

    // One warning per key that is set but not implemented, with its line.
    let w = c.warnings();
    let has = |needle: &str| w.iter().filter(|x| x.contains(needle)).count();
    assert_eq!(
        has("pgbouncer.ini:48: key `pgbouncer.tcp_keepidle`"),
        1,
        "{w:#?}"
    );
    assert_eq!(
        has("pgbouncer.ini:49: key `pgbouncer.dns_max_ttl`"),
        1,
        "{w:#?}"
    );
    // Implemented since: no warning.
    assert_eq!(has("key `pgbouncer.reserve_pool_size`"), 0, "{w:#?}");
    assert_eq!(has("key `pgbouncer.max_prepared_statements`"), 0, "{w:#?}");
    // The admin console's user lists are implemented: no warning.
    assert_eq!(has("key `pgbouncer.admin_users`"), 0, "{w:#?}");
    // Listening on the unix socket is implemented: no warning.
    assert_eq!(has("key `pgbouncer.unix_socket_dir`"), 0, "{w:#?}");
    assert_eq!(has("ignore_startup_parameters"), 0, "{w:#?}");
    assert_eq!(has("key `databases.tuned.reserve_pool`"), 0, "{w:#?}");
    assert_eq!(has("key `databases.tuned.max_db_connections`"), 0, "{w:#?}");
    assert_eq!(has("key `databases.tuned.connect_query`"), 1, "{w:#?}");
    assert_eq!(has("key `users.carol.max_user_connections`"), 0, "{w:#?}");
    for quiet in [
        "tcp_keepalive",
        "disable_pqexec",
        "log_connections",
        "listen_addr",
    ] {
        assert_eq!(has(&format!("`pgbouncer.{quiet}`")), 0, "{quiet}: {w:#?}");
    }
    // alice has a plain password, dave none: the usual remarks.
    assert_eq!(has("user `dave` has no password"), 1, "{w:#?}");
}

#[test]
fn debian_style_file_loads() {
    let c = load_file(&testdata("debian/pgbouncer.ini"), no_env()).unwrap();
    let g = &c.general;
    assert_eq!(
        g.listen,
        vec!["127.0.0.1:6432".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(g.auth_type, AuthType::Md5);
    assert_eq!(g.pool_mode, PoolMode::Session);
    assert_eq!(g.max_client_conn, 100);
    assert_eq!(
        g.pidfile.as_deref(),
        Some(Path::new("/var/run/postgresql/pgbouncer.pid"))
    );
    assert_eq!(
        g.logfile.as_deref(),
        Some(Path::new("/var/log/postgresql/pgbouncer.log"))
    );
    assert_eq!(c.database("anything").unwrap().host, "localhost");
    assert!(c.users["postgres"].password.is_some());
    let w = c.warnings();
    assert!(
        !w.iter().any(|x| x.contains("`pgbouncer.unix_socket_dir`")),
        "{w:#?}"
    );
}

#[test]
fn include_is_relative_to_the_including_file() {
    let p = write_files(
        "include",
        &[
            (
                "main.ini",
                "[pgbouncer]\nlisten_addr = 127.0.0.1\n%include sub.ini\n",
            ),
            ("sub.ini", "[databases]\nx = host=h\n"),
        ],
    );
    let c = load_file(&p, no_env()).unwrap();
    assert_eq!(c.databases["x"].host, "h");
    // A missing include is blamed on the %include line.
    let p = write_files(
        "include-missing",
        &[("main.ini", "[pgbouncer]\n\n%include nope.ini\n")],
    );
    let (file, line, key, msg) = at(load_file(&p, no_env()));
    assert_eq!(
        (file.as_str(), line, key.as_str()),
        ("main.ini", 3, "%include")
    );
    assert!(msg.contains("nope.ini"), "{msg}");
    // A cycle.
    let p = write_files(
        "include-cycle",
        &[("a.ini", "%include b.ini\n"), ("b.ini", "%include a.ini\n")],
    );
    let (_, _, _, msg) = at(load_file(&p, no_env()));
    assert!(msg.contains("includes itself"), "{msg}");
}

/// A unix_socket_group naming no group is a configuration error on its line.
#[test]
fn unknown_unix_socket_group_is_an_error() {
    let (_, line, key, msg) = at(load_ini(
        "bad-group",
        &format!("{BASE}unix_socket_group = no-such-group-pgsluice\n"),
    ));
    assert_eq!((line, key.as_str()), (5, "pgbouncer.unix_socket_group"));
    assert!(msg.contains("does not exist"), "{msg}");
    let c = load_ini("root-group", &format!("{BASE}unix_socket_group = 0\n")).unwrap();
    assert_eq!(c.general.unix_socket_group.as_deref(), Some("0"));
    assert!(!c.warnings().iter().any(|w| w.contains("unix_socket_group")));
}

#[test]
fn unknown_keys_and_bad_values_are_errors_with_lines() {
    let (file, line, key, msg) = at(load_ini("unknown", "[pgbouncer]\n\nlisten_prot = 6432\n"));
    assert_eq!(
        (file.as_str(), line, key.as_str()),
        ("pgbouncer.ini", 3, "pgbouncer.listen_prot")
    );
    assert!(msg.contains("unknown setting"), "{msg}");
    let (_, line, key, _) = at(load_ini("bad-port", "[pgbouncer]\nlisten_port = 70000\n"));
    assert_eq!((line, key.as_str()), (2, "pgbouncer.listen_port"));
    let (_, line, key, msg) = at(load_ini(
        "bad-bool",
        &format!("{BASE}server_round_robin = perhaps\n"),
    ));
    assert_eq!((line, key.as_str()), (5, "pgbouncer.server_round_robin"));
    assert!(msg.contains("invalid boolean"), "{msg}");
    let (_, line, key, _) = at(load_ini(
        "bad-ignored",
        &format!("{BASE}tcp_keepidle = soon\n"),
    ));
    assert_eq!((line, key.as_str()), (5, "pgbouncer.tcp_keepidle"));
    let (_, line, key, msg) = at(load_ini(
        "bad-mode",
        &format!("{BASE}pool_mode = statements\n"),
    ));
    assert_eq!((line, key.as_str()), (5, "pgbouncer.pool_mode"));
    assert!(msg.contains("invalid pool mode"), "{msg}");
    let (_, line, key, _) = at(load_ini(
        "bad-secs",
        &format!("{BASE}query_wait_timeout = 1.5.2\n"),
    ));
    assert_eq!((line, key.as_str()), (5, "pgbouncer.query_wait_timeout"));
    let (_, line, key, _) = at(load_ini("bad-auth", &format!("{BASE}auth_type = pam\n")));
    assert_eq!((line, key.as_str()), (5, "pgbouncer.auth_type"));
    let (_, line, key, _) = at(load_ini("db-param", "[databases]\n\nx = host=h prot=1\n"));
    assert_eq!((line, key.as_str()), (3, "databases.x.prot"));
    let (_, line, key, msg) = at(load_ini("db-quote", "[databases]\nx = password='abc\n"));
    assert_eq!((line, key.as_str()), (2, "databases.x"));
    assert!(msg.contains("unterminated"), "{msg}");
    let (_, line, key, _) = at(load_ini(
        "db-size",
        "[databases]\nx = host=h pool_size=-1\n",
    ));
    assert_eq!((line, key.as_str()), (2, "databases.x.pool_size"));
    let (_, line, key, _) = at(load_ini(
        "user-param",
        "[users]\nbob = pool_size=2 password=x\n",
    ));
    assert_eq!((line, key.as_str()), (2, "users.bob.password"));
    let (_, line, key, _) = at(load_ini("section", "[pgbouncer]\n[general]\nx = 1\n"));
    assert_eq!((line, key.as_str()), (3, "general.x"));
    let (_, line, key, msg) = at(load_ini("reserved", "[databases]\npgbouncer = host=h\n"));
    assert_eq!((line, key.as_str()), (2, "databases.pgbouncer"));
    assert!(msg.contains("reserved"), "{msg}");
    // Cross-field checks point at the right line too.
    let (_, line, key, msg) = at(load_ini(
        "cross",
        &format!("{BASE}default_pool_size = 5\nmin_pool_size = 9\n"),
    ));
    assert_eq!(
        (line, key.as_str()),
        (6, "pgbouncer.min_pool_size"),
        "{msg}"
    );
    let (_, line, key, _) = at(load_ini(
        "cross-db",
        "[databases]\nx = host=h pool_size=2 min_pool_size=3\n",
    ));
    assert_eq!((line, key.as_str()), (2, "databases.x.min_pool_size"));
    let (_, line, key, _) = at(load_ini(
        "packet",
        &format!("{BASE}max_packet_size = 100\n"),
    ));
    assert_eq!((line, key.as_str()), (5, "pgbouncer.max_packet_size"));
}

#[test]
fn auth_file_errors_name_the_auth_file() {
    let p = write_files(
        "userlist-bad",
        &[
            (
                "pgbouncer.ini",
                "[pgbouncer]\nlisten_addr = *\nauth_file = users.txt\n",
            ),
            ("users.txt", "\"a\" \"pw\"\n\"b\" \"SCRAM-SHA-256$nope\"\n"),
        ],
    );
    let (file, line, key, _) = at(load_file(&p, no_env()));
    assert_eq!((file.as_str(), line, key.as_str()), ("users.txt", 2, "b"));
    let p = write_files(
        "userlist-missing",
        &[(
            "pgbouncer.ini",
            "[pgbouncer]\nlisten_addr = *\nauth_file = missing.txt\n",
        )],
    );
    let (file, line, key, _) = at(load_file(&p, no_env()));
    assert_eq!(
        (file.as_str(), line, key.as_str()),
        ("pgbouncer.ini", 3, "pgbouncer.auth_file")
    );
}

#[test]
fn listen_defaults_and_warnings() {
    let c = load_ini("listen-none", "[databases]\nx = host=h\n").unwrap();
    assert_eq!(
        c.general.listen,
        vec!["127.0.0.1:6432".parse::<SocketAddr>().unwrap()]
    );
    let w = c.warnings();
    assert!(
        w.iter().any(|x| x.contains("listen_addr`: not set")),
        "{w:#?}"
    );
    let c = load_ini(
        "listen-star",
        "[pgbouncer]\nlisten_port = 7000\nlisten_addr = *\n",
    )
    .unwrap();
    assert_eq!(
        c.general.listen,
        vec!["0.0.0.0:7000".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn semantics_mapped_from_pgbouncer() {
    let c = load_ini(
        "mapped",
        &format!(
            "{BASE}server_lifetime = 0\nserver_connect_timeout = 2.5\nverbose = 2\n\
             unix_socket_mode = 0700\nclient_tls_sslmode = require\n\
             client_tls_ciphers = ECDHE-RSA-AES128-GCM-SHA256\n"
        ),
    )
    .unwrap();
    let g = &c.general;
    // 0 = use once: closed at release.
    assert_eq!(g.server_lifetime, Secs::from_millis(1));
    assert_eq!(g.server_connect_timeout, Secs::from_millis(2500));
    assert_eq!(g.log_level, "trace");
    assert_eq!(g.unix_socket_mode, 0o700);
    assert_eq!(g.client_tls_sslmode, TlsMode::Require);
    let w = c.warnings();
    assert!(
        !w.iter().any(|x| x.contains("client_tls_sslmode")),
        "TLS is implemented: {w:#?}"
    );
    assert!(
        w.iter()
            .any(|x| x.contains(":10: key `pgbouncer.client_tls_ciphers`")),
        "{w:#?}"
    );
    // Relative files to create are taken next to the configuration file.
    let p = write_files(
        "relative",
        &[("pgbouncer.ini", &format!("{BASE}pidfile = run/x.pid\n"))],
    );
    let c = load_file(&p, no_env()).unwrap();
    assert_eq!(
        c.general.pidfile,
        Some(p.parent().unwrap().join("run/x.pid"))
    );
    // A host list: every host, without a warning (more in replicas_tests.rs).
    let c = load_ini("hosts", "[databases]\nx = host=a,b\n").unwrap();
    assert_eq!(c.databases["x"].host, "a,b");
    assert!(
        !c.warnings().iter().any(|w| w.contains("host")),
        "{:?}",
        c.warnings()
    );
    // Peers are read, without a warning.
    let c = load_ini(
        "peers",
        "[pgbouncer]\npeer_id = 2\nso_reuseport = 1\n[peers]\n1 = host=10.0.0.1 port=6433 pool_size=3\n3 = host=/tmp/p3\n",
    )
    .unwrap();
    assert!(
        !c.warnings().iter().any(|x| x.contains("peer")),
        "{:?}",
        c.warnings()
    );
    assert_eq!((c.general.peer_id, c.general.so_reuseport), (2, true));
    let p1 = c.peer(1).unwrap();
    assert_eq!(
        (p1.host.as_str(), p1.port, p1.pool_size),
        ("10.0.0.1", 6433, Some(3))
    );
    assert_eq!(
        (c.peer(3).unwrap().host.as_str(), c.peer(3).unwrap().port),
        ("/tmp/p3", 6432)
    );
    let (_, line, key, _) = at(load_ini("peers-id", "[peers]\nx = host=a\n"));
    assert_eq!((line, key.as_str()), (2, "peers.x"));
    let (_, line, key, _) = at(load_ini("peer-id", "[pgbouncer]\npeer_id = 16384\n"));
    assert_eq!((line, key.as_str()), (2, "pgbouncer.peer_id"));
    let (_, line, key, _) = at(load_ini("peers-bad", "[peers]\n1 = host=x porridge=1\n"));
    assert_eq!((line, key.as_str()), (2, "peers.1.porridge"));
}

#[test]
fn overrides_apply_to_ini_files() {
    let p = write_files("env", &[("pgbouncer.ini", BASE)]);
    let env = vec![("PGSLUICE_POOL_MODE".to_owned(), "transaction".to_owned())];
    let c = load_file(&p, env).unwrap();
    assert_eq!(c.general.pool_mode, PoolMode::Transaction);
    assert_eq!(c.databases["app"].host, "127.0.0.1");
    let env = vec![("PGSLUICE_MIN_POOL_SIZE".to_owned(), "50".to_owned())];
    match load_file(&p, env) {
        Err(ConfigError::Env { var, .. }) => assert_eq!(var, "PGSLUICE_MIN_POOL_SIZE"),
        other => panic!("{other:?}"),
    }
    // Overrides go through a TOML round trip that must not lose anything.
    let full = testdata("full/pgbouncer.ini");
    let plain = load_file(&full, no_env()).unwrap();
    let env = vec![("PGSLUICE_WORKERS".to_owned(), "2".to_owned())];
    let mut with = load_file(&full, env).unwrap();
    assert_eq!(with.general.workers, Some(2));
    with.general.workers = None;
    assert_eq!(with, plain);
    // Forcing the format.
    let toml_named = write_files("forced", &[("conf.txt", BASE)]);
    assert!(load_file_as(&toml_named, Some(ConfigFormat::Ini), no_env()).is_ok());
    assert!(load_file_as(&toml_named, Some(ConfigFormat::Toml), no_env()).is_err());
}

#[test]
fn toml_auth_file_and_print_config() {
    let p = write_files(
        "toml-auth",
        &[
            (
                "pgsluice.toml",
                "[general]\nauth_file = \"users.txt\"\nserver_round_robin = true\n\
                 [databases.app]\nhost = \"h\"\npassword = \"dbsecret\"\nuser = \"u\"\n\
                 [users.kept]\npassword = \"from-toml\"\n",
            ),
            (
                "users.txt",
                "\"kept\" \"from-file\"\n\"new\" \"md51437cf777a4bdc5ee09d4a44200665da\"\n",
            ),
        ],
    );
    let c = load_file(&p, no_env()).unwrap();
    assert_eq!(c.users["kept"].password.as_deref(), Some("from-toml"));
    assert!(c.users["new"]
        .password
        .as_deref()
        .unwrap()
        .starts_with("md5"));
    let w = c.warnings();
    assert!(
        w.iter()
            .any(|x| x.contains("key `general.server_round_robin`")),
        "{w:#?}"
    );
    let printed = to_redacted_toml(&c);
    assert!(
        !printed.contains("dbsecret") && !printed.contains("from-toml"),
        "{printed}"
    );
    assert!(printed.contains("<redacted>"));
    // What is printed loads back (passwords aside) to the same settings.
    let again: Config = toml::from_str(&printed).unwrap();
    assert_eq!(again.general, c.general);
    // An ini file prints as TOML as well.
    let ini = load_file(&testdata("full/pgbouncer.ini"), no_env()).unwrap();
    let again: Config = toml::from_str(&to_redacted_toml(&ini)).unwrap();
    assert_eq!(again.general, ini.general);
    assert_eq!(
        again.databases["odd \"name\""].application_name.as_deref(),
        Some("my app")
    );
}

#[test]
fn example_ini_loads_without_warnings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pgbouncer.ini");
    let c = load_file(&path, no_env()).unwrap();
    assert_eq!(c.warnings(), Vec::<String>::new());
    assert_eq!(
        c.database("other").unwrap().dbname.as_deref(),
        Some("other")
    );
    assert_eq!(
        c.databases["reporting"].password.as_deref(),
        Some("change me")
    );
    assert_eq!(c.pool_mode("app", "analyst"), PoolMode::Session);
    assert_eq!(
        PasswordKind::of(c.users["app"].password.as_deref().unwrap()),
        PasswordKind::ScramSha256
    );
}

#[test]
fn statement_mode_globally_per_database_and_per_user() {
    let c = load_ini(
        "statement-mode",
        "[databases]\n\
         app = host=127.0.0.1\n\
         tx = host=127.0.0.1 pool_mode=transaction\n\
         sess = host=127.0.0.1 pool_mode=session\n\
         [users]\n\
         batch = pool_mode=statement\n\
         [pgbouncer]\n\
         pool_mode = statement\n",
    )
    .unwrap();
    assert_eq!(c.general.pool_mode, PoolMode::Statement);
    assert_eq!(c.pool_mode("app", "alice"), PoolMode::Statement);
    assert_eq!(c.pool_mode("tx", "alice"), PoolMode::Transaction);
    assert_eq!(c.pool_mode("sess", "alice"), PoolMode::Session);
    assert_eq!(c.pool_mode("sess", "batch"), PoolMode::Statement);
    let one_db = load_ini(
        "statement-db",
        "[databases]\napp = host=127.0.0.1\nauto = host=127.0.0.1 pool_mode=statement\n\
         [pgbouncer]\npool_mode = transaction\n",
    )
    .unwrap();
    assert_eq!(one_db.pool_mode("app", "alice"), PoolMode::Transaction);
    assert_eq!(one_db.pool_mode("auto", "alice"), PoolMode::Statement);
}
