//! PgBouncer's view of the configuration, for the admin console: SHOW CONFIG's rows
//! (every `[pgbouncer]` key with its value, default and whether SET may change it, in
//! PgBouncer's value formats) and SET of one key, parsed as the file parses it.
//!
//! Which keys SET may change is PgBouncer 1.25's list (its keys without
//! `CF_NO_RELOAD`); the values come from the typed [`General`] for the keys pgsluice
//! maps, and from [`Config::pgbouncer_extra`] for the keys it only validates. This
//! module knows nothing of the admin protocol: it returns rows and configurations.
//! It also gives SHOW DATABASES' view of a database's hosts ([`database_hosts`]).

use std::path::Path;
use std::time::Duration;

use super::pgbouncer_keys::{check_ignored, lookup, Handling, Kind, Section};
use super::pgbouncer_settings::{self as settings, Applied, NO_LIMIT};
use super::types::{parse_bool, parse_count, parse_pgbouncer_secs};
use super::{hba, ini, userlist, Config, DatabaseConfig, General, LoadBalance, Secs};

/// Every `[pgbouncer]` key: its default as PgBouncer 1.25 prints it in SHOW CONFIG,
/// and whether SET may change it while running. Alphabetical, as PgBouncer lists
/// them.
const SPECS: &[(&str, &str, bool)] = &[
    ("admin_users", "", true),
    ("application_name_add_host", "0", true),
    ("auth_dbname", "", true),
    ("auth_file", "", true),
    ("auth_hba_file", "", true),
    ("auth_ident_file", "", true),
    ("auth_ldap_options", "", true),
    ("auth_query", "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin", true),
    ("auth_type", "md5", true),
    ("auth_user", "", true),
    ("autodb_idle_timeout", "3600", true),
    ("cancel_wait_timeout", "10", true),
    ("client_idle_timeout", "0", true),
    ("client_login_timeout", "60", true),
    ("client_tls13_ciphers", "", true),
    ("client_tls_ca_file", "", true),
    ("client_tls_cert_file", "", true),
    ("client_tls_ciphers", "default", true),
    ("client_tls_dheparams", "auto", true),
    ("client_tls_ecdhcurve", "auto", true),
    ("client_tls_key_file", "", true),
    ("client_tls_protocols", "secure", true),
    ("client_tls_sslmode", "disable", true),
    ("conffile", "", true),
    ("default_pool_size", "20", true),
    ("disable_pqexec", "0", false),
    ("dns_max_ttl", "15", true),
    ("dns_nxdomain_ttl", "15", true),
    ("dns_zone_check_period", "0", true),
    ("idle_transaction_timeout", "0", true),
    ("ignore_startup_parameters", "", true),
    ("job_name", "pgbouncer", false),
    ("listen_addr", "", false),
    ("listen_backlog", "128", false),
    ("listen_port", "6432", false),
    ("log_connections", "1", true),
    ("log_disconnections", "1", true),
    ("log_pooler_errors", "1", true),
    ("log_stats", "1", true),
    ("logfile", "", true),
    ("max_client_conn", "100", true),
    ("max_db_client_connections", "0", true),
    ("max_db_connections", "0", true),
    ("max_packet_size", "2147483647", true),
    ("max_prepared_statements", "200", true),
    ("max_user_client_connections", "0", true),
    ("max_user_connections", "0", true),
    ("min_pool_size", "0", true),
    ("peer_id", "0", true),
    ("pidfile", "", false),
    ("pkt_buf", "4096", false),
    ("pool_idle_timeout", "", true),
    ("pool_mode", "session", true),
    ("query_timeout", "0", true),
    ("query_wait_notify", "5", true),
    ("query_wait_timeout", "120", true),
    ("reserve_pool_size", "0", true),
    ("reserve_pool_timeout", "5", true),
    ("resolv_conf", "", false),
    ("sbuf_loopcnt", "5", true),
    ("scram_iterations", "4096", true),
    ("server_check_delay", "30", true),
    ("server_check_query", "<empty>", true),
    ("server_connect_timeout", "15", true),
    ("server_fast_close", "0", true),
    ("server_idle_timeout", "600", true),
    ("server_lifetime", "3600", true),
    ("server_login_retry", "15", true),
    ("server_reset_query", "DISCARD ALL", true),
    ("server_reset_query_always", "0", true),
    ("server_round_robin", "0", true),
    ("server_tls13_ciphers", "", true),
    ("server_tls_ca_file", "", true),
    ("server_tls_cert_file", "", true),
    ("server_tls_ciphers", "default", true),
    ("server_tls_key_file", "", true),
    ("server_tls_protocols", "secure", true),
    ("server_tls_sslmode", "prefer", true),
    ("service_name", "pgbouncer", false),
    ("so_reuseport", "0", false),
    ("stats_period", "60", true),
    ("stats_users", "", true),
    ("suspend_timeout", "10", true),
    ("syslog", "0", true),
    ("syslog_facility", "daemon", true),
    ("syslog_ident", "pgbouncer", true),
    ("tcp_defer_accept", "1", true),
    ("tcp_keepalive", "1", true),
    ("tcp_keepcnt", "0", true),
    ("tcp_keepidle", "0", true),
    ("tcp_keepintvl", "0", true),
    ("tcp_socket_buffer", "0", true),
    ("tcp_user_timeout", "0", true),
    ("track_extra_parameters", "IntervalStyle", false),
    ("transaction_timeout", "0", true),
    ("unix_socket_dir", "/tmp", false),
    ("unix_socket_group", "", false),
    ("unix_socket_mode", "0777", false),
    ("user", "", false),
    ("verbose", "0", true),
];

/// One row of SHOW CONFIG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRow {
    /// The key as PgBouncer spells it.
    pub key: &'static str,
    /// The value in force.
    pub value: String,
    /// The value pgsluice uses for a pgbouncer.ini that does not set the key.
    pub default: String,
    /// Whether SET may change it while running.
    pub changeable: bool,
}

/// Whether `key` is a `[pgbouncer]` key; if so, whether SET may change it.
pub fn changeable(key: &str) -> Option<bool> {
    SPECS.iter().find(|s| s.0 == key).map(|s| s.2)
}

/// SHOW CONFIG's rows for PgBouncer's keys, alphabetical.
pub fn rows(cfg: &Config) -> Vec<ConfigRow> {
    let defaults = General::pgbouncer_defaults();
    SPECS
        .iter()
        .map(|&(key, pgbouncer_default, changeable)| {
            let mapped = mapped_value(&cfg.general, key);
            let (value, default) = match mapped {
                Some(v) => (v, mapped_value(&defaults, key).unwrap_or_default()),
                None => (
                    extra_value(cfg, key).unwrap_or_else(|| pgbouncer_default.to_owned()),
                    pgbouncer_default.to_owned(),
                ),
            };
            ConfigRow {
                key,
                value,
                default,
                changeable,
            }
        })
        .collect()
}

/// Seconds as C's `%g` prints them (PgBouncer's format for durations): up to six
/// significant digits, an exponent from a million on.
pub(crate) fn format_secs(d: Duration) -> String {
    let v = d.as_secs_f64();
    if v == 0.0 {
        return "0".to_owned();
    }
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    let exp = v.log10().floor() as i32;
    if !(-4..6).contains(&exp) {
        let s = format!("{v:.5e}");
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim(mantissa.to_owned()), e.abs());
    }
    let decimals = usize::try_from(5 - exp).unwrap_or(0);
    trim(format!("{v:.decimals$}"))
}

/// The value of a key that pgsluice maps onto [`General`], in PgBouncer's format;
/// `None` for keys it does not map.
fn mapped_value(g: &General, key: &str) -> Option<String> {
    let secs = |s: Secs| format_secs(s.0);
    let unlimited = |s: Secs| {
        if s == NO_LIMIT {
            "0".to_owned()
        } else {
            secs(s)
        }
    };
    let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    Some(match key {
        "logfile" => path(&g.logfile),
        "pidfile" => path(&g.pidfile),
        "syslog" => flag(g.syslog),
        "syslog_ident" => g.syslog_ident.clone(),
        "syslog_facility" => g.syslog_facility.as_str().to_owned(),
        "log_connections" => flag(g.log_connections),
        "log_disconnections" => flag(g.log_disconnections),
        "log_pooler_errors" => flag(g.log_pooler_errors),
        "log_stats" => flag(g.log_stats),
        "listen_addr" => {
            let mut addrs: Vec<String> = Vec::new();
            for a in &g.listen {
                let ip = match a.ip() {
                    std::net::IpAddr::V4(v4) if v4.is_unspecified() => "*".to_owned(),
                    ip => ip.to_string(),
                };
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
            addrs.join(",")
        }
        "listen_port" => g.listen.first().map_or(6432, |a| a.port()).to_string(),
        "unix_socket_dir" => g.unix_socket_dir.clone().unwrap_or_else(|| "/tmp".into()),
        "unix_socket_mode" => format!("0{:o}", g.unix_socket_mode),
        "unix_socket_group" => opt(&g.unix_socket_group),
        "user" => opt(&g.user),
        "pool_mode" => g.pool_mode.as_str().to_owned(),
        "max_client_conn" => g.max_client_conn.to_string(),
        "default_pool_size" => g.default_pool_size.to_string(),
        "min_pool_size" => g.min_pool_size.to_string(),
        "reserve_pool_size" => g.reserve_pool_size.to_string(),
        "reserve_pool_timeout" => secs(g.reserve_pool_timeout),
        "max_db_connections" => g.max_db_connections.to_string(),
        "max_db_client_connections" => g.max_db_client_connections.to_string(),
        "max_user_connections" => g.max_user_connections.to_string(),
        "max_user_client_connections" => g.max_user_client_connections.to_string(),
        "peer_id" => g.peer_id.to_string(),
        "so_reuseport" => flag(g.so_reuseport),
        "server_round_robin" => flag(g.server_round_robin),
        "ignore_startup_parameters" => g.ignore_startup_parameters.join(","),
        "track_extra_parameters" => g.track_extra_parameters.join(","),
        "application_name_add_host" => flag(g.application_name_add_host),
        "stats_period" => secs(g.stats_period),
        "max_prepared_statements" => g.max_prepared_statements.to_string(),
        "auth_type" => g.auth_type.as_str().to_owned(),
        "auth_hba_file" => path(&g.auth_hba_file),
        "auth_ident_file" => path(&g.auth_ident_file),
        "auth_file" => path(&g.auth_file),
        "auth_user" => opt(&g.auth_user),
        "auth_query" => g.auth_query.clone(),
        "auth_dbname" => opt(&g.auth_dbname),
        "verbose" => match g.log_level.as_str() {
            "debug" => "1",
            "trace" => "2",
            _ => "0",
        }
        .to_owned(),
        "admin_users" => g.admin_users.join(","),
        "stats_users" => g.stats_users.join(","),
        "server_reset_query" => g.server_reset_query.clone(),
        "server_reset_query_always" => flag(g.server_reset_query_always),
        // 0 (use once) is kept as a millisecond.
        "server_lifetime" if g.server_lifetime == Secs::from_millis(1) => "0".to_owned(),
        "server_lifetime" => secs(g.server_lifetime),
        "server_idle_timeout" => secs(g.server_idle_timeout),
        "server_connect_timeout" => unlimited(g.server_connect_timeout),
        "server_login_retry" => secs(g.server_login_retry),
        "client_login_timeout" => unlimited(g.client_login_timeout),
        "client_tls_sslmode" => g.client_tls_sslmode.as_str().to_owned(),
        "client_tls_key_file" => path(&g.client_tls_key_file),
        "client_tls_cert_file" => path(&g.client_tls_cert_file),
        "client_tls_ca_file" => path(&g.client_tls_ca_file),
        "client_tls_protocols" => g.client_tls_protocols.clone(),
        "client_tls_ciphers" => g.client_tls_ciphers.clone(),
        "server_tls_sslmode" => g.server_tls_sslmode.as_str().to_owned(),
        "server_tls_ca_file" => path(&g.server_tls_ca_file),
        "server_tls_key_file" => path(&g.server_tls_key_file),
        "server_tls_cert_file" => path(&g.server_tls_cert_file),
        "server_tls_protocols" => g.server_tls_protocols.clone(),
        "server_tls_ciphers" => g.server_tls_ciphers.clone(),
        "query_timeout" => secs(g.query_timeout),
        "query_wait_timeout" => secs(g.query_wait_timeout),
        "query_wait_notify" => secs(g.query_wait_notify),
        "cancel_wait_timeout" => secs(g.cancel_wait_timeout),
        "client_idle_timeout" => secs(g.client_idle_timeout),
        "idle_transaction_timeout" => secs(g.idle_transaction_timeout),
        "transaction_timeout" => secs(g.transaction_timeout),
        "max_packet_size" => g.max_message_size.to_string(),
        _ => return None,
    })
}

/// The value of a key pgsluice only validates, normalised as PgBouncer prints it
/// (booleans as 0/1, durations as `%g`); `None` when not set.
fn extra_value(cfg: &Config, key: &str) -> Option<String> {
    let raw = cfg.pgbouncer_extra.get(key)?;
    let kind = match lookup(Section::Pgbouncer, key)?.handling {
        Handling::Ignored(kind, _) => kind,
        Handling::Mapped => return Some(raw.clone()),
    };
    Some(match kind {
        Kind::Bool => parse_bool(raw).map_or_else(|_| raw.clone(), |b| u8::from(b).to_string()),
        Kind::Int => parse_count(raw).map_or_else(|_| raw.clone(), |n| n.to_string()),
        Kind::Secs | Kind::SecsOrUnset => {
            parse_pgbouncer_secs(raw).map_or_else(|_| raw.clone(), |s| format_secs(s.0))
        }
        Kind::Str => raw.clone(),
    })
}

/// Why SET refused a `[pgbouncer]` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// PgBouncer does not let this key change while running.
    Fixed,
    /// The value is not valid for the key.
    Invalid(String),
}

/// A successful SET.
#[derive(Debug)]
pub struct SetOutcome {
    /// The configuration with the key changed (still to be validated and applied).
    pub config: Config,
    /// Set when the new value asks for something pgsluice does not do.
    pub notice: Option<String>,
}

/// SET `key` (lowercase) to `value` on a copy of `cfg`, with the file's parser;
/// `None` when `key` is not a `[pgbouncer]` key.
pub fn set(cfg: &Config, key: &str, value: &str) -> Option<Result<SetOutcome, SetError>> {
    let info = lookup(Section::Pgbouncer, key)?;
    if !changeable(info.name)? {
        return Some(Err(SetError::Fixed));
    }
    let mut new = cfg.clone();
    let outcome = match info.handling {
        Handling::Ignored(kind, inert) => check_ignored(kind, inert, value).map(|inert| {
            new.pgbouncer_extra
                .insert(info.name.to_owned(), value.trim().to_owned());
            let notice = (!inert).then(|| {
                let note = info.note.trim_end_matches('.');
                let note = if note.is_empty() {
                    String::new()
                } else {
                    format!(" ({note})")
                };
                format!(
                    "{} is not implemented yet{note}; the value is kept but ignored",
                    info.name
                )
            });
            (new, notice)
        }),
        Handling::Mapped => set_mapped(new, info.name, value),
    };
    Some(
        outcome
            .map(|(config, notice)| SetOutcome { config, notice })
            .map_err(SetError::Invalid),
    )
}

/// SET of a key read into [`General`]: files are found as the loader finds them
/// (next to the configuration file), the auth file is read at once, and the
/// `auth_hba_file` rules again when they may have changed.
fn set_mapped(mut new: Config, key: &str, value: &str) -> Result<(Config, Option<String>), String> {
    let base = new
        .source
        .clone()
        .unwrap_or_else(|| Path::new("pgbouncer.ini").to_path_buf());
    new.pgbouncer_extra
        .insert(key.to_owned(), value.trim().to_owned());
    match settings::apply(&mut new.general, key, value)? {
        Applied::Field(_) => {}
        Applied::AuthHbaFile(f) => {
            new.general.auth_hba_file = f.map(|f| ini::resolve_path(&base, &f));
        }
        Applied::AuthIdentFile(f) => {
            new.general.auth_ident_file = f.map(|f| ini::resolve_path(&base, &f));
        }
        Applied::AuthFile(f) => {
            let resolved = f.map(|f| ini::resolve_path(&base, &f));
            if let Some(path) = &resolved {
                read_auth_file(&mut new, path)?;
            }
            new.general.auth_file = resolved;
        }
        Applied::ListenAddr(_) | Applied::ListenPort(_) => {
            return Err(format!("{key} cannot be changed while running"));
        }
    }
    if matches!(key, "auth_type" | "auth_hba_file" | "auth_ident_file") {
        hba::load_into(&mut new, &|_, m| super::ConfigError::Invalid(m))
            .map_err(|e| e.to_string())?;
    }
    let notice = new
        .general
        .unimplemented()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, what)| what);
    Ok((new, notice))
}

/// The `host`, `port` and `load_balance_hosts` columns of SHOW DATABASES for one
/// database ([`database_hosts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostColumns {
    /// PgBouncer's `host`: the host, or the comma-separated host list.
    pub host: String,
    /// The port of every host; `None` (NULL) when the hosts have different ports,
    /// which `host` then gives as `host:port` items.
    pub port: Option<u16>,
    /// How hosts are chosen, for a host list only (PgBouncer prints NULL for one
    /// host): `round-robin`, `disable`, or pgsluice's `random` / `least-busy`.
    pub load_balance_hosts: Option<&'static str>,
}

/// SHOW DATABASES' view of a database's hosts, as PgBouncer prints a `host=` list.
pub fn database_hosts(d: &DatabaseConfig) -> HostColumns {
    let list = d.host_list();
    if d.hosts.is_none() || list.len() == 1 {
        // The one host (or PgBouncer's own list form) as configured.
        let (host, port) = match (&d.hosts, list.first()) {
            (Some(_), Some(h)) => (h.host.clone(), h.port),
            _ => (d.host.clone(), d.port),
        };
        let lb = (list.len() > 1).then(|| load_balance_hosts(d));
        return HostColumns {
            host,
            port: Some(port),
            load_balance_hosts: lb,
        };
    }
    let same_port = list.windows(2).all(|w| w[0].port == w[1].port);
    let items: Vec<String> = list
        .iter()
        .map(|h| match (same_port, h.host.contains(':')) {
            (true, _) => h.host.clone(),
            (false, true) => format!("[{}]:{}", h.host, h.port),
            (false, false) => format!("{}:{}", h.host, h.port),
        })
        .collect();
    HostColumns {
        host: items.join(","),
        port: list.first().filter(|_| same_port).map(|h| h.port),
        load_balance_hosts: Some(load_balance_hosts(d)),
    }
}

/// `load_balance` in PgBouncer's spelling (`load_balance_hosts`).
fn load_balance_hosts(d: &DatabaseConfig) -> &'static str {
    match d.load_balance.unwrap_or_default() {
        LoadBalance::RoundRobin => "round-robin",
        LoadBalance::InOrder => "disable",
        LoadBalance::Random => "random",
        LoadBalance::LeastBusy => "least-busy",
    }
}

/// SET auth_file: the file's entries replace the secrets of the users it lists
/// (users of the previous file keep theirs until RELOAD).
fn read_auth_file(cfg: &mut Config, path: &Path) -> Result<(), String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the auth_file {file}: {e}"))?;
    for e in userlist::parse(&text, &file).map_err(|e| e.to_string())? {
        cfg.users.entry(e.user).or_default().password = e.secret;
    }
    Ok(())
}

#[cfg(test)]
#[path = "pgbouncer_show_tests.rs"]
mod tests;
