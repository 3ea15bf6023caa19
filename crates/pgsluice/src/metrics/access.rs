//! Who may read the metrics endpoint and the dashboard: the request head parsed
//! without IO, and the `metrics_allow` / `metrics_auth_token` checks as a pure
//! function of the settings, the peer address and the request.

use std::net::IpAddr;

use subtle::ConstantTimeEq;

use crate::config::IpNet;

/// The parts of an HTTP/1.x request head the endpoint looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request<'a> {
    /// `GET`, `HEAD`...
    pub(super) method: &'a str,
    /// The path without the query string.
    pub(super) path: &'a str,
    /// The query string (after `?`), or empty.
    pub(super) query: &'a str,
    /// The `Authorization` header's value.
    pub(super) authorization: Option<&'a str>,
}

impl<'a> Request<'a> {
    /// Parses a request head (the request line and headers).
    pub(super) fn parse(head: &'a str) -> Request<'a> {
        let mut lines = head.lines();
        let mut parts = lines.next().unwrap_or("").split_whitespace();
        let method = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let authorization = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.trim());
        Request {
            method,
            path,
            query,
            authorization,
        }
    }

    /// The (percent-decoded) value of a query parameter.
    pub(super) fn param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    }
}

/// Decodes `%XX` escapes and `+` (a space in a query string); a bad escape stays as is.
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = match b.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// 403: the peer is not in `metrics_allow`.
    Forbidden,
    /// 401: `metrics_auth_token` is set and the request does not carry it.
    Unauthorized,
}

/// The access settings of the endpoint (from `[general]`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Access<'a> {
    /// `metrics_auth_token`; `None` or empty: no token needed.
    pub(super) token: Option<&'a str>,
    /// `metrics_allow`; empty: every address.
    pub(super) allow: &'a [IpNet],
}

impl Access<'_> {
    /// Whether `peer` may make `req`: the address first (403), then the token (401).
    pub(super) fn check(&self, peer: IpAddr, req: &Request<'_>) -> Result<(), Denied> {
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(peer)) {
            return Err(Denied::Forbidden);
        }
        let Some(token) = self.token.filter(|t| !t.is_empty()) else {
            return Ok(());
        };
        let bearer = req.authorization.and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
        let carried = bearer.map(str::to_owned).or_else(|| req.param("token"));
        match carried {
            Some(c) if same(c.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(Denied::Unauthorized),
        }
    }
}

/// Compares two secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "GET /api/stats?x=1&token=s%3Fcr+t HTTP/1.1\r\nHost: h\r\n\
                        authorization:  Bearer abc \r\n\r\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_request_line_and_authorization() {
        let r = Request::parse(HEAD);
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/stats");
        assert_eq!(r.query, "x=1&token=s%3Fcr+t");
        assert_eq!(r.authorization, Some("Bearer abc"));
        assert_eq!(r.param("token").as_deref(), Some("s?cr t"));
        assert_eq!(r.param("x").as_deref(), Some("1"));
        assert_eq!(r.param("y"), None);
        let bare = Request::parse("GET / HTTP/1.0\r\n\r\n");
        assert_eq!((bare.path, bare.query, bare.authorization), ("/", "", None));
        assert_eq!(Request::parse("").method, "");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("a%41"), "aA");
        assert_eq!(percent_decode("é%é"), "é%é", "no panic on multibyte text");
    }

    #[test]
    fn open_without_settings() {
        let a = Access {
            token: None,
            allow: &[],
        };
        assert_eq!(a.check(ip("192.0.2.1"), &Request::parse(HEAD)), Ok(()));
        let empty = Access {
            token: Some(""),
            allow: &[],
        };
        assert_eq!(empty.check(ip("192.0.2.1"), &Request::parse(HEAD)), Ok(()));
    }

    #[test]
    fn a_token_in_the_header_or_the_query() {
        let a = Access {
            token: Some("abc"),
            allow: &[],
        };
        let peer = ip("127.0.0.1");
        assert_eq!(a.check(peer, &Request::parse(HEAD)), Ok(()));
        let q = Request::parse("GET /?token=abc HTTP/1.1\r\n\r\n");
        assert_eq!(a.check(peer, &q), Ok(()));
        for refused in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET /?token=abd HTTP/1.1\r\n\r\n",
            "GET /?token=ab HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nAuthorization: Basic abc\r\n\r\n",
            "GET / HTTP/1.1\r\nAuthorization: Bearer abcd\r\n\r\n",
        ] {
            assert_eq!(
                a.check(peer, &Request::parse(refused)),
                Err(Denied::Unauthorized),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_allow_list_comes_first() {
        let allow = ["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        let a = Access {
            token: Some("abc"),
            allow: &allow,
        };
        let r = Request::parse(HEAD);
        assert_eq!(a.check(ip("127.0.0.5"), &r), Ok(()));
        assert_eq!(a.check(ip("::1"), &r), Ok(()));
        assert_eq!(a.check(ip("10.0.0.1"), &r), Err(Denied::Forbidden));
        let no_token = Request::parse("GET / HTTP/1.1\r\n\r\n");
        assert_eq!(a.check(ip("10.0.0.1"), &no_token), Err(Denied::Forbidden));
        assert_eq!(
            a.check(ip("127.0.0.1"), &no_token),
            Err(Denied::Unauthorized)
        );
    }
}
