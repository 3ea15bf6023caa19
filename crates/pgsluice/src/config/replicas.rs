//! The settings of a database served by several hosts: the host list with each
//! host's role, read/write splitting, load balancing, health checks and lag limits.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::types::{from_str_value, InvalidValue, Secs};
use super::DEFAULT_PORT;

/// What a host is configured to be. The router trusts what the host says of itself
/// (`pg_is_in_recovery()`); a fixed role only keeps a host out of the other role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostRole {
    /// Whatever `pg_is_in_recovery()` says (the default).
    #[default]
    Auto,
    /// Used as the primary only (never for replica reads).
    Primary,
    /// Used as a replica only (never for writes, even after a promotion).
    Replica,
}

impl HostRole {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HostRole::Auto => "auto",
            HostRole::Primary => "primary",
            HostRole::Replica => "replica",
        }
    }
}

impl fmt::Display for HostRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HostRole {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(HostRole::Auto),
            "primary" => Ok(HostRole::Primary),
            "replica" | "standby" => Ok(HostRole::Replica),
            _ => Err(InvalidValue(format!(
                "invalid host role `{s}`: expected `primary`, `replica` or `auto`"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for HostRole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, "a host role: primary, replica or auto")
    }
}

/// One host of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Name or IP, or an absolute path = unix socket directory.
    pub host: String,
    /// Port (default 5432, or the database's `port`).
    pub port: u16,
    /// Configured role.
    pub role: HostRole,
}

impl HostConfig {
    /// `host:port` (or the socket path) for messages and listings.
    pub fn label(&self) -> String {
        if self.host.starts_with('/') {
            format!("{}/.s.PGSQL.{}", self.host, self.port)
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostConfig {
    type Err = InvalidValue;

    /// `host`, `host:port` or `[v6addr]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(InvalidValue("empty host name".into()));
        }
        let port_of = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| InvalidValue(format!("invalid port `{p}` in host `{s}`")))
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| InvalidValue(format!("invalid host `{s}`: missing `]`")))?;
            match after.strip_prefix(':') {
                Some(p) => (h.to_owned(), port_of(p)?),
                None if after.is_empty() => (h.to_owned(), DEFAULT_PORT),
                None => return Err(InvalidValue(format!("invalid host `{s}`"))),
            }
        } else if s.starts_with('/') {
            (s.to_owned(), DEFAULT_PORT)
        } else {
            match s.rsplit_once(':') {
                // One colon: host:port. More: a bare IPv6 address.
                Some((h, p)) if !h.contains(':') => (h.to_owned(), port_of(p)?),
                _ => (s.to_owned(), DEFAULT_PORT),
            }
        };
        Ok(HostConfig {
            host,
            port,
            role: HostRole::Auto,
        })
    }
}

/// A host written as `"host:port"` or as `{ host = "...", port = 5432, role = "replica" }`.
///
/// A visitor rather than an untagged enum, so that an unknown role or key inside the
/// table keeps its own message (an untagged enum reports only "did not match").
impl<'de> Deserialize<'de> for HostConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            host: String,
            port: Option<u16>,
            #[serde(default)]
            role: HostRole,
        }
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = HostConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a host as \"host:port\" or a table { host = \"...\", port = 5432, role = \"replica\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HostConfig, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<HostConfig, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let mut h: HostConfig = t.host.parse().map_err(de::Error::custom)?;
                if let Some(p) = t.port {
                    h.port = p;
                }
                h.role = t.role;
                Ok(h)
            }
        }
        d.deserialize_any(V)
    }
}

/// How work is spread over the eligible hosts of one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalance {
    /// Each new checkout takes the next host (PgBouncer's `load_balance_hosts =
    /// round-robin`; the default).
    #[default]
    RoundRobin,
    /// A host picked at random.
    Random,
    /// The host with the fewest checked-out connections.
    LeastBusy,
    /// The first healthy host in configuration order (PgBouncer's
    /// `load_balance_hosts = disable`).
    InOrder,
}

impl LoadBalance {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalance::RoundRobin => "round_robin",
            LoadBalance::Random => "random",
            LoadBalance::LeastBusy => "least_busy",
            LoadBalance::InOrder => "disable",
        }
    }
}

impl fmt::Display for LoadBalance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LoadBalance {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "round_robin" => Ok(LoadBalance::RoundRobin),
            "random" => Ok(LoadBalance::Random),
            "least_busy" => Ok(LoadBalance::LeastBusy),
            "disable" | "in_order" => Ok(LoadBalance::InOrder),
            _ => Err(InvalidValue(format!(
                "invalid load_balance `{s}`: expected `round_robin`, `random`, `least_busy` or `disable`"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for LoadBalance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, "round_robin, random, least_busy or disable")
    }
}

/// libpq's `target_session_attrs`: which hosts a database's sessions may use when
/// read/write splitting is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSessionAttrs {
    /// Any healthy host (the default).
    #[default]
    Any,
    /// A host that accepts writes (the primary).
    ReadWrite,
    /// A host that does not accept writes (a standby).
    ReadOnly,
    /// The primary.
    Primary,
    /// A standby.
    Standby,
    /// A standby if one is healthy, else the primary.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }
}

impl fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetSessionAttrs {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "any" => Ok(TargetSessionAttrs::Any),
            "read-write" => Ok(TargetSessionAttrs::ReadWrite),
            "read-only" => Ok(TargetSessionAttrs::ReadOnly),
            "primary" => Ok(TargetSessionAttrs::Primary),
            "standby" => Ok(TargetSessionAttrs::Standby),
            "prefer-standby" => Ok(TargetSessionAttrs::PreferStandby),
            _ => Err(InvalidValue(format!(
                "invalid target_session_attrs `{s}`: expected any, read-write, read-only, \
                 primary, standby or prefer-standby"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for TargetSessionAttrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, "a target_session_attrs value")
    }
}

/// Whether the primary serves reads of a split database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrimaryReads {
    /// Only when no replica is eligible (the default).
    #[default]
    Fallback,
    /// Never: reads wait for or fail without a replica.
    Never,
    /// Always: the primary is one more host in the read rotation.
    Always,
}

impl PrimaryReads {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PrimaryReads::Fallback => "fallback",
            PrimaryReads::Never => "never",
            PrimaryReads::Always => "always",
        }
    }
}

impl fmt::Display for PrimaryReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PrimaryReads {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fallback" => Ok(PrimaryReads::Fallback),
            "never" => Ok(PrimaryReads::Never),
            "always" => Ok(PrimaryReads::Always),
            _ => Err(InvalidValue(format!(
                "invalid primary_reads `{s}`: expected fallback, never or always"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for PrimaryReads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, "fallback, never or always")
    }
}

/// How far behind the primary a replica may be and still serve reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaLag {
    /// WAL bytes not yet replayed: an integer, or `"16MB"`, `"512kB"`, `"1GB"`.
    Bytes(u64),
    /// Time since the last replayed transaction while WAL is outstanding:
    /// `"10s"`, `"500ms"`.
    Time(Duration),
}

impl fmt::Display for ReplicaLag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaLag::Bytes(b) => write!(f, "{b}B"),
            ReplicaLag::Time(d) => Secs(*d).fmt(f),
        }
    }
}

impl FromStr for ReplicaLag {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let bad = || {
            InvalidValue(format!(
                "invalid max_replica_lag `{s}`: expected bytes (1048576, \"16MB\", \"512kB\") \
                 or a duration (\"10s\", \"500ms\")"
            ))
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let bytes = |mult: u64| n.checked_mul(mult).map(ReplicaLag::Bytes).ok_or_else(bad);
        match unit.trim() {
            "" | "B" | "b" => bytes(1),
            "kB" | "KB" | "k" => bytes(1 << 10),
            "MB" | "M" => bytes(1 << 20),
            "GB" | "G" => bytes(1 << 30),
            _ => t
                .parse::<Secs>()
                .map(|d| ReplicaLag::Time(d.0))
                .map_err(|_| bad()),
        }
    }
}

impl<'de> Deserialize<'de> for ReplicaLag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ReplicaLag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes as an integer or \"16MB\", or a duration like \"10s\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ReplicaLag, E> {
                u64::try_from(v)
                    .map(ReplicaLag::Bytes)
                    .map_err(|_| E::custom("max_replica_lag must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ReplicaLag, E> {
                Ok(ReplicaLag::Bytes(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReplicaLag, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Defaults of the health check and ban settings.
pub mod defaults {
    use std::time::Duration;

    /// Between two health checks of a host.
    pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
    /// How long one health check (connect + query) may take.
    pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
    /// How long a failed host is left out at first (doubling per failure, up to 8x).
    pub const BAN_TIME: Duration = Duration::from_secs(2);
    /// Bound of the read/write classification cache (statement texts).
    pub const CLASSIFY_CACHE: usize = 10_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        let h: HostConfig = "db1:5433".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("db1", 5433));
        let h: HostConfig = "db1".parse().unwrap();
        assert_eq!(h.port, 5432);
        let h: HostConfig = "[::1]:6000".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("::1", 6000));
        let h: HostConfig = "::1".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("::1", 5432));
        let h: HostConfig = "/var/run/postgresql".parse().unwrap();
        assert_eq!(h.label(), "/var/run/postgresql/.s.PGSQL.5432");
        assert!("db:0".parse::<HostConfig>().is_err());
        assert!("db:x".parse::<HostConfig>().is_err());
        assert!("".parse::<HostConfig>().is_err());
    }

    #[test]
    fn lag_forms() {
        assert_eq!("1048576".parse(), Ok(ReplicaLag::Bytes(1 << 20)));
        assert_eq!("16MB".parse(), Ok(ReplicaLag::Bytes(16 << 20)));
        assert_eq!("512kB".parse(), Ok(ReplicaLag::Bytes(512 << 10)));
        assert_eq!("10s".parse(), Ok(ReplicaLag::Time(Duration::from_secs(10))));
        assert_eq!(
            "500ms".parse(),
            Ok(ReplicaLag::Time(Duration::from_millis(500)))
        );
        assert!("10 parsecs".parse::<ReplicaLag>().is_err());
    }

    #[test]
    fn enum_spellings_round_trip() {
        for v in [
            TargetSessionAttrs::Any,
            TargetSessionAttrs::ReadWrite,
            TargetSessionAttrs::ReadOnly,
            TargetSessionAttrs::Primary,
            TargetSessionAttrs::Standby,
            TargetSessionAttrs::PreferStandby,
        ] {
            assert_eq!(v.as_str().parse(), Ok(v));
        }
        for v in [
            LoadBalance::RoundRobin,
            LoadBalance::Random,
            LoadBalance::LeastBusy,
            LoadBalance::InOrder,
        ] {
            assert_eq!(v.as_str().parse(), Ok(v));
        }
        assert_eq!("round-robin".parse(), Ok(LoadBalance::RoundRobin));
        assert!("fastest".parse::<LoadBalance>().is_err());
    }
}
