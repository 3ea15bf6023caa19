//! The `auth_ident_file` parser and matcher: PostgreSQL's `pg_ident.conf` lines
//! `MAPNAME SYSTEM-USERNAME DATABASE-USERNAME`, the subset PgBouncer supports.
//!
//! Same lexical rules as the HBA file (quotes, `#` comments, backslash continuation).
//! The database user is a name or `all`; a system user starting with `/` (a regular
//! expression in PostgreSQL), a database user `+group` or `/regex`, lists and
//! `include` directives are errors naming the file, line and field, as PgBouncer does
//! not support them either.

use super::parse::{logical_lines, tokenize, Token};
use super::HbaError;

/// The parsed maps of an `auth_ident_file`, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentMaps {
    /// The file the maps come from, for messages.
    pub file: String,
    /// Its lines.
    pub lines: Vec<IdentLine>,
}

/// One line: `system_user` may log in as `pg_user` through the map `map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentLine {
    /// 1-based line number (of the first line when continued).
    pub line: usize,
    /// The map name that `map=` options refer to.
    pub map: String,
    /// The certificate common name or OS user name (compared exactly).
    pub system_user: String,
    /// The database user name(s) it may log in as.
    pub pg_user: IdentUser,
}

/// The database-user field of a map line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentUser {
    /// `all`: any database user.
    All,
    /// One user name (compared exactly).
    Name(String),
}

impl IdentMaps {
    /// Whether the map `map` lets `system_user` log in as `pg_user`.
    pub fn permits(&self, map: &str, system_user: &str, pg_user: &str) -> bool {
        self.lines.iter().any(|l| {
            l.map == map
                && l.system_user == system_user
                && match &l.pg_user {
                    IdentUser::All => true,
                    IdentUser::Name(n) => n == pg_user,
                }
        })
    }

    /// Whether some line belongs to the map `map`.
    pub fn defines(&self, map: &str) -> bool {
        self.lines.iter().any(|l| l.map == map)
    }
}

/// Parses the text of an ident map file named `file`.
pub fn parse_ident(text: &str, file: &str) -> Result<IdentMaps, HbaError> {
    let mut lines = Vec::new();
    for (line, l) in logical_lines(text) {
        let err = |field: &'static str, message: String| HbaError {
            file: file.to_owned(),
            line,
            field,
            message,
        };
        let fields = tokenize(&l).map_err(|m| err("line", m))?;
        if fields.is_empty() {
            continue;
        }
        if let Some(first) = fields[0].first().filter(|t| {
            t.is_kw("include") || t.is_kw("include_if_exists") || t.is_kw("include_dir")
        }) {
            if fields.len() == 2 {
                return Err(err(
                    "map",
                    format!("`{}` directives are not supported", first.text),
                ));
            }
        }
        let mut fields = fields.into_iter();
        let mut single = |field: &'static str| -> Result<Token, HbaError> {
            let mut f = fields
                .next()
                .ok_or_else(|| err(field, format!("end of line before the {field} field")))?;
            if f.len() > 1 {
                let list: Vec<&str> = f.iter().map(|t| t.text.as_str()).collect();
                return Err(err(
                    field,
                    format!("a list (`{}`) is not allowed here", list.join(",")),
                ));
            }
            Ok(f.remove(0))
        };
        let map = single("map")?;
        let system = single("system user")?;
        let pg = single("database user")?;
        if let Some(extra) = fields.next() {
            return Err(err(
                "line",
                format!(
                    "unexpected `{}` after the database user name: a line is \
                     MAPNAME SYSTEM-USERNAME DATABASE-USERNAME",
                    extra[0].text
                ),
            ));
        }
        if !system.quoted && system.text.starts_with('/') {
            return Err(err(
                "system user",
                format!(
                    "`{}`: regular expressions are not supported (quote the name if it \
                     starts with `/`)",
                    system.text
                ),
            ));
        }
        let pg_user = if pg.is_kw("all") {
            IdentUser::All
        } else if !pg.quoted && pg.text.starts_with('+') {
            return Err(err(
                "database user",
                format!("`{}`: group membership (+role) is not supported", pg.text),
            ));
        } else if !pg.quoted && pg.text.starts_with('/') {
            return Err(err(
                "database user",
                format!(
                    "`{}`: regular expressions are not supported (quote the name if it \
                     starts with `/`)",
                    pg.text
                ),
            ));
        } else {
            IdentUser::Name(pg.text)
        };
        lines.push(IdentLine {
            line,
            map: map.text,
            system_user: system.text,
            pg_user,
        });
    }
    Ok(IdentMaps {
        file: file.to_owned(),
        lines,
    })
}
