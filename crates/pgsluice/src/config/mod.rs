//! Configuration model of pgsluice.
//!
//! A [`Config`] comes from one of two places:
//!
//! * a TOML file ([`load_file`] / [`parse_str`]) with the tables `[general]`,
//!   `[databases.<name>]` and `[users.<name>]`, or
//! * *quick mode* ([`Config::quick`]): a single backend described by a
//!   `postgres://` URL.
//!
//! In both cases `PGSLUICE_*` environment variables are applied on top
//! ([`apply_env`]), then command-line flags ([`crate::cli`]). Every
//! configuration error names the file, line and key it is about; see
//! [`ConfigError`]. The full list of keys lives in `docs/configuration.md`.

pub(crate) mod load;
mod locate;
mod quick;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

pub use load::{apply_env, env_vars, load_file, parse_str, ConfigError, ENV_PREFIX};

/// Default listen address (PgBouncer's port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6432";
/// Default PostgreSQL server port.
pub const DEFAULT_PORT: u16 = 5432;
/// Smallest accepted `max_message_size`, in bytes.
pub const MIN_MESSAGE_SIZE: usize = 8192;

/// An invalid value for one of the configuration types (pool mode, duration...).
///
/// Returned by the [`FromStr`] implementations of this module; the message is
/// meant for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// How server connections are shared between clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection is assigned to a client for its whole session.
    Session,
    /// A server connection is assigned to a client for one transaction.
    Transaction,
}

impl PoolMode {
    /// The configuration spelling (`"session"` / `"transaction"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PoolMode {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "session" => Ok(PoolMode::Session),
            "transaction" => Ok(PoolMode::Transaction),
            "statement" => Err(InvalidValue(
                "pool mode `statement` is not supported; use `session` or `transaction`".into(),
            )),
            _ => Err(InvalidValue(format!(
                "invalid pool mode `{s}`: expected `session` or `transaction`"
            ))),
        }
    }
}

/// How clients authenticate to pgsluice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// No password is asked for (`"trust"`).
    Trust,
    /// Cleartext password (`"plain"`); only sensible on trusted networks.
    Plain,
    /// PostgreSQL's legacy MD5 scheme (`"md5"`).
    Md5,
    /// SCRAM-SHA-256 (`"scram-sha-256"`), the default.
    ScramSha256,
}

impl AuthType {
    /// The configuration spelling (`"trust"`, `"plain"`, `"md5"`, `"scram-sha-256"`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Trust => "trust",
            AuthType::Plain => "plain",
            AuthType::Md5 => "md5",
            AuthType::ScramSha256 => "scram-sha-256",
        }
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthType {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trust" => Ok(AuthType::Trust),
            "plain" => Ok(AuthType::Plain),
            "md5" => Ok(AuthType::Md5),
            "scram-sha-256" => Ok(AuthType::ScramSha256),
            other @ ("cert" | "hba" | "pam" | "any" | "ldap" | "peer") => Err(InvalidValue(
                format!(
                    "auth type `{other}` is not supported; expected `trust`, `plain`, `md5` or `scram-sha-256`"
                ),
            )),
            _ => Err(InvalidValue(format!(
                "invalid auth type `{s}`: expected `trust`, `plain`, `md5` or `scram-sha-256`"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for AuthType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, "an auth type string")
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`"text"`).
    Text,
    /// One JSON object per line (`"json"`).
    Json,
}

impl LogFormat {
    /// The configuration spelling (`"text"` / `"json"`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(InvalidValue(format!(
                "invalid log format `{s}`: expected `text` or `json`"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, "a log format string")
    }
}

/// A duration setting.
///
/// Durations in config: an integer means seconds; strings "250ms", "30s",
/// "5m", "1h" are accepted; 0 means disabled where the doc says so.
/// A string of digits without a unit (`"30"`) also means seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub std::time::Duration);

impl Secs {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Secs {
        Secs(Duration::from_secs(secs))
    }

    /// A duration in milliseconds.
    pub const fn from_millis(millis: u64) -> Secs {
        Secs(Duration::from_millis(millis))
    }

    /// The wrapped duration.
    pub const fn duration(self) -> Duration {
        self.0
    }

    /// Whether this is zero (which means "disabled" for some settings).
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// `None` when zero ("disabled" / "wait forever"), else the duration.
    pub const fn non_zero(self) -> Option<Duration> {
        if self.0.is_zero() {
            None
        } else {
            Some(self.0)
        }
    }
}

impl From<Secs> for Duration {
    fn from(s: Secs) -> Duration {
        s.0
    }
}

/// Formats as the config syntax: `"30s"` for whole seconds, else `"250ms"`.
impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if self.0.subsec_millis() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{millis}ms")
        }
    }
}

fn duration_error(s: &str) -> InvalidValue {
    InvalidValue(format!(
        "invalid duration `{s}`: expected seconds as an integer, or a number with a unit \
         `ms`, `s`, `m` or `h` (e.g. \"250ms\", \"30s\", \"5m\", \"1h\")"
    ))
}

impl FromStr for Secs {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        if t.starts_with('-') {
            return Err(InvalidValue(format!(
                "invalid duration `{s}`: must not be negative"
            )));
        }
        if digits.is_empty() {
            return Err(duration_error(s));
        }
        let n: u64 = digits.parse().map_err(|_| duration_error(s))?;
        let millis_per_unit: u64 = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            _ => return Err(duration_error(s)),
        };
        n.checked_mul(millis_per_unit)
            .map(Secs::from_millis)
            .ok_or_else(|| InvalidValue(format!("invalid duration `{s}`: too large")))
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds as an integer, or a string like \"250ms\", \"30s\", \"5m\", \"1h\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                u64::try_from(v)
                    .map(Secs::from_secs)
                    .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                Ok(Secs::from_secs(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secs, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Deserializes a string through `FromStr`, turning the parse error into a
/// serde error (so it gets a span in TOML files).
fn from_str_value<'de, D, T>(d: D, what: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = InvalidValue>,
{
    struct V<T>(&'static str, std::marker::PhantomData<T>);
    impl<T: FromStr<Err = InvalidValue>> de::Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(V(what, std::marker::PhantomData))
}

fn de_pool_mode<'de, D: Deserializer<'de>>(d: D) -> Result<PoolMode, D::Error> {
    from_str_value(d, "a pool mode string (\"session\" or \"transaction\")")
}

fn de_opt_pool_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PoolMode>, D::Error> {
    de_pool_mode(d).map(Some)
}

/// Parses a listen address: `IP:PORT`, `[IPv6]:PORT`, `*:PORT` (all IPv4
/// interfaces) or `localhost:PORT` (127.0.0.1).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, InvalidValue> {
    let t = s.trim();
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || {
        InvalidValue(format!(
            "invalid listen address `{s}`: expected IP:PORT, e.g. \"127.0.0.1:6432\", \"[::1]:6432\" or \"*:6432\""
        ))
    };
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    match host {
        "*" | "" => Ok(SocketAddr::from(([0, 0, 0, 0], port))),
        h if h.eq_ignore_ascii_case("localhost") => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        _ => Err(bad()),
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 6432))]
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<SocketAddr>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a listen address string like \"127.0.0.1:6432\" or a list of them")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_listen_addr(v).map(|a| vec![a]).map_err(E::custom)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(parse_listen_addr(&s).map_err(de::Error::custom)?);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The `[general]` table.
    #[serde(default)]
    pub general: General,
    /// The `[databases.<name>]` tables; key = the database name clients use.
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// The `[users.<name>]` tables; key = the user name clients log in with.
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    /// Where it came from (file path), for messages. None for quick mode.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// Process-wide settings: the `[general]` table.
///
/// See `docs/configuration.md` for the meaning of each field.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct General {
    /// Addresses to listen on (key `listen`: a string or a list); default `["127.0.0.1:6432"]`.
    #[serde(deserialize_with = "de_listen")]
    pub listen: Vec<SocketAddr>,
    /// Tokio worker threads; `None` = number of cores.
    pub workers: Option<usize>,
    /// Maximum number of client connections; default 10000.
    pub max_client_conn: usize,
    /// Default pool mode; default transaction.
    #[serde(deserialize_with = "de_pool_mode")]
    pub pool_mode: PoolMode,
    /// Server connections per (database, user) pool; default 20, must be >= 1.
    pub default_pool_size: usize,
    /// Server connections kept open per pool even when idle; default 0.
    pub min_pool_size: usize,
    /// How long a client may wait for a server connection; default 120s; 0 = wait forever.
    pub query_wait_timeout: Secs,
    /// Timeout for connecting and logging in to a server; default 15s; must be > 0.
    pub server_connect_timeout: Secs,
    /// Close server connections idle for longer than this; default 600s; 0 = disabled.
    pub server_idle_timeout: Secs,
    /// Close server connections older than this once released; default 3600s; 0 = disabled.
    pub server_lifetime: Secs,
    /// Query run when a server connection is released; default `"DISCARD ALL"`; `""` = none.
    pub server_reset_query: String,
    /// Run the reset query in transaction mode too; default false (session mode only).
    pub server_reset_query_always: bool,
    /// How clients authenticate; default scram-sha-256.
    pub auth_type: AuthType,
    /// Time a client has to finish the startup/login phase; default 60s; must be > 0.
    pub client_login_timeout: Secs,
    /// How long SIGTERM waits for in-flight transactions; default 30s.
    pub shutdown_timeout: Secs,
    /// A tracing `EnvFilter` directive; default `"info"`; `RUST_LOG` wins if set.
    pub log_level: String,
    /// Log output format; default text.
    pub log_format: LogFormat,
    /// Largest protocol message accepted, in bytes; default 1 GiB; min 8192.
    pub max_message_size: usize,
    /// Reserved (parsed, not used yet); default false.
    pub application_name_add_host: bool,
    /// Users allowed every admin console command (database `pgbouncer`); default empty.
    pub admin_users: Vec<String>,
    /// Users allowed the admin console's SHOW commands only; default empty.
    pub stats_users: Vec<String>,
    /// Address of the Prometheus `/metrics` HTTP endpoint; default none (disabled).
    pub metrics_listen: Option<SocketAddr>,
    /// Period of the averages in SHOW STATS (PgBouncer's `stats_period`); default 60s.
    pub stats_period: Secs,
}

impl Default for General {
    fn default() -> Self {
        General {
            listen: default_listen(),
            workers: None,
            max_client_conn: 10_000,
            pool_mode: PoolMode::Transaction,
            default_pool_size: 20,
            min_pool_size: 0,
            query_wait_timeout: Secs::from_secs(120),
            server_connect_timeout: Secs::from_secs(15),
            server_idle_timeout: Secs::from_secs(600),
            server_lifetime: Secs::from_secs(3600),
            server_reset_query: "DISCARD ALL".to_owned(),
            server_reset_query_always: false,
            auth_type: AuthType::ScramSha256,
            client_login_timeout: Secs::from_secs(60),
            shutdown_timeout: Secs::from_secs(30),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            max_message_size: 1 << 30,
            application_name_add_host: false,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            metrics_listen: None,
            stats_period: Secs::from_secs(60),
        }
    }
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

/// One backend database: a `[databases.<name>]` table.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Server host: name or IP, or an absolute path = unix socket directory. Required.
    pub host: String,
    /// Server port; default 5432.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Server-side database name; default = the table's key.
    pub dbname: Option<String>,
    /// If set, every server connection logs in as this user (forced user).
    pub user: Option<String>,
    /// Password for the forced user. Never logged.
    pub password: Option<String>,
    /// Pool size; default `general.default_pool_size`.
    pub pool_size: Option<usize>,
    /// Minimum pool size; default `general.min_pool_size`.
    pub min_pool_size: Option<usize>,
    /// Pool mode; default `general.pool_mode`.
    #[serde(default, deserialize_with = "de_opt_pool_mode")]
    pub pool_mode: Option<PoolMode>,
    /// `application_name` sent to the server at connect time.
    pub application_name: Option<String>,
}

impl DatabaseConfig {
    /// A database entry for `host` with every optional setting unset.
    pub fn new(host: impl Into<String>) -> DatabaseConfig {
        DatabaseConfig {
            host: host.into(),
            port: DEFAULT_PORT,
            dbname: None,
            user: None,
            password: None,
            pool_size: None,
            min_pool_size: None,
            pool_mode: None,
            application_name: None,
        }
    }

    /// Whether `host` is a unix socket directory (an absolute path).
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("pool_size", &self.pool_size)
            .field("min_pool_size", &self.min_pool_size)
            .field("pool_mode", &self.pool_mode)
            .field("application_name", &self.application_name)
            .finish()
    }
}

/// One client user: a `[users.<name>]` table.
#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Plaintext, `"md5<hex>"` or `"SCRAM-SHA-256$..."`. Never logged (Debug redacts it).
    pub password: Option<String>,
    /// Pool mode for this user's pools; overrides the database's and general's.
    #[serde(default, deserialize_with = "de_opt_pool_mode")]
    pub pool_mode: Option<PoolMode>,
    /// Pool size for this user's pools; overrides the database's and general's.
    pub pool_size: Option<usize>,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("pool_mode", &self.pool_mode)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// What kind of secret a configured password is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordKind {
    /// A cleartext password.
    Plain,
    /// `md5` followed by 32 hex digits: md5(password || user).
    Md5,
    /// A `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` verifier.
    ScramSha256,
}

impl PasswordKind {
    /// Classifies a configured password the way PostgreSQL does.
    pub fn of(password: &str) -> PasswordKind {
        let b = password.as_bytes();
        if b.len() == 35 && password.starts_with("md5") && b[3..].iter().all(u8::is_ascii_hexdigit)
        {
            PasswordKind::Md5
        } else if password.starts_with("SCRAM-SHA-256$") {
            PasswordKind::ScramSha256
        } else {
            PasswordKind::Plain
        }
    }
}

/// A validation failure, before it is located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    /// Candidate keys to blame, best first (full paths like `["general", "min_pool_size"]`).
    pub(crate) keys: Vec<Vec<String>>,
    pub(crate) message: String,
}

fn path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

fn issue(keys: Vec<Vec<String>>, message: impl Into<String>) -> Issue {
    Issue {
        keys,
        message: message.into(),
    }
}

const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

impl Config {
    /// Quick mode: one backend from a postgres:// URL
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`, also `postgresql://`,
    /// percent-decoded, port default 5432, db default = user; query params
    /// ignored with a warning). Produces: `databases[DB] = {host, port,
    /// dbname: Some(DB)}`, `users[USER] = {password: Some(PASSWORD)}`,
    /// general defaults with the default listen address.
    ///
    /// The host may be `[IPv6]`, or a percent-encoded absolute path
    /// (`%2Fvar%2Frun%2Fpostgresql`) for a unix socket directory.
    pub fn quick(backend_url: &str) -> Result<Config, ConfigError> {
        let url = quick::parse_url(backend_url).map_err(ConfigError::Invalid)?;
        if !url.ignored_params.is_empty() {
            tracing::warn!(
                params = %url.ignored_params.join(","),
                "query parameters in the backend URL are ignored"
            );
        }
        let mut cfg = Config::default();
        let db = url.dbname.clone().unwrap_or_else(|| url.user.clone());
        let mut dbc = DatabaseConfig::new(url.host);
        dbc.port = url.port;
        dbc.dbname = Some(db.clone());
        cfg.databases.insert(db, dbc);
        cfg.users.insert(
            url.user,
            UserConfig {
                password: url.password,
                ..UserConfig::default()
            },
        );
        cfg.validate()?;
        Ok(cfg)
    }

    /// Effective pool size for a (database, user) pair: the user's
    /// `pool_size`, else the database's, else `general.default_pool_size`.
    pub fn pool_size(&self, db: &str, user: &str) -> usize {
        self.users
            .get(user)
            .and_then(|u| u.pool_size)
            .or_else(|| self.databases.get(db).and_then(|d| d.pool_size))
            .unwrap_or(self.general.default_pool_size)
    }

    /// Minimum pool size for a database: its `min_pool_size`, else
    /// `general.min_pool_size`. Not clamped; see [`Config::effective_min_pool_size`].
    pub fn min_pool_size(&self, db: &str) -> usize {
        self.databases
            .get(db)
            .and_then(|d| d.min_pool_size)
            .unwrap_or(self.general.min_pool_size)
    }

    /// [`Config::min_pool_size`] clamped to [`Config::pool_size`] for the pair
    /// (a user's `pool_size` may be smaller than the database's minimum).
    pub fn effective_min_pool_size(&self, db: &str, user: &str) -> usize {
        self.min_pool_size(db).min(self.pool_size(db, user))
    }

    /// Effective pool mode: the user's, then the database's, then general's.
    pub fn pool_mode(&self, db: &str, user: &str) -> PoolMode {
        self.users
            .get(user)
            .and_then(|u| u.pool_mode)
            .or_else(|| self.databases.get(db).and_then(|d| d.pool_mode))
            .unwrap_or(self.general.pool_mode)
    }

    /// The server-side database name for client database `db` (its
    /// `dbname`, else `db` itself).
    pub fn server_dbname<'a>(&'a self, db: &'a str) -> &'a str {
        self.databases
            .get(db)
            .and_then(|d| d.dbname.as_deref())
            .unwrap_or(db)
    }

    /// Validates cross-field rules (min <= size, size >= 1, listen non-empty,
    /// database host non-empty...). [`load_file`] and [`parse_str`] call it
    /// and report the offending line; called directly, the error is a
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|i| {
            let key = i.keys.first().map(|k| k.join(".")).unwrap_or_default();
            ConfigError::Invalid(format!("key `{key}`: {}", i.message))
        })
    }

    /// Non-fatal remarks about the configuration, for logging at startup
    /// (e.g. a user without a password while `auth_type` requires one).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.databases.is_empty() {
            out.push("no databases are configured: every client will be refused".to_owned());
        }
        let auth = self.general.auth_type;
        if auth == AuthType::Plain {
            out.push("auth_type = \"plain\" sends cleartext passwords over the network".to_owned());
        }
        for (name, user) in &self.users {
            match (&user.password, auth) {
                (_, AuthType::Trust) => {}
                (None, _) => out.push(format!(
                    "user `{name}` has no password: it cannot log in with auth_type = \"{auth}\""
                )),
                (Some(p), AuthType::ScramSha256) if PasswordKind::of(p) == PasswordKind::Md5 => {
                    out.push(format!(
                        "user `{name}` has an md5 password hash: it cannot log in with auth_type = \"scram-sha-256\""
                    ))
                }
                (Some(p), AuthType::Md5 | AuthType::Plain)
                    if PasswordKind::of(p) == PasswordKind::ScramSha256 =>
                {
                    out.push(format!(
                        "user `{name}` has a SCRAM verifier: it cannot log in with auth_type = \"{auth}\""
                    ))
                }
                _ => {}
            }
        }
        out
    }

    /// The cross-field checks, with the keys to blame.
    pub(crate) fn check(&self) -> Result<(), Issue> {
        let g = &self.general;
        let gk = |k: &str| path(&["general", k]);
        if g.listen.is_empty() {
            return Err(issue(
                vec![gk("listen")],
                "at least one listen address is needed",
            ));
        }
        for (i, a) in g.listen.iter().enumerate() {
            if g.listen[..i].contains(a) {
                return Err(issue(
                    vec![gk("listen")],
                    format!("address {a} is listed twice"),
                ));
            }
        }
        if g.workers == Some(0) {
            return Err(issue(
                vec![gk("workers")],
                "must be >= 1 (leave it out for one worker per core)",
            ));
        }
        if g.max_client_conn == 0 {
            return Err(issue(vec![gk("max_client_conn")], "must be >= 1"));
        }
        if g.default_pool_size == 0 {
            return Err(issue(vec![gk("default_pool_size")], "must be >= 1"));
        }
        if g.min_pool_size > g.default_pool_size {
            return Err(issue(
                vec![gk("min_pool_size"), gk("default_pool_size")],
                format!(
                    "min_pool_size ({}) must not exceed default_pool_size ({})",
                    g.min_pool_size, g.default_pool_size
                ),
            ));
        }
        if g.server_connect_timeout.is_zero() {
            return Err(issue(vec![gk("server_connect_timeout")], "must be > 0"));
        }
        if g.client_login_timeout.is_zero() {
            return Err(issue(vec![gk("client_login_timeout")], "must be > 0"));
        }
        if g.max_message_size < MIN_MESSAGE_SIZE {
            return Err(issue(
                vec![gk("max_message_size")],
                format!("must be at least {MIN_MESSAGE_SIZE} bytes"),
            ));
        }
        if g.max_message_size > i32::MAX as usize {
            return Err(issue(
                vec![gk("max_message_size")],
                format!("must be at most {} bytes (protocol limit)", i32::MAX),
            ));
        }
        check_log_level(&g.log_level).map_err(|m| issue(vec![gk("log_level")], m))?;

        for (name, d) in &self.databases {
            let dk = |k: &str| path(&["databases", name, k]);
            if name.is_empty() {
                return Err(issue(
                    vec![path(&["databases", name])],
                    "database name must not be empty",
                ));
            }
            if d.host.trim().is_empty() {
                return Err(issue(vec![dk("host")], "must not be empty"));
            }
            if d.host.contains(char::is_whitespace) || d.host.contains(',') {
                return Err(issue(
                    vec![dk("host")],
                    format!(
                        "`{}` is not a single host name, IP address or socket directory",
                        d.host
                    ),
                ));
            }
            if d.port == 0 {
                return Err(issue(vec![dk("port")], "must be between 1 and 65535"));
            }
            if d.dbname.as_deref() == Some("") {
                return Err(issue(
                    vec![dk("dbname")],
                    "must not be empty (leave it out to use the key)",
                ));
            }
            if d.user.as_deref() == Some("") {
                return Err(issue(vec![dk("user")], "must not be empty"));
            }
            if d.password.is_some() && d.user.is_none() {
                return Err(issue(
                    vec![dk("password")],
                    "a database password is only used together with `user` (the forced user); \
                     put client passwords under [users.<name>]",
                ));
            }
            if d.pool_size == Some(0) {
                return Err(issue(vec![dk("pool_size")], "must be >= 1"));
            }
            let size = d.pool_size.unwrap_or(g.default_pool_size);
            let min = d.min_pool_size.unwrap_or(g.min_pool_size);
            if min > size {
                let mut keys = vec![dk("min_pool_size"), dk("pool_size")];
                if d.min_pool_size.is_none() {
                    keys.push(gk("min_pool_size"));
                }
                return Err(issue(
                    keys,
                    format!("min_pool_size ({min}) must not exceed pool_size ({size}) for database `{name}`"),
                ));
            }
        }
        for (name, u) in &self.users {
            let uk = |k: &str| path(&["users", name, k]);
            if name.is_empty() {
                return Err(issue(
                    vec![path(&["users", name])],
                    "user name must not be empty",
                ));
            }
            if u.pool_size == Some(0) {
                return Err(issue(vec![uk("pool_size")], "must be >= 1"));
            }
            if let Some(p) = &u.password {
                if PasswordKind::of(p) == PasswordKind::ScramSha256 && !scram_verifier_shape_ok(p) {
                    return Err(issue(
                        vec![uk("password")],
                        "malformed SCRAM verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Light structural check of `SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`.
fn scram_verifier_shape_ok(p: &str) -> bool {
    let Some(rest) = p.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((iter_salt, keys)) = rest.split_once('$') else {
        return false;
    };
    let Some((iter, salt)) = iter_salt.split_once(':') else {
        return false;
    };
    let Some((stored, server)) = keys.split_once(':') else {
        return false;
    };
    iter.parse::<u32>().is_ok_and(|n| n > 0)
        && !salt.is_empty()
        && !stored.is_empty()
        && !server.is_empty()
}

fn check_log_level(level: &str) -> Result<(), String> {
    let t = level.trim();
    if t.is_empty() {
        return Err("must not be empty (e.g. \"info\")".to_owned());
    }
    if !t.contains(['=', ',', ':', '[']) && !LOG_LEVELS.contains(&t.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "`{t}` is not a log level: expected one of trace, debug, info, warn, error, off, \
             or a filter directive like \"info,pgsluice=debug\""
        ));
    }
    tracing_subscriber::EnvFilter::try_new(t)
        .map(|_| ())
        .map_err(|e| format!("invalid filter directive `{t}`: {e}"))
}

#[cfg(test)]
mod tests;
