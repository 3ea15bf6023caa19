//! Placement pinned to values a real PostgreSQL 15 computed
//! (`hashint8extended`, `hashtextextended`, `uuid_hash_extended` with
//! HASH_PARTITION_SEED, and `satisfies_hash_partition` on `PARTITION BY HASH` tables).

use super::*;

const SEED: u64 = HASH_PARTITION_SEED;

fn uuid(s: &str) -> [u8; 16] {
    match key_from_text(KeyType::Uuid, s.as_bytes()) {
        Ok(KeyValue::Uuid(u)) => u,
        other => panic!("{s}: {other:?}"),
    }
}

#[test]
fn seed_is_postgres_partition_seed() {
    assert_eq!(HASH_PARTITION_SEED, 8_816_678_312_871_386_365);
}

#[test]
fn int8_hashes_match_postgres() {
    // select v, hashint8extended(v, 8816678312871386365), hashint8extended(v, 0)
    let cases: &[(i64, i64, i64)] = &[
        (0, -4403592609991167795, 4154612158245552303),
        (1, 5968994663651403477, -3670598878359251130),
        (-1, -5017072347659237694, -1888257769727981238),
        (450, 6514630858951122746, 1928682662161828552),
        (900, 8133364505517717299, 8670338861858621619),
        (-450, 2165111080029258989, 104416267341645786),
        (2147483647, -6050265599104649060, -9109110466470504941),
        (-2147483648, 4938542303000433043, 1977219185673256887),
        (2147483648, 4938542303000433043, 1977219185673256887),
        (-2147483649, -6050265599104649060, -9109110466470504941),
        (i64::MAX, 4938542303000433043, 1977219185673256887),
        (i64::MIN, -6050265599104649060, -9109110466470504941),
        (4294967296, 5968994663651403477, -3670598878359251130),
        (-4294967296, -4403592609991167795, 4154612158245552303),
        (123456789012, 1825551100719034884, 5990271995538752477),
    ];
    for &(v, seeded, unseeded) in cases {
        assert_eq!(hash_int8_extended(v, SEED), seeded as u64, "{v}");
        assert_eq!(hash_int8_extended(v, 0), unseeded as u64, "{v} seed 0");
    }
}

#[test]
fn int4_and_int2_hash_as_int8() {
    // hashint4extended / hashint2extended with the partition seed.
    let cases: &[(i64, i64)] = &[
        (-7, -7298374200968567817),
        (32767, -6436696229286267413),
        (-32768, 5885242512097991578),
        (2147483647, -6050265599104649060),
        (-2147483648, 4938542303000433043),
    ];
    for &(v, h) in cases {
        assert_eq!(hash_int8_extended(v, SEED), h as u64, "{v}");
        assert_eq!(hash_uint32_extended(v as i32 as u32, SEED), h as u64, "{v}");
    }
}

#[test]
fn text_hashes_match_postgres() {
    // select v, hashtextextended(v, 8816678312871386365), hashtextextended(v, 0)
    let cases: &[(&str, i64, i64)] = &[
        ("", -5700645584453517373, -6939563903564495251),
        ("a", -6705225459120232837, 3591986179850072241),
        ("abc", 3628778498291917250, -6747756470228489321),
        ("abcd", 4029384952263848046, -1038429303365892052),
        ("hello world", 7664296498819024037, 6947366892317592103),
        ("exactly12byt", 7971543605021937887, -1607044592329689743),
        ("thirteen byte", -7829037210646445165, -1147533121609491268),
        (
            "héllo wörld ünicode 🎉",
            -3844722093414116357,
            9176092416491541907,
        ),
        (
            "a somewhat longer text that spans several twelve byte blocks!!",
            6322188021781668627,
            8973274334629682546,
        ),
    ];
    for &(s, seeded, unseeded) in cases {
        assert_eq!(
            hash_bytes_extended(s.as_bytes(), SEED),
            seeded as u64,
            "{s:?}"
        );
        assert_eq!(
            hash_bytes_extended(s.as_bytes(), 0),
            unseeded as u64,
            "{s:?}"
        );
    }
}

#[test]
fn uuid_hashes_match_postgres() {
    let cases: &[(&str, i64)] = &[
        ("00000000-0000-0000-0000-000000000000", -5281082146396728638),
        ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 424513190990560493),
        ("ffffffff-ffff-ffff-ffff-ffffffffffff", -148986464341306210),
        ("123e4567-e89b-12d3-a456-426614174000", -1252132692482143582),
    ];
    for &(s, h) in cases {
        assert_eq!(hash_bytes_extended(&uuid(s), SEED), h as u64, "{s}");
    }
}

fn shard_of(key: KeyValue<'_>, n: usize) -> usize {
    shard_of_hash(partition_hash(&key), n)
}

#[test]
fn remainders_match_satisfies_hash_partition() {
    // (value, remainder for modulus 2, 3, 5), from satisfies_hash_partition()
    // on an int8 `PARTITION BY HASH` table.
    let ints: &[(i64, [usize; 3])] = &[
        (0, [0, 2, 3]),
        (1, [0, 2, 0]),
        (-1, [1, 2, 4]),
        (450, [1, 1, 4]),
        (900, [0, 1, 2]),
        (-450, [0, 1, 2]),
        (2147483648, [0, 0, 1]),
        (i64::MIN, [1, 1, 4]),
        (i64::MAX, [0, 0, 1]),
        (123456789012, [1, 2, 2]),
        // int4 and int2 tables: the same rule.
        (7, [1, 1, 2]),
        (-7, [0, 0, 2]),
        (2147483647, [1, 1, 4]),
        (-2147483648, [0, 0, 1]),
        (32767, [0, 1, 1]),
        (-32768, [1, 0, 1]),
    ];
    for &(v, r) in ints {
        for (m, want) in [2, 3, 5].into_iter().zip(r) {
            assert_eq!(shard_of(KeyValue::Int(v), m), want, "{v} mod {m}");
        }
    }
    let texts: &[(&str, [usize; 3])] = &[
        ("", [0, 2, 1]),
        ("abc", [1, 1, 3]),
        ("héllo wörld ünicode 🎉", [0, 0, 1]),
        ("orders-42", [0, 2, 3]),
    ];
    for &(s, r) in texts {
        for (m, want) in [2, 3, 5].into_iter().zip(r) {
            assert_eq!(
                shard_of(KeyValue::Text(s.as_bytes()), m),
                want,
                "{s:?} mod {m}"
            );
        }
    }
    let uuids: &[(&str, [usize; 3])] = &[
        ("00000000-0000-0000-0000-000000000000", [1, 0, 0]),
        ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", [0, 1, 1]),
        ("123e4567-e89b-12d3-a456-426614174000", [1, 1, 1]),
    ];
    for &(s, r) in uuids {
        for (m, want) in [2, 3, 5].into_iter().zip(r) {
            assert_eq!(shard_of(KeyValue::Uuid(uuid(s)), m), want, "{s} mod {m}");
        }
    }
}

#[test]
fn null_goes_to_shard_zero() {
    assert_eq!(partition_hash(&KeyValue::Null), 0);
    for m in [1, 2, 3, 5] {
        assert_eq!(shard_of(KeyValue::Null, m), 0);
    }
}

#[test]
fn hash_combine64_from_zero_adds_the_constant() {
    assert_eq!(hash_combine64(0, 1), 0x49a0_f4dd_15e5_a8e4);
    assert_eq!(
        partition_hash(&KeyValue::Int(450)),
        hash_combine64(0, 6514630858951122746)
    );
}

fn int(ty: KeyType, s: &str) -> Result<KeyValue<'_>, KeyError> {
    key_from_text(ty, s.as_bytes())
}

#[test]
fn integer_text_input() {
    use KeyType::*;
    assert_eq!(int(BigInt, "450"), Ok(KeyValue::Int(450)));
    assert_eq!(int(BigInt, "  -450\t\n"), Ok(KeyValue::Int(-450)));
    assert_eq!(int(BigInt, "+7 "), Ok(KeyValue::Int(7)));
    assert_eq!(int(BigInt, "007"), Ok(KeyValue::Int(7)));
    assert_eq!(int(BigInt, "-0"), Ok(KeyValue::Int(0)));
    assert_eq!(
        int(BigInt, "9223372036854775807"),
        Ok(KeyValue::Int(i64::MAX))
    );
    assert_eq!(
        int(BigInt, "-9223372036854775808"),
        Ok(KeyValue::Int(i64::MIN))
    );
    assert_eq!(int(Integer, "-2147483648"), Ok(KeyValue::Int(-2147483648)));
    assert_eq!(int(Integer, "2147483647"), Ok(KeyValue::Int(2147483647)));
    assert_eq!(int(SmallInt, "-32768"), Ok(KeyValue::Int(-32768)));
    assert_eq!(int(SmallInt, " 32767 "), Ok(KeyValue::Int(32767)));
    // PostgreSQL 16's forms.
    assert_eq!(int(BigInt, "0x1F"), Ok(KeyValue::Int(31)));
    assert_eq!(int(BigInt, "-0o17"), Ok(KeyValue::Int(-15)));
    assert_eq!(int(BigInt, "0B101"), Ok(KeyValue::Int(5)));
    assert_eq!(int(BigInt, "1_000_000"), Ok(KeyValue::Int(1_000_000)));
    assert_eq!(int(BigInt, "0x_ff"), Ok(KeyValue::Int(255)));
    assert_eq!(
        int(BigInt, "-0x8000000000000000"),
        Ok(KeyValue::Int(i64::MIN))
    );
}

#[test]
fn integer_text_input_errors() {
    use KeyType::*;
    for bad in [
        "", " ", "+", "-", "1.0", "1e3", "12a", "a12", "1 2", "_1", "1_", "1__0", "0x", "0xg",
        "--1", "+-1", "0b2", "½",
    ] {
        assert!(
            matches!(int(BigInt, bad), Err(KeyError::Syntax { ty: "bigint", .. })),
            "{bad:?}: {:?}",
            int(BigInt, bad)
        );
    }
    let range = |ty, s| {
        assert!(
            matches!(int(ty, s), Err(KeyError::OutOfRange { .. })),
            "{s}: {:?}",
            int(ty, s)
        )
    };
    range(BigInt, "9223372036854775808");
    range(BigInt, "-9223372036854775809");
    range(BigInt, "99999999999999999999999999999999999999999");
    range(Integer, "2147483648");
    range(Integer, "-2147483649");
    range(SmallInt, "32768");
    range(SmallInt, "-32769");
    // PostgreSQL reports the overflow before the bad character after it.
    range(BigInt, "99999999999999999999x");
    range(Integer, "99999999999x");
    range(SmallInt, "-99999 x");
    assert_eq!(
        int(SmallInt, "40000").unwrap_err().to_string(),
        "value \"40000\" is out of range for type smallint"
    );
    assert_eq!(
        int(Integer, "x").unwrap_err().to_string(),
        "invalid input syntax for type integer: \"x\""
    );
}

#[test]
fn uuid_text_input() {
    let want = uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(want[0], 0xa0);
    assert_eq!(want[15], 0x11);
    for spelling in [
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
    ] {
        assert_eq!(uuid(spelling), want, "{spelling}");
    }
    for bad in [
        "",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
        "a0e-ebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
        "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ] {
        assert!(
            matches!(
                key_from_text(KeyType::Uuid, bad.as_bytes()),
                Err(KeyError::Syntax { ty: "uuid", .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn text_input_is_the_bytes() {
    assert_eq!(
        key_from_text(KeyType::Text, b" x "),
        Ok(KeyValue::Text(b" x "))
    );
}

#[test]
fn binary_input() {
    use KeyType::*;
    assert_eq!(
        key_from_binary(SmallInt, &(-2i16).to_be_bytes()),
        Ok(KeyValue::Int(-2))
    );
    assert_eq!(
        key_from_binary(Integer, &(-450i32).to_be_bytes()),
        Ok(KeyValue::Int(-450))
    );
    assert_eq!(
        key_from_binary(BigInt, &i64::MIN.to_be_bytes()),
        Ok(KeyValue::Int(i64::MIN))
    );
    assert_eq!(key_from_binary(Text, b"abc"), Ok(KeyValue::Text(b"abc")));
    let u = uuid("123e4567-e89b-12d3-a456-426614174000");
    assert_eq!(key_from_binary(Uuid, &u), Ok(KeyValue::Uuid(u)));
    for (ty, len) in [
        (SmallInt, 4),
        (Integer, 8),
        (BigInt, 4),
        (Uuid, 15),
        (BigInt, 0),
    ] {
        assert_eq!(
            key_from_binary(ty, &vec![0; len]),
            Err(KeyError::BinaryLength { ty: ty.name(), len })
        );
    }
}

#[test]
fn type_names_and_oids() {
    use KeyType::*;
    for (name, ty) in [
        ("bigint", BigInt),
        ("INT8", BigInt),
        ("bigserial", BigInt),
        ("integer", Integer),
        ("int", Integer),
        ("int4", Integer),
        ("serial", Integer),
        ("smallint", SmallInt),
        ("int2", SmallInt),
        ("text", Text),
        ("varchar", Text),
        ("character varying", Text),
        ("Character  Varying(20)", Text),
        ("varchar (64)", Text),
        ("pg_catalog.int8", BigInt),
        (" uuid ", Uuid),
    ] {
        assert_eq!(KeyType::from_sql_name(name), Some(ty), "{name}");
    }
    for name in [
        "numeric",
        "char",
        "bpchar",
        "int(4)",
        "varchar(x)",
        "varchar()",
        "",
        "json",
    ] {
        assert_eq!(KeyType::from_sql_name(name), None, "{name}");
    }
    for (oid, ty) in [
        (20, BigInt),
        (23, Integer),
        (21, SmallInt),
        (25, Text),
        (1043, Text),
        (2950, Uuid),
    ] {
        assert_eq!(KeyType::from_oid(oid), Some(ty));
    }
    assert_eq!(KeyType::from_oid(1700), None);
}
