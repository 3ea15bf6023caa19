//! Typed values of the log settings: the syslog facility (`syslog_facility`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::types::{from_str_value, InvalidValue};

/// The syslog facility log lines are sent with (`syslog_facility`), the names
/// PgBouncer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyslogFacility {
    /// `auth`.
    Auth,
    /// `authpriv`.
    AuthPriv,
    /// `daemon`, the default.
    #[default]
    Daemon,
    /// `user`.
    User,
    /// `local0` to `local7`.
    Local(u8),
}

impl SyslogFacility {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        const LOCAL: [&str; 8] = [
            "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
        ];
        match self {
            SyslogFacility::Auth => "auth",
            SyslogFacility::AuthPriv => "authpriv",
            SyslogFacility::Daemon => "daemon",
            SyslogFacility::User => "user",
            SyslogFacility::Local(n) => LOCAL[usize::from(n.min(7))],
        }
    }

    /// The facility number of RFC 5424 (as in `<syslog.h>`, before the shift by 3).
    pub fn code(self) -> u8 {
        match self {
            SyslogFacility::Auth => 4,
            SyslogFacility::AuthPriv => 10,
            SyslogFacility::Daemon => 3,
            SyslogFacility::User => 1,
            SyslogFacility::Local(n) => 16 + n.min(7),
        }
    }
}

impl fmt::Display for SyslogFacility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SyslogFacility {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = s.trim().to_ascii_lowercase();
        Ok(match v.as_str() {
            "auth" => SyslogFacility::Auth,
            "authpriv" => SyslogFacility::AuthPriv,
            "daemon" => SyslogFacility::Daemon,
            "user" => SyslogFacility::User,
            _ => match v.strip_prefix("local").and_then(|n| n.parse::<u8>().ok()) {
                Some(n) if n <= 7 => SyslogFacility::Local(n),
                _ => {
                    return Err(InvalidValue(format!(
                        "invalid syslog facility `{s}`: expected auth, authpriv, daemon, user \
                         or local0 to local7"
                    )))
                }
            },
        })
    }
}

impl<'de> Deserialize<'de> for SyslogFacility {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_value(d, "a syslog facility name")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilities_parse_and_map_to_syslog_codes() {
        for (name, code) in [
            ("auth", 4),
            ("AuthPriv", 10),
            ("daemon", 3),
            ("user", 1),
            ("local0", 16),
            ("local7", 23),
        ] {
            let f: SyslogFacility = name.parse().unwrap();
            assert_eq!(f.code(), code, "{name}");
            assert_eq!(f.as_str(), name.to_ascii_lowercase());
        }
        for bad in ["local8", "kern", "", "localx"] {
            assert!(bad.parse::<SyslogFacility>().is_err(), "{bad}");
        }
    }
}
