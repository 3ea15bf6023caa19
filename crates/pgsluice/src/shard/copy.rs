//! Splitting the rows of `COPY table FROM STDIN` (text and CSV formats) by the
//! sharding key column, so each shard gets its own rows in one COPY of its own.
//!
//! [`CopyOptions::from_stmt`] reads the statement's options; [`CopySplitter`] cuts
//! the CopyData stream into whole lines as PostgreSQL's `CopyReadLine` would (the
//! line scanning and field decoding live in `copy_line`), reads the key field,
//! and appends each line unchanged to its shard's output. Lines end in `\n` or
//! `\r\n`; a bare `\r` line end is refused.

use pg_query::protobuf::{node::Node as NodeEnum, CopyStmt, DefElem};
use pgsluice_protocol::SqlState;

use super::hash::{key_from_text, partition_hash, shard_of_hash, KeyType, KeyValue};
use super::Unsupported;

#[path = "copy_line.rs"]
mod copy_line;

use copy_line::{KeyField, LineScanner};

/// COPY's data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL's text format (backslash escapes, `\N` for NULL by default).
    Text,
    /// CSV.
    Csv,
}

/// The options of a COPY that matter for splitting its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// Text or CSV (binary is refused).
    pub format: CopyFormat,
    /// Field delimiter (tab for text, comma for CSV by default).
    pub delimiter: u8,
    /// CSV quote character (default `"`).
    pub quote: u8,
    /// CSV escape character (default = quote).
    pub escape: u8,
    /// The NULL string (`\N` for text, empty unquoted for CSV by default).
    pub null: Vec<u8>,
    /// CSV HEADER: the first line is a header, sent to every shard (each skips it).
    pub header: bool,
    /// CSV `FORCE_NOT_NULL` columns (as the parser folded them; `*` for all): an
    /// unquoted NULL string in them is a value, not NULL.
    pub force_not_null: Vec<String>,
    /// CSV `FORCE_NULL` columns (`*` for all): a quoted NULL string in them is NULL.
    pub force_null: Vec<String>,
}

impl CopyOptions {
    /// The defaults of `FORMAT text`.
    pub fn text() -> CopyOptions {
        CopyOptions {
            format: CopyFormat::Text,
            delimiter: b'\t',
            quote: b'"',
            escape: b'"',
            null: b"\\N".to_vec(),
            header: false,
            force_not_null: Vec::new(),
            force_null: Vec::new(),
        }
    }

    /// The defaults of `FORMAT csv`.
    pub fn csv() -> CopyOptions {
        CopyOptions {
            format: CopyFormat::Csv,
            delimiter: b',',
            null: Vec::new(),
            ..CopyOptions::text()
        }
    }

    /// The options of a parsed `COPY ... FROM STDIN` statement; binary format, HEADER
    /// MATCH and options this splitter cannot honour are refused.
    pub fn from_stmt(stmt: &CopyStmt) -> Result<CopyOptions, Unsupported> {
        if !stmt.is_from {
            return Err(Unsupported::feature("COPY TO on a sharded table"));
        }
        if stmt.is_program || !stmt.filename.is_empty() {
            return Err(Unsupported::feature(
                "COPY FROM a server file or program into a sharded table (use FROM STDIN)",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut format = None;
        let (mut delimiter, mut quote, mut escape, mut null) = (None, None, None, None);
        let mut header = false;
        let (mut force_not_null, mut force_null) = (Vec::new(), Vec::new());
        for node in &stmt.options {
            let Some(NodeEnum::DefElem(d)) = node.node.as_ref() else {
                continue;
            };
            let name = d.defname.as_str();
            if seen.contains(&name) {
                return Err(Unsupported {
                    sqlstate: SqlState::SYNTAX_ERROR,
                    message: "conflicting or redundant options".to_owned(),
                });
            }
            seen.push(name);
            match name {
                "format" => {
                    format = Some(match arg_string(d).to_ascii_lowercase().as_str() {
                        "text" => CopyFormat::Text,
                        "csv" => CopyFormat::Csv,
                        "binary" => {
                            return Err(Unsupported::feature(
                                "COPY FORMAT binary into a sharded table (use text or csv)",
                            ))
                        }
                        other => {
                            return Err(invalid(format!("COPY format \"{other}\" not recognized")))
                        }
                    })
                }
                "delimiter" => delimiter = Some(one_byte(d, "delimiter")?),
                "quote" => quote = Some(one_byte(d, "quote")?),
                "escape" => escape = Some(one_byte(d, "escape")?),
                "null" => null = Some(arg_string(d).into_bytes()),
                "header" => header = header_choice(d)?,
                "force_not_null" => force_not_null = column_list(d),
                "force_null" => force_null = column_list(d),
                "encoding" => check_encoding(&arg_string(d))?,
                "on_error" => {
                    let v = arg_string(d);
                    if !v.eq_ignore_ascii_case("stop") {
                        return Err(Unsupported::feature(format!(
                            "COPY ON_ERROR {v} into a sharded table (only stop)"
                        )));
                    }
                }
                "default" => {
                    return Err(Unsupported::feature(
                        "COPY DEFAULT into a sharded table (a defaulted key has no known shard)",
                    ))
                }
                // Options that do not change where a line ends or what its key is.
                "freeze" | "force_quote" | "log_verbosity" | "convert_selectively" => {}
                other => {
                    return Err(Unsupported::feature(format!(
                        "COPY option \"{other}\" into a sharded table"
                    )))
                }
            }
        }
        let base = match format.unwrap_or(CopyFormat::Text) {
            CopyFormat::Text => CopyOptions::text(),
            CopyFormat::Csv => CopyOptions::csv(),
        };
        let quote = quote.unwrap_or(base.quote);
        let options = CopyOptions {
            delimiter: delimiter.unwrap_or(base.delimiter),
            quote,
            escape: escape.unwrap_or(quote),
            null: null.unwrap_or(base.null.clone()),
            header,
            force_not_null,
            force_null,
            ..base
        };
        options.check()?;
        Ok(options)
    }

    /// The combinations PostgreSQL refuses and that would make lines ambiguous.
    fn check(&self) -> Result<(), Unsupported> {
        let d = self.delimiter;
        if matches!(d, b'\n' | b'\r') {
            return Err(invalid(
                "COPY delimiter cannot be newline or carriage return",
            ));
        }
        if self.null.iter().any(|&b| matches!(b, b'\n' | b'\r')) {
            return Err(invalid(
                "COPY null representation cannot use newline or carriage return",
            ));
        }
        match self.format {
            CopyFormat::Text => {
                if d == b'\\' || d == b'.' || d.is_ascii_lowercase() || d.is_ascii_digit() {
                    return Err(invalid(format!(
                        "COPY delimiter cannot be \"{}\"",
                        char::from(d)
                    )));
                }
                if !self.force_null.is_empty() || !self.force_not_null.is_empty() {
                    return Err(Unsupported::feature(
                        "COPY FORCE_NULL / FORCE_NOT_NULL are available only in CSV mode",
                    ));
                }
            }
            CopyFormat::Csv => {
                if [self.quote, self.escape]
                    .iter()
                    .any(|b| matches!(b, b'\n' | b'\r'))
                {
                    return Err(invalid(
                        "COPY quote and escape cannot be newline or carriage return",
                    ));
                }
                if d == self.quote {
                    return Err(invalid("COPY delimiter and quote must be different"));
                }
                if self.null.contains(&d) {
                    return Err(invalid(
                        "COPY delimiter character must not appear in the NULL specification",
                    ));
                }
                if self.null.contains(&self.quote) {
                    return Err(invalid(
                        "CSV quote character must not appear in the NULL specification",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> Unsupported {
    Unsupported {
        sqlstate: SqlState::INVALID_PARAMETER_VALUE,
        message: message.into(),
    }
}

/// A DefElem's argument as text (`defGetString`); no argument is "true".
fn arg_string(d: &DefElem) -> String {
    match d.arg.as_deref().and_then(|n| n.node.as_ref()) {
        None => "true".to_owned(),
        Some(NodeEnum::String(s)) => s.sval.clone(),
        Some(NodeEnum::Integer(i)) => i.ival.to_string(),
        Some(NodeEnum::Float(f)) => f.fval.clone(),
        Some(NodeEnum::Boolean(b)) => b.boolval.to_string(),
        Some(NodeEnum::AStar(_)) => "*".to_owned(),
        Some(_) => String::new(),
    }
}

/// A one-byte option (delimiter, quote, escape).
fn one_byte(d: &DefElem, what: &str) -> Result<u8, Unsupported> {
    match arg_string(d).as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(Unsupported::feature(format!(
            "COPY {what} must be a single one-byte character"
        ))),
    }
}

/// HEADER true/false/on/off/1/0; MATCH is refused (each shard would check the
/// header against its own table, but the splitter cannot know the column order).
fn header_choice(d: &DefElem) -> Result<bool, Unsupported> {
    let v = arg_string(d).to_ascii_lowercase();
    match v.as_str() {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        "match" => Err(Unsupported::feature(
            "COPY HEADER MATCH into a sharded table",
        )),
        _ => Err(invalid(format!(
            "header requires a Boolean value or \"match\", not \"{v}\""
        ))),
    }
}

/// FORCE_NOT_NULL / FORCE_NULL: a column list, or `*`.
fn column_list(d: &DefElem) -> Vec<String> {
    match d.arg.as_deref().and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::List(l)) => l
            .items
            .iter()
            .filter_map(|n| match n.node.as_ref() {
                Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                _ => None,
            })
            .collect(),
        _ => vec![arg_string(d)],
    }
}

/// The data must be UTF-8 (or plain ASCII) for the text keys to hash as the
/// server stores them, and for the byte-wise line scan to be right.
fn check_encoding(name: &str) -> Result<(), Unsupported> {
    let norm: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    if matches!(norm.as_str(), "utf8" | "unicode" | "sqlascii") {
        Ok(())
    } else {
        Err(Unsupported::feature(format!(
            "COPY ENCODING '{name}' into a sharded table (only UTF8)"
        )))
    }
}

/// A malformed COPY row (SQLSTATE 22P04 bad_copy_file_format, or the key's own).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CopyError {
    /// The SQLSTATE for the client.
    pub sqlstate: pgsluice_protocol::SqlState,
    /// What is wrong, naming the line.
    pub message: String,
}

impl CopyError {
    fn at_line(sqlstate: SqlState, line: u64, what: impl std::fmt::Display) -> CopyError {
        CopyError {
            sqlstate,
            message: format!("{what} (line {line} of the COPY data)"),
        }
    }
}

/// Splits COPY data into one stream per shard. Rows may arrive cut anywhere across
/// CopyData messages; whole rows come out, in order per shard.
#[derive(Debug)]
pub struct CopySplitter {
    options: CopyOptions,
    key_column: usize,
    key_type: KeyType,
    shards: usize,
    /// Whether FORCE_NOT_NULL / FORCE_NULL name the key: `None` while the key's
    /// name is unknown and the lists are not empty.
    force: Option<(bool, bool)>,
    /// Bytes received and not yet sent (at most one partial line).
    buf: Vec<u8>,
    scanner: LineScanner,
    /// The line number (1-based, physical lines as PostgreSQL counts them) where
    /// the next line starts.
    line: u64,
    header_pending: bool,
    /// The end-of-data marker was seen: the rest is dropped.
    done: bool,
    rows: Vec<u64>,
}

impl CopySplitter {
    /// A splitter for rows whose key is field `key_column` (0-based) of type
    /// `key_type`, over `shards` shards.
    ///
    /// When the options have FORCE_NOT_NULL or FORCE_NULL columns, name the key
    /// with [`CopySplitter::with_key_name`]; without it, a line where they could
    /// matter is refused.
    pub fn new(
        options: CopyOptions,
        key_column: usize,
        key_type: KeyType,
        shards: usize,
    ) -> CopySplitter {
        let force = (options.force_not_null.is_empty() && options.force_null.is_empty())
            .then_some((false, false));
        CopySplitter {
            scanner: LineScanner::new(&options),
            header_pending: options.header,
            options,
            key_column,
            key_type,
            shards: shards.max(1),
            force,
            buf: Vec::new(),
            line: 1,
            done: false,
            rows: vec![0; shards.max(1)],
        }
    }

    /// Names the key column as PostgreSQL folds it (what
    /// `ShardedTableConfig::folded_column` gives), for FORCE_NOT_NULL / FORCE_NULL.
    pub fn with_key_name(mut self, name: &str) -> CopySplitter {
        let names = |list: &[String]| list.iter().any(|c| c == "*" || c == name);
        self.force = Some((
            names(&self.options.force_not_null),
            names(&self.options.force_null),
        ));
        self
    }

    /// Feeds the payload of one CopyData message; appends complete rows (with their
    /// line end) to `out[shard]` (`out.len()` = shards). After an error the COPY
    /// is over: feed nothing more.
    pub fn feed(&mut self, data: &[u8], out: &mut [Vec<u8>]) -> Result<(), CopyError> {
        if self.done {
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while !self.done {
            let found = self
                .scanner
                .next_line_end(&self.buf[start..])
                .map_err(|e| CopyError::at_line(SqlState::BAD_COPY_FILE_FORMAT, self.line, e))?;
            let Some(end) = found else { break };
            let line = start..start + end.line_end;
            let content = start..start + end.content_end;
            self.route(content, line.clone(), end.newlines, out)?;
            start = line.end;
        }
        if self.done {
            self.buf.clear();
        } else {
            self.buf.drain(..start);
        }
        Ok(())
    }

    /// At CopyDone: the last row if it had no line end (an end marker `\.` is dropped).
    pub fn finish(&mut self, out: &mut [Vec<u8>]) -> Result<(), CopyError> {
        if self.done || self.buf.is_empty() {
            self.buf.clear();
            return Ok(());
        }
        let newlines = self
            .scanner
            .finish(&self.buf)
            .map_err(|e| CopyError::at_line(SqlState::BAD_COPY_FILE_FORMAT, self.line, e))?;
        let len = self.buf.len();
        self.route(0..len, 0..len, newlines, out)?;
        self.buf.clear();
        Ok(())
    }

    /// Rows sent to each shard so far (header lines not counted).
    pub fn rows(&self) -> &[u64] {
        &self.rows
    }

    /// Sends one line (`line`, with its line end; `content` without) to its shard.
    fn route(
        &mut self,
        content: std::ops::Range<usize>,
        line: std::ops::Range<usize>,
        newlines: u64,
        out: &mut [Vec<u8>],
    ) -> Result<(), CopyError> {
        let at = self.line;
        self.line += newlines.max(1);
        let text = &self.buf[content];
        if text == b"\\." {
            self.done = true;
            return Ok(());
        }
        if self.header_pending {
            self.header_pending = false;
            for shard in out.iter_mut() {
                shard.extend_from_slice(&self.buf[line.clone()]);
            }
            return Ok(());
        }
        let shard = self.shard_of_line(text, at)?;
        out[shard].extend_from_slice(&self.buf[line]);
        self.rows[shard] += 1;
        Ok(())
    }

    fn shard_of_line(&self, text: &[u8], at: u64) -> Result<usize, CopyError> {
        let bad = |e: String| CopyError::at_line(SqlState::BAD_COPY_FILE_FORMAT, at, e);
        let field = match self.options.format {
            CopyFormat::Text => copy_line::text_field(text, &self.options, self.key_column),
            CopyFormat::Csv => copy_line::csv_field(text, &self.options, self.key_column),
        }
        .map_err(bad)?;
        let value = match field {
            KeyField::Missing => {
                return Err(bad(format!(
                    "missing data for the sharding key (field {})",
                    self.key_column + 1
                )))
            }
            KeyField::Field {
                value,
                null,
                quoted,
            } => {
                let null = match (self.force, self.options.format) {
                    (_, CopyFormat::Text) => null,
                    (Some((not_null, force_null)), CopyFormat::Csv) => {
                        if null && not_null {
                            false
                        } else {
                            null || (force_null && quoted && value == self.options.null)
                        }
                    }
                    (None, CopyFormat::Csv) => {
                        if null || (quoted && value == self.options.null) {
                            return Err(CopyError::at_line(
                                SqlState::FEATURE_NOT_SUPPORTED,
                                at,
                                "FORCE_NOT_NULL / FORCE_NULL with the sharding key's name unknown",
                            ));
                        }
                        false
                    }
                };
                if null {
                    None
                } else {
                    Some(value)
                }
            }
        };
        let key = match &value {
            None => KeyValue::Null,
            Some(v) => key_from_text(self.key_type, v)
                .map_err(|e| CopyError::at_line(e.sqlstate(), at, e))?,
        };
        Ok(shard_of_hash(partition_hash(&key), self.shards))
    }
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
