//! Finding keys in TOML source text, for error messages.
//!
//! The `toml` crate reports byte spans but not key paths; this module maps a
//! span to `(line, key path)` and a key path back to its line with a small
//! line-oriented scanner. It understands table headers, dotted and quoted
//! keys, inline tables (as a whole), multi-line arrays and multi-line
//! strings; it never needs to be exact, only good enough to point at the
//! right line.

/// What one source line is, as far as keys are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LineKind {
    /// Blank, comment, or the inside of a multi-line value.
    Other,
    /// `[a.b]` or `[[a.b]]`: the table path.
    Header(Vec<String>),
    /// `a.b = ...` inside the current table: the full path.
    KeyValue(Vec<String>),
}

/// A scanned document: one entry per line, plus the table each line is in.
#[derive(Debug)]
pub(crate) struct Scan<'a> {
    lines: Vec<(&'a str, LineKind, Vec<String>)>,
}

impl<'a> Scan<'a> {
    /// Scans `text` line by line.
    pub(crate) fn new(text: &'a str) -> Scan<'a> {
        let mut lines = Vec::new();
        let mut table: Vec<String> = Vec::new();
        let mut in_ml: Option<&'static str> = None;
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(delim) = in_ml {
                if line.contains(delim) {
                    in_ml = None;
                }
                lines.push((line, LineKind::Other, table.clone()));
                continue;
            }
            let kind = classify(line);
            match &kind {
                LineKind::Header(h) => table = h.clone(),
                LineKind::KeyValue(_) => {
                    let value = line.split_once('=').map_or("", |(_, v)| v);
                    in_ml = opens_multiline(value);
                }
                LineKind::Other => {}
            }
            let kind = match kind {
                LineKind::KeyValue(k) => {
                    let mut full = table.clone();
                    full.extend(k);
                    LineKind::KeyValue(full)
                }
                other => other,
            };
            lines.push((line, kind, table.clone()));
        }
        Scan { lines }
    }

    /// The key path a 1-based line is about: the header path for a header,
    /// the full key path for `key = value`, the enclosing key for the
    /// continuation of a multi-line value, else the current table.
    pub(crate) fn key_at_line(&self, line: usize) -> Vec<String> {
        let Some(idx) = line.checked_sub(1) else {
            return Vec::new();
        };
        let Some((_, kind, table)) = self.lines.get(idx) else {
            return Vec::new();
        };
        match kind {
            LineKind::Header(h) => h.clone(),
            LineKind::KeyValue(k) => k.clone(),
            LineKind::Other => {
                for (_, kind, _) in self.lines[..idx].iter().rev() {
                    match kind {
                        LineKind::KeyValue(k) => return k.clone(),
                        LineKind::Header(_) => break,
                        LineKind::Other => {}
                    }
                }
                table.clone()
            }
        }
    }

    /// Like [`Scan::key_at_line`], for a syntax error: a line that starts
    /// with a key but is not a valid `key = value` is about that key.
    pub(crate) fn syntax_key_at_line(&self, line: usize) -> Vec<String> {
        if let Some((text, LineKind::Other, table)) =
            line.checked_sub(1).and_then(|i| self.lines.get(i))
        {
            let t = text.trim_start();
            if t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                if let Some((key, _)) = parse_dotted_key(t) {
                    let mut full = table.clone();
                    full.extend(key);
                    return full;
                }
            }
            return table.clone();
        }
        self.key_at_line(line)
    }

    /// Whether a 1-based line is a table header.
    pub(crate) fn is_header(&self, line: usize) -> bool {
        line.checked_sub(1)
            .and_then(|i| self.lines.get(i))
            .is_some_and(|(_, k, _)| matches!(k, LineKind::Header(_)))
    }

    /// The 1-based line defining `path` (a key, or a table), if any.
    ///
    /// Prefers an exact match; falls back to an inline table containing the
    /// key (`app = { host = "" }` for `databases.app.host`).
    pub(crate) fn find(&self, path: &[String]) -> Option<usize> {
        let exact = self.lines.iter().position(|(_, kind, _)| match kind {
            LineKind::Header(h) | LineKind::KeyValue(h) => h.as_slice() == path,
            LineKind::Other => false,
        });
        if let Some(i) = exact {
            return Some(i + 1);
        }
        let last = path.last()?;
        self.lines
            .iter()
            .position(|(text, kind, _)| match kind {
                LineKind::KeyValue(k) => {
                    k.len() < path.len() && path.starts_with(k) && text.contains(last.as_str())
                }
                _ => false,
            })
            .map(|i| i + 1)
    }
}

/// The 1-based line of a byte offset.
pub(crate) fn line_of_offset(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn classify(line: &str) -> LineKind {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix('[') {
        let rest = rest.strip_prefix('[').unwrap_or(rest);
        return match parse_dotted_key(rest) {
            Some((key, after)) if after.trim_start().starts_with(']') => LineKind::Header(key),
            _ => LineKind::Other,
        };
    }
    match parse_dotted_key(t) {
        Some((key, after)) if after.trim_start().starts_with('=') => LineKind::KeyValue(key),
        _ => LineKind::Other,
    }
}

/// Whether a value opens a multi-line string that the line does not close.
fn opens_multiline(value: &str) -> Option<&'static str> {
    for delim in ["\"\"\"", "'''"] {
        if let Some(pos) = value.find(delim) {
            let other = if delim == "\"\"\"" { "'''" } else { "\"\"\"" };
            if value.find(other).is_some_and(|o| o < pos) {
                continue;
            }
            let after = &value[pos + 3..];
            return if after.contains(delim) {
                None
            } else {
                Some(delim)
            };
        }
    }
    None
}

/// Parses a TOML dotted key at the start of `s`: bare, `"basic"` or
/// `'literal'` segments separated by dots. Returns the segments and the rest.
fn parse_dotted_key(s: &str) -> Option<(Vec<String>, &str)> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        let (seg, after) = if let Some(r) = rest.strip_prefix('"') {
            let mut seg = String::new();
            let mut chars = r.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            seg.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => seg.push(c),
                }
            }
            (seg, &r[end? + 1..])
        } else if let Some(r) = rest.strip_prefix('\'') {
            let end = r.find('\'')?;
            (r[..end].to_owned(), &r[end + 1..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            (rest[..end].to_owned(), &rest[end..])
        };
        out.push(seg);
        let after_ws = after.trim_start();
        match after_ws.strip_prefix('.') {
            Some(r) => rest = r,
            None => return Some((out, after_ws)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn scans_headers_keys_and_multiline_values() {
        let text = "# c\n[general]\nlisten = [\n  \"a\",\n]\nlog_level = \"\"\"\nx = 1\n\"\"\"\n\
                    [databases.\"my.db\"]\nhost = \"h\"\n[databases]\napp = { host = \"\" }\n";
        let s = Scan::new(text);
        assert_eq!(s.find(&p(&["general", "listen"])), Some(3));
        assert_eq!(s.key_at_line(4), p(&["general", "listen"]));
        assert_eq!(s.find(&p(&["general", "x"])), None);
        assert_eq!(s.find(&p(&["databases", "my.db", "host"])), Some(10));
        assert_eq!(s.find(&p(&["databases", "my.db"])), Some(9));
        assert!(s.is_header(9));
        assert_eq!(s.find(&p(&["databases", "app", "host"])), Some(12));
        assert_eq!(s.key_at_line(1), Vec::<String>::new());
        assert_eq!(line_of_offset(text, 0), 1);
        assert_eq!(line_of_offset(text, 4), 2);
    }

    #[test]
    fn dotted_keys() {
        assert_eq!(
            parse_dotted_key(" a . 'b c' .\"d\\\"\" = 1"),
            Some((p(&["a", "b c", "d\""]), "= 1"))
        );
        assert_eq!(parse_dotted_key("= 1"), None);
    }
}
