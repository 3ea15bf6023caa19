//! A small parser for `postgres://` connection URLs (quick mode).
//!
//! Supports `postgres[ql]://USER[:PASSWORD]@HOST[:PORT][/DB][?params]` with
//! percent-decoding of every component, `[IPv6]` hosts and percent-encoded
//! unix socket directories (`%2Fvar%2Frun%2Fpostgresql`). Query parameters
//! are collected so the caller can warn that they are ignored. Unescaped `@`,
//! `/`, `:` or `?` in the password are tolerated (the last `@` ends it).

use super::DEFAULT_PORT;

/// The parts of a backend URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendUrl {
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) dbname: Option<String>,
    pub(crate) ignored_params: Vec<String>,
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
    let ignored_params = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k).to_owned())
        .collect();
    let (hostport, db_enc) = match hostpart.split_once('/') {
        Some((h, d)) => (h, Some(d)),
        None => (hostpart, None),
    };
    if hostport.contains(',') {
        return Err("backend URL: several hosts are not supported; give exactly one".into());
    }

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
    let dbname = match db_enc {
        None | Some("") => None,
        Some(d) => Some(percent_decode(d, "database name")?),
    };
    Ok(BackendUrl {
        user,
        password,
        host,
        port,
        dbname,
        ignored_params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let u = parse_url("postgres://app:s%40cr%2Ft%3A@db.example.com:6543/appdb").unwrap();
        assert_eq!(u.user, "app");
        assert_eq!(u.password.as_deref(), Some("s@cr/t:"));
        assert_eq!(u.host, "db.example.com");
        assert_eq!(u.port, 6543);
        assert_eq!(u.dbname.as_deref(), Some("appdb"));
        assert!(u.ignored_params.is_empty());
    }

    #[test]
    fn defaults_and_variants() {
        let u = parse_url("postgresql://bob@localhost").unwrap();
        assert_eq!((u.port, u.password, u.dbname), (5432, None, None));
        let u = parse_url("POSTGRES://bob:pw@localhost/").unwrap();
        assert_eq!((u.port, u.dbname), (5432, None));
        let u = parse_url("postgres://bob:p@ss@h:1/d?sslmode=require&application_name=x").unwrap();
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.ignored_params, vec!["sslmode", "application_name"]);
        let u = parse_url("postgres://bob@[::1]:5433/d").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 5433));
        let u = parse_url("postgres://bob@[2001:db8::1]/d").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("2001:db8::1", 5432));
        let u = parse_url("postgres://bob@%2Fvar%2Frun%2Fpostgresql/d").unwrap();
        assert_eq!(u.host, "/var/run/postgresql");
        let u = parse_url("postgres://b%C3%B6b:x+y@h/my%20db").unwrap();
        assert_eq!(u.user, "böb");
        assert_eq!(u.password.as_deref(), Some("x+y"));
        assert_eq!(u.dbname.as_deref(), Some("my db"));
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
            "postgres://u@h1,h2/d",
            "postgres://u@[::1/d",
            "postgres://u@[nothost]/d",
            "postgres://u:%zz@h/d",
            "postgres://u:%ff@h/d",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} should be rejected");
        }
    }
}
