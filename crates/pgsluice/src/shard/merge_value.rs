//! Values of the result columns a merge compares, groups or adds: decoded from the
//! text or binary form PostgreSQL sent, ordered as PostgreSQL orders them, and
//! encoded back for the sums pgsluice computes.
//!
//! Only what the merge needs: integers, numeric (exact decimal),
//! floats, bool, byte-ordered text, uuid, date and timestamps (ISO text or binary).

use std::cmp::Ordering;

use super::decimal::Decimal;

/// Type OIDs the merge knows.
pub(super) mod oid {
    pub(in crate::shard) const BOOL: u32 = 16;
    pub(in crate::shard) const NAME: u32 = 19;
    pub(in crate::shard) const INT8: u32 = 20;
    pub(in crate::shard) const INT2: u32 = 21;
    pub(in crate::shard) const INT4: u32 = 23;
    pub(in crate::shard) const TEXT: u32 = 25;
    pub(in crate::shard) const OID: u32 = 26;
    pub(in crate::shard) const FLOAT4: u32 = 700;
    pub(in crate::shard) const FLOAT8: u32 = 701;
    pub(in crate::shard) const BPCHAR: u32 = 1042;
    pub(in crate::shard) const VARCHAR: u32 = 1043;
    pub(in crate::shard) const DATE: u32 = 1082;
    pub(in crate::shard) const TIMESTAMP: u32 = 1114;
    pub(in crate::shard) const TIMESTAMPTZ: u32 = 1184;
    pub(in crate::shard) const NUMERIC: u32 = 1700;
    pub(in crate::shard) const UUID: u32 = 2950;
}

/// How a column's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    /// int2, int4, int8, oid.
    Int,
    /// float4 (`true`) or float8.
    Float(bool),
    Numeric,
    /// Text types, compared as bytes; `true`: bpchar (trailing blanks ignored).
    Text(bool),
    Uuid,
    Date,
    /// timestamp (`false`) or timestamptz (`true`).
    Timestamp(bool),
}

impl Kind {
    /// The kind of a type OID, `None` for types the merge cannot compare.
    pub(super) fn of(type_oid: u32) -> Option<Kind> {
        Some(match type_oid {
            oid::BOOL => Kind::Bool,
            oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => Kind::Int,
            oid::FLOAT4 => Kind::Float(true),
            oid::FLOAT8 => Kind::Float(false),
            oid::NUMERIC => Kind::Numeric,
            oid::TEXT | oid::VARCHAR | oid::NAME => Kind::Text(false),
            oid::BPCHAR => Kind::Text(true),
            oid::UUID => Kind::Uuid,
            oid::DATE => Kind::Date,
            oid::TIMESTAMP => Kind::Timestamp(false),
            oid::TIMESTAMPTZ => Kind::Timestamp(true),
            _ => return None,
        })
    }

    /// Whether the kind orders text (collation-dependent on the server).
    pub(super) fn is_text(self) -> bool {
        matches!(self, Kind::Text(_))
    }
}

/// A float ordered as PostgreSQL orders floats: -0 equals 0, NaN equals NaN and is
/// greater than everything else (Infinity included).
#[derive(Debug, Clone, Copy)]
pub(super) struct PgFloat(pub(super) f64);

impl PartialEq for PgFloat {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for PgFloat {}
impl PartialOrd for PgFloat {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PgFloat {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0.is_nan(), other.0.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal),
        }
    }
}

/// A decoded value. Values of one column share a variant, so the derived order
/// between variants never decides anything.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Val {
    Int(i64),
    Float(PgFloat),
    Num(Decimal),
    Bytes(Vec<u8>),
    /// Dates in days, timestamps in microseconds (timestamptz: UTC); infinities at the ends.
    Time(i64),
}

/// Decodes one non-NULL value of `kind` in format `binary` (else text).
pub(super) fn decode(kind: Kind, binary: bool, raw: &[u8]) -> Result<Val, String> {
    if binary {
        return decode_binary(kind, raw);
    }
    let text = std::str::from_utf8(raw).map_err(|_| "value is not UTF-8".to_string())?;
    Ok(match kind {
        Kind::Bool => match text {
            "t" => Val::Int(1),
            "f" => Val::Int(0),
            _ => return Err(format!("bad boolean {text:?}")),
        },
        Kind::Int => Val::Int(text.parse().map_err(|_| format!("bad integer {text:?}"))?),
        Kind::Float(_) => Val::Float(PgFloat(parse_float(text)?)),
        Kind::Numeric => {
            Val::Num(Decimal::parse(text).ok_or_else(|| format!("bad numeric {text:?}"))?)
        }
        Kind::Text(bpchar) => Val::Bytes(text_bytes(raw, bpchar)),
        Kind::Uuid => Val::Bytes(raw.to_vec()),
        Kind::Date => Val::Time(parse_date(text).ok_or_else(|| not_iso(text))?),
        Kind::Timestamp(tz) => Val::Time(parse_timestamp(text, tz).ok_or_else(|| not_iso(text))?),
    })
}

fn not_iso(text: &str) -> String {
    format!("date/time value {text:?} is not in ISO format (only DateStyle ISO can be merged)")
}

fn text_bytes(raw: &[u8], bpchar: bool) -> Vec<u8> {
    let mut v = raw.to_vec();
    if bpchar {
        while v.last() == Some(&b' ') {
            v.pop();
        }
    }
    v
}

fn decode_binary(kind: Kind, raw: &[u8]) -> Result<Val, String> {
    let bad = || format!("bad binary value of {} bytes", raw.len());
    Ok(match (kind, raw.len()) {
        (Kind::Bool, 1) => Val::Int(i64::from(raw[0] != 0)),
        (Kind::Int, 2) => Val::Int(i64::from(i16::from_be_bytes([raw[0], raw[1]]))),
        // int4 and oid are both four bytes; oid is unsigned. The OID alone tells,
        // but an int4 never reaches here as oid: callers pass the kind of the column.
        (Kind::Int, 4) => Val::Int(i64::from(i32::from_be_bytes(
            raw.try_into().map_err(|_| bad())?,
        ))),
        (Kind::Int, 8) => Val::Int(i64::from_be_bytes(raw.try_into().map_err(|_| bad())?)),
        (Kind::Float(_), 4) => Val::Float(PgFloat(f64::from(f32::from_be_bytes(
            raw.try_into().map_err(|_| bad())?,
        )))),
        (Kind::Float(_), 8) => Val::Float(PgFloat(f64::from_be_bytes(
            raw.try_into().map_err(|_| bad())?,
        ))),
        (Kind::Numeric, _) => Val::Num(Decimal::from_binary(raw).ok_or_else(bad)?),
        (Kind::Text(bpchar), _) => Val::Bytes(text_bytes(raw, bpchar)),
        (Kind::Uuid, 16) => Val::Bytes(raw.to_vec()),
        (Kind::Date, 4) => Val::Time(i64::from(i32::from_be_bytes(
            raw.try_into().map_err(|_| bad())?,
        ))),
        (Kind::Timestamp(_), 8) => {
            Val::Time(i64::from_be_bytes(raw.try_into().map_err(|_| bad())?))
        }
        _ => return Err(bad()),
    })
}

/// Decodes a binary oid (unsigned) where a column is `oid` rather than int4.
pub(super) fn decode_oid_binary(raw: &[u8]) -> Result<Val, String> {
    let b: [u8; 4] = raw.try_into().map_err(|_| "bad binary oid".to_string())?;
    Ok(Val::Int(i64::from(u32::from_be_bytes(b))))
}

/// Parses PostgreSQL's text form of a float (`NaN`, `Infinity`, `-Infinity` included).
pub(super) fn parse_float(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|_| format!("bad float {text:?}")),
    }
}

/// Formats a float as PostgreSQL does with the default `extra_float_digits = 1`:
/// the shortest text that reads back exactly, in fixed notation for decimal
/// exponents from -4 up to 14 (float8) or 5 (float4), else `d.ddde+XX`.
pub(super) fn format_float(v: f64, float4: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = if float4 {
        format!("{:e}", v as f32)
    } else {
        format!("{v:e}")
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if neg { "-" } else { "" };
    let max_fixed = if float4 { 6 } else { 15 };
    if (-4..max_fixed).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            let zeros = "0".repeat((-point) as usize);
            format!("{sign}0.{zeros}{digits}")
        } else if point as usize >= digits.len() {
            let zeros = "0".repeat(point as usize - digits.len());
            format!("{sign}{digits}{zeros}")
        } else {
            let (a, b) = digits.split_at(point as usize);
            format!("{sign}{a}.{b}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

/// Days from 1970-01-01 of a proleptic Gregorian date (astronomical year numbering).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` with an optional ` BC`, as days; `infinity` / `-infinity` at the ends.
fn parse_date(text: &str) -> Option<i64> {
    match text {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (text, false),
    };
    date_days(body, bc)
}

fn date_days(body: &str, bc: bool) -> Option<i64> {
    let mut parts = body.splitn(3, '-');
    let y: i64 = num(parts.next()?)?;
    let m: i64 = num(parts.next()?)?;
    let d: i64 = num(parts.next()?)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if bc { 1 - y } else { y };
    Some(days_from_civil(y, m, d))
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][±HH[:MM[:SS]]][ BC]` as microseconds (UTC when
/// `tz`); `infinity` / `-infinity` at the ends.
fn parse_timestamp(text: &str, tz: bool) -> Option<i64> {
    match text {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(b) => (b, true),
        None => (text, false),
    };
    let (date, time) = body.split_once(' ')?;
    let days = date_days(date, bc)?;
    let (clock, offset) = if tz {
        let at = time.rfind(['+', '-'])?;
        (&time[..at], Some(&time[at..]))
    } else {
        (time, None)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (clock, None),
    };
    let mut f = hms.splitn(3, ':');
    let (h, mi, s) = (num(f.next()?)?, num(f.next()?)?, num(f.next()?)?);
    let micros = match frac {
        Some(fr) if fr.len() <= 6 => num(fr)? * 10_i64.pow(6 - fr.len() as u32),
        Some(_) => return None,
        None => 0,
    };
    let mut total = ((days * 24 + h) * 60 + mi) * 60 + s;
    if let Some(off) = offset {
        let neg = off.starts_with('-');
        let mut p = off[1..].split(':');
        let oh = num(p.next()?)?;
        let om = p.next().map(num).unwrap_or(Some(0))?;
        let os = p.next().map(num).unwrap_or(Some(0))?;
        let secs = (oh * 60 + om) * 60 + os;
        total -= if neg { -secs } else { secs };
    }
    total.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_format_as_postgresql() {
        for (v, f4, want) in [
            (1.5, false, "1.5"),
            (100.0, false, "100"),
            (0.0001, false, "0.0001"),
            (0.00001, false, "1e-05"),
            (1e14, false, "100000000000000"),
            (1e15, false, "1e+15"),
            (1e300, false, "1e+300"),
            (-2.5e-7, false, "-2.5e-07"),
            (0.1 + 0.2, false, "0.30000000000000004"),
            (123456.0, true, "123456"),
            (1234567.0, true, "1.234567e+06"),
            (0.1, true, "0.1"),
            (f64::NAN, false, "NaN"),
            (f64::NEG_INFINITY, true, "-Infinity"),
        ] {
            assert_eq!(format_float(v, f4), want, "{v}");
        }
    }

    #[test]
    fn floats_order_nan_greatest() {
        let mut v: Vec<PgFloat> = [f64::NAN, 1.0, f64::INFINITY, -0.0, f64::NEG_INFINITY]
            .into_iter()
            .map(PgFloat)
            .collect();
        v.sort();
        let got: Vec<String> = v.iter().map(|f| format_float(f.0, false)).collect();
        assert_eq!(got, ["-Infinity", "-0", "1", "Infinity", "NaN"]);
        assert_eq!(PgFloat(0.0), PgFloat(-0.0));
    }

    #[test]
    fn dates_and_timestamps_parse_iso() {
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(parse_date("2000-01-01"), Some(10_957));
        assert!(parse_date("0044-03-15 BC") < parse_date("0001-01-01"));
        assert_eq!(parse_date("15/03/2024"), None);
        let a = parse_timestamp("2024-03-31 01:30:00+01", true).unwrap();
        let b = parse_timestamp("2024-03-31 03:10:00+02", true).unwrap();
        assert!(a < b, "01:30+01 is 00:30Z, before 01:10Z");
        assert_eq!(
            parse_timestamp("1970-01-01 00:00:01.5", false),
            Some(1_500_000)
        );
        assert_eq!(parse_timestamp("1970-01-01 05:30:00+05:30", true), Some(0));
        assert_eq!(parse_timestamp("infinity", true), Some(i64::MAX));
    }

    #[test]
    fn text_and_binary_decode_alike() {
        let t = |k, s: &str| decode(k, false, s.as_bytes()).unwrap();
        let b = |k, s: &[u8]| decode(k, true, s).unwrap();
        assert_eq!(t(Kind::Int, "-7"), b(Kind::Int, &(-7_i32).to_be_bytes()));
        assert_eq!(t(Kind::Int, "9"), b(Kind::Int, &9_i64.to_be_bytes()));
        assert_eq!(t(Kind::Bool, "t"), b(Kind::Bool, &[1]));
        assert_eq!(
            t(Kind::Float(false), "2.5"),
            b(Kind::Float(false), &2.5_f64.to_be_bytes())
        );
        assert_eq!(t(Kind::Text(true), "ab  "), t(Kind::Text(true), "ab"));
        assert_eq!(
            t(Kind::Numeric, "-0.0012"),
            b(
                Kind::Numeric,
                &Decimal::parse("-0.0012").unwrap().to_binary()
            )
        );
        assert!(decode(Kind::Numeric, true, &[0; 7]).is_err());
    }
}
