//! The `[pgbouncer]` keys that map onto [`General`] fields, with
//! PgBouncer's value syntax (fractional seconds, `0`/`1` booleans, comma
//! lists) and semantics (`server_lifetime = 0` = use once, `0` = no limit for
//! the login and connect timeouts, `verbose` as a log level).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::types::{parse_bool, parse_count, parse_octal_mode, parse_pgbouncer_secs, split_list};
use super::{AuthType, General, PoolMode, Secs, SyslogFacility, TlsMode};

/// What "0 = no limit" becomes for timeouts pgsluice requires to be positive.
pub(crate) const NO_LIMIT: Secs = Secs(Duration::from_secs(365 * 24 * 3600));

/// What a key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Set this `[general]` field.
    Field(&'static str),
    /// `listen_addr`: the raw list, resolved once the port is known.
    ListenAddr(String),
    /// `listen_port`.
    ListenPort(u16),
    /// `auth_file`: the name as written (resolved and loaded at the end).
    AuthFile(Option<String>),
    /// `auth_hba_file`: the name as written (resolved at the end, like `auth_file`).
    AuthHbaFile(Option<String>),
    /// `auth_ident_file`: the name as written (resolved like `auth_hba_file`).
    AuthIdentFile(Option<String>),
}

fn secs(v: &str) -> Result<Secs, String> {
    parse_pgbouncer_secs(v).map_err(|e| e.0)
}

fn count(v: &str) -> Result<usize, String> {
    parse_count(v).map_err(|e| e.0)
}

fn flag(v: &str) -> Result<bool, String> {
    parse_bool(v).map_err(|e| e.0)
}

fn opt(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_owned())
}

fn path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

fn parsed<T: FromStr<Err = super::InvalidValue>>(v: &str) -> Result<T, String> {
    T::from_str(v).map_err(|e| e.0)
}

/// `0` means "no limit" in PgBouncer; pgsluice needs a positive duration.
fn positive_or_unlimited(v: &str) -> Result<Secs, String> {
    secs(v).map(|s| if s.is_zero() { NO_LIMIT } else { s })
}

/// Applies one mapped `[pgbouncer]` key (lowercase `name`, raw value `v`).
pub(crate) fn apply(g: &mut General, name: &str, v: &str) -> Result<Applied, String> {
    use Applied::Field;
    macro_rules! set {
        ($field:ident = $value:expr) => {{
            g.$field = $value;
            Field(stringify!($field))
        }};
    }
    Ok(match name {
        "logfile" => set!(logfile = path(v)),
        "pidfile" => set!(pidfile = path(v)),
        "syslog" => set!(syslog = flag(v)?),
        "syslog_ident" => set!(syslog_ident = v.to_owned()),
        "syslog_facility" => set!(syslog_facility = parsed::<SyslogFacility>(v)?),
        "log_connections" => set!(log_connections = flag(v)?),
        "log_disconnections" => set!(log_disconnections = flag(v)?),
        "log_pooler_errors" => set!(log_pooler_errors = flag(v)?),
        "log_stats" => set!(log_stats = flag(v)?),
        "listen_addr" => Applied::ListenAddr(v.to_owned()),
        "listen_port" => Applied::ListenPort(
            v.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port `{v}`: expected 1 to 65535"))?,
        ),
        "unix_socket_dir" => set!(unix_socket_dir = Some(v.to_owned())),
        "unix_socket_mode" => set!(unix_socket_mode = parse_octal_mode(v).map_err(|e| e.0)?),
        "unix_socket_group" => set!(unix_socket_group = opt(v)),
        "user" => set!(user = opt(v)),
        "pool_mode" => set!(pool_mode = parsed::<PoolMode>(v)?),
        "max_client_conn" => set!(max_client_conn = count(v)?),
        "default_pool_size" => set!(default_pool_size = count(v)?),
        "min_pool_size" => set!(min_pool_size = count(v)?),
        "reserve_pool_size" => set!(reserve_pool_size = count(v)?),
        "reserve_pool_timeout" => set!(reserve_pool_timeout = secs(v)?),
        "max_db_connections" => set!(max_db_connections = count(v)?),
        "max_user_connections" => set!(max_user_connections = count(v)?),
        "max_db_client_connections" => set!(max_db_client_connections = count(v)?),
        "max_user_client_connections" => set!(max_user_client_connections = count(v)?),
        "peer_id" => set!(
            peer_id = count(v)
                .ok()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n <= super::MAX_PEER_ID)
                .ok_or_else(|| format!(
                    "invalid peer_id `{v}`: expected 0 to {}",
                    super::MAX_PEER_ID
                ))?
        ),
        "so_reuseport" => set!(so_reuseport = flag(v)?),
        "server_round_robin" => set!(server_round_robin = flag(v)?),
        "ignore_startup_parameters" => set!(ignore_startup_parameters = split_list(v)),
        "track_extra_parameters" => set!(track_extra_parameters = split_list(v)),
        "application_name_add_host" => set!(application_name_add_host = flag(v)?),
        "stats_period" => set!(stats_period = secs(v)?),
        "max_prepared_statements" => set!(max_prepared_statements = count(v)?),
        "auth_type" => set!(auth_type = parsed::<AuthType>(v)?),
        "auth_file" => Applied::AuthFile(opt(v)),
        "auth_hba_file" => Applied::AuthHbaFile(opt(v)),
        "auth_ident_file" => Applied::AuthIdentFile(opt(v)),
        "auth_user" => set!(auth_user = opt(v)),
        "auth_query" => set!(auth_query = v.to_owned()),
        "auth_dbname" => set!(auth_dbname = opt(v)),
        "verbose" => {
            let level = match count(v)? {
                0 => "info",
                1 => "debug",
                _ => "trace",
            };
            set!(log_level = level.to_owned())
        }
        "admin_users" => set!(admin_users = split_list(v)),
        "stats_users" => set!(stats_users = split_list(v)),
        "server_reset_query" => set!(server_reset_query = v.to_owned()),
        "server_reset_query_always" => set!(server_reset_query_always = flag(v)?),
        "server_lifetime" => {
            // PgBouncer: 0 = use a connection once. pgsluice closes
            // connections older than the lifetime when they are released.
            let s = secs(v)?;
            set!(server_lifetime = if s.is_zero() { Secs::from_millis(1) } else { s })
        }
        "server_idle_timeout" => set!(server_idle_timeout = secs(v)?),
        "server_connect_timeout" => set!(server_connect_timeout = positive_or_unlimited(v)?),
        "server_login_retry" => set!(server_login_retry = secs(v)?),
        "transaction_timeout" => set!(transaction_timeout = secs(v)?),
        "cancel_wait_timeout" => set!(cancel_wait_timeout = secs(v)?),
        "client_login_timeout" => set!(client_login_timeout = positive_or_unlimited(v)?),
        "client_tls_sslmode" => set!(client_tls_sslmode = parsed::<TlsMode>(v)?),
        "client_tls_key_file" => set!(client_tls_key_file = path(v)),
        "client_tls_cert_file" => set!(client_tls_cert_file = path(v)),
        "client_tls_ca_file" => set!(client_tls_ca_file = path(v)),
        "client_tls_protocols" => set!(client_tls_protocols = v.to_owned()),
        "client_tls_ciphers" => set!(client_tls_ciphers = v.to_owned()),
        "server_tls_sslmode" => set!(server_tls_sslmode = parsed::<TlsMode>(v)?),
        "server_tls_ca_file" => set!(server_tls_ca_file = path(v)),
        "server_tls_key_file" => set!(server_tls_key_file = path(v)),
        "server_tls_cert_file" => set!(server_tls_cert_file = path(v)),
        "server_tls_protocols" => set!(server_tls_protocols = v.to_owned()),
        "server_tls_ciphers" => set!(server_tls_ciphers = v.to_owned()),
        "query_timeout" => set!(query_timeout = secs(v)?),
        "query_wait_timeout" => set!(query_wait_timeout = secs(v)?),
        // Whole seconds, as PgBouncer reads it.
        "query_wait_notify" => set!(query_wait_notify = Secs::from_secs(count(v)? as u64)),
        "client_idle_timeout" => set!(client_idle_timeout = secs(v)?),
        "idle_transaction_timeout" => set!(idle_transaction_timeout = secs(v)?),
        "max_packet_size" => set!(max_message_size = count(v)?),
        other => return Err(format!("setting `{other}` is not handled (a pgsluice bug)")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::pgbouncer_keys::{Handling, Section, KEYS};

    #[test]
    fn every_mapped_key_is_handled() {
        for k in KEYS {
            if k.section == Section::Pgbouncer && matches!(k.handling, Handling::Mapped) {
                let mut g = General::pgbouncer_defaults();
                let r = apply(&mut g, k.name, "");
                assert!(
                    !matches!(&r, Err(m) if m.contains("not handled")),
                    "{}: {r:?}",
                    k.name
                );
            }
        }
    }
}
