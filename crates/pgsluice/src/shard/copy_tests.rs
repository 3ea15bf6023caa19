//! COPY splitting: options from parsed statements, and lines cut anywhere.

use super::*;
use crate::shard::hash::{key_from_text, partition_hash, shard_of_hash};

fn stmt(sql: &str) -> CopyStmt {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).expect(sql);
    match parsed.protobuf.stmts[0]
        .stmt
        .as_ref()
        .and_then(|n| n.node.clone())
    {
        Some(NodeEnum::CopyStmt(c)) => *c,
        other => panic!("{sql}: {other:?}"),
    }
}

fn options(sql: &str) -> Result<CopyOptions, Unsupported> {
    CopyOptions::from_stmt(&stmt(sql))
}

#[test]
fn default_options_are_text() {
    assert_eq!(options("copy t from stdin"), Ok(CopyOptions::text()));
    let text = CopyOptions::text();
    assert_eq!((text.delimiter, text.null.as_slice()), (b'\t', &b"\\N"[..]));
}

#[test]
fn csv_options_new_and_old_syntax() {
    let want = CopyOptions {
        delimiter: b';',
        null: b"NULL".to_vec(),
        header: true,
        quote: b'\'',
        escape: b'\\',
        ..CopyOptions::csv()
    };
    assert_eq!(
        options(
            "copy t (a, b) from stdin with (format csv, delimiter ';', null 'NULL', \
             header true, quote '''', escape '\\')"
        ),
        Ok(want.clone())
    );
    assert_eq!(
        options("copy t from stdin csv header delimiter ';' null 'NULL' quote '''' escape '\\'"),
        Ok(want)
    );
    let csv = options("copy t from stdin (format CSV)").unwrap();
    assert_eq!(csv, CopyOptions::csv());
    assert_eq!((csv.quote, csv.escape, csv.null.len()), (b'"', b'"', 0));
    assert_eq!(
        options("copy t from stdin (format csv, quote '|')")
            .unwrap()
            .escape,
        b'|'
    );
    for (h, want) in [
        ("", true),
        ("on", true),
        ("1", true),
        ("false", false),
        ("off", false),
        ("0", false),
    ] {
        let o = options(&format!("copy t from stdin (format csv, header {h})")).unwrap();
        assert_eq!(o.header, want, "header {h}");
    }
    // HEADER in text format (PostgreSQL 15+).
    assert!(options("copy t from stdin (header)").unwrap().header);
    // Accepted and irrelevant to splitting.
    assert!(
        options("copy t from stdin (format csv, freeze, encoding 'UTF8', on_error stop)").is_ok()
    );
    let forced =
        options("copy t from stdin (format csv, force_not_null (a, \"B\"), force_null *)").unwrap();
    assert_eq!(forced.force_not_null, ["a", "B"]);
    assert_eq!(forced.force_null, ["*"]);
}

#[test]
fn refused_options() {
    let refused = |sql: &str, needle: &str| {
        let e = options(sql).expect_err(sql);
        assert!(e.message.contains(needle), "{sql}: {e:?}");
        e.sqlstate
    };
    assert_eq!(
        refused("copy t from stdin (format binary)", "binary"),
        SqlState::FEATURE_NOT_SUPPORTED
    );
    refused("copy t from stdin binary", "binary");
    refused("copy t from stdin (format csv, header match)", "MATCH");
    refused("copy t to stdout", "COPY TO");
    refused("copy t from '/tmp/x'", "FROM STDIN");
    refused("copy t from program 'cat'", "FROM STDIN");
    refused("copy t from stdin (encoding 'LATIN1')", "ENCODING");
    refused("copy t from stdin (default 'x')", "DEFAULT");
    refused("copy t from stdin (on_error ignore)", "ON_ERROR");
    refused("copy t from stdin (format xml)", "not recognized");
    refused("copy t from stdin (delimiter ';;')", "one-byte");
    refused("copy t from stdin (delimiter 'é')", "one-byte");
    refused(
        "copy t from stdin (format csv, delimiter '\"')",
        "quote must be different",
    );
    refused("copy t from stdin (delimiter '\\')", "cannot be");
    refused("copy t from stdin (force_not_null (a))", "CSV");
    assert_eq!(
        refused("copy t from stdin (format csv, format text)", "redundant"),
        SqlState::SYNTAX_ERROR
    );
}

/// Splits `chunks` over `shards` and returns what each shard got.
fn split(
    options: CopyOptions,
    key: usize,
    ty: KeyType,
    shards: usize,
    chunks: &[&[u8]],
) -> Result<(Vec<Vec<u8>>, Vec<u64>), CopyError> {
    let mut s = CopySplitter::new(options, key, ty, shards);
    let mut out = vec![Vec::new(); shards];
    for c in chunks {
        s.feed(c, &mut out)?;
    }
    s.finish(&mut out)?;
    Ok((out, s.rows().to_vec()))
}

fn shard_of(ty: KeyType, text: &str, n: usize) -> usize {
    shard_of_hash(
        partition_hash(&key_from_text(ty, text.as_bytes()).unwrap()),
        n,
    )
}

/// The rows of `data` in the order given, grouped by the shard of `keys`.
fn expected(lines: &[&str], keys: &[Option<&str>], ty: KeyType, n: usize) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new(); n];
    for (line, key) in lines.iter().zip(keys) {
        let shard = key.map_or(0, |k| shard_of(ty, k, n));
        out[shard].extend_from_slice(line.as_bytes());
    }
    out
}

#[test]
fn text_rows_by_key() {
    let lines = [
        "450\tx\n",
        "1\ty\n",
        "-1\tz\n",
        "900\t\\N\n",
        "\\N\tnull key\n",
        "7\tlast\n",
    ];
    let data = lines.concat();
    let keys = [
        Some("450"),
        Some("1"),
        Some("-1"),
        Some("900"),
        None,
        Some("7"),
    ];
    let (out, rows) = split(
        CopyOptions::text(),
        0,
        KeyType::BigInt,
        2,
        &[data.as_bytes()],
    )
    .unwrap();
    assert_eq!(out, expected(&lines, &keys, KeyType::BigInt, 2));
    assert_eq!(rows.iter().sum::<u64>(), 6);
    // Key in the second field, three shards.
    let lines = ["a\t450\n", "b\t1\n", "c\t-1\n"];
    let keys = [Some("450"), Some("1"), Some("-1")];
    let (out, _) = split(
        CopyOptions::text(),
        1,
        KeyType::Integer,
        3,
        &[lines.concat().as_bytes()],
    )
    .unwrap();
    assert_eq!(out, expected(&lines, &keys, KeyType::Integer, 3));
}

#[test]
fn one_byte_feeds_give_the_same_rows() {
    let data = "450\tx\\ty\\\nz\r\n1\ty\r\n\\N\t\\\\\r\n-1\tend";
    let whole = split(
        CopyOptions::text(),
        0,
        KeyType::BigInt,
        3,
        &[data.as_bytes()],
    )
    .unwrap();
    let bytes: Vec<&[u8]> = data.as_bytes().chunks(1).collect();
    assert_eq!(
        split(CopyOptions::text(), 0, KeyType::BigInt, 3, &bytes).unwrap(),
        whole
    );
    assert_eq!(whole.1.iter().sum::<u64>(), 4);
    // The escaped newline stayed inside the first row.
    let first = &whole.0[shard_of(KeyType::BigInt, "450", 3)];
    assert!(first.starts_with(b"450\tx\\ty\\\nz\r\n"), "{first:?}");

    let csv = "k,note\n\"4\n50\",x\n450,\"a,\"\"b\"\"\nc\"\r\n\"1\",y\n,\"\"";
    let opts = CopyOptions {
        header: true,
        ..CopyOptions::csv()
    };
    let whole = split(opts.clone(), 1, KeyType::Text, 2, &[csv.as_bytes()]).unwrap();
    let bytes: Vec<&[u8]> = csv.as_bytes().chunks(1).collect();
    assert_eq!(split(opts, 1, KeyType::Text, 2, &bytes).unwrap(), whole);
    assert_eq!(whole.1.iter().sum::<u64>(), 4);
}

#[test]
fn text_escapes_in_the_key_are_decoded() {
    // "\x34\065\60" is 450; "\\N" with another NULL string is the text "N".
    for (field, key) in [
        ("\\x34\\065\\60", "450"),
        ("4\\x350", "450"),
        (" 450 ", "450"),
    ] {
        let data = format!("{field}\tx\n");
        let (out, _) = split(
            CopyOptions::text(),
            0,
            KeyType::BigInt,
            3,
            &[data.as_bytes()],
        )
        .unwrap();
        assert_eq!(
            out[shard_of(KeyType::BigInt, key, 3)],
            data.as_bytes(),
            "{field}"
        );
    }
    for (field, key) in [
        ("a\\tb", "a\tb"),
        ("a\\nb", "a\nb"),
        ("\\\\", "\\"),
        ("\\x", "x"),
        ("\\b\\f\\v\\r", "\u{8}\u{c}\u{b}\r"),
    ] {
        let data = format!("{field}\n");
        let (out, _) = split(CopyOptions::text(), 0, KeyType::Text, 5, &[data.as_bytes()]).unwrap();
        assert_eq!(
            out[shard_of(KeyType::Text, key, 5)],
            data.as_bytes(),
            "{field}"
        );
    }
    // An escaped delimiter does not split the field.
    let data = "a\\\tb\tc\n";
    let (out, _) = split(CopyOptions::text(), 0, KeyType::Text, 5, &[data.as_bytes()]).unwrap();
    assert_eq!(out[shard_of(KeyType::Text, "a\tb", 5)], data.as_bytes());
    // Another NULL string: \N is the text "N", the NULL string is NULL.
    let opts = CopyOptions {
        null: b"nil".to_vec(),
        delimiter: b'|',
        ..CopyOptions::text()
    };
    let (out, _) = split(opts, 0, KeyType::Text, 5, &[b"\\N|1\nnil|2\n"]).unwrap();
    let n = shard_of(KeyType::Text, "N", 5);
    assert!(out[n].starts_with(b"\\N|1\n") || out[n] == b"nil|2\n\\N|1\n");
    assert!(out[0].ends_with(b"nil|2\n"));
}

#[test]
fn csv_rows_by_key() {
    let lines = [
        "\"450\",plain\n",
        "1,\"embedded, comma\"\n",
        "-1,\"embedded\nnewline\"\n",
        ",null key\n",
        "\"\",empty quoted text\n",
        "\"9\"\"9\",doubled quote\n",
    ];
    let data = lines.concat();
    // As text keys: 450, 1, -1, NULL, '', 9"9.
    let keys = [
        Some("450"),
        Some("1"),
        Some("-1"),
        None,
        Some(""),
        Some("9\"9"),
    ];
    let (out, rows) = split(CopyOptions::csv(), 0, KeyType::Text, 3, &[data.as_bytes()]).unwrap();
    assert_eq!(out, expected(&lines, &keys, KeyType::Text, 3));
    assert_eq!(rows.iter().sum::<u64>(), 6);
}

#[test]
fn csv_escape_character() {
    let opts = CopyOptions {
        escape: b'\\',
        ..CopyOptions::csv()
    };
    let lines = ["\"a\\\"b\",1\n", "\"c\\\\\",2\n", "\"x\\\"\ny\",3\n"];
    let keys = [Some("a\"b"), Some("c\\"), Some("x\"\ny")];
    let (out, _) = split(opts, 0, KeyType::Text, 5, &[lines.concat().as_bytes()]).unwrap();
    assert_eq!(out, expected(&lines, &keys, KeyType::Text, 5));
}

#[test]
fn csv_header_goes_to_every_shard_and_is_not_counted() {
    let opts = CopyOptions {
        header: true,
        ..CopyOptions::csv()
    };
    let data = "id,\"multi\nline header\"\n450,a\n1,b\n";
    let (out, rows) = split(opts, 0, KeyType::BigInt, 3, &[data.as_bytes()]).unwrap();
    for shard in &out {
        assert!(shard.starts_with(b"id,\"multi\nline header\"\n"));
    }
    assert_eq!(rows.iter().sum::<u64>(), 2);
}

#[test]
fn end_marker_is_dropped_with_what_follows() {
    for data in [
        "450\tx\n\\.\n",
        "450\tx\n\\.\r\n",
        "450\tx\n\\.",
        "450\tx\n\\.\nignored\tz\n",
    ] {
        let (out, rows) = split(
            CopyOptions::text(),
            0,
            KeyType::BigInt,
            2,
            &[data.as_bytes()],
        )
        .unwrap();
        assert_eq!(out.concat(), b"450\tx\n", "{data:?}");
        assert_eq!(rows.iter().sum::<u64>(), 1);
    }
    let (out, _) = split(
        CopyOptions::csv(),
        0,
        KeyType::BigInt,
        2,
        &[b"450,x\n\\.\n"],
    )
    .unwrap();
    assert_eq!(out.concat(), b"450,x\n");
    // In CSV, a quoted "\." is data.
    let (out, _) = split(CopyOptions::csv(), 0, KeyType::Text, 2, &[b"\"\\.\"\n"]).unwrap();
    assert_eq!(out.concat(), b"\"\\.\"\n");
}

#[test]
fn last_row_without_line_end() {
    let (out, rows) = split(
        CopyOptions::text(),
        0,
        KeyType::BigInt,
        2,
        &[b"450\tx\n9", b"00"],
    )
    .unwrap();
    assert!(out[shard_of(KeyType::BigInt, "900", 2)].ends_with(b"900"));
    assert_eq!(rows.iter().sum::<u64>(), 2);
}

fn error(opts: CopyOptions, ty: KeyType, data: &str) -> CopyError {
    split(opts, 0, ty, 2, &[data.as_bytes()]).expect_err(data)
}

#[test]
fn errors_name_the_line_and_sqlstate() {
    let e = error(CopyOptions::text(), KeyType::BigInt, "1\ta\n2\tb\nabc\tc\n");
    assert_eq!(e.sqlstate, SqlState::INVALID_TEXT_REPRESENTATION);
    assert!(
        e.message.contains("line 3") && e.message.contains("\"abc\""),
        "{e}"
    );
    let e = error(CopyOptions::text(), KeyType::Integer, "1\n99999999999\n");
    assert_eq!(e.sqlstate, SqlState::NUMERIC_VALUE_OUT_OF_RANGE);
    assert!(e.message.contains("line 2"), "{e}");
    // CSV line numbers count the physical lines of quoted newlines.
    let e = error(CopyOptions::csv(), KeyType::BigInt, "\"1\",\"a\nb\"\nx,1\n");
    assert!(e.message.contains("line 3"), "{e}");
    let bad = |opts: CopyOptions, ty, data: &str, needle: &str| {
        let e = split(opts, 1, ty, 2, &[data.as_bytes()]).expect_err(data);
        assert_eq!(e.sqlstate, SqlState::BAD_COPY_FILE_FORMAT, "{data:?}");
        assert!(e.message.contains(needle), "{data:?}: {e}");
    };
    bad(
        CopyOptions::text(),
        KeyType::BigInt,
        "a\t1\nb\n",
        "missing data",
    );
    bad(
        CopyOptions::text(),
        KeyType::BigInt,
        "a\t1\rb\t2\r",
        "carriage return",
    );
    bad(
        CopyOptions::text(),
        KeyType::BigInt,
        "a\t1\\.\n",
        "end-of-copy marker",
    );
    bad(
        CopyOptions::text(),
        KeyType::BigInt,
        "\\.x\t1\n",
        "end-of-copy marker",
    );
    bad(
        CopyOptions::csv(),
        KeyType::BigInt,
        "a,\"1\n",
        "unterminated",
    );
    bad(
        CopyOptions::csv(),
        KeyType::BigInt,
        "\"a,1\n2,3\n",
        "unterminated",
    );
    bad(
        CopyOptions::csv(),
        KeyType::BigInt,
        "a,1\rb,2\n",
        "carriage return",
    );
}

#[test]
fn csv_force_not_null_and_force_null_on_the_key() {
    let ty = KeyType::Text;
    let empty = shard_of(ty, "", 3);
    assert_ne!(empty, 0, "the test needs '' off shard 0");
    let run = |opts: CopyOptions, name: Option<&str>, data: &str| {
        let mut s = CopySplitter::new(opts, 0, ty, 3);
        if let Some(n) = name {
            s = s.with_key_name(n);
        }
        let mut out = vec![Vec::new(); 3];
        s.feed(data.as_bytes(), &mut out).map(|_| out)
    };
    let not_null = CopyOptions {
        force_not_null: vec!["k".into()],
        ..CopyOptions::csv()
    };
    // Unquoted empty: '' with FORCE_NOT_NULL (k), NULL otherwise.
    assert_eq!(
        run(not_null.clone(), Some("k"), ",x\n").unwrap()[empty],
        b",x\n"
    );
    assert_eq!(
        run(not_null.clone(), Some("other"), ",x\n").unwrap()[0],
        b",x\n"
    );
    // Key name unknown: refused where it matters, fine elsewhere.
    let e = run(not_null.clone(), None, ",x\n").unwrap_err();
    assert_eq!(e.sqlstate, SqlState::FEATURE_NOT_SUPPORTED);
    assert!(run(not_null, None, "a,x\n").is_ok());
    // Quoted empty: NULL with FORCE_NULL.
    let force_null = CopyOptions {
        force_null: vec!["*".into()],
        ..CopyOptions::csv()
    };
    assert_eq!(
        run(force_null.clone(), Some("k"), "\"\",x\n").unwrap()[0],
        b"\"\",x\n"
    );
    assert_eq!(
        run(CopyOptions::csv(), None, "\"\",x\n").unwrap()[empty],
        b"\"\",x\n"
    );
}

#[test]
fn uuid_and_other_delimiters() {
    let opts = CopyOptions {
        delimiter: b'|',
        ..CopyOptions::text()
    };
    let lines = [
        "x|{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}\n",
        "y|123e4567e89b12d3a456426614174000\n",
    ];
    let keys = [
        Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        Some("123e4567-e89b-12d3-a456-426614174000"),
    ];
    let (out, _) = split(opts, 1, KeyType::Uuid, 2, &[lines.concat().as_bytes()]).unwrap();
    assert_eq!(out, expected(&lines, &keys, KeyType::Uuid, 2));
}

/// Feeds `data` cut at `cuts` (positions, any order) and returns the outcome.
fn outcome(
    opts: &CopyOptions,
    data: &[u8],
    cuts: &[usize],
) -> Result<(Vec<Vec<u8>>, Vec<u64>), CopyError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut last = 0;
    for p in points {
        chunks.push(&data[last..p]);
        last = p;
    }
    chunks.push(&data[last..]);
    split(opts.clone(), 1, KeyType::Text, 3, &chunks)
}

proptest::proptest! {
    /// However the data is cut into CopyData messages, the shards get the same
    /// rows (or the same error).
    #[test]
    fn any_cut_gives_the_same_result(
        pieces in proptest::collection::vec(
            proptest::sample::select(vec![
                "a", "1", ",", "\t", "\"", "\"\"", "\\", "\\N", "\\.", "\n", "\r\n", "é", "x;y",
            ]),
            0..40,
        ),
        cuts in proptest::collection::vec(0usize..1000, 0..8),
        csv in proptest::bool::ANY,
    ) {
        let data = pieces.concat();
        let opts = if csv { CopyOptions::csv() } else { CopyOptions::text() };
        let whole = outcome(&opts, data.as_bytes(), &[]);
        proptest::prop_assert_eq!(outcome(&opts, data.as_bytes(), &cuts), whole);
    }
}
