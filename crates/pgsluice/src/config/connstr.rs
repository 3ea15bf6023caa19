//! libpq-style `key=value` lists, as PgBouncer's `[databases]`, `[users]`
//! and `[peers]` values are written: `host=db1 port=5433 password='a b\'c'`.
//!
//! Pairs are separated by blanks; blanks around `=` are allowed. A value is
//! either a bare word (a backslash escapes the next character) or in single
//! quotes, where `\'` is a quote and `\\` a backslash. An empty value is
//! written `''`, or as nothing before the next blank.

/// Parses a connection string into `(key, value)` pairs, in order. Keys are
/// lowercased.
pub(crate) fn parse(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if key.is_empty() {
            return Err("missing parameter name before `=`".to_owned());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("expected `{key}=value`"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value for `{key}`")),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value for `{key}`")),
                    },
                    Some(c) => value.push(c),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(format!("unexpected text after the quoted value of `{key}`"));
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(e) = chars.next() {
                        value.push(e);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key.to_ascii_lowercase(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn pairs_quotes_and_escapes() {
        assert_eq!(parse("").unwrap(), kv(&[]));
        assert_eq!(
            parse("host=db1  Port = 5433\tdbname=x").unwrap(),
            kv(&[("host", "db1"), ("port", "5433"), ("dbname", "x")])
        );
        assert_eq!(
            parse(r"password='it\'s a \\ test' user=a\ b q=''").unwrap(),
            kv(&[("password", r"it's a \ test"), ("user", "a b"), ("q", "")])
        );
        assert_eq!(
            parse("connect_query='SELECT 1' x=").unwrap(),
            kv(&[("connect_query", "SELECT 1"), ("x", "")])
        );
    }

    #[test]
    fn malformed() {
        assert!(parse("host").unwrap_err().contains("host=value"));
        assert!(parse("password='abc").unwrap_err().contains("unterminated"));
        assert!(parse("a='b'c").unwrap_err().contains("after the quoted"));
        assert!(parse("=x").unwrap_err().contains("missing parameter name"));
    }
}
