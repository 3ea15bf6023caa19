//! The hosts of a pgbouncer.ini `[databases]` entry (`host=` list, `port=` list,
//! `load_balance_hosts=`) and the connection-string parameters pgsluice adds to
//! PgBouncer's for replica routing (`read_write_split=1`, `target_session_attrs=`...).
//!
//! Pure functions over the parameter values: the loader (`pgbouncer.rs`) supplies
//! the values and turns the messages into errors with the file, line and key.

use std::str::FromStr;

use super::types::{parse_bool, parse_pgbouncer_secs, split_list};
use super::{
    DatabaseConfig, HostConfig, HostRole, LoadBalance, PrimaryReads, ReplicaLag,
    TargetSessionAttrs, DEFAULT_PORT,
};

/// The connection-string parameters pgsluice accepts beyond PgBouncer's, with what
/// they set (the `[databases.<name>]` key of the same name).
pub(crate) const EXTENSION_PARAMS: &[(&str, &str)] = &[
    ("read_write_split", "0/1: reads to replicas, writes to the primary"),
    ("target_session_attrs", "any, read-write, read-only, primary, standby or prefer-standby"),
    ("load_balance", "round-robin, random, least-busy or disable (pgsluice's spelling; `load_balance_hosts` is PgBouncer's)"),
    ("max_replica_lag", "bytes (`16MB`) or a duration (`10s`)"),
    ("health_check_interval", "seconds between two health checks of a host"),
    ("health_check_timeout", "seconds one health check may take"),
    ("ban_time", "seconds a failed host is left out at first"),
    ("read_your_writes", "seconds a client's reads stay on the primary after its write"),
    ("primary_reads", "fallback, never or always"),
    ("write_functions", "comma-separated names of functions that write"),
];

/// Whether `key` is one of [`EXTENSION_PARAMS`].
pub(crate) fn is_extension(key: &str) -> bool {
    EXTENSION_PARAMS.iter().any(|(k, _)| *k == key)
}

/// Sets extension parameter `key` (one of [`EXTENSION_PARAMS`]) on `d`.
pub(crate) fn apply_extension(d: &mut DatabaseConfig, key: &str, v: &str) -> Result<(), String> {
    fn parsed<T: FromStr>(v: &str) -> Result<T, String>
    where
        T::Err: ToString,
    {
        v.parse().map_err(|e: T::Err| e.to_string())
    }
    let secs = |v: &str| parse_pgbouncer_secs(v).map(Some).map_err(|e| e.0);
    match key {
        "read_write_split" => d.read_write_split = parse_bool(v).map_err(|e| e.0)?,
        "target_session_attrs" => d.target_session_attrs = Some(parsed::<TargetSessionAttrs>(v)?),
        "load_balance" => d.load_balance = Some(parsed::<LoadBalance>(v)?),
        "max_replica_lag" => d.max_replica_lag = Some(parsed::<ReplicaLag>(v)?),
        "health_check_interval" => d.health_check_interval = secs(v)?,
        "health_check_timeout" => d.health_check_timeout = secs(v)?,
        "ban_time" => d.ban_time = secs(v)?,
        "read_your_writes" => d.read_your_writes = secs(v)?,
        "primary_reads" => d.primary_reads = Some(parsed::<PrimaryReads>(v)?),
        "write_functions" => d.write_functions = split_list(v),
        other => {
            return Err(format!(
                "parameter `{other}` is not handled (a pgsluice bug)"
            ))
        }
    }
    Ok(())
}

/// PgBouncer's `load_balance_hosts`: `round-robin` or `disable`.
pub(crate) fn load_balance_hosts(v: &str) -> Result<LoadBalance, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "round-robin" => Ok(LoadBalance::RoundRobin),
        "disable" => Ok(LoadBalance::InOrder),
        _ => Err(format!(
            "invalid value `{v}`: expected round-robin or disable"
        )),
    }
}

/// Which parameter a [`HostsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostsKey {
    /// `host=`.
    Host,
    /// `port=`.
    Port,
}

/// A `host=` / `port=` pair that does not describe a host list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostsError {
    /// The parameter at fault.
    pub(crate) key: HostsKey,
    /// What is wrong.
    pub(crate) message: String,
}

fn host_error(message: String) -> HostsError {
    HostsError {
        key: HostsKey::Host,
        message,
    }
}

fn port_error(message: String) -> HostsError {
    HostsError {
        key: HostsKey::Port,
        message,
    }
}

/// Sets `host`, `port` (or `hosts`) of `d` from an entry's `host=` and `port=`.
///
/// `host` is one host or a comma-separated list (PgBouncer); `port` is one port
/// for every host (PgBouncer), or, as a pgsluice extension following libpq, a
/// comma-separated list with one port per host (an empty item = 5432). One port
/// for all keeps PgBouncer's form (`host = "a,b"`, `port`); different ports give
/// `hosts`. `default_host` serves an entry without `host=` (the socket directory).
pub(crate) fn set_hosts(
    d: &mut DatabaseConfig,
    host: Option<&str>,
    port: Option<&str>,
    default_host: &str,
) -> Result<(), HostsError> {
    let host = host.filter(|h| !h.is_empty()).unwrap_or(default_host);
    let names: Vec<&str> = host.split(',').map(str::trim).collect();
    if names.iter().any(|h| h.is_empty()) {
        return Err(host_error(format!(
            "`{host}` has an empty entry in its host list"
        )));
    }
    if names.iter().any(|h| h.starts_with('@')) {
        return Err(host_error(
            "abstract unix sockets (`@...`) are not supported".to_owned(),
        ));
    }
    let ports = match port {
        None => vec![DEFAULT_PORT],
        Some(p) => {
            p.split(',')
                .map(|p| match p.trim() {
                    "" => Ok(DEFAULT_PORT),
                    t => t.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        port_error(format!("invalid port `{t}`: expected 1 to 65535"))
                    }),
                })
                .collect::<Result<Vec<u16>, _>>()?
        }
    };
    if ports.len() > 1 && ports.len() != names.len() {
        return Err(port_error(format!(
            "{} ports for {} host{}: give one port for all hosts, or one per host",
            ports.len(),
            names.len(),
            if names.len() == 1 { "" } else { "s" }
        )));
    }
    if ports.iter().all(|p| *p == ports[0]) {
        d.host = names.join(",");
        d.port = ports[0];
        d.hosts = None;
    } else {
        d.host = String::new();
        d.hosts = Some(
            names
                .iter()
                .zip(&ports)
                .map(|(h, p)| HostConfig {
                    host: (*h).to_owned(),
                    port: *p,
                    role: HostRole::Auto,
                })
                .collect(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(host: Option<&str>, port: Option<&str>) -> Result<DatabaseConfig, HostsError> {
        let mut d = DatabaseConfig::new("");
        set_hosts(&mut d, host, port, "/tmp").map(|()| d)
    }

    #[test]
    fn host_and_port_lists() {
        let d = hosts(Some("a, b,c"), Some("6000")).unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.hosts.is_none()),
            ("a,b,c", 6000, true)
        );
        assert!(d.is_replicated());
        let ports: Vec<u16> = d.host_list().iter().map(|h| h.port).collect();
        assert_eq!(ports, [6000, 6000, 6000]);

        let d = hosts(Some("a,b"), Some("6000,6001")).unwrap();
        assert_eq!(d.host, "");
        let list: Vec<(String, u16)> = d
            .host_list()
            .into_iter()
            .map(|h| (h.host, h.port))
            .collect();
        assert_eq!(list, [("a".to_owned(), 6000), ("b".to_owned(), 6001)]);
        // An empty port is libpq's default; equal ports keep PgBouncer's form.
        let d = hosts(Some("a,::1"), Some(",5433")).unwrap();
        assert_eq!(
            d.hosts.as_ref().map(|h| (h[0].port, h[1].port)),
            Some((5432, 5433))
        );
        let d = hosts(Some("a,b"), Some("7000,7000")).unwrap();
        assert_eq!((d.host.as_str(), d.port), ("a,b", 7000));
        // No host: the socket directory.
        let d = hosts(None, None).unwrap();
        assert_eq!((d.host.as_str(), d.port), ("/tmp", 5432));
    }

    #[test]
    fn bad_lists() {
        let e = hosts(Some("a,b,c"), Some("1,2")).unwrap_err();
        assert_eq!(e.key, HostsKey::Port);
        assert!(e.message.contains("2 ports for 3 hosts"), "{}", e.message);
        assert_eq!(
            hosts(Some("a"), Some("1,2")).unwrap_err().key,
            HostsKey::Port
        );
        assert_eq!(
            hosts(Some("a,b"), Some("1,x")).unwrap_err().key,
            HostsKey::Port
        );
        assert_eq!(hosts(Some("a"), Some("0")).unwrap_err().key, HostsKey::Port);
        assert_eq!(hosts(Some("a,,b"), None).unwrap_err().key, HostsKey::Host);
        assert!(hosts(Some("a,@sock"), None)
            .unwrap_err()
            .message
            .contains("abstract"));
    }

    #[test]
    fn extensions_are_documented() {
        let compat = include_str!("../../../../docs/pgbouncer-compat.md");
        let conf = include_str!("../../../../docs/configuration.md");
        for (name, _) in EXTENSION_PARAMS {
            let row = format!("| `{name}` |");
            assert!(
                compat.contains(&row),
                "docs/pgbouncer-compat.md lacks {row}"
            );
            assert!(conf.contains(&row), "docs/configuration.md lacks {row}");
        }
    }

    #[test]
    fn extensions_and_load_balance_hosts() {
        let mut d = DatabaseConfig::new("h");
        for (k, v) in [
            ("read_write_split", "1"),
            ("target_session_attrs", "read-only"),
            ("load_balance", "least-busy"),
            ("max_replica_lag", "16MB"),
            ("health_check_interval", "0.5"),
            ("health_check_timeout", "3"),
            ("ban_time", "10s"),
            ("read_your_writes", "2"),
            ("primary_reads", "never"),
            ("write_functions", "audit.log,bump"),
        ] {
            assert!(is_extension(k), "{k}");
            apply_extension(&mut d, k, v).unwrap();
        }
        assert!(d.read_write_split);
        assert_eq!(d.target_session_attrs, Some(TargetSessionAttrs::ReadOnly));
        assert_eq!(d.load_balance, Some(LoadBalance::LeastBusy));
        assert_eq!(d.max_replica_lag, Some(ReplicaLag::Bytes(16 << 20)));
        assert_eq!(
            d.health_check_interval,
            Some(super::super::Secs::from_millis(500))
        );
        assert_eq!(d.primary_reads, Some(PrimaryReads::Never));
        assert_eq!(d.write_functions, ["audit.log", "bump"]);
        assert!(apply_extension(&mut d, "primary_reads", "sometimes").is_err());
        assert!(apply_extension(&mut d, "read_write_split", "maybe").is_err());
        assert!(!is_extension("pool_size"));

        assert_eq!(load_balance_hosts("disable"), Ok(LoadBalance::InOrder));
        assert_eq!(
            load_balance_hosts("Round-Robin"),
            Ok(LoadBalance::RoundRobin)
        );
        assert!(load_balance_hosts("random").is_err());
    }
}
