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
#[path = "cli_tests.rs"]
mod tests;
