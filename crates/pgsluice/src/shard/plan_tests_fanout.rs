//! Planner tests that need the other helpers' parts: fan-out SELECTs (planned by
//! `merge::plan_select`) and COPY FROM STDIN (options by `CopyOptions::from_stmt`).

use super::tests::{plan, planner, refused_with};
use super::*;
use crate::shard::copy::CopyOptions;
use crate::shard::merge;

/// The fan-out plan merge builds for `sql` (a single SELECT).
fn merge_plan(sql: &str) -> MergePlan {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).expect("parses");
    let node = parsed.protobuf.stmts[0]
        .stmt
        .as_deref()
        .and_then(|n| n.node.as_ref());
    let Some(pg_query::NodeEnum::SelectStmt(s)) = node else {
        panic!("{sql}: not a SELECT");
    };
    merge::plan_select(s).expect("mergeable")
}

#[test]
fn selects_without_the_key_fan_out() {
    let p = planner(2, KeyType::BigInt);
    for sql in [
        "select * from orders",
        "select count(*) from orders",
        "select note from orders where note = 'x'",
        "select * from orders where customer_id in (450, 900)",
        "select * from orders where customer_id = 450 or customer_id = 900",
        "select customer_id from orders order by customer_id desc limit 3",
        "select customer_id, count(*) from orders group by customer_id",
        "select * from orders, pg_class where false",
        // Co-located joins: each shard joins its own rows.
        "select o.note, i.note from orders o join items i using (customer_id)",
        "select o.note from orders o, items i where o.customer_id = i.customer_id",
        "select * from orders o left join items i on o.customer_id = i.customer_id and i.customer_id = 450",
        "select * from orders o where not exists (select 1 from items i where i.customer_id = o.customer_id)",
        "select * from orders where customer_id in (select customer_id from items)",
        "select * from orders o where exists (select 1 from items i join app.users u \
         on u.id = i.customer_id where i.customer_id = o.customer_id)",
        // `o.customer_id IS NULL` is true of the rows the outer join adds too: no pin.
        "select * from generate_series(1, 3) g(x) left join orders o on o.customer_id = g.x \
         where o.customer_id is null",
    ] {
        match plan(&p, sql) {
            Plan::FanOut(m) => assert_eq!(*m, merge_plan(sql), "{sql}"),
            other => panic!("{sql}: expected a fan-out, got {other:?}"),
        }
    }
    let Plan::FanOut(m) = plan(
        &p,
        "select customer_id from orders order by 1 limit 3 offset 2",
    ) else {
        panic!("no fan-out");
    };
    assert!(
        m.shard_sql().is_some_and(|s| s.contains("LIMIT 5")),
        "{m:?}"
    );
    // What merge cannot combine, it refuses.
    refused_with(&p, "select avg(customer_id) from orders", "avg");
    // A fan-out goes alone.
    refused_with(
        &p,
        "begin; select * from orders; commit",
        "statements of one query string go to different shards",
    );
}

#[test]
fn copy_from_stdin_splits_by_the_key_column() {
    let p = planner(2, KeyType::BigInt);
    let copy_in = |table, key_column, options| Plan::CopyIn {
        table,
        key_column,
        options,
    };
    let header = CopyOptions {
        header: true,
        ..CopyOptions::csv()
    };
    for (sql, want) in [
        ("copy orders from stdin", copy_in(0, 0, CopyOptions::text())),
        (
            "COPY public.orders FROM STDIN WITH (FORMAT text)",
            copy_in(0, 0, CopyOptions::text()),
        ),
        (
            "copy orders (note, customer_id) from stdin",
            copy_in(0, 1, CopyOptions::text()),
        ),
        (
            "copy items from stdin with (format csv, header)",
            copy_in(1, 1, header),
        ),
        (
            "copy app.users (id) from stdin csv",
            copy_in(2, 0, CopyOptions::csv()),
        ),
        (
            "/* pgsluice: shard=1 */ copy orders from stdin",
            Plan::Shard(1),
        ),
    ] {
        assert_eq!(plan(&p, sql), want, "{sql}");
    }
    refused_with(&p, "copy orders from stdin with (format binary)", "binary");
    refused_with(
        &p,
        "copy orders from stdin; select 1",
        "statements of one query string go to different shards",
    );
}

#[test]
fn subqueries_not_tied_to_the_top_level_rows_are_refused() {
    let p = planner(2, KeyType::BigInt);
    for sql in [
        // Every shard would answer a row.
        "select 1 where exists (select 1 from orders)",
        "select (select note from orders where note = 'x')",
        // The rows of a FROM subquery or WITH query feed the top level whole.
        "select * from (select * from orders) s",
        "with x as (select * from orders) select * from x",
        "with x as (select * from orders) select 1",
        "select customer_id from orders union all select 1",
    ] {
        refused_with(
            &p,
            sql,
            "not tied by its key to the outer query's sharded rows",
        );
    }
    // Pinned, they run on the key's shard.
    assert_eq!(
        plan(
            &p,
            "select * from (select * from orders where customer_id = 450) s"
        ),
        Plan::Shard(1)
    );
    // `IS NULL` in the outer join's own condition pins its nullable side.
    assert_eq!(
        plan(
            &p,
            "select * from generate_series(1, 3) g(x) left join orders o \
             on o.customer_id = g.x and o.customer_id is null"
        ),
        Plan::Shard(0)
    );
}
