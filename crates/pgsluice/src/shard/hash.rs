//! Where PostgreSQL's hash partitioning puts a key: the shard of a row is
//! `partition_hash(key) % shards`, the remainder `satisfies_hash_partition()` accepts.
//!
//! The functions are PostgreSQL's own, re-implemented: the per-type extended hash
//! functions (`hashint8extended`, `hashtextextended`, `uuid_hash_extended`) over Bob
//! Jenkins' lookup3 as PostgreSQL adapts it (`hash_bytes_extended`,
//! `hash_bytes_uint32_extended` in src/common/hashfn.c), seeded with
//! [`HASH_PARTITION_SEED`] and folded as `compute_partition_hash_value` does. The unit
//! tests (hash_tests.rs) pin them to values a real PostgreSQL computed. PostgreSQL
//! reads the hashed bytes as little-endian words on x86 and ARM; a big-endian server
//! would place text and uuid keys differently (pgsluice follows the little-endian rule).

use serde::{Deserialize, Deserializer};

/// PostgreSQL's seed for partition hashing (`HASH_PARTITION_SEED`, partition.h).
pub const HASH_PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// The SQL type of a sharding key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// smallint (int2).
    SmallInt,
    /// integer (int4).
    Integer,
    /// bigint (int8).
    BigInt,
    /// text, varchar (hashed as their bytes; deterministic collations only).
    Text,
    /// uuid.
    Uuid,
}

impl KeyType {
    /// The type of a SQL type name as written in DDL or `format_type()`
    /// (`bigint`, `int8`, `integer`, `int`, `int4`, `smallint`, `int2`, `text`,
    /// `varchar`, `character varying`, `character varying(20)`, `uuid`), any case.
    /// `serial`, `bigserial` and `smallserial` name their integer types; a
    /// `pg_catalog.` prefix and a varchar length are ignored.
    pub fn from_sql_name(name: &str) -> Option<KeyType> {
        let lower = name.trim().to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let mut name = words.join(" ");
        if let Some(rest) = name.strip_prefix("pg_catalog.") {
            name = rest.to_owned();
        }
        // A type modifier: `varchar(20)`, `character varying (20)`.
        if let Some(open) = name.find('(') {
            let modifier = name[open..].trim();
            let inner = modifier.strip_prefix('(')?.strip_suffix(')')?.trim();
            if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            name = name[..open].trim_end().to_owned();
            return match name.as_str() {
                "varchar" | "character varying" => Some(KeyType::Text),
                _ => None,
            };
        }
        Some(match name.as_str() {
            "bigint" | "int8" | "bigserial" | "serial8" => KeyType::BigInt,
            "integer" | "int" | "int4" | "serial" | "serial4" => KeyType::Integer,
            "smallint" | "int2" | "smallserial" | "serial2" => KeyType::SmallInt,
            "text" | "varchar" | "character varying" => KeyType::Text,
            "uuid" => KeyType::Uuid,
            _ => return None,
        })
    }

    /// The type of a type OID (20, 23, 21, 25, 1043, 2950), as a Parse message or
    /// RowDescription gives it.
    pub fn from_oid(oid: u32) -> Option<KeyType> {
        Some(match oid {
            20 => KeyType::BigInt,
            23 => KeyType::Integer,
            21 => KeyType::SmallInt,
            25 | 1043 => KeyType::Text,
            2950 => KeyType::Uuid,
            _ => return None,
        })
    }

    /// The SQL name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::SmallInt => "smallint",
            KeyType::Integer => "integer",
            KeyType::BigInt => "bigint",
            KeyType::Text => "text",
            KeyType::Uuid => "uuid",
        }
    }
}

impl<'de> Deserialize<'de> for KeyType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyType::from_sql_name(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown sharding key type \"{s}\": expected bigint, integer, smallint, text, varchar or uuid"
            ))
        })
    }
}

/// A key value, parsed from its text or binary form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyValue<'a> {
    /// SQL NULL (PostgreSQL puts it in remainder 0).
    Null,
    /// Any integer type (PostgreSQL hashes int2, int4 and int8 alike for equal values).
    Int(i64),
    /// text / varchar bytes (the server encoding's, UTF-8).
    Text(&'a [u8]),
    /// uuid bytes.
    Uuid([u8; 16]),
}

/// A key that does not parse as its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Text that the type's input function would reject (SQLSTATE 22P02).
    #[error("invalid input syntax for type {ty}: \"{text}\"")]
    Syntax {
        /// The key type's SQL name.
        ty: &'static str,
        /// The text (lossily decoded).
        text: String,
    },
    /// An integer outside its type's range (SQLSTATE 22003).
    #[error("value \"{text}\" is out of range for type {ty}")]
    OutOfRange {
        /// The key type's SQL name.
        ty: &'static str,
        /// The text.
        text: String,
    },
    /// A binary value of the wrong length (SQLSTATE 22P03).
    #[error("incorrect binary data format for type {ty}: {len} bytes")]
    BinaryLength {
        /// The key type's SQL name.
        ty: &'static str,
        /// Its length.
        len: usize,
    },
}

impl KeyError {
    /// The SQLSTATE PostgreSQL's input function would report: 22P02, 22003 or 22P03.
    pub fn sqlstate(&self) -> pgsluice_protocol::SqlState {
        use pgsluice_protocol::SqlState;
        match self {
            KeyError::Syntax { .. } => SqlState::INVALID_TEXT_REPRESENTATION,
            KeyError::OutOfRange { .. } => SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            KeyError::BinaryLength { .. } => SqlState::INVALID_BINARY_REPRESENTATION,
        }
    }
}

/// Parses the text form of a key as PostgreSQL's input function for `ty` would
/// (surrounding spaces allowed for integers; uuid in its accepted spellings).
///
/// Integers follow `pg_strtoint64`: blanks around, an optional sign, decimal
/// digits, and the forms PostgreSQL 16 added (`0x`, `0o`, `0b` prefixes, `_`
/// between digits); each type's range is checked. A uuid is 32 hex digits, any
/// case, optionally in braces, with an optional `-` after any group of four.
pub fn key_from_text(ty: KeyType, text: &[u8]) -> Result<KeyValue<'_>, KeyError> {
    let (min, max) = match ty {
        KeyType::SmallInt => (i64::from(i16::MIN), i64::from(i16::MAX)),
        KeyType::Integer => (i64::from(i32::MIN), i64::from(i32::MAX)),
        KeyType::BigInt => (i64::MIN, i64::MAX),
        KeyType::Text => return Ok(KeyValue::Text(text)),
        KeyType::Uuid => {
            return parse_uuid(text)
                .map(KeyValue::Uuid)
                .ok_or_else(|| KeyError::Syntax {
                    ty: ty.name(),
                    text: String::from_utf8_lossy(text).into_owned(),
                })
        }
    };
    let lossy = || String::from_utf8_lossy(text).into_owned();
    // PostgreSQL stops at the first digit that takes the magnitude past the
    // type's (-min), so "99999999999x" is out of range rather than bad syntax.
    match parse_int(text, min.unsigned_abs()) {
        IntParse::Value(v) if (i128::from(min)..=i128::from(max)).contains(&v) => {
            Ok(KeyValue::Int(v as i64))
        }
        IntParse::Value(_) | IntParse::Overflow => Err(KeyError::OutOfRange {
            ty: ty.name(),
            text: lossy(),
        }),
        IntParse::Syntax => Err(KeyError::Syntax {
            ty: ty.name(),
            text: lossy(),
        }),
    }
}

enum IntParse {
    Value(i128),
    Overflow,
    Syntax,
}

/// C's `isspace` in the C locale, as PostgreSQL's integer input skips it.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `pg_strtoint64` (and its 32- and 16-bit siblings, with `limit` the magnitude
/// of the type's minimum) without the final range check: the value, or why not.
fn parse_int(text: &[u8], limit: u64) -> IntParse {
    let start = text
        .iter()
        .position(|&b| !is_c_space(b))
        .unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|&b| !is_c_space(b))
        .map_or(start, |e| e + 1);
    let mut s = &text[start..end.max(start)];
    let negative = match s.first() {
        Some(b'-') => {
            s = &s[1..];
            true
        }
        Some(b'+') => {
            s = &s[1..];
            false
        }
        _ => false,
    };
    let (radix, digits, underscore_first) = match s {
        [b'0', b'x' | b'X', rest @ ..] => (16, rest, true),
        [b'0', b'o' | b'O', rest @ ..] => (8, rest, true),
        [b'0', b'b' | b'B', rest @ ..] => (2, rest, true),
        _ => (10, s, false),
    };
    if digits.is_empty() || (!underscore_first && digits[0] == b'_') {
        return IntParse::Syntax;
    }
    let mut value: i128 = 0;
    let mut seen_digit = false;
    let mut i = 0;
    while i < digits.len() {
        let b = digits[i];
        if b == b'_' {
            // An underscore must be followed by a digit.
            match digits.get(i + 1) {
                Some(&n) if char::from(n).is_digit(radix) => {}
                _ => return IntParse::Syntax,
            }
            i += 1;
            continue;
        }
        let Some(d) = char::from(b).to_digit(radix) else {
            return IntParse::Syntax;
        };
        seen_digit = true;
        value = value * i128::from(radix) + i128::from(d);
        if value > i128::from(limit) {
            return IntParse::Overflow;
        }
        i += 1;
    }
    if !seen_digit {
        return IntParse::Syntax;
    }
    IntParse::Value(if negative { -value } else { value })
}

/// `string_to_uuid`: 16 bytes from 32 hex digits, optionally braced, with an
/// optional hyphen after every second byte but the last.
fn parse_uuid(text: &[u8]) -> Option<[u8; 16]> {
    let (mut s, braces) = match text.strip_prefix(b"{") {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let hi = char::from(*s.first()?).to_digit(16)?;
        let lo = char::from(*s.get(1)?).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
        s = &s[2..];
        if s.first() == Some(&b'-') && i % 2 == 1 && i < 15 {
            s = &s[1..];
        }
    }
    if braces {
        s = s.strip_prefix(b"}")?;
    }
    s.is_empty().then_some(out)
}

/// Parses the binary form of a key (Bind parameter with format 1): the types'
/// send formats (big-endian integers of 2, 4 or 8 bytes, 16 uuid bytes, text as
/// its bytes).
pub fn key_from_binary(ty: KeyType, bytes: &[u8]) -> Result<KeyValue<'_>, KeyError> {
    let wrong = || KeyError::BinaryLength {
        ty: ty.name(),
        len: bytes.len(),
    };
    Ok(match ty {
        KeyType::SmallInt => KeyValue::Int(i64::from(i16::from_be_bytes(
            bytes.try_into().map_err(|_| wrong())?,
        ))),
        KeyType::Integer => KeyValue::Int(i64::from(i32::from_be_bytes(
            bytes.try_into().map_err(|_| wrong())?,
        ))),
        KeyType::BigInt => {
            KeyValue::Int(i64::from_be_bytes(bytes.try_into().map_err(|_| wrong())?))
        }
        KeyType::Text => KeyValue::Text(bytes),
        KeyType::Uuid => KeyValue::Uuid(bytes.try_into().map_err(|_| wrong())?),
    })
}

/// `compute_partition_hash_value` for a one-column partition key: the value whose
/// remainder modulo the number of shards is the key's shard.
pub fn partition_hash(key: &KeyValue<'_>) -> u64 {
    let h = match key {
        // NULLs are not hashed: the row hash stays 0 (remainder 0).
        KeyValue::Null => return 0,
        KeyValue::Int(v) => hash_int8_extended(*v, HASH_PARTITION_SEED),
        KeyValue::Text(bytes) => hash_bytes_extended(bytes, HASH_PARTITION_SEED),
        KeyValue::Uuid(bytes) => hash_bytes_extended(bytes, HASH_PARTITION_SEED),
    };
    hash_combine64(0, h)
}

/// The shard of a partition hash among `shards` (> 0).
pub fn shard_of_hash(hash: u64, shards: usize) -> usize {
    (hash % shards as u64) as usize
}

/// PostgreSQL's `hash_combine64` (hashfn.h).
pub fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b
        .wrapping_add(0x49a0_f4dd_15e5_a8e3)
        .wrapping_add(a << 54)
        .wrapping_add(a >> 7)
}

/// `hashint8extended`: the value folded to 32 bits so that equal int2, int4 and int8
/// values hash alike (`hashint2extended` and `hashint4extended` hash the value
/// itself, which this folding leaves unchanged for them).
pub fn hash_int8_extended(value: i64, seed: u64) -> u64 {
    let lo = value as u32;
    let hi = (value >> 32) as u32;
    let folded = lo ^ if value >= 0 { hi } else { !hi };
    hash_uint32_extended(folded, seed)
}

/// lookup3's `mix`.
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// lookup3's `final`.
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// The initial state, with a nonzero seed mixed in as a 12-byte block of its own.
fn initial_state(len: u32, seed: u64) -> (u32, u32, u32) {
    let init = 0x9e37_79b9_u32.wrapping_add(len).wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    if seed != 0 {
        a = a.wrapping_add((seed >> 32) as u32);
        b = b.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }
    (a, b, c)
}

/// `hash_bytes_extended` (what `hash_any_extended` calls): lookup3 over the bytes,
/// read as little-endian words, returning `b << 32 | c`.
pub fn hash_bytes_extended(bytes: &[u8], seed: u64) -> u64 {
    // PostgreSQL takes the length as a uint32 (texts are far below 4 GiB).
    let (mut a, mut b, mut c) = initial_state(bytes.len() as u32, seed);
    let word = |w: &[u8]| {
        w.iter().enumerate().fold(0u32, |acc, (i, &x)| {
            acc.wrapping_add(u32::from(x) << (8 * i))
        })
    };
    let mut chunks = bytes.chunks_exact(12);
    for chunk in &mut chunks {
        a = a.wrapping_add(word(&chunk[0..4]));
        b = b.wrapping_add(word(&chunk[4..8]));
        c = c.wrapping_add(word(&chunk[8..12]));
        mix(&mut a, &mut b, &mut c);
    }
    let rest = chunks.remainder();
    // The last 0..=11 bytes: the lowest byte of c is reserved for the length, so
    // bytes 8.. go to c shifted up by one byte.
    a = a.wrapping_add(word(&rest[..rest.len().min(4)]));
    if rest.len() > 4 {
        b = b.wrapping_add(word(&rest[4..rest.len().min(8)]));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(word(&rest[8..]) << 8);
    }
    final_mix(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// `hash_bytes_uint32_extended` (what `hash_uint32_extended` calls): lookup3 over
/// one 32-bit word.
pub fn hash_uint32_extended(k: u32, seed: u64) -> u64 {
    let (mut a, mut b, mut c) = initial_state(4, seed);
    a = a.wrapping_add(k);
    final_mix(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

#[cfg(test)]
#[path = "hash_tests.rs"]
mod tests;
