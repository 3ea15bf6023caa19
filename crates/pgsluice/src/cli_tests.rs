//! Tests of [`super`]: the command line.

use super::*;
use crate::config::ConfigError;
use std::time::Duration;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("pgsluice").chain(args.iter().copied()))
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    match parse(args).unwrap().into_command_with_env(env)? {
        Command::Run(c) => Ok(*c),
        Command::CheckConfig(p, _) => panic!("unexpected check-config {p:?}"),
        Command::PrintConfig(c) => Ok(*c),
    }
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgsluice-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn quick_mode_with_flags() {
    let c = run(
        &[
            "--backend",
            "postgres://app:p%40ss@db:5433/appdb",
            "--listen",
            "0.0.0.0:7000",
            "--listen",
            "[::1]:7001",
            "--pool-mode",
            "session",
            "--pool-size",
            "7",
            "--max-client-conn",
            "50",
            "--min-pool-size",
            "2",
            "--query-wait-timeout",
            "250ms",
            "--server-reset-query",
            "",
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--workers",
            "3",
            "--auth-type",
            "md5",
            "--shutdown-timeout",
            "5m",
        ],
        &[],
    )
    .unwrap();
    let g = &c.general;
    assert_eq!(
        g.listen,
        vec![
            "0.0.0.0:7000".parse().unwrap(),
            "[::1]:7001".parse().unwrap()
        ]
    );
    assert_eq!(g.pool_mode, PoolMode::Session);
    assert_eq!(g.default_pool_size, 7);
    assert_eq!(g.max_client_conn, 50);
    assert_eq!(g.min_pool_size, 2);
    assert_eq!(g.query_wait_timeout, Secs(Duration::from_millis(250)));
    assert_eq!(g.server_reset_query, "");
    assert_eq!(g.log_format, LogFormat::Json);
    assert_eq!(g.log_level, "debug");
    assert_eq!(g.workers, Some(3));
    assert_eq!(g.auth_type, AuthType::Md5);
    assert_eq!(g.shutdown_timeout, Secs::from_secs(300));
    assert_eq!(c.source, None);
    assert_eq!(c.databases["appdb"].host, "db");
    assert_eq!(c.databases["appdb"].port, 5433);
    assert_eq!(c.users["app"].password.as_deref(), Some("p@ss"));
}

#[test]
fn quick_mode_defaults_and_env() {
    let c = run(&["--backend", "postgres://u:pw@localhost/d"], &[]).unwrap();
    assert_eq!(c.general.listen, vec!["127.0.0.1:6432".parse().unwrap()]);
    let c = run(
        &[
            "--backend",
            "postgres://u:pw@localhost/d",
            "--pool-size",
            "9",
        ],
        &[
            ("PGSLUICE_DEFAULT_POOL_SIZE", "4"),
            ("PGSLUICE_POOL_MODE", "session"),
        ],
    )
    .unwrap();
    // flags > env
    assert_eq!(c.general.default_pool_size, 9);
    assert_eq!(c.general.pool_mode, PoolMode::Session);
    let c = run(
        &[
            "--backend",
            "postgres://u:pw@localhost/d",
            "--pool-mode",
            "statement",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.general.pool_mode, PoolMode::Statement);
}

#[test]
fn file_mode_precedence() {
    let p = temp_file(
        "prec.toml",
        "[general]\ndefault_pool_size = 10\nmin_pool_size = 2\nlog_level = \"warn\"\n\
         [databases.app]\nhost = \"h\"\n",
    );
    let path = p.to_str().unwrap();
    let c = run(&[path], &[]).unwrap();
    assert_eq!(c.general.default_pool_size, 10);
    assert_eq!(c.source.as_deref(), Some(p.as_path()));
    let c = run(&["--config", path], &[("PGSLUICE_DEFAULT_POOL_SIZE", "5")]).unwrap();
    assert_eq!(c.general.default_pool_size, 5);
    assert_eq!(c.general.log_level, "warn");
    let c = run(
        &[path, "--pool-size", "3", "--log-level", "error"],
        &[("PGSLUICE_DEFAULT_POOL_SIZE", "5")],
    )
    .unwrap();
    assert_eq!(c.general.default_pool_size, 3);
    assert_eq!(c.general.log_level, "error");
    // A flag breaking a cross-field rule is blamed.
    let e = run(&[path, "--pool-size", "1"], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains(":3: key `general.min_pool_size`"), "{e}");
    let e = run(&[path, "--min-pool-size", "11"], &[])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--min-pool-size: "), "{e}");
}

#[test]
fn check_config_and_errors() {
    let c = parse(&["--check-config", "/x.toml"]).unwrap();
    assert_eq!(
        c.into_command_with_env(Vec::new()).unwrap(),
        Command::CheckConfig(PathBuf::from("/x.toml"), None)
    );
    // A source is required; only one.
    assert!(parse(&[]).is_err());
    assert!(parse(&["a.toml", "--backend", "postgres://u@h/d"]).is_err());
    assert!(parse(&["a.toml", "--config", "b.toml"]).is_err());
    assert!(parse(&["--check-config", "a.toml", "--pool-size", "3"]).is_err());
    // Bad flag values are clap errors.
    assert!(parse(&["a.toml", "--pool-mode", "statements"]).is_err());
    assert!(parse(&["a.toml", "--listen", "nowhere"]).is_err());
    assert!(parse(&["a.toml", "--query-wait-timeout", "5x"]).is_err());
    assert!(parse(&["a.toml", "--auth-type", "pam"]).is_err());
    let e = parse(&["a.toml", "--pool-mode", "autocommit"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid pool mode"), "{e}");
    // Version and help.
    let v = parse(&["-V"]).unwrap_err();
    assert_eq!(v.kind(), clap::error::ErrorKind::DisplayVersion);
    let h = parse(&["--help"]).unwrap_err();
    assert_eq!(h.kind(), clap::error::ErrorKind::DisplayHelp);
    // An .ini file is PgBouncer's format.
    let ini = temp_file(
        "pgbouncer.ini",
        "[databases]\napp = host=localhost\n[pgbouncer]\nlisten_addr = 127.0.0.1\n",
    );
    let c = run(&[ini.to_str().unwrap()], &[]).unwrap();
    assert_eq!(c.databases["app"].host, "localhost");
    assert_eq!(c.general.pool_mode, PoolMode::Session);
    // A missing file.
    let e = run(&["/nonexistent/pgsluice.toml"], &[]).unwrap_err();
    assert!(matches!(e, ConfigError::File { .. }), "{e}");
    // A bad backend URL.
    let e = run(&["--backend", "mysql://x@y/z"], &[]).unwrap_err();
    assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
}

#[test]
fn pgbouncer_switches() {
    let ini = temp_file(
        "switches.ini",
        "[databases]\napp = host=h\n[pgbouncer]\nlisten_addr = 127.0.0.1\nverbose = 1\n",
    );
    let path = ini.to_str().unwrap();
    assert_eq!(run(&[path], &[]).unwrap().general.log_level, "debug");
    assert_eq!(run(&["-q", path], &[]).unwrap().general.log_level, "warn");
    assert_eq!(run(&["-v", path], &[]).unwrap().general.log_level, "debug");
    assert_eq!(run(&["-vv", path], &[]).unwrap().general.log_level, "trace");
    let c = run(&["-u", "postgres", path], &[]).unwrap();
    assert_eq!(c.general.user.as_deref(), Some("postgres"));
    let cli = parse(&["-d", "--user=postgres", "--verbose", path]).unwrap();
    assert!(cli.daemon);
    assert_eq!((cli.verbose, cli.user.as_deref()), (1, Some("postgres")));
    assert!(parse(&["-q", "-v", path]).is_err());
    assert!(parse(&["-q", "--log-level", "info", path]).is_err());
    assert!(parse(&["-d", "--print-config", path]).is_err());
    assert!(parse(&["--check-config", path, "-d"]).is_err());
    // --print-config and --format.
    let c = parse(&[path, "--print-config"])
        .unwrap()
        .into_command_with_env(Vec::new())
        .unwrap();
    assert!(matches!(c, Command::PrintConfig(_)));
    let toml_text = temp_file("switches.conf", "[databases]\napp = host=h\n");
    let p = toml_text.to_str().unwrap();
    assert!(run(&[p], &[]).is_ok()); // detected as ini by content
    assert!(run(&["--format", "toml", p], &[]).is_err());
    assert!(parse(&["--format", "yaml", p]).is_err());
    let c = parse(&["--format", "ini", "--check-config", p]).unwrap();
    assert_eq!(
        c.into_command_with_env(Vec::new()).unwrap(),
        Command::CheckConfig(toml_text.clone(), Some(ConfigFormat::Ini))
    );
}

#[test]
fn upgrade_takes_the_configuration_as_a_normal_start() {
    let ini = temp_file(
        "upgrade.ini",
        "[databases]\napp = host=h\n[pgbouncer]\nlisten_addr = 127.0.0.1\n",
    );
    let path = ini.to_str().unwrap();
    let cli = parse(&["--upgrade", path]).unwrap();
    assert!(cli.upgrade);
    let c = cli.into_command_with_env(Vec::new()).unwrap();
    assert!(matches!(c, Command::Run(_)));
    assert!(parse(&["-d", path, "--upgrade"]).unwrap().daemon);
    assert!(parse(&["--upgrade"]).is_err());
    assert!(parse(&["--upgrade", "--check-config", path]).is_err());
    assert!(parse(&["--upgrade", path, "--print-config"]).is_err());
}

#[test]
fn read_write_split_in_quick_mode_only() {
    let url = "postgres://app:pw@h1:5432,h2:5433/app?target_session_attrs=read-write";
    let c = run(&["--backend", url, "--read-write-split"], &[]).unwrap();
    let d = &c.databases["app"];
    assert!(d.read_write_split && d.is_replicated());
    assert_eq!(d.host_list().len(), 2);
    let c = run(&["--backend", url], &[]).unwrap();
    assert!(!c.databases["app"].read_write_split);
    let e = run(&["a.toml", "--read-write-split"], &[]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--read-write-split: only with --backend"),
        "{e}"
    );
    assert!(parse(&["--check-config", "a.toml", "--read-write-split"]).is_err());
}

#[test]
fn cli_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}
