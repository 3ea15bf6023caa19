//! The Merger over hand-built backend messages: concatenation and sorted merges in
//! text and binary formats (aggregates and the property tests: merge_agg_tests.rs).

use super::plan_tests::plan;
use super::value::oid;
use super::*;

pub(super) const TEXT: i16 = 0;
pub(super) const BINARY: i16 = 1;

pub(super) fn rd(cols: &[(&str, u32, i16)]) -> Vec<u8> {
    use bytes::BufMut;
    let mut body = BytesMut::new();
    body.put_u16(cols.len() as u16);
    for (name, type_oid, format) in cols {
        body.put_slice(name.as_bytes());
        body.put_u8(0);
        body.put_u32(0);
        body.put_i16(0);
        body.put_u32(*type_oid);
        body.put_i16(-1);
        body.put_i32(-1);
        body.put_i16(*format);
    }
    let mut msg = vec![tag::ROW_DESCRIPTION];
    msg.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    msg.extend_from_slice(&body);
    msg
}

pub(super) fn row(vals: &[Option<&str>]) -> Vec<u8> {
    let mut b = BytesMut::new();
    backend::data_row(&mut b, vals);
    b.to_vec()
}

pub(super) fn brow(vals: &[Option<&[u8]>]) -> Vec<u8> {
    agg::data_row(vals).to_vec()
}

pub(super) fn done(n: usize) -> Vec<u8> {
    let mut b = BytesMut::new();
    backend::command_complete(&mut b, &format!("SELECT {n}"));
    b.to_vec()
}

/// One shard's result: RowDescription, rows, CommandComplete.
pub(super) fn shard(desc: &[u8], rows: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let n = rows.len();
    let mut msgs = vec![desc.to_vec()];
    msgs.extend(rows);
    msgs.push(done(n));
    msgs
}

/// What the client got.
#[derive(Debug, Default)]
pub(super) struct Out {
    pub(super) descriptions: usize,
    pub(super) rows: Vec<Vec<Option<Vec<u8>>>>,
    pub(super) tag: String,
    pub(super) empty: bool,
}

impl Out {
    pub(super) fn text(&self) -> Vec<Vec<Option<String>>> {
        self.rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| v.as_ref().map(|b| String::from_utf8(b.clone()).unwrap()))
                    .collect()
            })
            .collect()
    }

    pub(super) fn column(&self, i: usize) -> Vec<Option<String>> {
        self.text().into_iter().map(|r| r[i].clone()).collect()
    }
}

pub(super) fn parse_out(buf: &[u8]) -> Out {
    let mut buf = BytesMut::from(buf);
    let mut out = Out::default();
    while let Some(m) = pgsluice_protocol::frame::split_message(&mut buf, 1 << 20).unwrap() {
        let body = &m.body[..];
        match m.tag {
            tag::ROW_DESCRIPTION => out.descriptions += 1,
            tag::DATA_ROW => {
                let vals = backend::parse_data_row(body).unwrap();
                assert!(out.tag.is_empty(), "row after CommandComplete");
                out.rows
                    .push(vals.into_iter().map(|v| v.map(<[u8]>::to_vec)).collect());
            }
            tag::COMMAND_COMPLETE => {
                out.tag = String::from_utf8(body[..body.len() - 1].to_vec()).unwrap()
            }
            tag::EMPTY_QUERY => out.empty = true,
            t => panic!("unexpected {t}"),
        }
    }
    assert!(buf.is_empty());
    out
}

/// Pushes the shards' messages round-robin, draining after each, then finishes.
pub(super) fn run_with(
    sql: &str,
    bytes_order: bool,
    shards: Vec<Vec<Vec<u8>>>,
) -> Result<Out, MergeError> {
    let plan = plan(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut m = Merger::new(&plan, shards.len(), bytes_order);
    let mut out = BytesMut::new();
    let longest = shards.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for (s, msgs) in shards.iter().enumerate() {
            if let Some(msg) = msgs.get(i) {
                m.push(s, msg)?;
                m.drain(&mut out)?;
            }
        }
    }
    m.finish(&mut out)?;
    let parsed = parse_out(&out);
    assert_eq!(parsed.descriptions, usize::from(!parsed.empty), "{sql}");
    Ok(parsed)
}

pub(super) fn run(sql: &str, shards: Vec<Vec<Vec<u8>>>) -> Out {
    run_with(sql, true, shards).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub(super) fn ints(vals: &[Option<i64>]) -> Vec<Vec<u8>> {
    vals.iter()
        .map(|v| row(&[v.map(|n| n.to_string()).as_deref()]))
        .collect()
}

pub(super) fn strs(v: &[&str]) -> Vec<Option<String>> {
    v.iter()
        .map(|s| (*s != "NULL").then(|| s.to_string()))
        .collect()
}

#[test]
fn concatenation_streams_rows_as_they_come() {
    let plan = plan("select a from t").unwrap();
    let t = rd(&[("a", oid::INT4, TEXT)]);
    let mut m = Merger::new(&plan, 2, false);
    let mut out = BytesMut::new();
    m.push(0, &t).unwrap();
    m.push(0, &row(&[Some("1")])).unwrap();
    m.drain(&mut out).unwrap();
    let first = parse_out(&out);
    assert_eq!((first.descriptions, first.text()), (1, vec![strs(&["1"])]));
    out.clear();
    m.push(1, &t).unwrap();
    m.push(1, &row(&[Some("2")])).unwrap();
    m.push(0, &done(1)).unwrap();
    m.push(1, &row(&[None])).unwrap();
    m.push(1, &done(2)).unwrap();
    m.finish(&mut out).unwrap();
    let rest = parse_out(&out);
    assert_eq!(rest.descriptions, 0);
    assert_eq!(rest.column(0), strs(&["2", "NULL"]));
    assert_eq!(rest.tag, "SELECT 3");
}

#[test]
fn concatenation_applies_limit_and_offset_once() {
    let t = rd(&[("a", oid::INT4, TEXT)]);
    let out = run(
        "select a from t limit 2 offset 1",
        vec![
            shard(&t, ints(&[Some(1), Some(2), Some(3)])),
            shard(&t, ints(&[Some(4), Some(5)])),
        ],
    );
    assert_eq!(out.rows.len(), 2);
    assert_eq!(out.tag, "SELECT 2");
}

#[test]
fn order_by_desc_limit_merges_sorted_streams() {
    let t = rd(&[("customer_id", oid::INT8, TEXT)]);
    let out = run(
        "select customer_id from orders order by customer_id desc limit 3",
        vec![
            shard(&t, ints(&[Some(900), Some(898), Some(3)])),
            shard(&t, ints(&[Some(899), Some(5)])),
        ],
    );
    assert_eq!(out.column(0), strs(&["900", "899", "898"]));
    assert_eq!(out.tag, "SELECT 3");
}

#[test]
fn order_by_nulls_and_several_keys() {
    let t = rd(&[("a", oid::INT4, TEXT), ("b", oid::TEXT, TEXT)]);
    let r = |a: Option<&str>, b: &str| row(&[a, Some(b)]);
    // a ASC NULLS FIRST, b DESC (NULLS FIRST by default, none here)
    let out = run(
        "select a, b from t order by a nulls first, b desc offset 1",
        vec![
            shard(&t, vec![r(None, "z"), r(Some("1"), "b"), r(Some("2"), "a")]),
            shard(&t, vec![r(None, "y"), r(Some("1"), "c"), r(Some("1"), "a")]),
            shard(&t, vec![]),
        ],
    );
    assert_eq!(out.column(1), strs(&["y", "c", "b", "a", "a"]));
    assert_eq!(out.column(0), strs(&["NULL", "1", "1", "1", "2"]));
}

#[test]
fn order_by_star_column_by_name() {
    let t = rd(&[("customer_id", oid::INT8, TEXT), ("note", oid::TEXT, TEXT)]);
    let out = run(
        "select * from orders order by customer_id",
        vec![
            shard(
                &t,
                vec![row(&[Some("1"), Some("x")]), row(&[Some("7"), None])],
            ),
            shard(&t, vec![row(&[Some("3"), Some("y")])]),
        ],
    );
    assert_eq!(out.column(0), strs(&["1", "3", "7"]));
    let err = run_with(
        "select * from orders order by missing",
        true,
        vec![shard(&t, vec![]), shard(&t, vec![])],
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("ORDER BY missing: not a returned column"),
        "{err}"
    );
}

#[test]
fn text_orders_only_with_byte_collation() {
    let t = rd(&[("note", oid::VARCHAR, TEXT)]);
    let shards = || {
        vec![
            shard(&t, vec![row(&[Some("B")]), row(&[Some("a")])]),
            shard(&t, vec![row(&[Some("C")]), row(&[Some("b")])]),
        ]
    };
    let out = run_with("select note from t order by note", true, shards()).unwrap();
    assert_eq!(out.column(0), strs(&["B", "C", "a", "b"]));
    let err = run_with("select note from t order by note", false, shards()).unwrap_err();
    assert_eq!(err.sqlstate, SqlState::FEATURE_NOT_SUPPORTED);
    assert!(
        err.message.contains("\"note\"") && err.message.contains("C or POSIX"),
        "{err}"
    );
    // Concatenation and GROUP BY on text need no collation.
    assert_eq!(
        run_with("select note from t", false, shards())
            .unwrap()
            .rows
            .len(),
        4
    );
}

#[test]
fn a_shard_out_of_order_is_an_error() {
    let t = rd(&[("a", oid::INT4, TEXT)]);
    let err = run_with(
        "select a from t order by a",
        true,
        vec![
            shard(&t, ints(&[Some(2), Some(1)])),
            shard(&t, ints(&[Some(0)])),
        ],
    )
    .unwrap_err();
    assert!(err.message.contains("order"), "{err}");
}

#[test]
fn binary_integers_and_floats_sort() {
    let t = rd(&[("i", oid::INT8, BINARY), ("f", oid::FLOAT8, BINARY)]);
    let r = |i: i64, f: f64| brow(&[Some(&i.to_be_bytes()), Some(&f.to_be_bytes())]);
    let out = run(
        "select i, f from t order by f desc, i",
        vec![
            shard(&t, vec![r(1, f64::NAN), r(2, f64::INFINITY), r(3, -0.0)]),
            shard(
                &t,
                vec![
                    r(4, f64::NAN),
                    r(5, 1.5),
                    r(6, 0.0),
                    r(7, f64::NEG_INFINITY),
                ],
            ),
        ],
    );
    let is: Vec<i64> = out
        .rows
        .iter()
        .map(|r| i64::from_be_bytes(r[0].clone().unwrap().try_into().unwrap()))
        .collect();
    assert_eq!(is, [1, 4, 2, 5, 3, 6, 7]);
}

#[test]
fn text_numeric_float_time_and_uuid_sort() {
    type Case = (
        u32,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );
    let cases: [Case; 6] = [
        (
            oid::NUMERIC,
            &["-10.5", "2", "NaN"],
            &["-Infinity", "2.00", "10"],
            &["-Infinity", "-10.5", "2", "2.00", "10", "NaN"],
        ),
        (
            oid::FLOAT4,
            &["-Infinity", "1e-05", "NaN"],
            &["-3.5", "1.5e+10", "Infinity"],
            &["-Infinity", "-3.5", "1e-05", "1.5e+10", "Infinity", "NaN"],
        ),
        (
            oid::DATE,
            &["0044-03-15 BC", "2024-01-02"],
            &["-infinity", "1999-12-31", "infinity"],
            &[
                "-infinity",
                "0044-03-15 BC",
                "1999-12-31",
                "2024-01-02",
                "infinity",
            ],
        ),
        (
            oid::TIMESTAMPTZ,
            &["2024-03-31 01:30:00+01", "2024-03-31 03:10:00.5+02"],
            &["2024-03-31 03:05:00+02"],
            &[
                "2024-03-31 01:30:00+01",
                "2024-03-31 03:05:00+02",
                "2024-03-31 03:10:00.5+02",
            ],
        ),
        (
            oid::TIMESTAMP,
            &["2024-01-01 00:00:00"],
            &["2023-12-31 23:59:59.999999", "2024-01-01 00:00:00.000001"],
            &[
                "2023-12-31 23:59:59.999999",
                "2024-01-01 00:00:00",
                "2024-01-01 00:00:00.000001",
            ],
        ),
        (
            oid::UUID,
            &[
                "0a000000-0000-0000-0000-000000000000",
                "f0000000-0000-0000-0000-000000000000",
            ],
            &["10000000-0000-0000-0000-000000000000"],
            &[
                "0a000000-0000-0000-0000-000000000000",
                "10000000-0000-0000-0000-000000000000",
                "f0000000-0000-0000-0000-000000000000",
            ],
        ),
    ];
    for (type_oid, a, b, want) in cases {
        let t = rd(&[("v", type_oid, TEXT)]);
        let rows = |v: &[&str]| v.iter().map(|s| row(&[Some(s)])).collect();
        let out = run(
            "select v from t order by v",
            vec![shard(&t, rows(a)), shard(&t, rows(b))],
        );
        assert_eq!(out.column(0), strs(want), "type {type_oid}");
    }
}

#[test]
fn date_style_other_than_iso_is_an_error() {
    let t = rd(&[("d", oid::DATE, TEXT)]);
    let err = run_with(
        "select d from t order by d",
        true,
        vec![
            shard(&t, vec![row(&[Some("03/15/2024")])]),
            shard(&t, vec![]),
        ],
    )
    .unwrap_err();
    assert!(err.message.contains("ISO"), "{err}");
}

#[test]
fn misuse_and_empty_queries() {
    let plan = plan("select a from t").unwrap();
    let mut m = Merger::new(&plan, 2, true);
    let mut out = BytesMut::new();
    assert!(m.push(2, &done(0)).is_err());
    m.push(0, &done(0)).unwrap();
    assert!(m.push(0, &done(0)).is_err(), "after its CommandComplete");
    assert!(m.finish(&mut out).is_err(), "shard 1 still running");
    let mut m = Merger::new(&plan, 2, true);
    let empty = [tag::EMPTY_QUERY, 0, 0, 0, 4];
    m.push(0, &empty).unwrap();
    m.push(1, &empty).unwrap();
    m.finish(&mut out).unwrap();
    assert!(parse_out(&out).empty);
    // Without a RowDescription for the client.
    let t = rd(&[("a", oid::INT4, TEXT)]);
    let mut m = Merger::new(&plan, 1, true).without_row_description();
    let mut out = BytesMut::new();
    for msg in shard(&t, ints(&[Some(1)])) {
        m.push(0, &msg).unwrap();
    }
    m.finish(&mut out).unwrap();
    let got = parse_out(&out);
    assert_eq!(
        (got.descriptions, got.rows.len(), got.tag.as_str()),
        (0, 1, "SELECT 1")
    );
}
