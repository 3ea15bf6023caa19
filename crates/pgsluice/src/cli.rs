//! Command-line interface.
//!
//! ```text
//! pgsluice [CONFIG_FILE]                 run with a configuration file (TOML or pgbouncer.ini)
//! pgsluice --config FILE                 same
//! pgsluice --check-config FILE           validate a configuration file and exit
//! pgsluice --backend postgres://u:p@host:5432/db [--listen ADDR]...   quick mode
//! pgsluice --backend postgres://u:p@h1,h2/db --read-write-split     quick mode, replicas
//! pgsluice ... --print-config            print the effective configuration and exit
//! pgsluice --upgrade CONFIG_FILE         take over from the pgsluice running with CONFIG_FILE
//! pgsluice --print-man                   print the man page (see [`man`]; not in --help)
//! ```
//!
//! PgBouncer's own switches work too: `-d`/`--daemon`, `-q`/`--quiet`,
//! `-v`/`--verbose`, `-u`/`--user USER`, `-V`/`--version`, `-h`/`--help`
//! (see [`process`] for what `-d` and `-u` do).
//!
//! The tuning flags (`--pool-size`, `--pool-mode`...) work in both modes; in
//! file mode they override the file. Precedence: flags > `PGSLUICE_*`
//! environment variables > file > defaults.

pub mod man;
pub mod process;
pub mod sd_notify;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, ArgGroup, Parser};
use toml::Value;

use crate::config::load::{apply_overrides, env_overrides, load_file_with, Override};
use crate::config::{
    env_vars, parse_listen_addr, AuthType, Config, ConfigError, ConfigFormat, LogFormat, PoolMode,
    Secs,
};

/// pgsluice: a PostgreSQL connection pooler (a drop-in for PgBouncer).
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "pgsluice", version, about, long_about = None, args_override_self = true)]
#[command(group(
    ArgGroup::new("source")
        .required(true)
        .args(["config_file", "config", "check_config", "backend"])
))]
#[command(group(
    ArgGroup::new("overrides")
        .multiple(true)
        .conflicts_with("check_config")
        .args([
            "listen", "pool_mode", "pool_size", "max_client_conn", "min_pool_size",
            "query_wait_timeout", "server_reset_query", "log_format", "log_level",
            "workers", "auth_type", "shutdown_timeout", "quiet", "verbose", "user",
            "daemon", "print_config", "upgrade",
        ])
))]
pub struct Cli {
    /// Configuration file: pgsluice's TOML or PgBouncer's pgbouncer.ini.
    #[arg(value_name = "CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    /// Configuration file; same as the positional CONFIG_FILE.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Configuration file format: toml or ini [default: .ini/.toml extension, else by content].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<ConfigFormat>,

    /// Print the effective configuration as TOML (passwords redacted) and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Run in the background; output goes to `logfile` (or nowhere), the pid to `pidfile`.
    #[arg(short = 'd', long, conflicts_with = "print_config")]
    pub daemon: bool,

    /// Quiet: log warnings and errors only (sets log_level = warn).
    #[arg(short = 'q', long, conflicts_with_all = ["verbose", "log_level"])]
    pub quiet: bool,

    /// More logging: -v = debug, -vv = trace (sets log_level).
    #[arg(short = 'v', long, action = ArgAction::Count, conflicts_with = "log_level")]
    pub verbose: u8,

    /// Switch to this Unix user at startup (needs root); overrides the `user` setting.
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,

    /// Zero-downtime upgrade: take over the listening sockets and the clients of the
    /// pgsluice running with this configuration (found through its control socket, next
    /// to the unix socket or the pidfile); it exits once it holds no client.
    #[arg(long, conflicts_with = "print_config")]
    pub upgrade: bool,

    /// Validate a configuration file (with PGSLUICE_* overrides) and exit.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,

    /// Quick mode: pool a single backend, postgres://USER:PASSWORD@HOST:PORT/DB.
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,

    /// Quick mode: send reads to replicas and writes to the primary (only with --backend).
    #[arg(long, conflicts_with = "check_config")]
    pub read_write_split: bool,

    /// Address to listen on, e.g. 127.0.0.1:6432 or *:6432 (repeatable) [default: 127.0.0.1:6432].
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub listen: Vec<SocketAddr>,

    /// Pool mode: session, transaction or statement [default: transaction].
    #[arg(long, value_name = "MODE")]
    pub pool_mode: Option<PoolMode>,

    /// Server connections per (database, user) pool (general.default_pool_size) [default: 20].
    #[arg(long, value_name = "N")]
    pub pool_size: Option<usize>,

    /// Maximum number of client connections [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_client_conn: Option<usize>,

    /// Server connections kept open per pool even when idle [default: 0].
    #[arg(long, value_name = "N")]
    pub min_pool_size: Option<usize>,

    /// How long a client waits for a server connection, e.g. 30s; 0 = forever [default: 120s].
    #[arg(long, value_name = "DUR")]
    pub query_wait_timeout: Option<Secs>,

    /// Query run when a server connection is released; "" = none [default: DISCARD ALL].
    #[arg(long, value_name = "SQL")]
    pub server_reset_query: Option<String>,

    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log level or tracing filter, e.g. debug or info,pgsluice=trace; RUST_LOG wins [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Number of worker threads [default: half the cores, at least 1].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Client authentication: trust, plain, md5 or scram-sha-256 [default: scram-sha-256].
    #[arg(long, value_name = "TYPE")]
    pub auth_type: Option<AuthType>,

    /// How long shutdown waits for in-flight transactions, e.g. 30s [default: 30s].
    #[arg(long, value_name = "DUR")]
    pub shutdown_timeout: Option<Secs>,
}

/// What the process should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the pooler with this configuration.
    Run(Box<Config>),
    /// Validate this configuration file and exit (load it with
    /// [`crate::config::load_file_as`]; `None` = detect the format).
    CheckConfig(PathBuf, Option<ConfigFormat>),
    /// Print this configuration ([`crate::config::to_redacted_toml`]) and exit.
    PrintConfig(Box<Config>),
}

fn usize_value(n: usize) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn secs_value(s: Secs) -> Value {
    Value::String(s.to_string())
}

impl Cli {
    /// Parses `std::env::args_os()`; prints help/version or an error and
    /// exits like any clap program.
    pub fn parse_from_env() -> Cli {
        Cli::parse()
    }

    /// Turns flags into a Config (quick mode when `--backend` is given, else
    /// the config file) or a check-config request. Environment overrides
    /// are applied (from the process environment).
    pub fn into_command(self) -> Result<Command, ConfigError> {
        let env = env_vars()?;
        self.into_command_with_env(env)
    }

    /// [`Cli::into_command`] with an explicit environment (for tests).
    pub fn into_command_with_env(
        self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Command, ConfigError> {
        if let Some(path) = self.check_config {
            return Ok(Command::CheckConfig(path, self.format));
        }
        let flags = self.overrides();
        let wrap = |c: Config| {
            if self.print_config {
                Command::PrintConfig(Box::new(c))
            } else {
                Command::Run(Box::new(c))
            }
        };
        if let Some(url) = &self.backend {
            let cfg = Config::quick(url)?;
            let mut overrides = env_overrides(env)?;
            overrides.extend(flags);
            // The URL's database is the only one quick mode makes.
            if let Some(db) = cfg
                .databases
                .keys()
                .next()
                .filter(|_| self.read_write_split)
            {
                overrides.push(Override::flag(
                    "--read-write-split",
                    &["databases", db.as_str(), "read_write_split"],
                    Value::Boolean(true),
                ));
            }
            return apply_overrides(cfg, overrides).map(wrap);
        }
        if self.read_write_split {
            return Err(ConfigError::Invalid(
                "--read-write-split: only with --backend; in a configuration file set \
                 `read_write_split` on the database"
                    .to_owned(),
            ));
        }
        let Some(path) = self.config_file.clone().or(self.config.clone()) else {
            return Err(ConfigError::Invalid(
                "no configuration: give a CONFIG_FILE, --config FILE or --backend URL".to_owned(),
            ));
        };
        load_file_with(&path, self.format, env, flags).map(wrap)
    }

    /// The tuning flags as overrides of `[general]` keys.
    fn overrides(&self) -> Vec<Override> {
        let mut out = Vec::new();
        let mut set = |flag: &'static str, key: &str, v: Option<Value>| {
            if let Some(v) = v {
                out.push(Override::flag(flag, &["general", key], v));
            }
        };
        let listen = (!self.listen.is_empty()).then(|| {
            Value::Array(
                self.listen
                    .iter()
                    .map(|a| Value::String(a.to_string()))
                    .collect(),
            )
        });
        set("--listen", "listen", listen);
        set(
            "--pool-mode",
            "pool_mode",
            self.pool_mode.map(|m| Value::String(m.as_str().to_owned())),
        );
        set(
            "--pool-size",
            "default_pool_size",
            self.pool_size.map(usize_value),
        );
        set(
            "--max-client-conn",
            "max_client_conn",
            self.max_client_conn.map(usize_value),
        );
        set(
            "--min-pool-size",
            "min_pool_size",
            self.min_pool_size.map(usize_value),
        );
        set(
            "--query-wait-timeout",
            "query_wait_timeout",
            self.query_wait_timeout.map(secs_value),
        );
        set(
            "--server-reset-query",
            "server_reset_query",
            self.server_reset_query.clone().map(Value::String),
        );
        set(
            "--log-format",
            "log_format",
            self.log_format
                .map(|f| Value::String(f.as_str().to_owned())),
        );
        set(
            "--log-level",
            "log_level",
            self.log_level.clone().map(Value::String),
        );
        set("--workers", "workers", self.workers.map(usize_value));
        set(
            "--auth-type",
            "auth_type",
            self.auth_type.map(|a| Value::String(a.as_str().to_owned())),
        );
        set(
            "--shutdown-timeout",
            "shutdown_timeout",
            self.shutdown_timeout.map(secs_value),
        );
        let level = match (self.quiet, self.verbose) {
            (true, _) => Some(("-q", "warn")),
            (false, 0) => None,
            (false, 1) => Some(("-v", "debug")),
            (false, _) => Some(("-v", "trace")),
        };
        if let Some((flag, level)) = level {
            set(flag, "log_level", Some(Value::String(level.to_owned())));
        }
        set("-u", "user", self.user.clone().map(Value::String));
        out
    }
}

#[cfg(test)]
mod tests {
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
}
