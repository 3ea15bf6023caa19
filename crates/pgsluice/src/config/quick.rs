//! A small parser for `postgres://` connection URLs (quick mode).
//!
//! Supports `postgres[ql]://USER[:PASSWORD]@HOST[:PORT][,HOST[:PORT]...][/DB][?params]`
//! with percent-decoding of every component, `[IPv6]` hosts and percent-encoded
//! unix socket directories (`%2Fvar%2Frun%2Fpostgresql`). Several hosts are
//! libpq's multi-host form, each with its own port (5432 when not given). The
//! query parameters `target_session_attrs` and `load_balance_hosts` are read; the
//! others are collected so the caller can warn that they are ignored. Unescaped
//! `@`, `/`, `:` or `?` in the password are tolerated (the last `@` ends it).

use super::{
    Config, ConfigError, DatabaseConfig, HostConfig, HostRole, LoadBalance, TargetSessionAttrs,
    UserConfig, DEFAULT_PORT,
};

/// The parts of a backend URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendUrl {
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    /// In URL order, each with its port.
    pub(crate) hosts: Vec<(String, u16)>,
    pub(crate) dbname: Option<String>,
    /// `?target_session_attrs=`.
    pub(crate) target_session_attrs: Option<TargetSessionAttrs>,
    /// `?load_balance_hosts=` (libpq: `disable` or `random`).
    pub(crate) load_balance: Option<LoadBalance>,
    pub(crate) ignored_params: Vec<String>,
}

/// Quick mode's configuration: see [`Config::quick`].
pub(super) fn config(backend_url: &str) -> Result<Config, ConfigError> {
    let url = parse_url(backend_url).map_err(ConfigError::Invalid)?;
    if !url.ignored_params.is_empty() {
        tracing::warn!(
            params = %url.ignored_params.join(","),
            "query parameters in the backend URL are ignored"
        );
    }
    let mut cfg = Config::default();
    let db = url.dbname.clone().unwrap_or_else(|| url.user.clone());
    let mut dbc = match url.hosts.as_slice() {
        [(host, port)] => {
            let mut d = DatabaseConfig::new(host.clone());
            d.port = *port;
            d
        }
        several => {
            let mut d = DatabaseConfig::new("");
            let list = several.iter().map(|(host, port)| HostConfig {
                host: host.clone(),
                port: *port,
                role: HostRole::Auto,
            });
            d.hosts = Some(list.collect());
            d
        }
    };
    dbc.dbname = Some(db.clone());
    dbc.target_session_attrs = url.target_session_attrs;
    dbc.load_balance = url.load_balance;
    cfg.databases.insert(db, dbc);
    cfg.users.insert(
        url.user,
        UserConfig {
            password: url.password,
            ..UserConfig::default()
        },
    );
    cfg.validate()?;
    Ok(cfg)
}

/// Percent-decodes `s` (`%XX` escapes; `+` is kept as is) into UTF-8.
pub(crate) fn percent_decode(s: &str, what: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("backend URL: invalid percent-encoding in the {what}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| format!("backend URL: the {what} is not valid UTF-8 once decoded"))
}

/// Parses a backend URL. Errors are complete messages.
pub(crate) fn parse_url(url: &str) -> Result<BackendUrl, String> {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    let rest = ["postgres://", "postgresql://"]
        .iter()
        .find(|p| lower.starts_with(*p))
        .map(|p| &url[p.len()..])
        .ok_or_else(|| {
            "backend URL must start with postgres:// or postgresql:// \
             (postgres://USER:PASSWORD@HOST:PORT/DB)"
                .to_owned()
        })?;
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);

    let (userinfo, hostpart) = rest.rsplit_once('@').ok_or_else(|| {
        "backend URL must name a user: postgres://USER:PASSWORD@HOST:PORT/DB".to_owned()
    })?;
    let (user_enc, pass_enc) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    let user = percent_decode(user_enc, "user name")?;
    if user.is_empty() {
        return Err("backend URL must name a user: postgres://USER:PASSWORD@HOST:PORT/DB".into());
    }
    let password = pass_enc
        .map(|p| percent_decode(p, "password"))
        .transpose()?;

    let (hostpart, query) = match hostpart.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (hostpart, None),
    };
    let (hostport, db_enc) = match hostpart.split_once('/') {
        Some((h, d)) => (h, Some(d)),
        None => (hostpart, None),
    };
    let hosts = hostport
        .split(',')
        .map(parse_host)
        .collect::<Result<Vec<_>, _>>()?;
    let dbname = match db_enc {
        None | Some("") => None,
        Some(d) => Some(percent_decode(d, "database name")?),
    };
    let mut url = BackendUrl {
        user,
        password,
        hosts,
        dbname,
        target_session_attrs: None,
        load_balance: None,
        ignored_params: Vec::new(),
    };
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        if kv.is_empty() {
            continue;
        }
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let k = percent_decode(k, "query parameters")?;
        let v = percent_decode(v, "query parameters")?;
        match k.as_str() {
            "target_session_attrs" => {
                url.target_session_attrs = Some(
                    v.parse()
                        .map_err(|e: super::InvalidValue| format!("backend URL: {e}"))?,
                );
            }
            "load_balance_hosts" => {
                url.load_balance = Some(match v.as_str() {
                    "disable" => LoadBalance::InOrder,
                    "random" => LoadBalance::Random,
                    _ => {
                        return Err(format!(
                        "backend URL: invalid load_balance_hosts `{v}`: expected disable or random"
                    ))
                    }
                });
            }
            _ => url.ignored_params.push(k),
        }
    }
    Ok(url)
}

/// One `HOST[:PORT]` of the URL's host list.
fn parse_host(hostport: &str) -> Result<(String, u16), String> {
    let (host_enc, port_str) = if let Some(r) = hostport.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| "backend URL: unterminated `[` in an IPv6 host".to_owned())?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("backend URL: `{h}` is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            a => Some(
                a.strip_prefix(':')
                    .ok_or_else(|| format!("backend URL: unexpected `{a}` after the IPv6 host"))?,
            ),
        };
        (h, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let host = percent_decode(host_enc, "host")?;
    if host.is_empty() {
        return Err("backend URL must name a host: postgres://USER:PASSWORD@HOST:PORT/DB".into());
    }
    let port = match port_str {
        None | Some("") => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("backend URL: invalid port `{p}`")),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_host(u: &BackendUrl) -> (&str, u16) {
        assert_eq!(u.hosts.len(), 1, "{u:?}");
        (u.hosts[0].0.as_str(), u.hosts[0].1)
    }

    fn hosts(u: &BackendUrl) -> Vec<(&str, u16)> {
        u.hosts.iter().map(|(h, p)| (h.as_str(), *p)).collect()
    }

    #[test]
    fn full_url() {
        let u = parse_url("postgres://app:s%40cr%2Ft%3A@db.example.com:6543/appdb").unwrap();
        assert_eq!(u.user, "app");
        assert_eq!(u.password.as_deref(), Some("s@cr/t:"));
        assert_eq!(one_host(&u), ("db.example.com", 6543));
        assert_eq!(u.dbname.as_deref(), Some("appdb"));
        assert!(u.ignored_params.is_empty());
        assert_eq!((u.target_session_attrs, u.load_balance), (None, None));
    }

    #[test]
    fn defaults_and_variants() {
        let u = parse_url("postgresql://bob@localhost").unwrap();
        assert_eq!((one_host(&u).1, u.password, u.dbname), (5432, None, None));
        let u = parse_url("POSTGRES://bob:pw@localhost/").unwrap();
        assert_eq!((one_host(&u).1, u.dbname), (5432, None));
        let u = parse_url("postgres://bob:p@ss@h:1/d?sslmode=require&application_name=x").unwrap();
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.ignored_params, vec!["sslmode", "application_name"]);
        let u = parse_url("postgres://bob@[::1]:5433/d").unwrap();
        assert_eq!(one_host(&u), ("::1", 5433));
        let u = parse_url("postgres://bob@[2001:db8::1]/d").unwrap();
        assert_eq!(one_host(&u), ("2001:db8::1", 5432));
        let u = parse_url("postgres://bob@%2Fvar%2Frun%2Fpostgresql/d").unwrap();
        assert_eq!(one_host(&u).0, "/var/run/postgresql");
        let u = parse_url("postgres://b%C3%B6b:x+y@h/my%20db").unwrap();
        assert_eq!(u.user, "böb");
        assert_eq!(u.password.as_deref(), Some("x+y"));
        assert_eq!(u.dbname.as_deref(), Some("my db"));
    }

    #[test]
    fn several_hosts_and_routing_params() {
        let u = parse_url("postgres://app:secret@h1:5432,h2:5433/app").unwrap();
        assert_eq!(hosts(&u), [("h1", 5432), ("h2", 5433)]);
        // A host without a port gets 5432, as in libpq.
        let u = parse_url("postgres://app@h1,h2:5433,[::1]:6000,[fe80::2]/app").unwrap();
        assert_eq!(
            hosts(&u),
            [("h1", 5432), ("h2", 5433), ("::1", 6000), ("fe80::2", 5432)]
        );
        let u = parse_url(
            "postgres://app@h1,h2/app?target_session_attrs=read-write&load_balance_hosts=random&sslmode=x",
        )
        .unwrap();
        assert_eq!(u.target_session_attrs, Some(TargetSessionAttrs::ReadWrite));
        assert_eq!(u.load_balance, Some(LoadBalance::Random));
        assert_eq!(u.ignored_params, ["sslmode"]);
        let u = parse_url(
            "postgres://app@h/app?load_balance_hosts=disable&target_session_attrs=prefer-standby",
        )
        .unwrap();
        assert_eq!(u.load_balance, Some(LoadBalance::InOrder));
        assert_eq!(
            u.target_session_attrs,
            Some(TargetSessionAttrs::PreferStandby)
        );
        for bad in [
            "postgres://u@h/d?target_session_attrs=fastest",
            "postgres://u@h/d?load_balance_hosts=round-robin",
            "postgres://u@h1,,h2/d",
            "postgres://u@h1,/d",
            "postgres://u@h1,h2:0/d",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} should be rejected");
        }
        let e = parse_url("postgres://u@h/d?target_session_attrs=fastest").unwrap_err();
        assert!(e.contains("target_session_attrs `fastest`"), "{e}");
    }

    #[test]
    fn errors() {
        for bad in [
            "mysql://u@h/d",
            "postgres://h/d",
            "postgres://@h/d",
            "postgres://u@/d",
            "postgres://u@h:0/d",
            "postgres://u@h:99999/d",
            "postgres://u@h:abc/d",
            "postgres://u@[::1/d",
            "postgres://u@[nothost]/d",
            "postgres://u:%zz@h/d",
            "postgres://u:%ff@h/d",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} should be rejected");
        }
    }
}
