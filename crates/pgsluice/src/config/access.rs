//! Value types of the access settings of the metrics endpoint: an IP network
//! (`10.0.0.0/8`, `::1`, `192.168.1.7`) for allow-lists such as `metrics_allow`, the
//! serde helper that reads a list of them, and a token that never shows in `Debug`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer};

use super::hba;
use super::types::{split_list, InvalidValue};

/// A shared secret such as `metrics_auth_token`: `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Token {
        Token(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An IP network: an address and a prefix length (a plain address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    ///
    /// ```
    /// use pgsluice::config::IpNet;
    /// let net: IpNet = "10.1.0.0/16".parse().unwrap();
    /// assert!(net.contains("10.1.2.3".parse().unwrap()));
    /// assert!(!net.contains("10.2.0.1".parse().unwrap()));
    /// ```
    pub fn contains(&self, ip: IpAddr) -> bool {
        // The same network test as the HBA file's address column.
        hba::prefix_mask(self.addr, self.prefix)
            .is_some_and(|mask| hba::in_network(ip.to_canonical(), self.addr, mask))
    }
}

impl FromStr for IpNet {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<IpNet, InvalidValue> {
        let t = s.trim();
        let bad = || {
            InvalidValue(format!(
                "invalid network `{s}`: expected an IP address or ADDRESS/PREFIX such as 10.0.0.0/8"
            ))
        };
        let (ip, prefix) = match t.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (t, None),
        };
        let addr = ip.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
                b.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A list of networks: a comma-separated string or an array of strings.
pub(crate) fn de_net_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<IpNet>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a comma-separated string or a list of IP addresses or networks")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            split_list(v)
                .iter()
                .map(|n| n.parse().map_err(E::custom))
                .collect()
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s.parse().map_err(de::Error::custom)?);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, to_redacted_toml, Config, ConfigError};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_and_single_addresses() {
        assert!(net("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.1")));
        assert!(net("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")), "families differ");
        assert!(net("::1").contains(ip("::1")));
        assert!(net("fd00::/8").contains(ip("fd12::5")));
        assert!(
            net("127.0.0.0/8").contains(ip("::ffff:127.0.0.9")),
            "IPv4-mapped"
        );
        assert_eq!(net(" 10.1.2.3/16 ").to_string(), "10.1.2.3/16");
    }

    #[test]
    fn a_token_is_not_printed() {
        let t = Token::new("s3cret");
        assert_eq!(format!("{:?}", Some(&t)), "Some(<redacted>)");
        assert_eq!(t.expose(), "s3cret");
    }

    #[test]
    fn bad_networks_are_refused() {
        for s in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "host",
        ] {
            assert!(s.parse::<IpNet>().is_err(), "{s}");
        }
    }

    #[test]
    fn a_list_from_a_string_or_an_array() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "de_net_list")]
            a: Vec<IpNet>,
        }
        let t: T = toml::from_str("a = \"127.0.0.1, 10.0.0.0/8\"").unwrap();
        assert_eq!(t.a, vec![net("127.0.0.1"), net("10.0.0.0/8")]);
        let t: T = toml::from_str("a = [\"::1\"]").unwrap();
        assert_eq!(t.a, vec![net("::1")]);
        let e = toml::from_str::<T>("a = \"10.0.0.0/40\"").err().unwrap();
        assert!(e.to_string().contains("invalid network"), "{e}");
    }

    fn parse_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        parse_str(text, "test.toml", env.collect::<Vec<_>>())
    }

    #[test]
    fn metrics_access_settings_in_the_file_and_the_environment() {
        let c = parse_env(
            "[general]\nmetrics_auth_token = \"tok-1\"\nmetrics_allow = \"127.0.0.1, 10.0.0.0/8\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.general.metrics_auth_token.as_ref().map(Token::expose),
            Some("tok-1")
        );
        assert_eq!(c.general.metrics_allow.len(), 2);
        // The token survives the table round trip, is kept out of Debug and --print-config.
        let again: Config = crate::config::load::to_table(&c).try_into().unwrap();
        assert_eq!(again.general, c.general);
        assert!(!format!("{c:?}").contains("tok-1"));
        let printed = to_redacted_toml(&c);
        assert!(!printed.contains("tok-1"), "{printed}");
        assert!(printed.contains("metrics_allow"), "{printed}");
        // Environment variables set them too.
        let c = parse_env(
            "",
            &[
                ("PGSLUICE_METRICS_AUTH_TOKEN", "abc"),
                ("PGSLUICE_METRICS_ALLOW", "::1"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.general.metrics_auth_token.as_ref().map(Token::expose),
            Some("abc")
        );
        assert_eq!(c.general.metrics_allow, vec![net("::1")]);
        match parse_env("[general]\nmetrics_allow = [\"10.0.0.0/99\"]\n", &[]) {
            Err(ConfigError::At {
                line, key, message, ..
            }) => {
                assert_eq!((line, key.as_str()), (2, "general.metrics_allow"));
                assert!(message.contains("invalid network"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
