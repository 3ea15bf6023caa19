//! Unit tests for configuration loading.

use super::*;
use std::net::SocketAddr;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, "test.toml", no_env())
}

fn parse_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    parse_str(text, "test.toml", env(vars))
}

/// Asserts an `At` error and returns (line, key, message).
#[track_caller]
fn at(r: Result<Config, ConfigError>) -> (usize, String, String) {
    match r {
        Err(ConfigError::At {
            file,
            line,
            key,
            message,
        }) => {
            assert_eq!(file, "test.toml");
            (line, key, message)
        }
        other => panic!("expected an At error, got {other:?}"),
    }
}

/// Asserts an `Env` error and returns (var, message).
#[track_caller]
fn env_err(r: Result<Config, ConfigError>) -> (String, String) {
    match r {
        Err(ConfigError::Env { var, message }) => (var, message),
        other => panic!("expected an Env error, got {other:?}"),
    }
}

const DB: &str = "[databases.app]\nhost = \"127.0.0.1\"\n";

#[test]
fn defaults() {
    let c = parse("").unwrap();
    let g = &c.general;
    assert_eq!(*g, General::default());
    assert_eq!(
        g.listen,
        vec!["127.0.0.1:6432".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(g.workers, None);
    assert!(g.worker_threads() >= 1);
    assert_eq!(g.max_client_conn, 10_000);
    assert_eq!(g.pool_mode, PoolMode::Transaction);
    assert_eq!(g.default_pool_size, 20);
    assert_eq!(g.min_pool_size, 0);
    assert_eq!(g.query_wait_timeout, Secs::from_secs(120));
    assert_eq!(g.server_connect_timeout, Secs::from_secs(15));
    assert_eq!(g.server_idle_timeout, Secs::from_secs(600));
    assert_eq!(g.server_lifetime, Secs::from_secs(3600));
    assert_eq!(g.server_reset_query, "DISCARD ALL");
    assert!(!g.server_reset_query_always);
    assert_eq!(g.auth_type, AuthType::ScramSha256);
    assert_eq!(g.client_login_timeout, Secs::from_secs(60));
    assert_eq!(g.shutdown_timeout, Secs::from_secs(30));
    assert_eq!(g.log_level, "info");
    assert_eq!(g.log_format, LogFormat::Text);
    assert_eq!(g.max_message_size, 1_073_741_824);
    assert!(!g.application_name_add_host);
    assert!(c.databases.is_empty() && c.users.is_empty());
    assert_eq!(c.source, Some(PathBuf::from("test.toml")));
    assert_eq!(
        c,
        Config {
            source: c.source.clone(),
            ..Config::default()
        }
    );

    let c = parse(DB).unwrap();
    let d = &c.databases["app"];
    assert_eq!(*d, DatabaseConfig::new("127.0.0.1"));
    assert_eq!(d.port, 5432);
    assert_eq!(c.pool_size("app", "anyone"), 20);
    assert_eq!(c.min_pool_size("app"), 0);
    assert_eq!(c.pool_mode("app", "anyone"), PoolMode::Transaction);
    assert_eq!(c.server_dbname("app"), "app");
}

const FULL: &str = r#"
[general]
listen = ["0.0.0.0:6432", "[::]:6433"]
workers = 4
max_client_conn = 500
pool_mode = "session"
default_pool_size = 30
min_pool_size = 5
query_wait_timeout = 0
server_connect_timeout = "250ms"
server_idle_timeout = "5m"
server_lifetime = "2h"
server_reset_query = ""
server_reset_query_always = true
auth_type = "md5"
client_login_timeout = "10s"
shutdown_timeout = 45
log_level = "info,pgsluice=debug"
log_format = "json"
max_message_size = 8192
application_name_add_host = true

[databases.app]
host = "10.0.0.5"
port = 6000
dbname = "app_prod"
user = "svc"
password = "secret"
pool_size = 50
min_pool_size = 10
pool_mode = "transaction"
application_name = "pgsluice"

[databases.local]
host = "/var/run/postgresql"

[users.alice]
password = "md5a3556571e93b0d20722ba62be61e8c2d"
pool_mode = "transaction"
pool_size = 3

[users.bob]
"#;

#[test]
fn full_file() {
    let c = parse(FULL).unwrap();
    let g = &c.general;
    assert_eq!(
        g.listen,
        vec![
            "0.0.0.0:6432".parse::<SocketAddr>().unwrap(),
            "[::]:6433".parse().unwrap()
        ]
    );
    assert_eq!(g.workers, Some(4));
    assert_eq!(g.max_client_conn, 500);
    assert_eq!(g.pool_mode, PoolMode::Session);
    assert_eq!((g.default_pool_size, g.min_pool_size), (30, 5));
    assert!(g.query_wait_timeout.is_zero());
    assert_eq!(g.query_wait_timeout.non_zero(), None);
    assert_eq!(g.server_connect_timeout, Secs::from_millis(250));
    assert_eq!(g.server_idle_timeout, Secs::from_secs(300));
    assert_eq!(g.server_lifetime, Secs::from_secs(7200));
    assert_eq!(g.server_reset_query, "");
    assert!(g.server_reset_query_always);
    assert_eq!(g.auth_type, AuthType::Md5);
    assert_eq!(g.client_login_timeout, Secs::from_secs(10));
    assert_eq!(g.shutdown_timeout, Secs::from_secs(45));
    assert_eq!(g.log_level, "info,pgsluice=debug");
    assert_eq!(g.log_format, LogFormat::Json);
    assert_eq!(g.max_message_size, 8192);
    assert!(g.application_name_add_host);

    let d = &c.databases["app"];
    assert_eq!(d.host, "10.0.0.5");
    assert_eq!(d.port, 6000);
    assert_eq!(d.dbname.as_deref(), Some("app_prod"));
    assert_eq!(d.user.as_deref(), Some("svc"));
    assert_eq!(d.password.as_deref(), Some("secret"));
    assert_eq!((d.pool_size, d.min_pool_size), (Some(50), Some(10)));
    assert_eq!(d.pool_mode, Some(PoolMode::Transaction));
    assert_eq!(d.application_name.as_deref(), Some("pgsluice"));
    assert!(c.databases["local"].is_unix_socket());
    assert!(!d.is_unix_socket());

    assert_eq!(c.users["alice"].pool_size, Some(3));
    assert_eq!(c.users["bob"], UserConfig::default());

    // Resolution order: user, then database, then general.
    assert_eq!(c.pool_size("app", "alice"), 3);
    assert_eq!(c.pool_size("app", "bob"), 50);
    assert_eq!(c.pool_size("local", "bob"), 30);
    assert_eq!(c.pool_size("nope", "nobody"), 30);
    assert_eq!(c.pool_mode("local", "alice"), PoolMode::Transaction);
    assert_eq!(c.pool_mode("app", "bob"), PoolMode::Transaction);
    assert_eq!(c.pool_mode("local", "bob"), PoolMode::Session);
    assert_eq!(c.min_pool_size("app"), 10);
    assert_eq!(c.min_pool_size("local"), 5);
    assert_eq!(c.effective_min_pool_size("app", "alice"), 3);
    assert_eq!(c.server_dbname("app"), "app_prod");
    assert_eq!(c.server_dbname("local"), "local");
}

#[test]
fn example_file_loads() {
    let c = parse_str(
        include_str!("../../../../examples/pgsluice.toml"),
        "examples/pgsluice.toml",
        no_env(),
    )
    .unwrap();
    assert_eq!(c.databases.len(), 2);
    assert_eq!(c.users.len(), 2);
    assert_eq!(c.general.listen.len(), 2);
    assert_eq!(c.pool_mode("reporting", "app"), PoolMode::Session);
    assert_eq!(c.pool_size("app", "analyst"), 2);
    assert_eq!(
        PasswordKind::of(c.users["app"].password.as_deref().unwrap()),
        PasswordKind::ScramSha256
    );
    assert_eq!(
        PasswordKind::of(c.users["analyst"].password.as_deref().unwrap()),
        PasswordKind::Md5
    );
    assert!(c.warnings().iter().any(|w| w.contains("analyst")));
}

#[test]
fn round_trip_through_table() {
    let c = parse(FULL).unwrap();
    let again: Config = load::to_table(&c).try_into().unwrap();
    assert_eq!(again, Config { source: None, ..c });
    // Sub-second durations survive as milliseconds.
    assert_eq!(again.general.server_connect_timeout, Secs::from_millis(250));
}

#[test]
fn unknown_key_error_names_file_line_and_key() {
    let (line, key, msg) = at(parse("[general]\npool_mode = \"session\"\nbogus = 1\n"));
    assert_eq!((line, key.as_str()), (3, "general.bogus"));
    assert!(msg.contains("unknown field `bogus`"), "{msg}");

    let (line, key, _) = at(parse(&format!("{DB}port = 1\nhots = \"x\"\n")));
    assert_eq!((line, key.as_str()), (4, "databases.app.hots"));

    let (line, key, _) = at(parse("\n\n[genral]\nlisten = \"127.0.0.1:1\"\n"));
    assert_eq!((line, key.as_str()), (3, "genral"));

    let (line, key, _) = at(parse("[users.bob]\npassword = \"x\"\n\n  pool_sise = 3\n"));
    assert_eq!((line, key.as_str()), (4, "users.bob.pool_sise"));

    let (line, key, _) = at(parse("[databases]\napp = { host = \"h\", prot = 1 }\n"));
    assert_eq!((line, key.as_str()), (2, "databases.app.prot"));

    // The Display form is file:line: key `...`: message.
    let e = parse("[general]\nbogus = 1\n").unwrap_err().to_string();
    assert!(
        e.starts_with("test.toml:2: key `general.bogus`: unknown field `bogus`"),
        "{e}"
    );
}

#[test]
fn bad_value_type_error_line() {
    let (line, key, msg) = at(parse(
        "[general]\nlisten = \"127.0.0.1:1\"\ndefault_pool_size = \"ten\"\n",
    ));
    assert_eq!((line, key.as_str()), (3, "general.default_pool_size"));
    assert!(msg.contains("invalid type"), "{msg}");

    let (line, key, _) = at(parse("[general]\n\nmax_client_conn = -1\n"));
    assert_eq!((line, key.as_str()), (3, "general.max_client_conn"));

    let (line, key, _) = at(parse(&format!("{DB}port = 70000\n")));
    assert_eq!((line, key.as_str()), (3, "databases.app.port"));

    let (line, key, msg) = at(parse(
        "[general]\nlisten = [\n  \"127.0.0.1:1\",\n  \"nowhere\",\n]\n",
    ));
    assert_eq!((line, key.as_str()), (4, "general.listen"));
    assert!(msg.contains("invalid listen address `nowhere`"), "{msg}");

    let (line, key, msg) = at(parse("[general]\npool_mode = \"statements\"\n"));
    assert_eq!((line, key.as_str()), (2, "general.pool_mode"));
    assert!(msg.contains("invalid pool mode `statements`"), "{msg}");

    let (line, key, msg) = at(parse(&format!("{DB}pool_mode = \"stmt\"\n")));
    assert_eq!((line, key.as_str()), (3, "databases.app.pool_mode"));
    assert!(
        msg.contains("`session`, `transaction` or `statement`"),
        "{msg}"
    );

    let (line, key, _) = at(parse("[general]\nauth_type = \"password\"\n"));
    assert_eq!((line, key.as_str()), (2, "general.auth_type"));

    let (line, key, _) = at(parse("[general]\nlog_format = \"xml\"\n"));
    assert_eq!((line, key.as_str()), (2, "general.log_format"));

    let (line, key, _) = at(parse("[general]\nserver_reset_query_always = \"yes\"\n"));
    assert_eq!(
        (line, key.as_str()),
        (2, "general.server_reset_query_always")
    );
}

#[test]
fn missing_host_error_line() {
    let (line, key, msg) = at(parse("[general]\n\n[databases.app]\nport = 5433\n"));
    assert_eq!((line, key.as_str()), (3, "databases.app.host"));
    assert!(msg.contains("missing field `host`"), "{msg}");

    let (line, key, _) = at(parse(
        "[databases]\nother = { host = \"h\" }\napp = { port = 1 }\n",
    ));
    assert_eq!((line, key.as_str()), (3, "databases.app.host"));
}

#[test]
fn syntax_error_line() {
    let (line, key, _) = at(parse(
        "[general]\npool_mode = \"session\"\nlisten 127.0.0.1\n",
    ));
    assert_eq!((line, key.as_str()), (3, "general.listen"));
    let (line, _, _) = at(parse("[general]\npool_mode = \"session\n"));
    assert_eq!(line, 2);
    let (line, key, _) = at(parse(
        "[general]\npool_mode = \"session\"\npool_mode = \"transaction\"\n",
    ));
    assert_eq!((line, key.as_str()), (3, "general.pool_mode"));
}

#[test]
fn validation_error_line() {
    let text = "[general]\ndefault_pool_size = 5\n# comment\nmin_pool_size = 10\n";
    let (line, key, msg) = at(parse(text));
    assert_eq!((line, key.as_str()), (4, "general.min_pool_size"));
    assert!(
        msg.contains("min_pool_size (10) must not exceed default_pool_size (5)"),
        "{msg}"
    );

    // min_pool_size only from the default? Then blame default_pool_size.
    let (line, key, _) = at(parse("[general]\n\ndefault_pool_size = 0\n"));
    assert_eq!((line, key.as_str()), (3, "general.default_pool_size"));

    let (line, key, _) = at(parse(&format!("{DB}pool_size = 0\n")));
    assert_eq!((line, key.as_str()), (3, "databases.app.pool_size"));

    let (line, key, _) = at(parse(&format!(
        "[general]\nmin_pool_size = 4\n{DB}pool_size = 2\n"
    )));
    assert_eq!((line, key.as_str()), (5, "databases.app.pool_size"));

    let (line, key, _) = at(parse("[databases.app]\nhost = \"\"\n"));
    assert_eq!((line, key.as_str()), (2, "databases.app.host"));

    let (line, key, _) = at(parse("[databases]\napp = { host = \"\" }\n"));
    assert_eq!((line, key.as_str()), (2, "databases.app.host"));

    let (line, key, _) = at(parse(&format!("{DB}password = \"x\"\n")));
    assert_eq!((line, key.as_str()), (3, "databases.app.password"));

    let (line, key, _) = at(parse("[general]\nlisten = []\n"));
    assert_eq!((line, key.as_str()), (2, "general.listen"));

    let (line, key, _) = at(parse("[general]\nworkers = 0\n"));
    assert_eq!((line, key.as_str()), (2, "general.workers"));

    let (line, key, _) = at(parse("[general]\nmax_message_size = 100\n"));
    assert_eq!((line, key.as_str()), (2, "general.max_message_size"));

    let (line, key, _) = at(parse("[general]\nlog_level = \"verbose\"\n"));
    assert_eq!((line, key.as_str()), (2, "general.log_level"));

    let (line, key, _) = at(parse("[general]\nserver_connect_timeout = 0\n"));
    assert_eq!((line, key.as_str()), (2, "general.server_connect_timeout"));

    let (line, key, _) = at(parse("[users.u]\npassword = \"SCRAM-SHA-256$x\"\n"));
    assert_eq!((line, key.as_str()), (2, "users.u.password"));

    let (line, key, _) = at(parse("[users.u]\npool_size = 0\n"));
    assert_eq!((line, key.as_str()), (2, "users.u.pool_size"));

    // Calling validate() directly names the key.
    let mut c = Config::default();
    c.general.min_pool_size = 50;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.starts_with("key `general.min_pool_size`: "), "{e}");
}

#[test]
fn env_overrides() {
    let text = format!("[general]\ndefault_pool_size = 10\n{DB}");
    let c = parse_env(
        &text,
        &[
            ("PGSLUICE_DEFAULT_POOL_SIZE", "5"),
            ("PGSLUICE_SERVER_RESET_QUERY_ALWAYS", "true"),
            ("PGSLUICE_POOL_MODE", "session"),
            ("PGSLUICE_LISTEN", "127.0.0.1:7000"),
            ("PGSLUICE_QUERY_WAIT_TIMEOUT", "30s"),
            ("PGSLUICE_SERVER_IDLE_TIMEOUT", "0"),
            ("PGSLUICE_SERVER_RESET_QUERY", "RESET ALL"),
            ("PGSLUICE_LOG_LEVEL", "\"debug\""),
            ("PGSLUICE_DATABASES__app__PORT", "6543"),
            ("PGSLUICE_DATABASES__app__POOL_MODE", "session"),
            ("PGSLUICE_DATABASES__Other_DB__HOST", "db2"),
            ("PGSLUICE_USERS__alice__PASSWORD", "123456"),
            ("PGSLUICE_USERS__alice__POOL_SIZE", "2"),
            ("HOME", "/root"),
        ],
    )
    .unwrap();
    let g = &c.general;
    assert_eq!(g.default_pool_size, 5);
    assert!(g.server_reset_query_always);
    assert_eq!(g.pool_mode, PoolMode::Session);
    assert_eq!(
        g.listen,
        vec!["127.0.0.1:7000".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(g.query_wait_timeout, Secs::from_secs(30));
    assert!(g.server_idle_timeout.is_zero());
    assert_eq!(g.server_reset_query, "RESET ALL");
    assert_eq!(g.log_level, "debug");
    assert_eq!(c.databases["app"].port, 6543);
    assert_eq!(c.databases["app"].host, "127.0.0.1");
    assert_eq!(c.databases["app"].pool_mode, Some(PoolMode::Session));
    assert_eq!(c.databases["Other_DB"].host, "db2");
    // A numeric literal for a string key is taken as a string.
    assert_eq!(c.users["alice"].password.as_deref(), Some("123456"));
    assert_eq!(c.users["alice"].pool_size, Some(2));

    let c = parse_env(
        "",
        &[("PGSLUICE_LISTEN", "[\"127.0.0.1:1\", \"127.0.0.1:2\"]")],
    )
    .unwrap();
    assert_eq!(c.general.listen.len(), 2);

    let c = parse_env(
        DB,
        &[
            ("PGSLUICE_SERVER_RESET_QUERY", ""),
            ("PGSLUICE_DATABASES__app__pool_size", "3"),
            ("PGSLUICE_USERS__bob__PASSWORD", "true"),
            ("PGSLUICE_LOG_LEVEL", "\"warn\""),
        ],
    )
    .unwrap();
    assert_eq!(c.general.server_reset_query, "");
    assert_eq!(c.databases["app"].pool_size, Some(3));
    assert_eq!(c.users["bob"].password.as_deref(), Some("true"));
    assert_eq!(c.general.log_level, "warn");
}

#[test]
fn env_override_errors() {
    let (var, msg) = env_err(parse_env("", &[("PGSLUICE_BOGUS", "1")]));
    assert_eq!(var, "PGSLUICE_BOGUS");
    assert!(msg.contains("unknown field `bogus`"), "{msg}");

    let (var, msg) = env_err(parse_env(DB, &[("PGSLUICE_DATABASES__app__HOTS", "x")]));
    assert_eq!(var, "PGSLUICE_DATABASES__app__HOTS");
    assert!(msg.contains("databases.app.hots"), "{msg}");

    let (var, msg) = env_err(parse_env("", &[("PGSLUICE_DEFAULT_POOL_SIZE", "many")]));
    assert_eq!(var, "PGSLUICE_DEFAULT_POOL_SIZE");
    assert!(msg.contains("invalid type"), "{msg}");

    let (var, _) = env_err(parse_env("", &[("PGSLUICE_POOL_MODE", "autocommit")]));
    assert_eq!(var, "PGSLUICE_POOL_MODE");

    let (var, msg) = env_err(parse_env("", &[("PGSLUICE_DATABASES__app__PORT", "5")]));
    assert_eq!(var, "PGSLUICE_DATABASES__app__PORT");
    assert!(
        msg.starts_with("key `databases.app.host`: missing field `host`"),
        "{msg}"
    );

    let (var, _) = env_err(parse_env("", &[("PGSLUICE_DATABASES__app", "5")]));
    assert_eq!(var, "PGSLUICE_DATABASES__app");

    // Validation errors caused by a variable blame the variable.
    let text = "[general]\nmin_pool_size = 2\n";
    let (var, msg) = env_err(parse_env(text, &[("PGSLUICE_MIN_POOL_SIZE", "50")]));
    assert_eq!(var, "PGSLUICE_MIN_POOL_SIZE");
    assert!(msg.contains("must not exceed"), "{msg}");
    // ... or the file line when the file's key is at fault.
    let (line, key, _) = at(parse_env(text, &[("PGSLUICE_DEFAULT_POOL_SIZE", "1")]));
    assert_eq!((line, key.as_str()), (2, "general.min_pool_size"));

    let e = parse_env("", &[("PGSLUICE_WORKERS", "0")])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("environment variable PGSLUICE_WORKERS: key `general.workers`"),
        "{e}"
    );
}

#[test]
fn apply_env_in_quick_mode() {
    let c = Config::quick("postgres://u:p@h/d").unwrap();
    let c = apply_env(
        c,
        env(&[
            ("PGSLUICE_POOL_MODE", "session"),
            ("PGSLUICE_USERS__u__POOL_SIZE", "3"),
        ]),
    )
    .unwrap();
    assert_eq!(c.general.pool_mode, PoolMode::Session);
    assert_eq!(c.pool_size("d", "u"), 3);
    assert_eq!(c.source, None);
    let same = apply_env(c.clone(), no_env()).unwrap();
    assert_eq!(same, c);
    let (var, _) = env_err(apply_env(c, env(&[("PGSLUICE_NOPE", "1")])));
    assert_eq!(var, "PGSLUICE_NOPE");
}

#[test]
fn durations() {
    let ok = [
        ("250ms", Secs::from_millis(250)),
        ("30s", Secs::from_secs(30)),
        ("30", Secs::from_secs(30)),
        ("5m", Secs::from_secs(300)),
        ("1h", Secs::from_secs(3600)),
        ("0", Secs::from_secs(0)),
        (" 2s ", Secs::from_secs(2)),
    ];
    for (s, want) in ok {
        assert_eq!(s.parse::<Secs>(), Ok(want), "{s}");
    }
    for bad in ["5x", "", "s", "-1s", "1.5s", "ms5", "99999999999999999999h"] {
        assert!(bad.parse::<Secs>().is_err(), "{bad} should be rejected");
    }
    let c = parse("[general]\nquery_wait_timeout = 30\nserver_lifetime = \"250ms\"\nserver_idle_timeout = \"5m\"\n").unwrap();
    assert_eq!(c.general.query_wait_timeout, Secs::from_secs(30));
    assert_eq!(
        c.general.server_lifetime.duration(),
        std::time::Duration::from_millis(250)
    );
    assert_eq!(c.general.server_idle_timeout, Secs::from_secs(300));

    let (line, key, msg) = at(parse("[general]\n\nquery_wait_timeout = \"5x\"\n"));
    assert_eq!((line, key.as_str()), (3, "general.query_wait_timeout"));
    assert!(msg.contains("invalid duration `5x`"), "{msg}");
    let (line, _, _) = at(parse("[general]\nshutdown_timeout = -3\n"));
    assert_eq!(line, 2);
    let (line, _, _) = at(parse("[general]\nshutdown_timeout = 1.5\n"));
    assert_eq!(line, 2);

    assert_eq!(Secs::from_secs(30).to_string(), "30s");
    assert_eq!(Secs::from_millis(1500).to_string(), "1500ms");
}

#[test]
fn enums_parse_and_display() {
    for m in [
        PoolMode::Session,
        PoolMode::Transaction,
        PoolMode::Statement,
    ] {
        assert_eq!(m.to_string().parse::<PoolMode>(), Ok(m));
    }
    for a in [
        AuthType::Trust,
        AuthType::Plain,
        AuthType::Md5,
        AuthType::ScramSha256,
    ] {
        assert_eq!(a.to_string().parse::<AuthType>(), Ok(a));
    }
    for f in [LogFormat::Text, LogFormat::Json] {
        assert_eq!(f.to_string().parse::<LogFormat>(), Ok(f));
    }
    assert_eq!(" Statement ".parse::<PoolMode>(), Ok(PoolMode::Statement));
    assert!("autocommit"
        .parse::<PoolMode>()
        .unwrap_err()
        .0
        .contains("invalid pool mode"));
    assert_eq!(
        "SCRAM-SHA-256".parse::<AuthType>(),
        Ok(AuthType::ScramSha256)
    );
    assert_eq!("cert".parse::<AuthType>(), Ok(AuthType::Cert));
    assert_eq!("hba".parse::<AuthType>(), Ok(AuthType::Hba));
    assert!("pam".parse::<AuthType>().is_err());
}

#[test]
fn listen_addresses() {
    assert_eq!(
        parse_listen_addr("*:6432").unwrap(),
        "0.0.0.0:6432".parse().unwrap()
    );
    assert_eq!(
        parse_listen_addr("localhost:1").unwrap(),
        "127.0.0.1:1".parse().unwrap()
    );
    assert_eq!(
        parse_listen_addr("[::1]:5").unwrap(),
        "[::1]:5".parse().unwrap()
    );
    for bad in ["127.0.0.1", "example.com:1", "1.2.3.4:99999", ""] {
        assert!(parse_listen_addr(bad).is_err(), "{bad}");
    }
    let c = parse("[general]\nlisten = \"*:7000\"\n").unwrap();
    assert_eq!(
        c.general.listen,
        vec!["0.0.0.0:7000".parse::<SocketAddr>().unwrap()]
    );
    let (line, _, msg) = at(parse(
        "[general]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
    ));
    assert_eq!(line, 2);
    assert!(msg.contains("twice"), "{msg}");
}

#[test]
fn quick_mode() {
    let c = Config::quick("postgres://app:p%40ss%3Aw%2Frd@db.internal:6543/appdb").unwrap();
    assert_eq!(c.general, General::default());
    assert_eq!(c.source, None);
    let d = &c.databases["appdb"];
    assert_eq!((d.host.as_str(), d.port), ("db.internal", 6543));
    assert_eq!(d.dbname.as_deref(), Some("appdb"));
    assert_eq!(c.users["app"].password.as_deref(), Some("p@ss:w/rd"));
    assert_eq!(c.users.len(), 1);

    // Missing port and database.
    let c = Config::quick("postgresql://bob:pw@localhost").unwrap();
    let d = &c.databases["bob"];
    assert_eq!((d.host.as_str(), d.port), ("localhost", 5432));
    assert_eq!(d.dbname.as_deref(), Some("bob"));

    // IPv6 and query parameters.
    let c = Config::quick("postgres://bob:pw@[::1]:5433/x?sslmode=disable").unwrap();
    assert_eq!(c.databases["x"].host, "::1");
    assert_eq!(c.databases["x"].port, 5433);

    // No password.
    let c = Config::quick("postgres://bob@h/x").unwrap();
    assert_eq!(c.users["bob"].password, None);

    for bad in [
        "http://u@h/d",
        "postgres://h/d",
        "postgres://u@h:x/d",
        "postgres://u@/d",
    ] {
        assert!(
            matches!(Config::quick(bad), Err(ConfigError::Invalid(_))),
            "{bad}"
        );
    }
}

#[test]
fn debug_redacts_passwords() {
    let c = parse(FULL).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("secret"), "{dbg}");
    assert!(!dbg.contains("a3556571e93b0d20722ba62be61e8c2d"), "{dbg}");
    assert!(dbg.contains("<redacted>"));
    let c = Config::quick("postgres://u:hunter2@h/d").unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!format!("{:#?}", c.users["u"]).contains("hunter2"));
}

#[test]
fn load_file_reads_and_rejects_ini() {
    let dir = std::env::temp_dir().join(format!("pgsluice-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("ok.toml");
    std::fs::write(&p, FULL).unwrap();
    let c = load_file(&p, no_env()).unwrap();
    assert_eq!(c.source.as_deref(), Some(p.as_path()));
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[general]\nnope = 1\n").unwrap();
    match load_file(&bad, no_env()) {
        Err(ConfigError::At {
            file, line, key, ..
        }) => {
            assert_eq!(file, bad.display().to_string());
            assert_eq!((line, key.as_str()), (2, "general.nope"));
        }
        other => panic!("{other:?}"),
    }
    // A .ini file is read as PgBouncer's format (see pgbouncer_tests.rs).
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(&ini, "[databases]\napp = host=127.0.0.1\n").unwrap();
    let c = load_file(&ini, no_env()).unwrap();
    assert_eq!(c.general.pool_mode, PoolMode::Session);
    assert!(matches!(
        load_file(&dir.join("missing.toml"), no_env()),
        Err(ConfigError::File { .. })
    ));
}

#[test]
fn warnings() {
    let c = parse("[general]\nauth_type = \"scram-sha-256\"\n[users.a]\n[users.b]\npassword = \"md5a3556571e93b0d20722ba62be61e8c2d\"\n").unwrap();
    let w = c.warnings();
    assert!(w.iter().any(|w| w.contains("no databases")));
    assert!(w.iter().any(|w| w.contains("`a` has no password")));
    assert!(w.iter().any(|w| w.contains("`b` has an md5 password hash")));
    assert!(parse(&format!(
        "[general]\nauth_type = \"trust\"\n{DB}[users.a]\n"
    ))
    .unwrap()
    .warnings()
    .is_empty());
}

#[test]
fn default_workers_are_half_the_cores() {
    use crate::config::general::default_workers;
    assert_eq!(default_workers(1), 1);
    assert_eq!(default_workers(2), 1);
    assert_eq!(default_workers(3), 1);
    assert_eq!(default_workers(8), 4);
}

#[test]
fn statement_mode_in_toml() {
    let c = parse(
        "[general]\npool_mode = \"statement\"\n\
         [databases.app]\nhost = \"127.0.0.1\"\n\
         [databases.tx]\nhost = \"127.0.0.1\"\npool_mode = \"transaction\"\n\
         [users.batch]\npool_mode = \"statement\"\n",
    )
    .unwrap();
    assert_eq!(c.pool_mode("app", "alice"), PoolMode::Statement);
    assert_eq!(c.pool_mode("tx", "alice"), PoolMode::Transaction);
    assert_eq!(c.pool_mode("tx", "batch"), PoolMode::Statement);
    let env = parse_env(DB, &[("PGSLUICE_POOL_MODE", "statement")]).unwrap();
    assert_eq!(env.general.pool_mode, PoolMode::Statement);
}
