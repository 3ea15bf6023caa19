//! Reading PgBouncer's ini format: sections, `key = value` lines, comments
//! and `%include`, with the file and line of every entry.
//!
//! The rules, as PgBouncer documents them:
//!
//! * `[name]` starts a section (names are case-insensitive);
//! * lines whose first non-blank character is `;` or `#` are comments; those
//!   characters are not special later in a line;
//! * `key = value`: the value runs to the end of the line, surrounding blanks
//!   removed; a key may be written in double quotes (`"my db" = ...`, with
//!   `""` for a quote), as database and user names sometimes need;
//! * `%include FILE` reads another file as if its lines were written there
//!   (the current section carries over in both directions). A relative FILE
//!   is looked up next to the including file, then in the current directory
//!   (PgBouncer's documented rule).

use std::path::{Path, PathBuf};

use super::ConfigError;

/// How deep `%include` may nest (a cycle is reported before that).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Where an entry was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    /// The file's name as given (or as resolved for an included file).
    pub(crate) file: String,
    /// 1-based line.
    pub(crate) line: usize,
}

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Lowercased section name, without brackets.
    pub(crate) section: String,
    /// The key as written (unquoted; case kept).
    pub(crate) key: String,
    /// The value, trimmed.
    pub(crate) value: String,
    /// Where the line is.
    pub(crate) loc: Loc,
}

/// Reads ini text already in memory (`file` is the name used in messages;
/// includes are resolved against the current directory and its directory).
pub(crate) fn read_text(text: &str, file: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut reader = Reader {
        entries: Vec::new(),
        section: None,
        stack: vec![std::fs::canonicalize(file).unwrap_or_else(|_| PathBuf::from(file))],
    };
    reader.text(text, Path::new(file))?;
    Ok(reader.entries)
}

/// Resolves a file name written in `including` (a config file): absolute as
/// is; relative next to `including`, else relative to the current directory
/// when only that one exists.
pub(crate) fn resolve_path(including: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let beside = including
        .parent()
        .map_or_else(|| p.to_path_buf(), |dir| dir.join(p));
    if !beside.exists() && p.exists() {
        return p.to_path_buf();
    }
    beside
}

struct Reader {
    entries: Vec<Entry>,
    section: Option<String>,
    /// Canonical paths of the files being read, to detect include cycles.
    stack: Vec<PathBuf>,
}

impl Reader {
    fn file(&mut self, path: &Path, from: Option<&Loc>) -> Result<(), ConfigError> {
        let name = path.display().to_string();
        let fail = |message: String| match from {
            Some(loc) => ConfigError::At {
                file: loc.file.clone(),
                line: loc.line,
                key: "%include".to_owned(),
                message,
            },
            None => ConfigError::File {
                file: name.clone(),
                message,
            },
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read the configuration file `{name}`: {e}")))?;
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if self.stack.contains(&canonical) {
            return Err(fail(format!("`{name}` includes itself")));
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(fail(format!(
                "includes nested deeper than {MAX_INCLUDE_DEPTH} files"
            )));
        }
        self.stack.push(canonical);
        let r = self.text(&text, path);
        self.stack.pop();
        r
    }

    fn text(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let file = path.display().to_string();
        for (i, raw) in text.split('\n').enumerate() {
            let loc = Loc {
                file: file.clone(),
                line: i + 1,
            };
            let line = raw.strip_suffix('\r').unwrap_or(raw).trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let at = |key: &str, message: String| ConfigError::At {
                file: loc.file.clone(),
                line: loc.line,
                key: key.to_owned(),
                message,
            };
            if let Some(rest) = line.strip_prefix("%include") {
                let target = rest.trim();
                if target.is_empty() || !rest.starts_with(char::is_whitespace) {
                    return Err(at("%include", "expected `%include FILE`".to_owned()));
                }
                let resolved = resolve_path(path, target);
                self.file(&resolved, Some(&loc))?;
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(at(
                        line,
                        "a section header must look like `[name]`".to_owned(),
                    ));
                };
                let name = name.trim();
                if name.is_empty() {
                    return Err(at(line, "empty section name".to_owned()));
                }
                self.section = Some(name.to_ascii_lowercase());
                continue;
            }
            let (key, value) = split_key_value(line).map_err(|m| at(line, m))?;
            let Some(section) = self.section.clone() else {
                return Err(at(
                    &key,
                    "setting outside of any section: put it under [pgbouncer], [databases] or [users]"
                        .to_owned(),
                ));
            };
            self.entries.push(Entry {
                section,
                key,
                value,
                loc,
            });
        }
        Ok(())
    }
}

/// Splits `key = value`, unquoting a double-quoted key.
fn split_key_value(line: &str) -> Result<(String, String), String> {
    let (key, rest) = if let Some(after) = line.strip_prefix('"') {
        let mut key = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if after[i + 1..].starts_with('"') {
                    key.push('"');
                    chars.next();
                } else {
                    end = Some(i + 1);
                    break;
                }
            } else {
                key.push(c);
            }
        }
        let end = end.ok_or_else(|| "unterminated quoted name".to_owned())?;
        (key, after[end..].trim_start())
    } else {
        let eq = line
            .find('=')
            .ok_or_else(|| "expected `key = value`".to_owned())?;
        (line[..eq].trim().to_owned(), &line[eq..])
    };
    let value = rest
        .strip_prefix('=')
        .ok_or_else(|| format!("expected `=` after `{key}`"))?;
    if key.is_empty() {
        return Err("missing name before `=`".to_owned());
    }
    Ok((key, value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_comments_and_quoted_keys() {
        let text = ";; c\n# c\n[Databases]\n\"my \"\"db\"\"\" = host=x\nplain=\n\n[pgbouncer]\n listen_port = 6432 ; not a comment\n";
        let e = read_text(text, "t.ini").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (
                e[0].section.as_str(),
                e[0].key.as_str(),
                e[0].value.as_str()
            ),
            ("databases", "my \"db\"", "host=x")
        );
        assert_eq!(e[0].loc.line, 4);
        assert_eq!((e[1].key.as_str(), e[1].value.as_str()), ("plain", ""));
        assert_eq!(e[2].value, "6432 ; not a comment");
        assert_eq!(
            e[2].loc,
            Loc {
                file: "t.ini".into(),
                line: 8
            }
        );
    }

    #[test]
    fn errors_have_lines() {
        let err = |t: &str| match read_text(t, "t.ini") {
            Err(ConfigError::At { line, message, .. }) => (line, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(err("a = 1\n").0, 1);
        assert_eq!(err("[x]\n\nnovalue\n").0, 3);
        assert_eq!(err("[x\n").0, 1);
        assert_eq!(err("[x]\n\"a = 1\n").0, 2);
        assert!(err("%include\n").1.contains("%include FILE"));
    }
}
