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

mod access;
mod check;
mod connstr;
mod format;
mod general;
pub mod hba;
mod ini;
pub(crate) mod load;
mod locate;
mod log_settings;
pub mod os_group;
mod peers;
mod pgbouncer;
mod pgbouncer_hosts;
pub mod pgbouncer_keys;
mod pgbouncer_settings;
pub mod pgbouncer_show;
mod quick;
mod replicas;
mod shards;
mod table;
mod types;
mod userlist;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

pub use access::{IpNet, Token};
pub(crate) use check::Issue;
pub use format::ConfigFormat;
pub use general::{General, ALWAYS_IGNORED_STARTUP_PARAMETERS, DEFAULT_AUTH_QUERY};
pub use load::{apply_env, env_vars, load_file, load_file_as, parse_str, ConfigError, ENV_PREFIX};
pub use log_settings::SyslogFacility;
pub use peers::{PeerConfig, MAX_PEER_ID};
pub use replicas::{
    defaults as replica_defaults, HostConfig, HostRole, LoadBalance, PrimaryReads, ReplicaLag,
    TargetSessionAttrs,
};
pub use shards::{fold_qualified, ShardConfig, ShardedTableConfig};
pub use table::to_redacted_toml;
use types::{de_opt_pool_mode, default_port};
pub use types::{
    parse_listen_addr, AuthType, InvalidValue, LogFormat, PoolMode, Secs, TlsMode, DEFAULT_LISTEN,
    DEFAULT_PORT, MIN_MESSAGE_SIZE,
};

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
    /// The `[peers.<peer_id>]` tables: the other processes of a peered group
    /// (PgBouncer's `[peers]`), to which cancel requests for their clients go.
    #[serde(default)]
    pub peers: BTreeMap<String, PeerConfig>,
    /// Where it came from (file path), for messages. None for quick mode.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Remarks made while loading (e.g. pgbouncer.ini keys that are parsed but
    /// not implemented yet, with file and line); part of [`Config::warnings`].
    #[serde(skip)]
    pub notices: Vec<String>,
    /// The rules of `general.auth_hba_file`, read at load time when `auth_type = hba`
    /// (and at every reload).
    #[serde(skip)]
    pub hba: Option<Arc<hba::HbaRules>>,
    /// The `[pgbouncer]` keys of a pgbouncer.ini as written (key to value), for SHOW
    /// CONFIG: the only record of the keys pgsluice parses without implementing.
    #[serde(skip)]
    pub pgbouncer_extra: BTreeMap<String, String>,
}

/// The effective `auth_user`, `auth_query` and `auth_dbname` of a database
/// ([`Config::auth_lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthLookup {
    /// The user the lookup connection logs in as.
    pub user: String,
    /// The query, with the user name as `$1`.
    pub query: String,
    /// The pgsluice database (a `databases` key) the lookup connection goes to.
    pub database: String,
}

/// One backend database: a `[databases.<name>]` table.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Server host: name or IP, or an absolute path = unix socket directory; a
    /// comma-separated list for several hosts (PgBouncer's form). Required unless
    /// `hosts` is given.
    #[serde(default)]
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
    /// Overrides `general.auth_user` for this database.
    pub auth_user: Option<String>,
    /// Overrides `general.auth_query` for this database.
    pub auth_query: Option<String>,
    /// Overrides `general.auth_dbname` for this database.
    pub auth_dbname: Option<String>,
    /// Extra connections for this database's pools after `reserve_pool_timeout`
    /// (PgBouncer `reserve_pool`); default `general.reserve_pool_size`.
    pub reserve_pool: Option<usize>,
    /// Maximum server connections for this database, all pools together; default
    /// `general.max_db_connections` (0 = unlimited).
    pub max_db_connections: Option<usize>,
    /// Maximum client connections to this database; default
    /// `general.max_db_client_connections` (0 = unlimited).
    pub max_db_client_connections: Option<usize>,
    /// Query run on each new server connection (not implemented yet).
    pub connect_query: Option<String>,
    /// `client_encoding` asked from the server (not implemented yet).
    pub client_encoding: Option<String>,
    /// `datestyle` asked from the server (not implemented yet).
    pub datestyle: Option<String>,
    /// `timezone` asked from the server (not implemented yet).
    pub timezone: Option<String>,
    /// The hosts of a replicated database, each with an optional role (instead of
    /// `host`).
    pub hosts: Option<Vec<HostConfig>>,
    /// Reads to replicas, writes to the primary (classified with PostgreSQL's parser).
    #[serde(default)]
    pub read_write_split: bool,
    /// How checkouts spread over eligible hosts; default round robin.
    pub load_balance: Option<LoadBalance>,
    /// Which hosts serve the database when reads and writes are not split.
    pub target_session_attrs: Option<TargetSessionAttrs>,
    /// A replica further behind than this serves no reads.
    pub max_replica_lag: Option<ReplicaLag>,
    /// Between two health checks of a host.
    pub health_check_interval: Option<Secs>,
    /// How long one health check may take.
    pub health_check_timeout: Option<Secs>,
    /// How long a failed host is left out at first.
    pub ban_time: Option<Secs>,
    /// After a client's write, its reads stay on the primary this long.
    pub read_your_writes: Option<Secs>,
    /// Whether the primary serves reads of a split database.
    pub primary_reads: Option<PrimaryReads>,
    /// Functions that write, beyond the built-in list (nextval, setval, ...).
    #[serde(default)]
    pub write_functions: Vec<String>,
    /// The shards of a sharded database (instead of `host`/`hosts`).
    pub shards: Option<Vec<ShardConfig>>,
    /// The tables split over the shards.
    #[serde(default)]
    pub sharded_tables: Vec<ShardedTableConfig>,
    /// Cross-shard write transactions by two-phase commit (default off: refused).
    #[serde(default)]
    pub two_phase_commit: bool,
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
            auth_user: None,
            auth_query: None,
            auth_dbname: None,
            reserve_pool: None,
            max_db_connections: None,
            max_db_client_connections: None,
            connect_query: None,
            client_encoding: None,
            datestyle: None,
            timezone: None,
            hosts: None,
            read_write_split: false,
            load_balance: None,
            target_session_attrs: None,
            max_replica_lag: None,
            health_check_interval: None,
            health_check_timeout: None,
            ban_time: None,
            read_your_writes: None,
            primary_reads: None,
            write_functions: Vec::new(),
            shards: None,
            sharded_tables: Vec::new(),
            two_phase_commit: false,
        }
    }

    /// Every host of the database, in configuration order: `hosts`, else the
    /// comma-separated `host` list, each with `port`.
    pub fn host_list(&self) -> Vec<HostConfig> {
        match &self.hosts {
            Some(h) => h.clone(),
            None => self
                .host
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| HostConfig {
                    host: h.to_owned(),
                    port: self.port,
                    role: HostRole::Auto,
                })
                .collect(),
        }
    }

    /// Whether the database is served by several hosts (or asks for replica
    /// routing): the router then checks each host's health and role.
    pub fn is_replicated(&self) -> bool {
        self.read_write_split || self.hosts.is_some() || self.host.contains(',')
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
            .field("auth_user", &self.auth_user)
            .field("auth_query", &self.auth_query)
            .field("auth_dbname", &self.auth_dbname)
            .field("reserve_pool", &self.reserve_pool)
            .field("max_db_connections", &self.max_db_connections)
            .field("max_db_client_connections", &self.max_db_client_connections)
            .field("connect_query", &self.connect_query)
            .field("client_encoding", &self.client_encoding)
            .field("datestyle", &self.datestyle)
            .field("timezone", &self.timezone)
            .field("hosts", &self.hosts)
            .field("read_write_split", &self.read_write_split)
            .field("load_balance", &self.load_balance)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("max_replica_lag", &self.max_replica_lag)
            .field("health_check_interval", &self.health_check_interval)
            .field("health_check_timeout", &self.health_check_timeout)
            .field("ban_time", &self.ban_time)
            .field("read_your_writes", &self.read_your_writes)
            .field("primary_reads", &self.primary_reads)
            .field("write_functions", &self.write_functions)
            .field("shards", &self.shards)
            .field("sharded_tables", &self.sharded_tables)
            .field("two_phase_commit", &self.two_phase_commit)
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
    /// Reserve pool size for this user's pools; overrides the database's and general's.
    pub reserve_pool_size: Option<usize>,
    /// Maximum server connections for this user, all databases together; default
    /// `general.max_user_connections` (0 = unlimited).
    pub max_user_connections: Option<usize>,
    /// Maximum client connections logged in as this user, all databases together;
    /// default `general.max_user_client_connections` (0 = unlimited).
    pub max_user_client_connections: Option<usize>,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("pool_mode", &self.pool_mode)
            .field("pool_size", &self.pool_size)
            .field("reserve_pool_size", &self.reserve_pool_size)
            .field("max_user_connections", &self.max_user_connections)
            .field(
                "max_user_client_connections",
                &self.max_user_client_connections,
            )
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

impl Config {
    /// Quick mode: one backend from a postgres:// URL
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`, also `postgresql://`,
    /// percent-decoded, port default 5432, db default = user). Produces:
    /// `databases[DB] = {host, port, dbname: Some(DB)}`, `users[USER] =
    /// {password: Some(PASSWORD)}`, general defaults with the default listen address.
    ///
    /// The host may be `[IPv6]`, or a percent-encoded absolute path
    /// (`%2Fvar%2Frun%2Fpostgresql`) for a unix socket directory. Several hosts
    /// (`h1:5432,h2:5433`, libpq's form) give `hosts` instead; the query parameters
    /// `target_session_attrs` and `load_balance_hosts` (`disable`, `random`) set the
    /// database's; other query parameters are ignored with a warning.
    pub fn quick(backend_url: &str) -> Result<Config, ConfigError> {
        quick::config(backend_url)
    }

    /// The name of the fallback database entry (PgBouncer's `* = ...`).
    pub const FALLBACK_DATABASE: &'static str = "*";

    /// The entry serving client database `db`: its own, else the fallback
    /// (`*`) entry as is (without the `dbname` adjustment of [`Config::database`]).
    fn db_entry(&self, db: &str) -> Option<&DatabaseConfig> {
        self.databases
            .get(db)
            .or_else(|| self.databases.get(Self::FALLBACK_DATABASE))
    }

    /// The database configuration for client database `name`: its own
    /// `[databases.<name>]` entry, else the fallback entry `*` (PgBouncer's
    /// `* = host=...`) with `dbname` defaulting to `name`, else `None`.
    pub fn database(&self, name: &str) -> Option<Cow<'_, DatabaseConfig>> {
        if let Some(d) = self.databases.get(name) {
            return Some(Cow::Borrowed(d));
        }
        let fallback = self.databases.get(Self::FALLBACK_DATABASE)?;
        if name.is_empty() {
            return None;
        }
        let mut d = fallback.clone();
        if d.dbname.is_none() {
            d.dbname = Some(name.to_owned());
        }
        Some(Cow::Owned(d))
    }

    /// How users missing from `users` are looked up for clients of `database`, when
    /// an `auth_user` is set (the database's settings win over `general`'s).
    pub fn auth_lookup(&self, database: &str) -> Option<AuthLookup> {
        let db = self.database(database)?;
        let g = &self.general;
        let user = db.auth_user.clone().or_else(|| g.auth_user.clone())?;
        Some(AuthLookup {
            user,
            query: db
                .auth_query
                .clone()
                .unwrap_or_else(|| g.auth_query.clone()),
            database: db
                .auth_dbname
                .clone()
                .or_else(|| g.auth_dbname.clone())
                .unwrap_or_else(|| database.to_owned()),
        })
    }

    /// Effective pool size for a (database, user) pair: the user's
    /// `pool_size`, else the database's, else `general.default_pool_size`.
    pub fn pool_size(&self, db: &str, user: &str) -> usize {
        self.users
            .get(user)
            .and_then(|u| u.pool_size)
            .or_else(|| self.db_entry(db).and_then(|d| d.pool_size))
            .unwrap_or(self.general.default_pool_size)
    }

    /// Minimum pool size for a database: its `min_pool_size`, else
    /// `general.min_pool_size`. Not clamped; see [`Config::effective_min_pool_size`].
    pub fn min_pool_size(&self, db: &str) -> usize {
        self.db_entry(db)
            .and_then(|d| d.min_pool_size)
            .unwrap_or(self.general.min_pool_size)
    }

    /// [`Config::min_pool_size`] clamped to [`Config::pool_size`] for the pair
    /// (a user's `pool_size` may be smaller than the database's minimum).
    pub fn effective_min_pool_size(&self, db: &str, user: &str) -> usize {
        self.min_pool_size(db).min(self.pool_size(db, user))
    }

    /// Reserve pool size for a (database, user) pair: the user's
    /// `reserve_pool_size`, else the database's `reserve_pool`, else general's.
    pub fn reserve_pool_size(&self, db: &str, user: &str) -> usize {
        self.users
            .get(user)
            .and_then(|u| u.reserve_pool_size)
            .or_else(|| self.db_entry(db).and_then(|d| d.reserve_pool))
            .unwrap_or(self.general.reserve_pool_size)
    }

    /// Server connection cap of database `db` (0 = unlimited): its own
    /// `max_db_connections`, else general's.
    pub fn max_db_connections(&self, db: &str) -> usize {
        self.db_entry(db)
            .and_then(|d| d.max_db_connections)
            .unwrap_or(self.general.max_db_connections)
    }

    /// Client connection cap of database `db` (0 = unlimited): its own
    /// `max_db_client_connections`, else general's.
    pub fn max_db_client_connections(&self, db: &str) -> usize {
        self.db_entry(db)
            .and_then(|d| d.max_db_client_connections)
            .unwrap_or(self.general.max_db_client_connections)
    }

    /// Server connection cap of (server) user `user` (0 = unlimited): the user's
    /// `max_user_connections`, else general's.
    pub fn max_user_connections(&self, user: &str) -> usize {
        self.users
            .get(user)
            .and_then(|u| u.max_user_connections)
            .unwrap_or(self.general.max_user_connections)
    }

    /// Client connection cap of (client-side) user `user` (0 = unlimited): the user's
    /// `max_user_client_connections`, else general's.
    pub fn max_user_client_connections(&self, user: &str) -> usize {
        self.users
            .get(user)
            .and_then(|u| u.max_user_client_connections)
            .unwrap_or(self.general.max_user_client_connections)
    }

    /// Effective pool mode: the user's, then the database's, then general's.
    pub fn pool_mode(&self, db: &str, user: &str) -> PoolMode {
        self.users
            .get(user)
            .and_then(|u| u.pool_mode)
            .or_else(|| self.db_entry(db).and_then(|d| d.pool_mode))
            .unwrap_or(self.general.pool_mode)
    }

    /// The server-side database name for client database `db` (its
    /// `dbname`, else `db` itself; through the fallback entry as well).
    pub fn server_dbname<'a>(&'a self, db: &'a str) -> &'a str {
        self.db_entry(db)
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

    /// Database and user settings that ask for something pgsluice does not
    /// implement yet: `(key path, explanation)`.
    pub fn unimplemented_entries(&self) -> Vec<(Vec<String>, String)> {
        let mut out = Vec::new();
        let msg = "not implemented yet; the setting is ignored";
        for (name, d) in &self.databases {
            let set = [
                ("connect_query", d.connect_query.is_some()),
                ("client_encoding", d.client_encoding.is_some()),
                ("datestyle", d.datestyle.is_some()),
                ("timezone", d.timezone.is_some()),
            ];
            for (param, _) in set.iter().filter(|(_, s)| *s) {
                out.push((check::path(&["databases", name, param]), msg.to_owned()));
            }
        }
        out
    }

    /// Non-fatal remarks about the configuration, for logging at startup
    /// (e.g. a user without a password while `auth_type` requires one).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.notices.clone();
        let noted = |out: &[String], tag: &str| out.iter().any(|w| w.contains(tag));
        for (key, what) in self.general.unimplemented() {
            if !noted(&out, &format!("pgbouncer.{key}`")) {
                out.push(format!("key `general.{key}`: {what}"));
            }
        }
        for (path, message) in self.unimplemented_entries() {
            let key = path.join(".");
            if !noted(&out, &format!("{key}`")) {
                out.push(format!("key `{key}`: {message}"));
            }
        }
        if self.databases.is_empty() {
            out.push("no databases are configured: every client will be refused".to_owned());
        }
        let auth = self.general.auth_type;
        if auth != AuthType::Hba && self.general.auth_hba_file.is_some() {
            out.push(format!(
                "key `general.auth_hba_file`: not used with auth_type = \"{auth}\" (only with \"hba\")"
            ));
        }
        if auth != AuthType::Hba && self.general.auth_ident_file.is_some() {
            out.push(format!(
                "key `general.auth_ident_file`: not used with auth_type = \"{auth}\" (only with \"hba\")"
            ));
        }
        out.extend(self.auth_query_warnings());
        if let Some(hba) = &self.hba {
            for (line, map) in hba.undefined_maps() {
                out.push(format!(
                    "{}:{line}: map={map}: auth_ident_file does not define this map, so every \
                     login through this rule is refused",
                    hba.file
                ));
            }
        }
        let verifies = matches!(
            self.general.client_tls_sslmode,
            TlsMode::VerifyCa | TlsMode::VerifyFull
        );
        for r in self
            .hba
            .iter()
            .flat_map(|h| h.rules.iter().map(move |r| (h, r)))
        {
            if r.1.method == hba::HbaMethod::Cert && !verifies {
                out.push(format!(
                    "{}:{}: `cert` rule: client certificates are not asked for \
                     (client_tls_sslmode is not verify-ca or verify-full), so it never succeeds",
                    r.0.file, r.1.line
                ));
            }
        }
        if auth == AuthType::Plain {
            out.push("auth_type = \"plain\" sends cleartext passwords over the network".to_owned());
        }
        for (name, user) in &self.users {
            match (&user.password, auth) {
                // With hba, whether a password is needed depends on the rule.
                (_, AuthType::Trust | AuthType::Cert | AuthType::Hba) => {}
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
}

#[cfg(test)]
mod pgbouncer_tests;
#[cfg(test)]
mod replicas_tests;
#[cfg(test)]
mod tests;
