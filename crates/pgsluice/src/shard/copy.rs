//! Splitting the rows of `COPY table FROM STDIN` (text and CSV formats) by the
//! sharding key column, so each shard gets its own rows in one COPY of its own.
//!
//! OWNER: helper "shardhash" fills the bodies.

use pg_query::protobuf::CopyStmt;

use super::hash::KeyType;
use super::Unsupported;

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
}

impl CopyOptions {
    /// The options of a parsed `COPY ... FROM STDIN` statement; binary format, HEADER
    /// MATCH and options this splitter cannot honour are refused.
    pub fn from_stmt(stmt: &CopyStmt) -> Result<CopyOptions, Unsupported> {
        let _ = stmt;
        todo!("shardhash")
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

/// Splits COPY data into one stream per shard. Rows may arrive cut anywhere across
/// CopyData messages; whole rows come out, in order per shard.
#[derive(Debug)]
pub struct CopySplitter {
    _private: (),
}

impl CopySplitter {
    /// A splitter for rows whose key is field `key_column` (0-based) of type
    /// `key_type`, over `shards` shards.
    pub fn new(
        options: CopyOptions,
        key_column: usize,
        key_type: KeyType,
        shards: usize,
    ) -> CopySplitter {
        let _ = (options, key_column, key_type, shards);
        todo!("shardhash")
    }

    /// Feeds the payload of one CopyData message; appends complete rows (with their
    /// line end) to `out[shard]` (`out.len()` = shards).
    pub fn feed(&mut self, data: &[u8], out: &mut [Vec<u8>]) -> Result<(), CopyError> {
        let _ = (data, out);
        todo!("shardhash")
    }

    /// At CopyDone: the last row if it had no line end (an end marker `\.` is dropped).
    pub fn finish(&mut self, out: &mut [Vec<u8>]) -> Result<(), CopyError> {
        let _ = out;
        todo!("shardhash")
    }

    /// Rows sent to each shard so far (header lines not counted).
    pub fn rows(&self) -> &[u64] {
        todo!("shardhash")
    }
}
