//! plan_select over SQL texts: what merges how, what the shards run, what is refused.

use super::planning::{ColRef, SortKey};
use super::*;

pub(super) fn select_of(sql: &str) -> SelectStmt {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).expect("parses");
    let stmt = parsed.protobuf.stmts[0]
        .stmt
        .as_deref()
        .and_then(|n| n.node.clone());
    match stmt {
        Some(NodeEnum::SelectStmt(s)) => *s,
        other => panic!("not a SELECT: {other:?}"),
    }
}

pub(super) fn plan(sql: &str) -> Result<MergePlan, Unsupported> {
    plan_select(&select_of(sql))
}

fn key(col: ColRef, desc: bool, nulls_first: bool) -> SortKey {
    SortKey {
        col,
        desc,
        nulls_first,
    }
}

#[test]
fn plain_selects_concatenate() {
    for sql in [
        "select * from orders",
        "select customer_id, note from orders where note like 'a%'",
        "select o.* from orders o join items i using (customer_id)",
        "select * from (select customer_id from orders) s",
        "with s as (select * from orders) select * from s",
        "select x from a union all select y from b",
        "select customer_id from orders where customer_id in (select customer_id from orders where note = 'x')",
    ] {
        let p = plan(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(p.streams(), "{sql}");
        assert!(!p.sorted() && p.aggregate_roles().is_none(), "{sql}");
        assert_eq!(p.shard_sql(), None, "{sql}");
    }
}

#[test]
fn order_by_resolves_to_output_columns() {
    let cases: Vec<(&str, Vec<SortKey>)> = vec![
        (
            "select a, b from t order by b",
            vec![key(ColRef::Target(1), false, false)],
        ),
        (
            "select a, b from t order by 2 desc",
            vec![key(ColRef::Position(1), true, true)],
        ),
        (
            "select a as x, b from t order by x desc nulls last",
            vec![key(ColRef::Target(0), true, false)],
        ),
        (
            "select a, b from t order by b asc nulls first, a",
            vec![
                key(ColRef::Target(1), false, true),
                key(ColRef::Target(0), false, false),
            ],
        ),
        (
            "select t.a, lower(b) from t order by lower(b)",
            vec![key(ColRef::Target(1), false, false)],
        ),
        (
            "select t.a from t order by t.a",
            vec![key(ColRef::Target(0), false, false)],
        ),
        (
            "select t.a from t order by a",
            vec![key(ColRef::Target(0), false, false)],
        ),
        (
            "select b as a, a as b from t order by a",
            vec![key(ColRef::Target(0), false, false)],
        ),
        (
            "select * from t order by customer_id desc",
            vec![key(
                ColRef::Name {
                    name: "customer_id".into(),
                    fallback: None,
                },
                true,
                true,
            )],
        ),
        (
            "select * from t order by t.customer_id",
            vec![key(
                ColRef::Name {
                    name: "customer_id".into(),
                    fallback: None,
                },
                false,
                false,
            )],
        ),
        (
            "select 1 + a, a from t order by a",
            vec![key(
                ColRef::Name {
                    name: "a".into(),
                    fallback: Some(1),
                },
                false,
                false,
            )],
        ),
        (
            "select x from a union all select y from b order by x",
            vec![key(
                ColRef::Name {
                    name: "x".into(),
                    fallback: None,
                },
                false,
                false,
            )],
        ),
        (
            "select x from a union all select y from b order by 1 desc",
            vec![key(ColRef::Position(0), true, true)],
        ),
    ];
    for (sql, want) in cases {
        let p = plan(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(p.shape.sort, want, "{sql}");
        assert!(p.sorted() && !p.streams(), "{sql}");
    }
}

#[test]
fn limits_become_limit_plus_offset_on_the_shards() {
    for (sql, limit, offset, shard_sql) in [
        (
            "select a from t order by a limit 10 offset 5",
            Some(10),
            5,
            Some("SELECT a FROM t ORDER BY a LIMIT 15"),
        ),
        ("select a from t order by a limit 3", Some(3), 0, None),
        ("select a from t offset 4", None, 4, Some("SELECT a FROM t")),
        ("select a from t limit all", None, 0, None),
        (
            "select a from t order by a fetch first 2 rows only",
            Some(2),
            0,
            None,
        ),
        (
            "select a from t order by a offset 1 rows fetch next 2 rows only",
            Some(2),
            1,
            Some("SELECT a FROM t ORDER BY a LIMIT 3"),
        ),
        (
            "select a from t limit 3000000000 offset 3000000000",
            Some(3_000_000_000),
            3_000_000_000,
            Some("SELECT a FROM t LIMIT 6000000000"),
        ),
        (
            "select a from t limit '5'::int offset 0",
            Some(5),
            0,
            Some("SELECT a FROM t LIMIT 5"),
        ),
        (
            "select count(*) from t limit 1 offset 1",
            Some(1),
            1,
            Some("SELECT count(*) FROM t"),
        ),
        (
            "select a, count(*) from t group by a order by a limit 5",
            Some(5),
            0,
            Some("SELECT a, count(*) FROM t GROUP BY a ORDER BY a"),
        ),
        ("select a from t", None, 0, None),
    ] {
        let p = plan(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(p.limit_offset(), (limit, offset), "{sql}");
        assert_eq!(p.shard_sql(), shard_sql, "{sql}");
    }
}

#[test]
fn aggregates_get_roles() {
    use AggKind::*;
    for (sql, roles) in [
        ("select count(*) from orders", vec![Role::Agg(Count)]),
        (
            "select count(note), sum(x), min(x), max(note) from orders",
            vec![
                Role::Agg(Count),
                Role::Agg(Sum),
                Role::Agg(Min),
                Role::Agg(Max),
            ],
        ),
        (
            "select 'total', count(*) filter (where x > 1) from t",
            vec![Role::Carry, Role::Agg(Count)],
        ),
        (
            "select a, count(*) from t group by a",
            vec![Role::Group, Role::Agg(Count)],
        ),
        (
            "select count(*), a from t group by 2",
            vec![Role::Agg(Count), Role::Group],
        ),
        (
            "select a, b, sum(c) from t group by b, a",
            vec![Role::Group, Role::Group, Role::Agg(Sum)],
        ),
        (
            "select lower(a) as k, max(b) from t group by lower(a)",
            vec![Role::Group, Role::Agg(Max)],
        ),
        (
            "select lower(a) as k, max(b) from t group by k",
            vec![Role::Group, Role::Agg(Max)],
        ),
        (
            "select a, a + 1, count(*) from t group by a",
            vec![Role::Group, Role::Carry, Role::Agg(Count)],
        ),
        ("select a from t group by a", vec![Role::Group]),
        ("select max(a collate \"C\") from t", vec![Role::Agg(Max)]),
        ("select min(distinct a) from t", vec![Role::Agg(Min)]),
        ("select pg_catalog.count(*) from t", vec![Role::Agg(Count)]),
    ] {
        let p = plan(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(p.aggregate_roles(), Some(roles.as_slice()), "{sql}");
        assert!(!p.streams(), "{sql}");
    }
    let p = plan("select a, count(*) as n from t group by a order by n desc, 1").unwrap();
    assert_eq!(
        p.shape.sort,
        vec![
            key(ColRef::Target(1), true, true),
            key(ColRef::Position(0), false, false)
        ]
    );
    let p = plan("select a, count(*) from t group by a order by count(*) desc").unwrap();
    assert_eq!(p.shape.sort, vec![key(ColRef::Target(1), true, true)]);
}

#[test]
fn refusals_name_the_problem() {
    for (sql, want) in [
        (
            "select avg(x) from t",
            "avg() over several shards: select sum() and count() and divide",
        ),
        ("select a, avg(x) from t group by a", "avg()"),
        ("select string_agg(note, ',') from t", "string_agg()"),
        ("select array_agg(x) from t", "array_agg()"),
        ("select bool_and(x) from t", "bool_and()"),
        ("select stddev(x) from t", "stddev()"),
        ("select count(distinct x) from t", "count(DISTINCT ...)"),
        ("select sum(distinct x) from t", "sum(DISTINCT ...)"),
        ("select distinct a from t", "DISTINCT over"),
        ("select distinct on (a) a, b from t", "DISTINCT ON"),
        (
            "select a, count(*) from t group by a having count(*) > 1",
            "HAVING",
        ),
        (
            "select a, row_number() over (order by a) from t",
            "window functions",
        ),
        (
            "select a, sum(x) over w from t window w as (partition by a)",
            "window functions",
        ),
        (
            "select count(*) + 1 from t",
            "aggregate inside an expression",
        ),
        (
            "select coalesce(max(x), 0) from t",
            "aggregate inside an expression",
        ),
        (
            "select count(*)::int from t",
            "aggregate inside an expression",
        ),
        (
            "select count(*) from t group by a",
            "GROUP BY on an expression that is not returned",
        ),
        (
            "select a, count(*) from t group by a, b",
            "GROUP BY on an expression that is not returned",
        ),
        (
            "select a from t order by b",
            "ORDER BY on something that is not returned",
        ),
        (
            "select a from t order by lower(a)",
            "ORDER BY on something that is not returned",
        ),
        (
            "select a, count(*) from t group by a order by max(b)",
            "aggregate inside an expression in ORDER BY",
        ),
        (
            "select a from t order by row_number() over ()",
            "window functions",
        ),
        (
            "select a collate \"de_DE\" as a from t order by a",
            "COLLATE \"de_DE\"",
        ),
        ("select max(a collate \"und-x-icu\") from t", "COLLATE"),
        ("select a from t union select b from u", "only UNION ALL"),
        (
            "select a from t intersect select b from u",
            "only UNION ALL",
        ),
        (
            "select a from t except all select b from u",
            "only UNION ALL",
        ),
        (
            "select count(*) from t union all select count(*) from u",
            "UNION ALL branch",
        ),
        (
            "select a from t union all select b from u order by lower(a)",
            "must name an output column",
        ),
        ("select a from t limit $1", "non-constant LIMIT"),
        ("select a from t offset (select 1)", "non-constant OFFSET"),
        (
            "select a from t order by a fetch first 2 rows with ties",
            "WITH TIES",
        ),
        ("select a from t for update", "FOR UPDATE"),
        ("select a from t for share", "FOR UPDATE / FOR SHARE"),
        ("select a into newt from t", "SELECT INTO"),
        ("values (1), (2)", "VALUES"),
        (
            "select count(*) from (select distinct a from t) s",
            "subquery",
        ),
        (
            "select count(*) from (select a from t limit 5) s",
            "subquery",
        ),
        (
            "with s as (select a, count(*) from t group by a) select * from s",
            "WITH query",
        ),
        (
            "with recursive r as (select 1 union all select 1 from r) select * from r",
            "WITH RECURSIVE",
        ),
        (
            "with d as (delete from t returning *) select * from d",
            "data-modifying WITH",
        ),
        (
            "select * from t where x > (select avg(x) from t)",
            "subquery",
        ),
        ("select a, (select max(b) from u) from t", "subquery"),
        ("select a, count(*) from t group by rollup (a)", "ROLLUP"),
        (
            "select a, count(*) from t group by grouping sets ((a), ())",
            "GROUPING SETS",
        ),
        (
            "select *, count(*) from t group by a",
            "* together with aggregates",
        ),
        (
            "select percentile_cont(0.5) within group (order by x) from t",
            "percentile_cont()",
        ),
        ("select a from t order by a using <", "USING"),
        ("select a from t limit -1", "negative LIMIT"),
        ("select a, b from t order by 3", "position out of range"),
    ] {
        match plan(sql) {
            Ok(p) => panic!("{sql}: planned {p:?}"),
            Err(e) => {
                assert_eq!(e.sqlstate, SqlState::FEATURE_NOT_SUPPORTED, "{sql}");
                assert!(
                    e.message.contains(want),
                    "{sql}: {:?} lacks {want:?}",
                    e.message
                );
            }
        }
    }
}
