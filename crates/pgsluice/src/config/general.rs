//! The `[general]` table: process-wide settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::types::{de_listen, de_octal_mode, de_pool_mode, de_string_list, default_listen};
use super::{AuthType, LogFormat, PoolMode, Secs, SyslogFacility, TlsMode};

/// pgsluice's default `auth_query`: PgBouncer's, with every name schema-qualified and
/// the comparison operator spelled `OPERATOR(pg_catalog.=)`, so that nothing on the
/// lookup connection's `search_path` can take part (the lesson of CVE-2025-12819).
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < pg_catalog.now() \
     THEN NULL ELSE rolpassword END FROM pg_catalog.pg_authid \
     WHERE rolname OPERATOR(pg_catalog.=) $1 AND rolcanlogin";

/// Process-wide settings: the `[general]` table.
///
/// See `docs/configuration.md` for the meaning of each field.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct General {
    /// Addresses to listen on (key `listen`: a string or a list); default `["127.0.0.1:6432"]`.
    #[serde(deserialize_with = "de_listen")]
    pub listen: Vec<SocketAddr>,
    /// Tokio worker threads; `None` = half the cores, at least one
    /// ([`General::worker_threads`]).
    pub workers: Option<usize>,
    /// Threads of pgsluice's own event loop that run logged-in plain clients and
    /// relay their transactions ([`crate::lane`]); `None` = one per worker, 0 = none
    /// (everything on tokio's workers). See [`General::relay_lanes`].
    pub relay_lanes: Option<usize>,
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
    /// A client waiting this long for a server connection gets a NOTICE saying it is
    /// queued; default 0 = never (5 s in a pgbouncer.ini, as in PgBouncer).
    pub query_wait_notify: Secs,
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

    // PgBouncer settings. Each one's status (implemented, or parsed and warned
    // about) is in docs/pgbouncer-compat.md and `General::unimplemented`.
    /// Users allowed to run every admin console command (`admin_users`); default empty.
    #[serde(deserialize_with = "de_string_list")]
    pub admin_users: Vec<String>,
    /// Users allowed to run the read-only admin console commands (`stats_users`); default empty.
    #[serde(deserialize_with = "de_string_list")]
    pub stats_users: Vec<String>,
    /// Address of the Prometheus `/metrics` HTTP endpoint (pgsluice's own key); default none.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// A token every `metrics_listen` request must carry (`Authorization: Bearer <token>`
    /// or `?token=<token>`), else 401 (pgsluice's own key); default none (empty = none).
    pub metrics_auth_token: Option<super::Token>,
    /// Client addresses or networks `metrics_listen` answers, others get 403 (pgsluice's
    /// own key); default empty = every address.
    #[serde(deserialize_with = "super::access::de_net_list")]
    pub metrics_allow: Vec<super::IpNet>,
    /// A userlist.txt-format file of user names and secrets, merged into `users` at load time.
    pub auth_file: Option<PathBuf>,
    /// A pg_hba.conf-style file of rules choosing the method per connection, read when
    /// `auth_type = hba`; default none.
    pub auth_hba_file: Option<PathBuf>,
    /// A pg_ident.conf-style file of the user name maps that `map=` options of
    /// `auth_hba_file` name, read with it; default none.
    pub auth_ident_file: Option<PathBuf>,
    /// User whose connection runs `auth_query` for users missing from `users`; default none.
    pub auth_user: Option<String>,
    /// Query returning (user name, secret) for a user name `$1`; default
    /// [`DEFAULT_AUTH_QUERY`].
    pub auth_query: String,
    /// Database `auth_query` runs in; default: the database the client asked for.
    pub auth_dbname: Option<String>,
    /// How long a user that `auth_query` did not find is remembered (its logins fail
    /// without running the query again); default 5s; 0 = not remembered (pgsluice's
    /// own key).
    pub auth_query_miss_ttl: Secs,
    /// Directory of the listening unix socket (`unix_socket_dir`); `None` = not set,
    /// `Some("")` = unix sockets disabled. Also the server socket directory for
    /// pgbouncer.ini databases without `host`.
    pub unix_socket_dir: Option<String>,
    /// Mode of the listening unix socket; default 0o777.
    #[serde(deserialize_with = "de_octal_mode")]
    pub unix_socket_mode: u32,
    /// Group given to the listening unix socket after it is bound (a name, or a
    /// numeric id); default none: the process's group.
    pub unix_socket_group: Option<String>,
    /// Startup parameters accepted and ignored (`ignore_startup_parameters`); default empty.
    #[serde(deserialize_with = "de_string_list")]
    pub ignore_startup_parameters: Vec<String>,
    /// Session parameters whose `SET` pgsluice carries in transaction pooling, besides
    /// the ones PostgreSQL reports and search_path (`track_extra_parameters`); default
    /// `["IntervalStyle"]` as in PgBouncer (tracked anyway).
    #[serde(deserialize_with = "de_string_list")]
    pub track_extra_parameters: Vec<String>,
    /// Reuse idle server connections round-robin instead of LIFO; default false.
    pub server_round_robin: bool,
    /// Maximum server connections per database, all users together; default 0 = unlimited.
    pub max_db_connections: usize,
    /// Maximum server connections per user, all databases together; default 0 = unlimited.
    pub max_user_connections: usize,
    /// This process's id in a peered group (`[peers]`), put into the cancel keys it
    /// issues; default 0 = peering off; at most 16383.
    pub peer_id: u16,
    /// Bind the TCP listeners with SO_REUSEPORT, so that several processes can listen
    /// on the same port (the kernel spreads connections over them); default false.
    pub so_reuseport: bool,
    /// Maximum client connections per database; default 0 = unlimited.
    pub max_db_client_connections: usize,
    /// Maximum client connections per (client-side) user, all databases together;
    /// default 0 = unlimited.
    pub max_user_client_connections: usize,
    /// Extra server connections a pool may open for clients waiting too long; default 0.
    pub reserve_pool_size: usize,
    /// How long a client waits before the reserve pool is used; default 5s.
    pub reserve_pool_timeout: Secs,
    /// After a failed server login, clients needing a new connection to that server
    /// get the error at once for this long; default 15s; 0 = always try again.
    pub server_login_retry: Secs,
    /// Disconnect clients whose transaction lasts longer than this; default 0 = disabled.
    pub transaction_timeout: Secs,
    /// Give up forwarding a cancel request after this long; default 10s; 0 = no limit.
    pub cancel_wait_timeout: Secs,
    /// Cancel queries running longer than this; default 0 = disabled.
    pub query_timeout: Secs,
    /// Disconnect clients idle in a transaction for longer than this; default 0 = disabled.
    pub idle_transaction_timeout: Secs,
    /// Disconnect clients idle for longer than this; default 0 = disabled.
    pub client_idle_timeout: Secs,
    /// Period of the averaged statistics; default 60s.
    pub stats_period: Secs,
    /// Prepared statements tracked per client in transaction mode; default 0 = off.
    pub max_prepared_statements: usize,
    /// File the process id is written to at startup (and removed at exit); default none.
    pub pidfile: Option<PathBuf>,
    /// File log lines are appended to, besides stderr (only to it with `-d`); reopened
    /// on SIGHUP and RELOAD; default none.
    pub logfile: Option<PathBuf>,
    /// Send log lines to the local syslog (`/dev/log`) too; default false.
    pub syslog: bool,
    /// The program name syslog lines carry; default `"pgsluice"` (`"pgbouncer"` in a
    /// pgbouncer.ini, as in PgBouncer).
    pub syslog_ident: String,
    /// The syslog facility; default daemon.
    pub syslog_facility: SyslogFacility,
    /// Log each client login; default true.
    pub log_connections: bool,
    /// Log each client logout with its reason; default true.
    pub log_disconnections: bool,
    /// Log the errors pgsluice sends to clients it refuses; default true.
    pub log_pooler_errors: bool,
    /// Log one line of averages every `stats_period`; default true.
    pub log_stats: bool,
    /// Unix user to switch to at startup when started as root (`user`, `-u`); default none.
    pub user: Option<String>,
    /// TLS mode towards clients; default disable.
    pub client_tls_sslmode: TlsMode,
    /// Private key presented to clients (PEM; re-read on reload).
    pub client_tls_key_file: Option<PathBuf>,
    /// Certificate presented to clients.
    pub client_tls_cert_file: Option<PathBuf>,
    /// CA file to validate client certificates.
    pub client_tls_ca_file: Option<PathBuf>,
    /// TLS versions allowed with clients; default `"secure"`.
    pub client_tls_protocols: String,
    /// TLS 1.2 ciphers allowed with clients; default `"fast"`.
    pub client_tls_ciphers: String,
    /// TLS mode towards servers; default disable.
    pub server_tls_sslmode: TlsMode,
    /// CA file to validate server certificates.
    pub server_tls_ca_file: Option<PathBuf>,
    /// Private key presented to servers.
    pub server_tls_key_file: Option<PathBuf>,
    /// Certificate presented to servers.
    pub server_tls_cert_file: Option<PathBuf>,
    /// TLS versions allowed with servers; default `"secure"`.
    pub server_tls_protocols: String,
    /// TLS 1.2 ciphers allowed with servers; default `"fast"`.
    pub server_tls_ciphers: String,
}

/// The default worker count for `cores` CPU cores: half of them, at least one.
///
/// The kernel's network work (which dominates a pooler's CPU) runs beside the workers,
/// a pooler often shares its machine with PostgreSQL or the application, and every
/// extra tokio worker adds cross-thread wake-ups: on a 2-core machine a second worker
/// cost about 1.1 µs more CPU per transaction at 10 clients and gave no throughput
/// back (see README, "Performance").
pub(crate) fn default_workers(cores: usize) -> usize {
    (cores / 2).max(1)
}

impl General {
    /// Relay lane threads to run: `relay_lanes`, or one per worker thread.
    pub fn relay_lanes(&self) -> usize {
        self.relay_lanes.unwrap_or_else(|| self.worker_threads())
    }

    /// Worker threads to run: `workers`, or `default_workers` for this machine.
    pub fn worker_threads(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            default_workers(std::thread::available_parallelism().map_or(1, |n| n.get()))
        })
    }
}

impl Default for General {
    fn default() -> Self {
        General {
            listen: default_listen(),
            workers: None,
            relay_lanes: None,
            max_client_conn: 10_000,
            pool_mode: PoolMode::Transaction,
            default_pool_size: 20,
            min_pool_size: 0,
            query_wait_timeout: Secs::from_secs(120),
            query_wait_notify: Secs::from_secs(0),
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
            metrics_auth_token: None,
            metrics_allow: Vec::new(),
            auth_file: None,
            auth_hba_file: None,
            auth_ident_file: None,
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.to_owned(),
            auth_dbname: None,
            auth_query_miss_ttl: Secs::from_secs(5),
            unix_socket_dir: None,
            unix_socket_mode: 0o777,
            unix_socket_group: None,
            ignore_startup_parameters: Vec::new(),
            track_extra_parameters: vec!["IntervalStyle".to_owned()],
            server_round_robin: false,
            max_db_connections: 0,
            max_user_connections: 0,
            peer_id: 0,
            so_reuseport: false,
            max_db_client_connections: 0,
            max_user_client_connections: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Secs::from_secs(5),
            server_login_retry: Secs::from_secs(15),
            transaction_timeout: Secs::from_secs(0),
            cancel_wait_timeout: Secs::from_secs(10),
            query_timeout: Secs::from_secs(0),
            idle_transaction_timeout: Secs::from_secs(0),
            client_idle_timeout: Secs::from_secs(0),
            stats_period: Secs::from_secs(60),
            max_prepared_statements: 0,
            pidfile: None,
            logfile: None,
            syslog: false,
            syslog_ident: "pgsluice".to_owned(),
            syslog_facility: SyslogFacility::Daemon,
            log_connections: true,
            log_disconnections: true,
            log_pooler_errors: true,
            log_stats: true,
            user: None,
            client_tls_sslmode: TlsMode::Disable,
            client_tls_key_file: None,
            client_tls_cert_file: None,
            client_tls_ca_file: None,
            client_tls_protocols: "secure".to_owned(),
            client_tls_ciphers: "fast".to_owned(),
            server_tls_sslmode: TlsMode::Disable,
            server_tls_ca_file: None,
            server_tls_key_file: None,
            server_tls_cert_file: None,
            server_tls_protocols: "secure".to_owned(),
            server_tls_ciphers: "fast".to_owned(),
        }
    }
}

/// Startup parameters pgsluice always accepts and ignores.
pub const ALWAYS_IGNORED_STARTUP_PARAMETERS: &[&str] = &["extra_float_digits"];

impl General {
    /// The defaults PgBouncer documents, for a pgbouncer.ini file: like
    /// [`General::default`] except `pool_mode = session`, `max_client_conn =
    /// 100`, `auth_type = md5`, `max_packet_size` = 2147483647 and
    /// `query_wait_notify = 5`, `syslog_ident = pgbouncer`.
    pub fn pgbouncer_defaults() -> General {
        General {
            max_client_conn: 100,
            query_wait_notify: Secs::from_secs(5),
            pool_mode: PoolMode::Session,
            auth_type: AuthType::Md5,
            max_message_size: i32::MAX as usize,
            syslog_ident: "pgbouncer".to_owned(),
            ..General::default()
        }
    }

    /// The settings that are set to a value asking for something pgsluice does
    /// not do yet: `(key, explanation)`, one per key. Values equal to the
    /// defaults (which describe what pgsluice does) are not listed.
    pub fn unimplemented(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        let mut not_yet = |key: &'static str, differs: bool, what: &str| {
            if differs {
                out.push((
                    key,
                    format!("{what}; not implemented yet, the setting is ignored"),
                ));
            }
        };
        not_yet(
            "application_name_add_host",
            self.application_name_add_host,
            "adding the client address to application_name",
        );
        not_yet(
            "server_round_robin",
            self.server_round_robin,
            "round-robin reuse of server connections (pgsluice reuses them LIFO)",
        );
        // TLS is implemented; only explicit OpenSSL cipher lists are not applied.
        let keyword = |v: &str| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "fast" | "normal" | "secure" | "default" | "compat" | "legacy" | "insecure" | "all"
            )
        };
        for (key, value) in [
            ("client_tls_ciphers", &self.client_tls_ciphers),
            ("server_tls_ciphers", &self.server_tls_ciphers),
        ] {
            if !keyword(value) {
                out.push((
                    key,
                    "explicit OpenSSL cipher lists are not applied; rustls' own suites \
                     (AEAD with forward secrecy only) are used"
                        .to_owned(),
                ));
            }
        }
        out
    }
}
