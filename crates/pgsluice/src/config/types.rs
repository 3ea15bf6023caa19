//! Value types of the configuration: pool mode, auth type, log format,
//! durations, listen addresses, and the serde helpers that parse them.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

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
    /// A server connection is assigned to a client for one statement (PgBouncer's
    /// `statement` mode): autocommit only, transaction blocks are refused.
    Statement,
}

impl PoolMode {
    /// The configuration spelling (`"session"` / `"transaction"` / `"statement"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }

    /// Whether a server connection goes back to the pool while the client stays
    /// (transaction and statement modes): the connection must then be left clean, and
    /// client state that cannot follow the client (named statements, session state)
    /// is handled per checkout.
    pub fn shares_servers(self) -> bool {
        self != PoolMode::Session
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
            "statement" => Ok(PoolMode::Statement),
            _ => Err(InvalidValue(format!(
                "invalid pool mode `{s}`: expected `session`, `transaction` or `statement`"
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
    /// TLS client certificate (`"cert"`): the subject's common name must be the user
    /// name; needs `client_tls_sslmode` verify-ca or verify-full.
    Cert,
    /// Per connection, from the first matching rule of `auth_hba_file` (`"hba"`).
    Hba,
}

impl AuthType {
    /// The configuration spelling (`"trust"`, `"plain"`, `"md5"`, `"scram-sha-256"`,
    /// `"cert"`, `"hba"`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Trust => "trust",
            AuthType::Plain => "plain",
            AuthType::Md5 => "md5",
            AuthType::ScramSha256 => "scram-sha-256",
            AuthType::Cert => "cert",
            AuthType::Hba => "hba",
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
            "cert" => Ok(AuthType::Cert),
            "hba" => Ok(AuthType::Hba),
            other @ ("pam" | "any" | "ldap" | "peer") => Err(InvalidValue(
                format!(
                    "auth type `{other}` is not supported; expected `trust`, `plain`, `md5`, `scram-sha-256`, `cert` or `hba`"
                ),
            )),
            _ => Err(InvalidValue(format!(
                "invalid auth type `{s}`: expected `trust`, `plain`, `md5`, `scram-sha-256`, `cert` or `hba`"
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
pub(crate) fn from_str_value<'de, D, T>(d: D, what: &'static str) -> Result<T, D::Error>
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

pub(crate) fn de_pool_mode<'de, D: Deserializer<'de>>(d: D) -> Result<PoolMode, D::Error> {
    from_str_value(
        d,
        "a pool mode string (\"session\", \"transaction\" or \"statement\")",
    )
}

pub(crate) fn de_opt_pool_mode<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<PoolMode>, D::Error> {
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

pub(crate) fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 6432))]
}

pub(crate) fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
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

pub(crate) fn default_port() -> u16 {
    DEFAULT_PORT
}

/// A TLS mode (`client_tls_sslmode` / `server_tls_sslmode`), as PgBouncer spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// No TLS (the default).
    #[default]
    Disable,
    /// TLS if the other side asks for it.
    Allow,
    /// TLS preferred, plain TCP accepted.
    Prefer,
    /// TLS required, certificate not verified.
    Require,
    /// TLS required, certificate verified against the CA file.
    VerifyCa,
    /// Like `VerifyCa`, and the host name must match the certificate.
    VerifyFull,
}

impl TlsMode {
    /// The configuration spelling (`"disable"`, `"verify-full"`...).
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TlsMode {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => {
                return Err(InvalidValue(format!(
                    "invalid TLS mode `{s}`: expected disable, allow, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }
}

impl<'de> Deserialize<'de> for TlsMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, "a TLS mode string")
    }
}

/// Splits a PgBouncer list value (`"a, b,c"`) into its non-empty items.
pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A list of names: a comma-separated string (PgBouncer style) or an array of strings.
pub(crate) fn de_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a comma-separated string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(split_list(v))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// Parses a file mode written in octal (`"0777"`, `"777"`, `"0o700"`).
pub(crate) fn parse_octal_mode(s: &str) -> Result<u32, InvalidValue> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(m),
        _ => Err(InvalidValue(format!(
            "invalid file mode `{s}`: expected octal digits such as 0777 or 0700"
        ))),
    }
}

/// A file mode: an octal string (`"0777"`) or an integer (TOML's `0o777`).
pub(crate) fn de_octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a file mode: an octal string like \"0777\" or an integer like 0o777")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| E::custom(format!("invalid file mode {v}")))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(-1))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
            parse_octal_mode(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// Parses a PgBouncer boolean: `1`/`0`, `yes`/`no`, `on`/`off`, `true`/`false`.
pub(crate) fn parse_bool(s: &str) -> Result<bool, InvalidValue> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Ok(true),
        "0" | "no" | "off" | "false" => Ok(false),
        _ => Err(InvalidValue(format!(
            "invalid boolean `{s}`: expected 0 or 1 (also yes/no, on/off, true/false)"
        ))),
    }
}

/// Parses a PgBouncer duration: seconds, possibly fractional (`"5"`, `"5.0"`,
/// `"0.25"`), or pgsluice's syntax with a unit (`"250ms"`, `"5m"`).
pub(crate) fn parse_pgbouncer_secs(s: &str) -> Result<Secs, InvalidValue> {
    let t = s.trim();
    if let Some((int, frac)) = t.split_once('.') {
        let bad = || {
            InvalidValue(format!(
                "invalid duration `{s}`: expected seconds such as 15, 0.5 or 2.5"
            ))
        };
        let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return Err(bad());
        }
        let whole: u64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        // Microsecond precision, as PgBouncer keeps.
        let mut micros_text: String = frac.chars().take(6).collect();
        while micros_text.len() < 6 {
            micros_text.push('0');
        }
        let micros: u64 = micros_text.parse().map_err(|_| bad())?;
        let total = whole
            .checked_mul(1_000_000)
            .and_then(|w| w.checked_add(micros))
            .ok_or_else(|| InvalidValue(format!("invalid duration `{s}`: too large")))?;
        return Ok(Secs(Duration::from_micros(total)));
    }
    t.parse()
}

/// Parses a non-negative integer setting.
pub(crate) fn parse_count(s: &str) -> Result<usize, InvalidValue> {
    let t = s.trim();
    t.parse::<usize>().map_err(|_| {
        if t.starts_with('-') {
            InvalidValue(format!("invalid number `{s}`: must not be negative"))
        } else {
            InvalidValue(format!("invalid number `{s}`: expected a whole number"))
        }
    })
}
