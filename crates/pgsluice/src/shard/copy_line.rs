//! The byte-level work of the COPY splitter: where a line ends (PostgreSQL's
//! `CopyReadLineText`, resumable across CopyData messages) and the key field of a
//! whole line (`CopyReadAttributesText` / `CopyReadAttributesCSV`, decoding only
//! the fields up to the key).

use std::borrow::Cow;

use super::{CopyFormat, CopyOptions};

/// Where a line ends, relative to the start of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineEnd {
    /// End of the line's content (before `\n` or `\r\n`).
    pub(crate) content_end: usize,
    /// End of the line including its line end.
    pub(crate) line_end: usize,
    /// Physical lines the line spans (CSV quoted fields may hold newlines).
    pub(crate) newlines: u64,
}

/// Finds line ends in a growing buffer, remembering how far it has scanned and the
/// quoting state there, so that each byte is looked at once.
#[derive(Debug, Clone)]
pub(crate) struct LineScanner {
    csv: bool,
    quote: u8,
    escape: u8,
    /// Bytes of the current line scanned so far.
    scanned: usize,
    in_quote: bool,
    last_was_escape: bool,
    /// Newlines inside quoted CSV fields of the current line.
    embedded: u64,
    /// Text format: where a `\.` was seen in the current line.
    marker: Option<usize>,
}

const CORRUPT_MARKER: &str = "end-of-copy marker corrupt: \\. must be alone on its line";

impl LineScanner {
    pub(crate) fn new(options: &CopyOptions) -> LineScanner {
        LineScanner {
            csv: options.format == CopyFormat::Csv,
            quote: options.quote,
            escape: options.escape,
            scanned: 0,
            in_quote: false,
            last_was_escape: false,
            embedded: 0,
            marker: None,
        }
    }

    /// The end of the line that starts at `buf[0]`, or `None` when `buf` holds no
    /// complete line yet (feed more and call again with the same start).
    pub(crate) fn next_line_end(&mut self, buf: &[u8]) -> Result<Option<LineEnd>, String> {
        let mut i = self.scanned;
        while i < buf.len() {
            let c = buf[i];
            if self.csv {
                if !self.in_quote && (c == b'\n' || c == b'\r') {
                    return self.line_end(buf, i);
                }
                if self.in_quote && c == b'\n' {
                    self.embedded += 1;
                }
                if self.escape != self.quote && self.in_quote && c == self.escape {
                    self.last_was_escape = !self.last_was_escape;
                }
                if c == self.quote && !self.last_was_escape {
                    self.in_quote = !self.in_quote;
                }
                if c != self.escape {
                    self.last_was_escape = false;
                }
                i += 1;
            } else {
                match c {
                    b'\\' => {
                        let Some(&next) = buf.get(i + 1) else { break };
                        if next == b'.' {
                            self.marker = Some(i);
                        }
                        // Anything after a backslash is data, a newline too.
                        i += 2;
                    }
                    b'\n' | b'\r' => return self.line_end(buf, i),
                    _ => i += 1,
                }
            }
        }
        self.scanned = i.min(buf.len());
        Ok(None)
    }

    /// A line end at `buf[i]` (`\n` or `\r`, outside quotes).
    fn line_end(&mut self, buf: &[u8], i: usize) -> Result<Option<LineEnd>, String> {
        let line_end = if buf[i] == b'\n' {
            i + 1
        } else {
            match buf.get(i + 1) {
                None => {
                    self.scanned = i;
                    return Ok(None);
                }
                Some(b'\n') => i + 2,
                Some(_) => return Err(self.bare_cr()),
            }
        };
        self.check_marker(i)?;
        let end = LineEnd {
            content_end: i,
            line_end,
            newlines: 1 + self.embedded,
        };
        self.reset();
        Ok(Some(end))
    }

    /// At the end of the data: checks the unterminated last line `buf` and returns
    /// the physical lines it spans.
    pub(crate) fn finish(&mut self, buf: &[u8]) -> Result<u64, String> {
        if self.csv && self.in_quote {
            return Err("unterminated CSV quoted field".to_owned());
        }
        if buf.last() == Some(&b'\r') && (self.csv || !buf.ends_with(b"\\\r")) {
            return Err(self.bare_cr());
        }
        if !self.csv && buf.len() >= 2 && buf[buf.len() - 2..] == *b"\\." {
            // A `\.` whose line end never came.
            self.marker = self.marker.or(Some(buf.len() - 2));
        }
        self.check_marker(buf.len())?;
        let lines = 1 + self.embedded;
        self.reset();
        Ok(lines)
    }

    fn check_marker(&self, content_end: usize) -> Result<(), String> {
        match self.marker {
            Some(at) if at != 0 || content_end != 2 => Err(CORRUPT_MARKER.to_owned()),
            _ => Ok(()),
        }
    }

    fn bare_cr(&self) -> String {
        if self.csv {
            "unquoted carriage return found in data: lines must end in \\n or \\r\\n".to_owned()
        } else {
            "literal carriage return found in data: use \"\\r\" to represent carriage return, \
             and end lines in \\n or \\r\\n"
                .to_owned()
        }
    }

    fn reset(&mut self) {
        self.scanned = 0;
        self.in_quote = false;
        self.last_was_escape = false;
        self.embedded = 0;
        self.marker = None;
    }
}

/// The key field of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyField<'a> {
    /// The line has fewer fields.
    Missing,
    /// The field's decoded value.
    Field {
        value: Cow<'a, [u8]>,
        /// It is the NULL string (unquoted, for CSV).
        null: bool,
        /// CSV: some of it was quoted.
        quoted: bool,
    },
}

/// Field `index` of a text-format line: split at unescaped delimiters, compared
/// with the NULL string as written, then de-escaped.
pub(crate) fn text_field<'a>(
    line: &'a [u8],
    options: &CopyOptions,
    index: usize,
) -> Result<KeyField<'a>, String> {
    let mut field = 0;
    let mut start = 0;
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b'\\' {
            i += 2;
            continue;
        }
        if c == options.delimiter {
            if field == index {
                break;
            }
            field += 1;
            start = i + 1;
        }
        i += 1;
    }
    if field != index {
        return Ok(KeyField::Missing);
    }
    let raw = &line[start..i.min(line.len())];
    let null = raw == options.null.as_slice();
    Ok(KeyField::Field {
        value: if null {
            Cow::Borrowed(raw)
        } else {
            de_escape(raw)
        },
        null,
        quoted: false,
    })
}

/// The text format's backslash escapes: `\b \f \n \r \t \v`, 1 to 3 octal digits,
/// `\x` with 1 or 2 hex digits, any other character stands for itself.
pub(crate) fn de_escape(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        // A backslash at the very end is dropped, as PostgreSQL does.
        let Some(&c) = raw.get(i) else { break };
        i += 1;
        let byte = match c {
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                (v & 0xff) as u8
            }
            b'x' => match raw.get(i).and_then(|&h| char::from(h).to_digit(16)) {
                Some(h) => {
                    i += 1;
                    let mut v = h;
                    if let Some(l) = raw.get(i).and_then(|&l| char::from(l).to_digit(16)) {
                        v = v * 16 + l;
                        i += 1;
                    }
                    v as u8
                }
                None => b'x',
            },
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            other => other,
        };
        out.push(byte);
    }
    Cow::Owned(out)
}

/// Field `index` of a CSV line: quoted parts (with the escape character before a
/// quote or escape) and unquoted parts joined; NULL when unquoted and equal to the
/// NULL string.
pub(crate) fn csv_field<'a>(
    line: &'a [u8],
    options: &CopyOptions,
    index: usize,
) -> Result<KeyField<'a>, String> {
    let (delim, quote, escape) = (options.delimiter, options.quote, options.escape);
    let mut i = 0;
    let mut field = 0;
    loop {
        let start = i;
        let mut saw_quote = false;
        let keep = field == index;
        let mut value = Vec::new();
        while i < line.len() && line[i] != delim {
            let c = line[i];
            i += 1;
            if c != quote {
                if keep {
                    value.push(c);
                }
                continue;
            }
            saw_quote = true;
            loop {
                let Some(&c) = line.get(i) else {
                    return Err("unterminated CSV quoted field".to_owned());
                };
                i += 1;
                if c == escape {
                    if let Some(&next) = line.get(i).filter(|&&n| n == escape || n == quote) {
                        if keep {
                            value.push(next);
                        }
                        i += 1;
                        continue;
                    }
                }
                if c == quote {
                    break;
                }
                if keep {
                    value.push(c);
                }
            }
        }
        if keep {
            let raw = &line[start..i];
            let null = !saw_quote && raw == options.null.as_slice();
            let value = if saw_quote {
                Cow::Owned(value)
            } else {
                Cow::Borrowed(raw)
            };
            return Ok(KeyField::Field {
                value,
                null,
                quoted: saw_quote,
            });
        }
        if i >= line.len() {
            return Ok(KeyField::Missing);
        }
        i += 1;
        field += 1;
    }
}
