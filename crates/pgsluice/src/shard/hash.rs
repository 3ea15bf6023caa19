//! Where PostgreSQL's hash partitioning puts a key: the shard of a row is
//! `partition_hash(key) % shards`, the remainder `satisfies_hash_partition()` accepts.
//!
//! OWNER: helper "shardhash" fills the bodies (PostgreSQL's hashint8extended /
//! hash_bytes_extended with HASH_PARTITION_SEED, combined as
//! compute_partition_hash_value does), pinned by values computed by PostgreSQL.

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
    pub fn from_sql_name(name: &str) -> Option<KeyType> {
        let _ = name;
        todo!("shardhash")
    }

    /// The type of a type OID (20, 23, 21, 25, 1043, 2950), as a Parse message or
    /// RowDescription gives it.
    pub fn from_oid(oid: u32) -> Option<KeyType> {
        let _ = oid;
        todo!("shardhash")
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

/// Parses the text form of a key as PostgreSQL's input function for `ty` would
/// (surrounding spaces allowed for integers; uuid in its accepted spellings).
pub fn key_from_text(ty: KeyType, text: &[u8]) -> Result<KeyValue<'_>, KeyError> {
    let _ = (ty, text);
    todo!("shardhash")
}

/// Parses the binary form of a key (Bind parameter with format 1).
pub fn key_from_binary(ty: KeyType, bytes: &[u8]) -> Result<KeyValue<'_>, KeyError> {
    let _ = (ty, bytes);
    todo!("shardhash")
}

/// `compute_partition_hash_value` for a one-column partition key: the value whose
/// remainder modulo the number of shards is the key's shard.
pub fn partition_hash(key: &KeyValue<'_>) -> u64 {
    let _ = key;
    todo!("shardhash")
}

/// The shard of a partition hash among `shards` (> 0).
pub fn shard_of_hash(hash: u64, shards: usize) -> usize {
    (hash % shards as u64) as usize
}
