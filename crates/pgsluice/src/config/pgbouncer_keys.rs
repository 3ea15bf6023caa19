//! Every setting of PgBouncer's configuration file, with its status in
//! pgsluice. `docs/pgbouncer-compat.md` is the human-readable version of this
//! table (a unit test keeps the two in step).
//!
//! Keys marked `Handling::Mapped` are read into [`super::Config`] by the
//! pgbouncer.ini loader; the others are checked (their value must be valid)
//! and, unless their value asks for nothing pgsluice lacks, produce one
//! warning each with the file and line.

/// Which part of the file a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `[pgbouncer]`.
    Pgbouncer,
    /// A parameter of a `[databases]` connection string.
    Database,
    /// A parameter of a `[users]` entry.
    User,
    /// A parameter of a `[peers]` entry.
    Peer,
}

impl Section {
    /// The section's name in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Pgbouncer => "pgbouncer",
            Section::Database => "databases",
            Section::User => "users",
            Section::Peer => "peers",
        }
    }
}

/// How far pgsluice implements a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Behaves as PgBouncer documents it.
    Implemented,
    /// Implemented with the differences given in the note (those warn).
    Partial,
    /// Parsed and validated, not implemented yet: warns when set.
    NotYet,
    /// Has no meaning for pgsluice (Windows-only, internal buffer tuning...): warns when set.
    NotApplicable,
}

impl Status {
    /// The label used in the compatibility document.
    pub fn label(self) -> &'static str {
        match self {
            Status::Implemented => "implemented",
            Status::Partial => "partial, warns",
            Status::NotYet => "parsed, warns",
            Status::NotApplicable => "not applicable, warns",
        }
    }
}

/// The shape of a value, for keys that are only validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Int,
    Secs,
    /// Seconds, or `-1` for "not set" (PgBouncer 1.26's per-database and per-user
    /// `query_wait_timeout`).
    SecsOrUnset,
    Str,
}

/// Values with which a key asks for nothing pgsluice lacks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Inert {
    /// Any of these (compared as values of the key's kind).
    Values(&'static [&'static str]),
    /// None: the key warns whenever it is written.
    Never,
}

/// What the loader does with a key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Handling {
    /// Read into the typed configuration (see `pgbouncer.rs`).
    Mapped,
    /// Validated as `Kind`, warned about unless inert.
    Ignored(Kind, Inert),
}

/// One PgBouncer setting.
#[derive(Debug, Clone, Copy)]
pub struct KeyInfo {
    /// The key as PgBouncer spells it.
    pub name: &'static str,
    /// Where it is written.
    pub section: Section,
    /// PgBouncer's documented default.
    pub default: &'static str,
    /// pgsluice's status.
    pub status: Status,
    /// What differs, or what pgsluice does instead.
    pub note: &'static str,
    pub(crate) handling: Handling,
}

use Handling::{Ignored, Mapped};
use Inert::{Never, Values};
use Kind::{Bool, Int, Secs, Str};
use Section::{Database, Peer, Pgbouncer, User};
use Status::{Implemented, NotApplicable, NotYet, Partial};

const fn k(
    section: Section,
    name: &'static str,
    default: &'static str,
    status: Status,
    handling: Handling,
    note: &'static str,
) -> KeyInfo {
    KeyInfo {
        name,
        section,
        default,
        status,
        note,
        handling,
    }
}

const ZERO: Inert = Values(&["0"]);
const EMPTY: Inert = Values(&[""]);

/// Every key, in the order of PgBouncer's documentation.
pub const KEYS: &[KeyInfo] = &[
    // Generic settings.
    k(Pgbouncer, "logfile", "not set", Implemented, Mapped, "Log lines are appended to this file, and also written to stderr unless running in the background (`-d`), as in PgBouncer. Reopened on SIGHUP and RELOAD (for logrotate: rename, then signal). A relative path is taken in the configuration file's directory."),
    k(Pgbouncer, "pidfile", "not set", Implemented, Mapped, "Written at startup, removed at exit; pgsluice refuses to start when it names a running process. A relative path is taken in the configuration file's directory."),
    k(Pgbouncer, "listen_addr", "not set", Partial, Mapped, "Comma-separated addresses; `*` = all IPv4 addresses; `localhost` = 127.0.0.1; other names are resolved when the file is loaded. Not set: PgBouncer listens on its unix socket only; pgsluice (TCP only) warns and listens on 127.0.0.1."),
    k(Pgbouncer, "listen_port", "6432", Implemented, Mapped, ""),
    k(Pgbouncer, "unix_socket_dir", "/tmp", Implemented, Mapped, "pgsluice listens on `<dir>/.s.PGSQL.<listen_port>` (a stale file is replaced, a live one refused; removed at exit); empty = no unix socket. Also the server socket directory of databases without `host`. User `pgbouncer` connecting over it from the OS user running pgsluice gets the admin console without a password, as in PgBouncer."),
    k(Pgbouncer, "unix_socket_mode", "0777", Implemented, Mapped, "Permissions of the listening unix socket."),
    k(Pgbouncer, "unix_socket_group", "not set", Implemented, Mapped, "The listening socket is given this group after it is bound (a group name, or a numeric id); a group that does not exist is a configuration error."),
    k(Pgbouncer, "user", "not set", Implemented, Mapped, "Same as `-u`: switch to this Unix user at startup (needs root)."),
    k(Pgbouncer, "pool_mode", "session", Implemented, Mapped, "`session`, `transaction` and `statement` (see configuration.md: a server connection per statement; a transaction block ends the client with PgBouncer's error, the server connection rolled back)."),
    k(Pgbouncer, "max_client_conn", "100", Implemented, Mapped, ""),
    k(Pgbouncer, "default_pool_size", "20", Implemented, Mapped, ""),
    k(Pgbouncer, "min_pool_size", "0", Implemented, Mapped, "Must not exceed the pool size (error)."),
    k(Pgbouncer, "reserve_pool_size", "0", Implemented, Mapped, "A pool may open this many connections beyond its size for a client that has waited `reserve_pool_timeout`; they close by `server_idle_timeout` like the others."),
    k(Pgbouncer, "reserve_pool_timeout", "5", Implemented, Mapped, "0 disables the reserve pool."),
    k(Pgbouncer, "max_db_connections", "0", Implemented, Mapped, "Counts the server connections of every pool of the client-side database. A client blocked only by this cap waits (FIFO, `query_wait_timeout`); pgsluice then closes an idle connection of another pool of the database at once (and closes, instead of idling, connections released while such a client waits) rather than waiting for `server_idle_timeout`."),
    k(Pgbouncer, "max_db_client_connections", "0", Implemented, Mapped, "Clients over it get FATAL 53300 after authenticating."),
    k(Pgbouncer, "max_user_connections", "0", Implemented, Mapped, "Counts the server connections of every pool of the server-side user (the forced user, else the client's); waiting and eviction as `max_db_connections`."),
    k(Pgbouncer, "max_user_client_connections", "0", Implemented, Mapped, "Counts the clients logged in as the user (the client-side name), all databases together; the next one gets FATAL 53300 `no more connections allowed (max_user_client_connections)` after authenticating (PgBouncer 1.24 words it `client connections exceeded (max_user_client_connections)`, with SQLSTATE 08P01)."),
    k(Pgbouncer, "server_round_robin", "0", NotYet, Mapped, "pgsluice reuses idle server connections LIFO, like PgBouncer's default."),
    k(Pgbouncer, "track_extra_parameters", "IntervalStyle", Implemented, Mapped, "pgsluice always tracks client_encoding, DateStyle, TimeZone, IntervalStyle, standard_conforming_strings, application_name, default_transaction_read_only and search_path; the names listed here are carried too, reported by PostgreSQL or not (their values are read back after a SET). See docs/session-state.md."),
    k(Pgbouncer, "ignore_startup_parameters", "empty", Implemented, Mapped, "Listed startup parameters are accepted and ignored; pgsluice always ignores `extra_float_digits`; other unknown ones are refused with 08P01, as PgBouncer does."),
    k(Pgbouncer, "peer_id", "0", Implemented, Mapped, "Put into the cancel keys this process issues (PgBouncer's layout: the id in the second and third byte, a forwarding TTL in the last two bits), so that a peer receiving the cancel forwards it here; 0 = peering off; at most 16383. A change applies to clients that log in afterwards."),
    k(Pgbouncer, "disable_pqexec", "0", NotYet, Ignored(Bool, ZERO), ""),
    k(Pgbouncer, "application_name_add_host", "0", NotYet, Mapped, ""),
    k(Pgbouncer, "conffile", "the file given on the command line", NotYet, Ignored(Str, Never), "pgsluice always reloads the file it was started with."),
    k(Pgbouncer, "service_name", "pgbouncer", NotApplicable, Ignored(Str, Never), "Windows service registration."),
    k(Pgbouncer, "job_name", "pgbouncer", NotApplicable, Ignored(Str, Never), "Alias of `service_name`."),
    k(Pgbouncer, "stats_period", "60", Implemented, Mapped, "Period of the averages in SHOW STATS, `/metrics` and the `log_stats` line. At least 1 second."),
    k(Pgbouncer, "max_prepared_statements", "200 (0 before 1.22)", Implemented, Mapped, "Bound of the per-server-connection statement cache in transaction mode. pgsluice always carries named prepared statements across server connections; 0 means the default bound, 200 (see docs/prepared-statements.md)."),
    k(Pgbouncer, "scram_iterations", "4096", NotYet, Ignored(Int, Values(&["4096"])), ""),
    // Authentication settings.
    k(Pgbouncer, "auth_type", "md5", Partial, Mapped, "`trust`, `plain`, `md5`, `scram-sha-256`, `cert` (needs `client_tls_sslmode` verify-ca or verify-full), `hba` (rules from `auth_hba_file`); `pam`, `any`, `ldap` are refused with an error. PgBouncer's `md5` also accepts SCRAM for users with a SCRAM secret; pgsluice warns about such users."),
    k(Pgbouncer, "auth_hba_file", "not set", Implemented, Mapped, "PgBouncer's pg_hba.conf subset (see docs/security.md); unsupported forms are errors naming file, line and token. A relative path is taken next to the configuration file. Read again on RELOAD/SIGHUP; a broken file keeps the old rules."),
    k(Pgbouncer, "auth_ident_file", "not set", Implemented, Mapped, "User name maps for `map=` on `cert` and `peer` rules of `auth_hba_file`, PgBouncer's subset of pg_ident.conf (no regular expressions, `+group` or includes: errors naming file and line). Read again on RELOAD/SIGHUP."),
    k(Pgbouncer, "auth_file", "not set", Implemented, Mapped, "userlist.txt format; plain, md5 and SCRAM secrets. A relative path is taken next to the configuration file, else in the current directory."),
    k(Pgbouncer, "auth_user", "not set", Implemented, Mapped, "Users missing from the auth file are looked up with `auth_query` on a connection logging in as this user (its password comes from the auth file). The found secret (SCRAM verifier or md5 hash) is passed through to the server as PgBouncer does."),
    k(Pgbouncer, "auth_query", "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin", Implemented, Mapped, "pgsluice's default is the same query with every name schema-qualified and `OPERATOR(pg_catalog.=)`; it runs with the user name bound as a parameter, on a connection whose `search_path` is `pg_catalog, pg_temp`. Results are cached briefly (see docs/security.md)."),
    k(Pgbouncer, "auth_dbname", "not set", Implemented, Mapped, "Names a database of `[databases]` (another name loads with a warning and its lookups fail, as in PgBouncer); not set: the database the client asked for."),
    k(Pgbouncer, "auth_ldap_options", "not set", NotYet, Ignored(Str, Never), "LDAP authentication (`auth_type = ldap`, `ldap` rules in `auth_hba_file`) is not supported."),
    // Log settings.
    k(Pgbouncer, "syslog", "0", Implemented, Mapped, "1: log lines are also sent to the local syslog socket `/dev/log` (one datagram each, `<priority>ident[pid]: line`); no syslog daemon, no lines, no error."),
    k(Pgbouncer, "syslog_ident", "pgbouncer", Implemented, Mapped, "pgsluice's own configuration defaults to `pgsluice`."),
    k(Pgbouncer, "syslog_facility", "daemon", Implemented, Mapped, "`auth`, `authpriv`, `daemon`, `user`, `local0` to `local7`; another name is an error."),
    k(Pgbouncer, "log_connections", "1", Implemented, Mapped, "The `client login` line (level info)."),
    k(Pgbouncer, "log_disconnections", "1", Implemented, Mapped, "The `client logout` line with its reason (level info)."),
    k(Pgbouncer, "log_pooler_errors", "1", Implemented, Mapped, "The lines about clients pgsluice refuses with an error (login refused or failed, bad startup packet, TLS required, `max_client_conn`, `client_login_timeout`)."),
    k(Pgbouncer, "log_stats", "1", Implemented, Mapped, "Every `stats_period`, one line `stats: N xacts/s, N queries/s, N client parses/s, N server parses/s, N binds/s, in N B/s, out N B/s, xact N us, query N us, wait N us` over all pools, as in PgBouncer."),
    k(Pgbouncer, "verbose", "0", Implemented, Mapped, "0 = info, 1 = debug, 2 or more = trace. `-v`, `-q`, `--log-level` and `RUST_LOG` take precedence."),
    // Console access control.
    k(Pgbouncer, "admin_users", "empty", Implemented, Mapped, "Users allowed every admin console command (database `pgbouncer`)."),
    k(Pgbouncer, "stats_users", "empty", Implemented, Mapped, "Users allowed the read-only SHOW commands of the admin console."),
    // Connection sanity checks, timeouts.
    k(Pgbouncer, "server_reset_query", "DISCARD ALL", Implemented, Mapped, ""),
    k(Pgbouncer, "server_reset_query_always", "0", Implemented, Mapped, ""),
    k(Pgbouncer, "server_check_delay", "30", NotYet, Ignored(Secs, Never), ""),
    k(Pgbouncer, "server_check_query", "select 1", NotYet, Ignored(Str, EMPTY), "pgsluice runs no check query (as with an empty value)."),
    k(Pgbouncer, "server_fast_close", "0", NotYet, Ignored(Bool, ZERO), ""),
    k(Pgbouncer, "server_lifetime", "3600", Implemented, Mapped, "0 = use a connection once (pgsluice closes it when it is released)."),
    k(Pgbouncer, "server_idle_timeout", "600", Implemented, Mapped, ""),
    k(Pgbouncer, "server_connect_timeout", "15", Implemented, Mapped, "0 = no limit."),
    k(Pgbouncer, "server_login_retry", "15", Implemented, Mapped, "After a failed connect or login, clients of that pool that need a new connection get the error at once (with a note naming the setting) until it has passed; `min_pool_size` filling waits too. RECONNECT, RESUME or a changed target start over."),
    k(Pgbouncer, "client_login_timeout", "60", Implemented, Mapped, "0 = no limit."),
    k(Pgbouncer, "autodb_idle_timeout", "3600", NotYet, Ignored(Secs, Never), "Pools made through `*` stay until shutdown."),
    k(Pgbouncer, "pool_idle_timeout", "unreleased (merged for 1.26)", NotYet, Ignored(Secs, Never), "Pools of removed databases and users close once their clients leave; other pools stay until shutdown."),
    k(Pgbouncer, "dns_max_ttl", "15", NotYet, Ignored(Secs, Never), "pgsluice resolves host names at every server connection."),
    k(Pgbouncer, "dns_nxdomain_ttl", "15", NotYet, Ignored(Secs, Never), ""),
    k(Pgbouncer, "dns_zone_check_period", "0", NotYet, Ignored(Secs, ZERO), ""),
    k(Pgbouncer, "resolv_conf", "empty", NotYet, Ignored(Str, EMPTY), ""),
    k(Pgbouncer, "query_wait_notify", "5", Implemented, Mapped, "A client that has waited this many seconds for a server connection gets one NOTICE `No server connection available in postgres backend, client being queued` (PgBouncer's text); 0 = never."),
    // TLS settings.
    k(Pgbouncer, "client_tls_sslmode", "disable", Implemented, Mapped, "See docs/tls.md. verify-ca and verify-full both require a client certificate valid under `client_tls_ca_file`."),
    k(Pgbouncer, "client_tls_key_file", "not set", Implemented, Mapped, "PEM. Re-read on RELOAD/SIGHUP."),
    k(Pgbouncer, "client_tls_cert_file", "not set", Implemented, Mapped, "PEM chain. Re-read on RELOAD/SIGHUP."),
    k(Pgbouncer, "client_tls_ca_file", "not set", Implemented, Mapped, "PEM. Used by verify-ca and verify-full."),
    k(Pgbouncer, "client_tls_protocols", "secure", Partial, Mapped, "rustls speaks TLS 1.2 and 1.3 only: `tlsv1.0` and `tlsv1.1` are ignored, a list of only those is an error."),
    k(Pgbouncer, "client_tls_ciphers", "fast", Partial, Mapped, "The shortcuts are accepted; rustls' own suites (AEAD with forward secrecy) are always used, and an explicit OpenSSL list warns."),
    k(Pgbouncer, "client_tls13_ciphers", "OpenSSL's default", NotYet, Ignored(Str, Never), ""),
    k(Pgbouncer, "client_tls_ecdhcurve", "auto", NotYet, Ignored(Str, Values(&["auto"])), ""),
    k(Pgbouncer, "client_tls_dheparams", "auto", NotYet, Ignored(Str, Values(&["auto"])), ""),
    k(Pgbouncer, "server_tls_sslmode", "disable (prefer in recent releases)", Implemented, Mapped, "See docs/tls.md. `allow` tries plain TCP first and TLS when the server refuses the login (SQLSTATE 28000), as libpq."),
    k(Pgbouncer, "server_tls_ca_file", "not set", Implemented, Mapped, "PEM. Re-read on RELOAD/SIGHUP."),
    k(Pgbouncer, "server_tls_key_file", "not set", Implemented, Mapped, "PEM, with `server_tls_cert_file`."),
    k(Pgbouncer, "server_tls_cert_file", "not set", Implemented, Mapped, "PEM, with `server_tls_key_file`."),
    k(Pgbouncer, "server_tls_protocols", "secure", Partial, Mapped, "As `client_tls_protocols`."),
    k(Pgbouncer, "server_tls_ciphers", "fast", Partial, Mapped, "As `client_tls_ciphers`."),
    k(Pgbouncer, "server_tls13_ciphers", "OpenSSL's default", NotYet, Ignored(Str, Never), ""),
    // Dangerous timeouts.
    k(Pgbouncer, "query_timeout", "0", Implemented, Mapped, "Counted per query: from the request sent (nothing else in flight) or from the end of the query before it in a pipeline (CommandComplete, EmptyQueryResponse, ErrorResponse, PortalSuspended, ReadyForQuery) to its end; rows streamed do not restart it. PgBouncer counts from the client's last message until the server is ready again (checked three times a second), so a pipeline sent at once is timed as a whole there and a long one is cut: pgsluice lets it run. On expiry pgsluice cancels the query (PgBouncer only closes the server connection, and the backend runs on until it next writes), closes that server connection and ends the client with 57014 (PgBouncer: 08P01 \"query timeout\")."),
    k(Pgbouncer, "query_wait_timeout", "120", Implemented, Mapped, "0 = wait forever."),
    k(Pgbouncer, "cancel_wait_timeout", "10", Implemented, Mapped, "pgsluice forwards a cancel request at once; this bounds connecting to the server and delivering it. After it, the attempt is abandoned and the cancel connection closed. 0 = no limit."),
    k(Pgbouncer, "client_idle_timeout", "0", Implemented, Mapped, "A client silent outside a transaction this long is closed with 57P05."),
    k(Pgbouncer, "idle_transaction_timeout", "0", Implemented, Mapped, "A client silent inside a transaction block this long is closed with 25P03; its server connection is closed, so PostgreSQL rolls back."),
    k(Pgbouncer, "transaction_timeout", "0", Implemented, Mapped, "Measured from the first request of a transaction (explicit or implicit) to its ReadyForQuery `I`; on expiry the client gets FATAL 25P04 (PostgreSQL 17's message), the running query is cancelled and the server connection closed, so PostgreSQL rolls back."),
    k(Pgbouncer, "suspend_timeout", "10", NotApplicable, Ignored(Secs, Never), "No SUSPEND or online restart (`-R`)."),
    // Low-level network settings.
    k(Pgbouncer, "pkt_buf", "4096", NotApplicable, Ignored(Int, Never), "pgsluice sizes its buffers itself."),
    k(Pgbouncer, "max_packet_size", "2147483647", Implemented, Mapped, "pgsluice's `max_message_size`; at least 8192."),
    k(Pgbouncer, "listen_backlog", "128", NotYet, Ignored(Int, Never), ""),
    k(Pgbouncer, "sbuf_loopcnt", "5", NotApplicable, Ignored(Int, Never), "pgsluice's scheduler is Tokio's."),
    k(Pgbouncer, "so_reuseport", "0", Implemented, Mapped, "The TCP listeners are bound with SO_REUSEPORT, so that several processes can listen on the same port; give each its own `unix_socket_dir` (and `peer_id` and `[peers]` so that cancel requests reach the right one)."),
    k(Pgbouncer, "tcp_defer_accept", "1 on Linux", NotYet, Ignored(Int, ZERO), ""),
    k(Pgbouncer, "tcp_socket_buffer", "not set", NotYet, Ignored(Int, ZERO), ""),
    k(Pgbouncer, "tcp_keepalive", "1", NotYet, Ignored(Bool, ZERO), "pgsluice does not turn keepalive on yet."),
    k(Pgbouncer, "tcp_keepcnt", "not set", NotYet, Ignored(Int, ZERO), ""),
    k(Pgbouncer, "tcp_keepidle", "not set", NotYet, Ignored(Int, ZERO), ""),
    k(Pgbouncer, "tcp_keepintvl", "not set", NotYet, Ignored(Int, ZERO), ""),
    k(Pgbouncer, "tcp_user_timeout", "0", NotYet, Ignored(Int, ZERO), ""),
    // [databases] connection string parameters.
    k(Database, "dbname", "the client-side name", Implemented, Mapped, ""),
    k(Database, "host", "unix socket in unix_socket_dir", Implemented, Mapped, "A name, an address or a socket directory; `@` (abstract socket) is refused. A comma-separated list gives several hosts, each on `port`: pgsluice checks each host's health (and role) and leaves out a host that fails, where PgBouncer keeps trying every host of the list."),
    k(Database, "port", "5432", Implemented, Mapped, "With a host list, one port serves every host, as in PgBouncer; pgsluice also takes one port per host, comma-separated as in libpq (`host=a,b port=5432,5433`; PgBouncer would read only the first number)."),
    k(Database, "user", "the client's user", Implemented, Mapped, "Forced user."),
    k(Database, "password", "from auth_file", Implemented, Mapped, ""),
    k(Database, "auth_user", "global auth_user", Implemented, Mapped, ""),
    k(Database, "auth_query", "global auth_query", Implemented, Mapped, ""),
    k(Database, "auth_dbname", "global auth_dbname", Implemented, Mapped, ""),
    k(Database, "pool_size", "default_pool_size", Implemented, Mapped, ""),
    k(Database, "min_pool_size", "min_pool_size", Implemented, Mapped, ""),
    k(Database, "reserve_pool", "reserve_pool_size", Implemented, Mapped, "Also spelled `reserve_pool_size`."),
    k(Database, "reserve_pool_size", "reserve_pool_size", Implemented, Mapped, "Newer spelling of `reserve_pool`."),
    k(Database, "connect_query", "not set", NotYet, Mapped, ""),
    k(Database, "pool_mode", "pool_mode", Implemented, Mapped, ""),
    k(Database, "load_balance_hosts", "round-robin", Implemented, Mapped, "With a host list: `round-robin` takes the next healthy host for each new server connection; `disable` takes the first healthy host in list order (PgBouncer stays on the host that last worked until it fails; pgsluice goes back to an earlier host once its health check passes). The database's `load_balance` in pgsluice's own format."),
    k(Database, "max_db_connections", "max_db_connections", Implemented, Mapped, ""),
    k(Database, "max_db_client_connections", "max_db_client_connections", Implemented, Mapped, ""),
    k(Database, "query_wait_timeout", "query_wait_timeout", NotYet, Ignored(Kind::SecsOrUnset, Values(&["-1"])), "Merged for PgBouncer 1.26; -1 = not set."),
    k(Database, "server_lifetime", "server_lifetime", NotYet, Ignored(Secs, Never), ""),
    k(Database, "client_encoding", "not set", NotYet, Mapped, ""),
    k(Database, "datestyle", "not set", NotYet, Mapped, ""),
    k(Database, "timezone", "not set", NotYet, Mapped, ""),
    k(Database, "application_name", "not set", Implemented, Mapped, ""),
    // [users] parameters.
    k(User, "pool_mode", "the database's", Implemented, Mapped, ""),
    k(User, "pool_size", "the database's", Implemented, Mapped, ""),
    k(User, "reserve_pool_size", "the database's", Implemented, Mapped, ""),
    k(User, "max_user_connections", "max_user_connections", Implemented, Mapped, ""),
    k(User, "max_user_client_connections", "max_user_client_connections", Implemented, Mapped, ""),
    k(User, "transaction_timeout", "transaction_timeout", NotYet, Ignored(Secs, ZERO), ""),
    k(User, "query_timeout", "query_timeout", NotYet, Ignored(Secs, ZERO), ""),
    k(User, "idle_transaction_timeout", "idle_transaction_timeout", NotYet, Ignored(Secs, ZERO), ""),
    k(User, "client_idle_timeout", "client_idle_timeout", NotYet, Ignored(Secs, ZERO), ""),
    k(User, "query_wait_timeout", "query_wait_timeout", NotYet, Ignored(Kind::SecsOrUnset, Values(&["-1"])), "Merged for PgBouncer 1.26; -1 = not set."),
    // [peers] parameters.
    k(Peer, "host", "not set", Implemented, Mapped, "A host name or IP address, or a unix socket directory (an absolute path). A cancel request whose key carries this peer's id is forwarded there, its TTL lowered by one (dropped when the TTL is spent or the peer is not listed), as in PgBouncer."),
    k(Peer, "port", "6432", Implemented, Mapped, ""),
    k(Peer, "pool_size", "default_pool_size", Implemented, Mapped, "Cancel requests forwarded to the peer at once (each on its own connection); further ones wait, within `cancel_wait_timeout`."),
];

/// Every PgBouncer key with its status.
pub fn pgbouncer_keys() -> &'static [KeyInfo] {
    KEYS
}

/// The entry for `name` in `section` (names are compared case-insensitively).
pub(crate) fn lookup(section: Section, name: &str) -> Option<&'static KeyInfo> {
    KEYS.iter()
        .find(|k| k.section == section && k.name.eq_ignore_ascii_case(name))
}

/// Checks a value of an ignored key; returns whether it is inert.
pub(crate) fn check_ignored(kind: Kind, inert: Inert, value: &str) -> Result<bool, String> {
    let norm = |v: &str| -> Result<String, String> {
        Ok(match kind {
            Bool => u8::from(super::types::parse_bool(v).map_err(|e| e.0)?).to_string(),
            Int => super::types::parse_count(v).map_err(|e| e.0)?.to_string(),
            Secs => format!(
                "{:?}",
                super::types::parse_pgbouncer_secs(v).map_err(|e| e.0)?.0
            ),
            Kind::SecsOrUnset if v.trim() == "-1" => "-1".to_owned(),
            Kind::SecsOrUnset => format!(
                "{:?}",
                super::types::parse_pgbouncer_secs(v).map_err(|e| e.0)?.0
            ),
            Str => v.trim().to_owned(),
        })
    };
    let value_n = norm(value)?;
    Ok(match inert {
        Never => false,
        Values(list) => list.iter().any(|v| norm(v).is_ok_and(|n| n == value_n)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_documented() {
        let doc = include_str!("../../../../docs/pgbouncer-compat.md");
        for (i, key) in KEYS.iter().enumerate() {
            assert!(
                !KEYS[..i]
                    .iter()
                    .any(|o| o.section == key.section && o.name == key.name),
                "duplicate key {}",
                key.name
            );
            let row = format!("| `{}` |", key.name);
            assert!(doc.contains(&row), "docs/pgbouncer-compat.md lacks {row}");
            if let Ignored(kind, Values(list)) = key.handling {
                for v in list {
                    assert_eq!(
                        check_ignored(kind, Values(list), v),
                        Ok(true),
                        "{}",
                        key.name
                    );
                }
            }
        }
    }

    #[test]
    fn ignored_values_are_checked() {
        assert_eq!(check_ignored(Bool, ZERO, "off"), Ok(true));
        assert_eq!(check_ignored(Bool, ZERO, "yes"), Ok(false));
        assert!(check_ignored(Bool, ZERO, "maybe").is_err());
        assert_eq!(check_ignored(Secs, ZERO, "0.0"), Ok(true));
        assert!(check_ignored(Secs, ZERO, "soon").is_err());
        assert!(check_ignored(Int, ZERO, "-3").is_err());
        assert_eq!(check_ignored(Str, EMPTY, "select 1"), Ok(false));
    }
}
