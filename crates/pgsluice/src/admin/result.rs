//! Result sets of the admin console: typed columns (the type OIDs PgBouncer uses),
//! rows of text values, encoded with the protocol crate.

use bytes::BytesMut;
use pgsluice_protocol::backend;

/// Column types the admin console uses, as PgBouncer declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `text` (OID 25); also timestamps, which PgBouncer sends as text.
    Text,
    /// `int4` (OID 23).
    Int4,
    /// `int8` (OID 20).
    Int8,
    /// `numeric` (OID 1700): the statistics counters.
    Numeric,
    /// `bytea` (OID 17).
    Bytea,
}

impl Ty {
    /// The type OID.
    pub fn oid(self) -> u32 {
        match self {
            Ty::Text => 25,
            Ty::Int4 => 23,
            Ty::Int8 => 20,
            Ty::Numeric => 1700,
            Ty::Bytea => 17,
        }
    }

    /// `pg_type.typlen`.
    pub fn size(self) -> i16 {
        match self {
            Ty::Int4 => 4,
            Ty::Int8 => 8,
            Ty::Text | Ty::Numeric | Ty::Bytea => -1,
        }
    }
}

/// A value of one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Text (also used for every other type, already formatted).
    Text(String),
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(s.to_owned())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(s)
    }
}

impl From<Option<String>> for Cell {
    fn from(s: Option<String>) -> Cell {
        s.map_or(Cell::Null, Cell::Text)
    }
}

impl From<Option<&str>> for Cell {
    fn from(s: Option<&str>) -> Cell {
        s.map_or(Cell::Null, |s| Cell::Text(s.to_owned()))
    }
}

macro_rules! cell_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Cell {
            fn from(n: $t) -> Cell {
                Cell::Text(n.to_string())
            }
        }
    )*};
}
cell_from_int!(i32, i64, u16, u32, u64, usize);

impl From<bool> for Cell {
    fn from(b: bool) -> Cell {
        Cell::Text(if b { "1" } else { "0" }.to_owned())
    }
}

/// A result set being built.
#[derive(Debug, Clone)]
pub struct ResultSet {
    columns: Vec<(&'static str, Ty)>,
    rows: Vec<Vec<Cell>>,
}

impl ResultSet {
    /// An empty result with these columns.
    pub fn new(columns: &[(&'static str, Ty)]) -> ResultSet {
        ResultSet {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Column names, in order.
    pub fn column_names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|(n, _)| *n).collect()
    }

    /// The columns.
    pub fn columns(&self) -> &[(&'static str, Ty)] {
        &self.columns
    }

    /// The rows.
    pub fn rows(&self) -> &[Vec<Cell>] {
        &self.rows
    }

    /// Adds a row; it must have one cell per column.
    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row width");
        self.rows.push(row);
    }

    /// Appends RowDescription, the DataRows and CommandComplete `SHOW`.
    pub fn write(&self, out: &mut BytesMut) {
        let cols: Vec<(&str, u32, i16)> = self
            .columns
            .iter()
            .map(|(n, t)| (*n, t.oid(), t.size()))
            .collect();
        backend::row_description_sized(out, &cols);
        let mut values: Vec<Option<&str>> = Vec::with_capacity(self.columns.len());
        for row in &self.rows {
            values.clear();
            values.extend(row.iter().map(|c| match c {
                Cell::Null => None,
                Cell::Text(s) => Some(s.as_str()),
            }));
            backend::data_row(out, &values);
        }
        backend::command_complete(out, "SHOW");
    }
}

/// Formats µs since the Unix epoch as PgBouncer does (`YYYY-MM-DD HH:MM:SS UTC`).
pub fn format_time(us: u64) -> String {
    let secs = us / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_like_pgbouncer() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        // 2024-02-29 12:34:56 UTC
        assert_eq!(
            format_time(1_709_210_096_000_000),
            "2024-02-29 12:34:56 UTC"
        );
        assert_eq!(format_time(951_782_400_000_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn result_set_encodes() {
        let mut rs = ResultSet::new(&[("name", Ty::Text), ("n", Ty::Int4)]);
        rs.push(vec!["a".into(), 1i32.into()]);
        rs.push(vec![Cell::Null, 2i32.into()]);
        let mut out = BytesMut::new();
        rs.write(&mut out);
        assert_eq!(out[0], b'T');
        assert_eq!(rs.column_names(), ["name", "n"]);
        assert!(out.ends_with(b"SHOW\0"));
    }
}
