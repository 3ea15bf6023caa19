//! The Merger's aggregates over hand-built messages, the results it refuses, and
//! property tests: random rows split over 2-3 shards merge as the whole would sort
//! and aggregate.

use proptest::prelude::*;

use super::tests::*;
use super::value::oid;
use super::*;

#[test]
fn aggregates_without_group_by_combine() {
    let t = rd(&[
        ("count", oid::INT8, TEXT),
        ("sum", oid::INT8, TEXT),
        ("sum", oid::NUMERIC, TEXT),
        ("min", oid::TEXT, TEXT),
        ("max", oid::TIMESTAMP, TEXT),
        ("sum", oid::FLOAT8, TEXT),
    ]);
    let out = run(
        "select count(*), sum(i4), sum(i8), min(note), max(ts), sum(f) from t",
        vec![
            shard(
                &t,
                vec![row(&[
                    Some("3"),
                    Some("10"),
                    Some("99999999999999999999"),
                    Some("b"),
                    Some("2024-01-01 00:00:00"),
                    Some("0.1"),
                ])],
            ),
            shard(&t, vec![row(&[Some("0"), None, None, None, None, None])]),
            shard(
                &t,
                vec![row(&[
                    Some("2"),
                    Some("-4"),
                    Some("1.50"),
                    Some("a"),
                    Some("2023-01-01 00:00:00"),
                    Some("0.2"),
                ])],
            ),
        ],
    );
    assert_eq!(
        out.text(),
        vec![strs(&[
            "5",
            "6",
            "100000000000000000000.50",
            "a",
            "2024-01-01 00:00:00",
            "0.30000000000000004"
        ])]
    );
    assert_eq!(out.tag, "SELECT 1");
}

#[test]
fn aggregates_over_no_rows_behave_like_postgresql() {
    let t = rd(&[
        ("count", oid::INT8, TEXT),
        ("sum", oid::INT8, TEXT),
        ("max", oid::INT4, TEXT),
    ]);
    let empty = || shard(&t, vec![row(&[Some("0"), None, None])]);
    let out = run(
        "select count(x), sum(x), max(x) from t",
        vec![empty(), empty()],
    );
    assert_eq!(out.text(), vec![strs(&["0", "NULL", "NULL"])]);
    // OFFSET past the one row.
    let out = run(
        "select count(x), sum(x), max(x) from t offset 1",
        vec![empty(), empty()],
    );
    assert_eq!((out.rows.len(), out.tag.as_str()), (0, "SELECT 0"));
}

#[test]
fn binary_aggregates() {
    let t = rd(&[
        ("count", oid::INT8, BINARY),
        ("sum", oid::FLOAT4, BINARY),
        ("min", oid::INT2, BINARY),
    ]);
    let r = |c: i64, s: f32, m: i16| {
        brow(&[
            Some(&c.to_be_bytes()),
            Some(&s.to_be_bytes()),
            Some(&m.to_be_bytes()),
        ])
    };
    let out = run(
        "select count(*), sum(r), min(s) from t",
        vec![
            shard(&t, vec![r(4, 1.25, 7)]),
            shard(&t, vec![r(6, 2.5, -3)]),
        ],
    );
    let v = &out.rows[0];
    assert_eq!(v[0].as_deref(), Some(&10_i64.to_be_bytes()[..]));
    assert_eq!(v[1].as_deref(), Some(&3.75_f32.to_be_bytes()[..]));
    assert_eq!(v[2].as_deref(), Some(&(-3_i16).to_be_bytes()[..]));
}

#[test]
fn binary_numeric_sums_and_sorts() {
    let n = rd(&[("sum", oid::NUMERIC, BINARY), ("min", oid::NUMERIC, BINARY)]);
    let num = |s: &str| decimal::Decimal::parse(s).unwrap().to_binary();
    let r = |a: &str, b: &str| brow(&[Some(&num(a)), Some(&num(b))]);
    let out = run(
        "select sum(x), min(x) from t",
        vec![
            shard(&n, vec![r("99999999.995", "-0.5")]),
            shard(&n, vec![brow(&[None, None])]),
            shard(&n, vec![r("0.005", "-0.25")]),
        ],
    );
    assert_eq!(
        out.rows[0][0].as_deref(),
        Some(num("100000000.000").as_slice())
    );
    assert_eq!(out.rows[0][1].as_deref(), Some(num("-0.5").as_slice()));
}

#[test]
fn group_by_regroups_then_orders_and_limits() {
    let t = rd(&[
        ("k", oid::TEXT, TEXT),
        ("n", oid::INT8, TEXT),
        ("s", oid::NUMERIC, TEXT),
    ]);
    let r = |k: Option<&str>, n: &str, s: Option<&str>| row(&[k, Some(n), s]);
    let shards = || {
        vec![
            shard(
                &t,
                vec![
                    r(Some("a"), "2", Some("1.5")),
                    r(Some("b"), "1", None),
                    r(None, "4", Some("2")),
                ],
            ),
            shard(
                &t,
                vec![
                    r(Some("b"), "5", Some("-1")),
                    r(Some("c"), "1", Some("7")),
                    r(None, "1", None),
                ],
            ),
        ]
    };
    let sql = "select k, count(*) as n, sum(v) as s from t group by k order by n desc, k limit 3";
    let out = run_with(sql, true, shards()).unwrap();
    assert_eq!(
        out.text(),
        vec![
            strs(&["b", "6", "-1"]),
            strs(&["NULL", "5", "2"]),
            strs(&["a", "2", "1.5"])
        ]
    );
    assert_eq!(out.tag, "SELECT 3");
    // Grouping text needs no collation; ordering it does.
    let out = run_with(
        "select k, count(*) as n, sum(v) as s from t group by k order by n",
        false,
        shards(),
    )
    .unwrap();
    assert_eq!(out.column(1), strs(&["1", "2", "5", "6"]));
    assert!(run_with(sql, false, shards()).is_err());
    // Without ORDER BY: groups in order of first appearance (rows pushed round-robin).
    let out = run_with(
        "select k, count(*), sum(v) from t group by k",
        false,
        shards(),
    )
    .unwrap();
    assert_eq!(out.column(0), strs(&["a", "b", "c", "NULL"]));
}

#[test]
fn group_keys_compare_by_value() {
    let t = rd(&[("k", oid::NUMERIC, TEXT), ("m", oid::INT4, TEXT)]);
    let out = run(
        "select k, max(m) from t group by k order by k",
        vec![
            shard(
                &t,
                vec![row(&[Some("1.0"), Some("3")]), row(&[Some("2"), Some("1")])],
            ),
            shard(&t, vec![row(&[Some("1.00"), Some("9")])]),
        ],
    );
    assert_eq!(out.text(), vec![strs(&["1.0", "9"]), strs(&["2", "1"])]);
    let t = rd(&[("k", oid::FLOAT8, BINARY), ("n", oid::INT8, BINARY)]);
    let r = |k: f64, n: i64| brow(&[Some(&k.to_be_bytes()), Some(&n.to_be_bytes())]);
    let out = run(
        "select k, count(*) from t group by k",
        vec![
            shard(&t, vec![r(0.0, 1), r(f64::NAN, 2)]),
            shard(&t, vec![r(-0.0, 3), r(f64::NAN, 4)]),
        ],
    );
    let counts: Vec<i64> = out
        .rows
        .iter()
        .map(|r| i64::from_be_bytes(r[1].clone().unwrap().try_into().unwrap()))
        .collect();
    assert_eq!(counts, [4, 6]);
}

#[test]
fn results_that_cannot_be_merged_are_errors() {
    let one = |t: &[u8], v: &[Option<&str>]| shard(t, vec![row(v)]);
    // Shards disagree on the columns.
    let a = rd(&[("a", oid::INT4, TEXT)]);
    let b = rd(&[("a", oid::INT8, TEXT)]);
    let err = run_with(
        "select a from t",
        true,
        vec![one(&a, &[Some("1")]), one(&b, &[Some("2")])],
    )
    .unwrap_err();
    assert!(err.message.contains("different types"), "{err}");
    let c = rd(&[("a", oid::INT4, TEXT), ("b", oid::INT4, TEXT)]);
    let err = run_with(
        "select * from t",
        true,
        vec![one(&a, &[Some("1")]), one(&c, &[Some("1"), Some("2")])],
    )
    .unwrap_err();
    assert!(err.message.contains("different columns"), "{err}");
    // A count past bigint.
    let t = rd(&[("count", oid::INT8, TEXT)]);
    let max = i64::MAX.to_string();
    let err = run_with(
        "select count(*) from t",
        true,
        vec![one(&t, &[Some(&max)]), one(&t, &[Some("1")])],
    )
    .unwrap_err();
    assert_eq!(err.sqlstate, SqlState::NUMERIC_VALUE_OUT_OF_RANGE);
    // A type the merge cannot compare.
    let j = rd(&[("doc", 3802, TEXT)]);
    let err = run_with(
        "select doc from t order by doc",
        true,
        vec![one(&j, &[Some("{}")]), one(&j, &[Some("[]")])],
    )
    .unwrap_err();
    assert!(
        err.message.contains("\"doc\"") && err.message.contains("3802"),
        "{err}"
    );
    // ...but concatenating it is fine.
    assert_eq!(
        run(
            "select doc from t",
            vec![one(&j, &[Some("{}")]), one(&j, &[Some("[]")])]
        )
        .rows
        .len(),
        2
    );
    // sum() of an interval.
    let i = rd(&[("sum", 1186, TEXT)]);
    assert!(run_with(
        "select sum(d) from t",
        true,
        vec![one(&i, &[Some("1 day")]), one(&i, &[None])]
    )
    .is_err());
    // Floats overflowing.
    let f = rd(&[("sum", oid::FLOAT4, TEXT)]);
    let err = run_with(
        "select sum(r) from t",
        true,
        vec![one(&f, &[Some("3e+38")]), one(&f, &[Some("3e+38")])],
    )
    .unwrap_err();
    assert_eq!(err.sqlstate, SqlState::NUMERIC_VALUE_OUT_OF_RANGE);
}

/// Rows (k, v) split over shards as given, each shard sorted as the shard would.
fn split(rows: &[(i64, Option<i32>)], at: &[usize], shards: usize) -> Vec<Vec<(i64, Option<i32>)>> {
    let mut parts = vec![Vec::new(); shards];
    for (r, s) in rows.iter().zip(at) {
        parts[s % shards].push(*r);
    }
    parts
}

/// PostgreSQL's order for `ORDER BY v DESC, k` (NULLs first for DESC).
fn pg_order(a: &(i64, Option<i32>), b: &(i64, Option<i32>)) -> std::cmp::Ordering {
    let v = match (a.1, b.1) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    };
    v.then(a.0.cmp(&b.0))
}

fn kv_row(r: &(i64, Option<i32>)) -> Vec<u8> {
    row(&[
        Some(&r.0.to_string()),
        r.1.map(|v| v.to_string()).as_deref(),
    ])
}

proptest! {
    #[test]
    fn sorted_merge_with_limit_equals_sorting_everything(
        rows in proptest::collection::vec((0i64..20, proptest::option::weighted(0.9, -50i32..50)), 0..60),
        at in proptest::collection::vec(0usize..3, 60),
        shards in 2usize..=3,
        limit in proptest::option::of(0u64..30),
        offset in 0u64..10,
    ) {
        let t = rd(&[("k", oid::INT8, TEXT), ("v", oid::INT4, TEXT)]);
        let mut msgs = Vec::new();
        for mut part in split(&rows, &at, shards) {
            part.sort_by(pg_order);
            // What the shard runs: LIMIT limit + offset.
            if let Some(l) = limit {
                part.truncate((l + offset) as usize);
            }
            msgs.push(shard(&t, part.iter().map(kv_row).collect()));
        }
        let limit_sql = limit.map(|l| format!(" limit {l}")).unwrap_or_default();
        let sql = format!("select k, v from t order by v desc, k{limit_sql} offset {offset}");
        let out = run(&sql, msgs);
        let mut all = rows.clone();
        all.sort_by(pg_order);
        let want: Vec<Vec<u8>> = all
            .iter()
            .skip(offset as usize)
            .take(limit.map_or(usize::MAX, |l| l as usize))
            .map(kv_row)
            .collect();
        let got: Vec<Vec<u8>> = out.rows.iter().map(|r| brow(&[r[0].as_deref(), r[1].as_deref()])).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn grouped_aggregates_equal_the_whole(
        rows in proptest::collection::vec((0i64..6, proptest::option::weighted(0.8, -1000i32..1000)), 0..60),
        at in proptest::collection::vec(0usize..3, 60),
        shards in 2usize..=3,
    ) {
        // select k, count(*), count(v), sum(v), min(v), max(v) from t group by k order by k
        let t = rd(&[
            ("k", oid::INT8, TEXT),
            ("count", oid::INT8, TEXT),
            ("count", oid::INT8, TEXT),
            ("sum", oid::INT8, TEXT),
            ("min", oid::INT4, TEXT),
            ("max", oid::INT4, TEXT),
        ]);
        let aggregate = |part: &[(i64, Option<i32>)]| -> Vec<Vec<Option<String>>> {
            let mut keys: Vec<i64> = part.iter().map(|r| r.0).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .map(|k| {
                    let vs: Vec<i64> = part.iter().filter(|r| r.0 == k).filter_map(|r| r.1.map(i64::from)).collect();
                    let n = part.iter().filter(|r| r.0 == k).count();
                    vec![
                        Some(k.to_string()),
                        Some(n.to_string()),
                        Some(vs.len().to_string()),
                        (!vs.is_empty()).then(|| vs.iter().sum::<i64>().to_string()),
                        vs.iter().min().map(ToString::to_string),
                        vs.iter().max().map(ToString::to_string),
                    ]
                })
                .collect()
        };
        let mut msgs = Vec::new();
        for part in split(&rows, &at, shards) {
            let mut groups = aggregate(&part);
            groups.reverse(); // shards send groups in any order
            msgs.push(shard(&t, groups.iter().map(|g| {
                let refs: Vec<Option<&str>> = g.iter().map(|v| v.as_deref()).collect();
                row(&refs)
            }).collect()));
        }
        let out = run("select k, count(*), count(v), sum(v), min(v), max(v) from t group by k order by k", msgs);
        prop_assert_eq!(out.text(), aggregate(&rows));
    }
}
