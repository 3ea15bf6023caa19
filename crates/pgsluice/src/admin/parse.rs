//! Parsing admin console commands: `WORD [WORD]` and `SET key = value`, words bare or
//! double-quoted, values bare or single-quoted, an optional `;` at the end; several
//! commands may share one query string, separated by `;`.

use pgsluice_protocol::SqlState;

use super::AdminError;

/// One admin console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SHOW what` (also `SELECT what`), `what` lowercased.
    Show(String),
    /// `SET key = value`.
    Set {
        /// The setting, lowercased.
        key: String,
        /// The value, unquoted.
        value: String,
    },
    /// Any other `WORD [arg]`, word lowercased; the argument keeps its case.
    Action {
        /// The command word.
        word: String,
        /// Its argument, if any.
        arg: Option<String>,
    },
}

/// Splits a query string into commands (empty statements are skipped).
pub fn parse(query: &str) -> Result<Vec<Command>, AdminError> {
    split_statements(query)
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_one(s.trim()))
        .collect()
}

fn syntax(stmt: &str) -> AdminError {
    AdminError::new(
        SqlState::SYNTAX_ERROR,
        format!("invalid command '{stmt}', use SHOW HELP;"),
    )
}

/// Splits on `;` outside single and double quotes.
fn split_statements(q: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quote) = (0, None);
    for (i, c) in q.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ';') => {
                out.push(&q[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&q[start..]);
    out
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip_ws(&mut self) -> bool {
        let before = self.pos;
        while self.s[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.s[self.pos..].chars().next().map_or(1, char::len_utf8);
        }
        self.pos > before
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// A bare word (no whitespace, quotes, `=`) or a quoted one (doubled quote escapes).
    fn word(&mut self, quote: char) -> Option<String> {
        let rest = &self.s[self.pos..];
        if let Some(body) = rest.strip_prefix(quote) {
            let mut out = String::new();
            let mut chars = body.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == quote {
                    if chars.peek().map(|&(_, n)| n) == Some(quote) {
                        out.push(quote);
                        chars.next();
                        continue;
                    }
                    self.pos += 1 + i + 1;
                    return Some(out);
                }
                out.push(c);
            }
            return None; // unterminated
        }
        let len = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '\'' || c == '"')
            .unwrap_or(rest.len());
        if len == 0 {
            return None;
        }
        self.pos += len;
        Some(rest[..len].to_owned())
    }
}

fn parse_one(stmt: &str) -> Result<Command, AdminError> {
    let mut lx = Lexer { s: stmt, pos: 0 };
    let first = lx.word('"').ok_or_else(|| syntax(stmt))?;
    let word = first.to_ascii_lowercase();
    if word == "set" {
        if !lx.skip_ws() {
            return Err(syntax(stmt));
        }
        let key = lx.word('"').ok_or_else(|| syntax(stmt))?;
        lx.skip_ws();
        let rest = &stmt[lx.pos..];
        if let Some(r) = rest.strip_prefix('=') {
            lx.pos += stmt.len() - lx.pos - r.len();
        } else if rest.len() >= 2 && rest[..2].eq_ignore_ascii_case("to") {
            lx.pos += 2;
        } else {
            return Err(syntax(stmt));
        }
        lx.skip_ws();
        let value = lx.word('\'').ok_or_else(|| syntax(stmt))?;
        lx.skip_ws();
        if !lx.at_end() {
            return Err(syntax(stmt));
        }
        return Ok(Command::Set {
            key: key.to_ascii_lowercase(),
            value,
        });
    }
    let had_ws = lx.skip_ws();
    let arg = if lx.at_end() {
        None
    } else if had_ws {
        let a = lx.word('"').ok_or_else(|| syntax(stmt))?;
        lx.skip_ws();
        if !lx.at_end() {
            return Err(syntax(stmt));
        }
        Some(a)
    } else {
        return Err(syntax(stmt));
    };
    Ok(match (word.as_str(), arg) {
        ("show" | "select", Some(a)) => Command::Show(a.to_ascii_lowercase()),
        ("show" | "select", None) => return Err(syntax(stmt)),
        (_, arg) => Command::Action { word, arg },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(q: &str) -> Command {
        let mut v = parse(q).unwrap();
        assert_eq!(v.len(), 1, "{q}");
        v.remove(0)
    }

    #[test]
    fn commands() {
        assert_eq!(one("SHOW POOLS"), Command::Show("pools".into()));
        assert_eq!(one("  show\tpools ;  "), Command::Show("pools".into()));
        assert_eq!(
            one("pause \"My-Db\""),
            Command::Action {
                word: "pause".into(),
                arg: Some("My-Db".into())
            }
        );
        assert_eq!(
            one("RESUME"),
            Command::Action {
                word: "resume".into(),
                arg: None
            }
        );
        assert_eq!(
            one("SET default_pool_size = 5"),
            Command::Set {
                key: "default_pool_size".into(),
                value: "5".into()
            }
        );
        assert_eq!(
            one("set server_reset_query to 'DISCARD ''ALL'''"),
            Command::Set {
                key: "server_reset_query".into(),
                value: "DISCARD 'ALL'".into()
            }
        );
        assert_eq!(
            one("SET query_wait_timeout=30s"),
            Command::Set {
                key: "query_wait_timeout".into(),
                value: "30s".into()
            }
        );
        assert_eq!(parse("PAUSE a; RESUME a;").unwrap().len(), 2);
        assert!(parse(" ; ").unwrap().is_empty());
    }

    #[test]
    fn errors() {
        for q in [
            "SHOW",
            "SHOW a b",
            "KILL a b",
            "SET x",
            "SET x = 'unterminated",
            "SET x = 1 2",
            "\"unterminated",
        ] {
            let e = parse(q).unwrap_err();
            assert_eq!(e.code, SqlState::SYNTAX_ERROR, "{q}");
        }
    }
}
