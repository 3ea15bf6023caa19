//! Planner tests: INSERT, SELECT / UPDATE / DELETE by key, joins and subqueries.
//!
//! Shard numbers of literal keys are pinned to what PostgreSQL's
//! `satisfies_hash_partition()` says (see `hash_tests.rs`): for 2, 3 and 5 shards,
//! 450 → 1, 1, 4; 900 → 0, 1, 2; -1 → 1, 2, 4; 0 → 0, 2, 3; 2147483648 → 0, 0, 1;
//! 'abc' → 1, 1, 3; 'orders-42' → 0, 2, 3; uuid a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11
//! → 0, 1, 1; uuid 123e4567-e89b-12d3-a456-426614174000 → 1, 1, 1.

use super::tests::{int_shard, plan, planner, refused, refused_with, sharding};
use super::*;
use crate::shard::hash::{partition_hash, shard_of_hash, KeyValue};

const UUID_A: &str = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
const UUID_B: &str = "123e4567-e89b-12d3-a456-426614174000";

fn by_param(index: usize, key_type: KeyType) -> Plan {
    Plan::ByParam { index, key_type }
}

/// A SELECT ... FOR UPDATE that would run on every shard is refused with this.
const FANS_OUT: &str = "FOR UPDATE/SHARE";

#[test]
fn insert_with_literal_keys() {
    let two = planner(2, KeyType::BigInt);
    let three = planner(3, KeyType::BigInt);
    let five = planner(5, KeyType::BigInt);
    for (p, sql, want) in [
        (&two, "insert into orders values (450, 'x')", 1),
        (&two, "INSERT INTO orders VALUES (900, 'x')", 0),
        (&two, "insert into orders (note, customer_id) values ('x', -1)", 1),
        (&two, "insert into orders values ('450')", 1),
        (&two, "insert into orders values ('450'::bigint, 'x')", 1),
        (&two, "insert into orders values (450::int4)", 1),
        (&two, "insert into orders values (cast(450 as bigint))", 1),
        (&two, "insert into orders values (' 450 ')", 1),
        (&two, "insert into orders values (null, 'x')", 0),
        (&two, "insert into public.orders as o values (450) returning o.note", 1),
        (&two, "insert into items values ('x', 450)", 1),
        (&two, "insert into app.users (id) values (450)", 1),
        (&two, "insert into orders values (450, 'a'), (-1, 'b')", 1),
        (&two, "with x as (select 1) insert into orders values (450)", 1),
        (&two, "insert into orders values (450) on conflict do nothing", 1),
        (
            &two,
            "insert into orders values (450) on conflict (customer_id) do update set note = excluded.note",
            1,
        ),
        (&three, "insert into orders values (450)", 1),
        (&three, "insert into orders values (0)", 2),
        (&three, "insert into orders values (-1)", 2),
        (&five, "insert into orders values (2147483648)", 1),
        (&five, "insert into orders values (-1)", 4),
        // The server rejects these: shard 0 reports it.
        (&two, "insert into orders values ('abc')", 0),
        (&two, "insert into orders values (99999999999999999999)", 0),
        // ... also among rows for other shards: the whole statement fails there.
        (&two, "insert into orders values (450), ('abc'), (900)", 0),
        (&two, "insert into orders values (450), (99999999999999999999)", 0),
    ] {
        assert_eq!(plan(p, sql), Plan::Shard(want), "{sql}");
    }
    // The key column left out: its default is the server's to compute.
    for sql in [
        "insert into orders (note) values ('x')",
        "insert into orders default values",
        "insert into items values ('x')",
    ] {
        match plan(&two, sql) {
            Plan::Refuse(u) => assert!(u.message.contains("without its key column"), "{sql}: {u}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    let int4 = planner(2, KeyType::Integer);
    assert_eq!(
        plan(&int4, "insert into orders values (3000000000)"),
        Plan::Shard(0)
    );
    assert_eq!(
        plan(&int4, "insert into orders values (450)"),
        Plan::Shard(1)
    );
}

#[test]
fn insert_with_text_and_uuid_keys() {
    let text2 = planner(2, KeyType::Text);
    let text3 = planner(3, KeyType::Text);
    assert_eq!(
        plan(&text2, "insert into orders values ('abc')"),
        Plan::Shard(1)
    );
    assert_eq!(
        plan(&text3, "insert into orders values ('orders-42')"),
        Plan::Shard(2)
    );
    assert_eq!(
        plan(&text3, "insert into orders values ('orders-42'::varchar)"),
        Plan::Shard(2)
    );
    assert_eq!(
        plan(&text3, "insert into orders values (E'orders\\u002d42')"),
        Plan::Shard(2)
    );
    // An integer is stored as its text.
    let want = shard_of_hash(partition_hash(&KeyValue::Text(b"42")), 3);
    assert_eq!(
        plan(&text3, "insert into orders values (42)"),
        Plan::Shard(want)
    );

    let uuid2 = planner(2, KeyType::Uuid);
    let uuid3 = planner(3, KeyType::Uuid);
    for (p, key, want) in [
        (&uuid3, format!("'{UUID_A}'"), 1),
        (&uuid3, format!("'{UUID_A}'::uuid"), 1),
        (&uuid3, format!("'{}'", UUID_A.to_uppercase()), 1),
        (&uuid2, format!("'{UUID_A}'"), 0),
        (&uuid2, format!("'{UUID_B}'::uuid"), 1),
        (&uuid2, "'not a uuid'".to_owned(), 0),
    ] {
        let sql = format!("insert into orders values ({key}, 'x')");
        assert_eq!(plan(p, &sql), Plan::Shard(want), "{sql}");
    }
}

#[test]
fn insert_with_parameters() {
    let p = planner(2, KeyType::BigInt);
    for (sql, want) in [
        (
            "insert into orders values ($1, $2)",
            by_param(0, KeyType::BigInt),
        ),
        (
            "insert into orders (note, customer_id) values ($1, $2)",
            by_param(1, KeyType::BigInt),
        ),
        (
            "insert into orders values ($1::int4)",
            by_param(0, KeyType::Integer),
        ),
        (
            "insert into orders values ($1, 'a'), ($1, 'b')",
            by_param(0, KeyType::BigInt),
        ),
        (
            "insert into orders values (450, $1), (-1, $2)",
            Plan::Shard(1),
        ),
        (
            "insert into items values ($2, $1)",
            by_param(0, KeyType::BigInt),
        ),
    ] {
        assert_eq!(plan(&p, sql), want, "{sql}");
    }
    for sql in [
        "insert into orders values ($1), ($2)",
        "insert into orders values (450, $1), (900, $2)",
        "insert into orders values ($1), (450)",
    ] {
        refused_with(&p, sql, "send one row per statement");
    }
    refused_with(
        &p,
        "insert into orders values ($1::text)",
        "cast to another type",
    );
}

#[test]
fn a_multi_row_insert_on_several_shards_is_split() {
    let p = planner(2, KeyType::BigInt);
    let Plan::SplitInsert(parts) = plan(
        &p,
        "insert into orders (customer_id, note) values (450, 'a'), (900, 'b'), (-1, 'c'), \
         (0, 'd') on conflict do nothing returning customer_id",
    ) else {
        panic!("not split");
    };
    assert_eq!(
        parts,
        vec![
            (
                0,
                "INSERT INTO orders (customer_id, note) VALUES (900, 'b'), (0, 'd') \
                 ON CONFLICT DO NOTHING RETURNING customer_id"
                    .to_owned()
            ),
            (
                1,
                "INSERT INTO orders (customer_id, note) VALUES (450, 'a'), (-1, 'c') \
                 ON CONFLICT DO NOTHING RETURNING customer_id"
                    .to_owned()
            ),
        ]
    );
    // Three shards, NULL keys to shard 0.
    let p3 = planner(3, KeyType::BigInt);
    let Plan::SplitInsert(parts) = plan(&p3, "insert into orders values (450), (null), (0), (900)")
    else {
        panic!("not split");
    };
    let shards: Vec<usize> = parts.iter().map(|(s, _)| *s).collect();
    assert_eq!(shards, vec![0, 1, 2]);
    assert_eq!(parts[0].1, "INSERT INTO orders VALUES (NULL)");
    assert_eq!(parts[1].1, "INSERT INTO orders VALUES (450), (900)");
    assert_eq!(parts[2].1, "INSERT INTO orders VALUES (0)");
}

#[test]
fn inserts_that_cannot_be_placed_are_refused() {
    let p = planner(2, KeyType::BigInt);
    for (sql, words) in [
        ("insert into orders select * from customers", "INSERT ... SELECT"),
        ("insert into orders select 450, 'x'", "INSERT ... SELECT"),
        ("insert into orders values (default, 'x')", "DEFAULT for the key column"),
        ("insert into orders values (449 + 1)", "is an expression"),
        ("insert into orders values (nextval('s'))", "is an expression"),
        ("insert into orders values (-$1)", "is an expression"),
        ("insert into orders values (450.5)", "the number 450.5"),
        ("insert into orders values ('450'::numeric)", "is an expression"),
        (
            "insert into orders values (450) on conflict (customer_id) do update set customer_id = 1",
            "ON CONFLICT DO UPDATE of the key column customer_id",
        ),
        ("insert into app.users values (450)", "the key column's position is not known yet"),
        (
            "insert into orders values ((select max(customer_id) from orders))",
            "with a subquery or WITH query",
        ),
        (
            "insert into orders values (450, (select name from customers limit 1))",
            "with a subquery or WITH query",
        ),
        (
            "with d as (delete from orders where customer_id = 450 returning *) insert into orders select * from d",
            "INSERT ... SELECT",
        ),
        ("insert into customers select * from orders", "not sharded"),
    ] {
        refused_with(&p, sql, words);
    }
    let mut untyped = sharding(2, KeyType::BigInt);
    untyped.tables[0].key_type = None;
    let p = Planner::new(untyped, 10);
    for sql in [
        "insert into orders values (450)",
        "insert into orders values ($1)",
        "select * from orders where customer_id = 450",
        "delete from orders where customer_id = $1",
    ] {
        refused_with(&p, sql, "set `type` in its sharded_tables entry");
    }
    // An explicit NULL key needs no hashing: the type does not matter.
    assert_eq!(
        plan(&p, "insert into orders values (null, 'x')"),
        Plan::Shard(0)
    );
}

#[test]
fn select_update_delete_by_key() {
    let p = planner(2, KeyType::BigInt);
    for (sql, want) in [
        ("select * from orders where customer_id = 450", Plan::Shard(1)),
        ("select * from orders where 450 = customer_id", Plan::Shard(1)),
        ("select * from orders o where o.customer_id = 450", Plan::Shard(1)),
        ("select * from orders where orders.customer_id = 450", Plan::Shard(1)),
        ("select * from orders where public.orders.customer_id = 450", Plan::Shard(1)),
        ("select * from orders where customer_id = '450'", Plan::Shard(1)),
        ("select * from orders where customer_id = 450::bigint", Plan::Shard(1)),
        ("select * from orders where customer_id = '450'::int8", Plan::Shard(1)),
        ("select * from orders where customer_id in (450)", Plan::Shard(1)),
        (
            "select note from orders where note <> 'x' and customer_id = 450 and (note like 'a%' or true)",
            Plan::Shard(1),
        ),
        ("select * from orders where customer_id = -1", Plan::Shard(1)),
        ("select * from orders where customer_id = 900", Plan::Shard(0)),
        ("select * from orders where customer_id is null", Plan::Shard(0)),
        ("select * from orders where customer_id = 450 for update", Plan::Shard(1)),
        (
            "select * from orders o join items i using (customer_id) where customer_id = 450 for update of o, i nowait",
            Plan::Shard(1),
        ),
        ("select count(*) from orders where customer_id = 450", Plan::Shard(1)),
        ("select * from orders where customer_id = $1", by_param(0, KeyType::BigInt)),
        ("select * from orders where $2 = customer_id", by_param(1, KeyType::BigInt)),
        ("select * from orders where customer_id = $1::int4", by_param(0, KeyType::Integer)),
        ("select * from orders where customer_id in ($1)", by_param(0, KeyType::BigInt)),
        ("update orders set note = 'x' where customer_id = 450", Plan::Shard(1)),
        ("update orders set note = $1 where customer_id = $2", by_param(1, KeyType::BigInt)),
        (
            "update orders o set note = i.note from items i where i.customer_id = o.customer_id and o.customer_id = 450",
            Plan::Shard(1),
        ),
        ("delete from orders where customer_id = 900 returning *", Plan::Shard(0)),
        (
            "delete from orders o using items i where o.customer_id = i.customer_id and i.customer_id = 450",
            Plan::Shard(1),
        ),
        (
            "with d as (select * from orders where customer_id = 450) delete from items where customer_id = 450",
            Plan::Shard(1),
        ),
    ] {
        assert_eq!(plan(&p, sql), want, "{sql}");
    }
}

#[test]
fn conditions_that_do_not_pin_the_key() {
    let p = planner(2, KeyType::BigInt);
    for cond in [
        "customer_id = 450 or customer_id = 900",
        "customer_id in (450, 900)",
        "customer_id + 0 = 450",
        "customer_id::text = '450'",
        "customer_id = 450.5",
        "customer_id = 450.0",
        "customer_id = $1::text",
        "not (customer_id = 450)",
        "customer_id > 450",
        "customer_id <> 450",
        "customer_id is not null",
        "customer_id = any('{450}')",
        "note = '450'",
    ] {
        let sql = format!("select * from orders where {cond} for update");
        refused_with(&p, &sql, FANS_OUT);
        let sql = format!("update orders set note = 'x' where {cond}");
        refused_with(&p, &sql, "UPDATE on sharded table orders without its key");
        let sql = format!("delete from orders where {cond}");
        refused_with(&p, &sql, "DELETE on sharded table orders without its key");
    }
    assert_eq!(
        refused(&p, "update orders set note = 'x'").message,
        "UPDATE on sharded table orders without its key: a write on several shards; add \
         `customer_id = value` to the WHERE clause, or /* pgsluice: shard=n */"
    );
    refused_with(
        &p,
        "update orders set customer_id = 5 where customer_id = 450",
        "UPDATE of the key column customer_id of sharded table orders",
    );
    refused_with(
        &p,
        "merge into orders o using items i on true when matched then delete",
        "MERGE",
    );
    refused_with(&p, "lock table orders", "LOCK");
    refused_with(&p, "declare c cursor for select * from orders", "cursor");
}

#[test]
fn joins_of_sharded_tables() {
    let p = planner(2, KeyType::BigInt);
    for (sql, want) in [
        ("select * from orders o join items i on o.customer_id = i.customer_id where o.customer_id = 450", Plan::Shard(1)),
        ("select * from orders o join items i on i.customer_id = o.customer_id and o.customer_id = 450", Plan::Shard(1)),
        ("select * from orders join items using (customer_id) where customer_id = 450", Plan::Shard(1)),
        ("select * from orders natural join items where orders.customer_id = 450", Plan::Shard(1)),
        ("select * from orders o, items i where o.customer_id = i.customer_id and i.customer_id = 450", Plan::Shard(1)),
        ("select * from orders o, items i where o.customer_id = 450 and i.customer_id = 450", Plan::Shard(1)),
        ("select * from orders o, items i where o.customer_id = 450 and i.customer_id = -1", Plan::Shard(1)),
        ("select * from orders o, items i where o.customer_id = $1 and i.customer_id = $1", by_param(0, KeyType::BigInt)),
        ("select * from orders o left join items i on o.customer_id = i.customer_id where o.customer_id = 450", Plan::Shard(1)),
        ("select * from orders a join orders b on a.customer_id = b.customer_id where b.customer_id = 450", Plan::Shard(1)),
        ("select * from orders a join items b on a.customer_id = b.customer_id join app.users u on u.id = b.customer_id where a.customer_id = 450", Plan::Shard(1)),
        ("select * from orders o join lateral (select * from items i where i.customer_id = o.customer_id) x on true where o.customer_id = 450", Plan::Shard(1)),
    ] {
        assert_eq!(plan(&p, sql), want, "{sql}");
    }
    for sql in [
        "select * from orders o join items i on o.note = i.note where o.customer_id = 450",
        "select * from orders o, items i where o.customer_id = 450 and i.customer_id = 900",
        "select * from orders o, items i where o.customer_id = $1 and i.customer_id = $2",
        "select * from orders o cross join items i",
    ] {
        refused_with(
            &p,
            sql,
            "join of sharded tables orders and items on non-key columns",
        );
    }
    // Linked, but not pinned: every shard (here refused as FOR UPDATE).
    for sql in [
        // (PostgreSQL would see the WHERE makes it an inner join; pgsluice does not.)
        "select * from orders o left join items i on o.customer_id = i.customer_id where i.customer_id = 450",
        "select * from orders o left join items i on o.customer_id = i.customer_id and i.customer_id = 450",
        "select * from orders o full join items i on o.customer_id = i.customer_id and o.customer_id = 450",
        "select * from orders o right join items i on o.customer_id = i.customer_id and o.customer_id = 450",
        "select * from orders o join items i using (customer_id)",
    ] {
        refused_with(&p, &format!("{sql} for update"), FANS_OUT);
    }
    refused_with(
        &p,
        "select * from orders o join customers c on c.id = o.customer_id where o.customer_id = 450",
        "table customers, which is not sharded",
    );
}

#[test]
fn subqueries_ctes_and_set_operations() {
    let p = planner(2, KeyType::BigInt);
    for (sql, want) in [
        ("select 1 where exists (select 1 from orders where customer_id = 450)", Plan::Shard(1)),
        ("select coalesce((select note from orders where customer_id = 450), 'none')", Plan::Shard(1)),
        ("select f((select note from orders where customer_id = 450))", Plan::Shard(1)),
        ("with x as (select * from orders where customer_id = 450) select * from x", Plan::Shard(1)),
        ("select * from (select * from orders where customer_id = 450) s", Plan::Shard(1)),
        (
            "select * from orders where customer_id = 450 and exists (select 1 from items i where i.customer_id = orders.customer_id)",
            Plan::Shard(1),
        ),
        (
            "select *, (select count(*) from items i where i.customer_id = o.customer_id) from orders o where o.customer_id = 450",
            Plan::Shard(1),
        ),
        (
            "select * from orders where customer_id in (select customer_id from items where customer_id = 450)",
            Plan::Shard(1),
        ),
        (
            "select * from orders where customer_id = 450 and customer_id in (select i.customer_id from items i)",
            Plan::Shard(1),
        ),
        (
            "select * from orders where customer_id = 450 and exists (select 1 from items where customer_id = 450)",
            Plan::Shard(1),
        ),
        (
            "select * from orders where customer_id = 450 union all select * from items where customer_id = -1",
            Plan::Shard(1),
        ),
        ("select array(select note from orders where customer_id = 450)", Plan::Shard(1)),
    ] {
        assert_eq!(plan(&p, sql), want, "{sql}");
    }
    for sql in [
        // The pin inside NOT EXISTS does not restrict the outer rows.
        "select * from orders o where not exists (select 1 from items i where i.customer_id = o.customer_id and i.customer_id = 450)",
        // Nor does a condition on the outer table inside a subquery.
        "select * from orders o where exists (select 1 from items i where i.customer_id = o.customer_id and o.customer_id = 450)",
        // An unqualified name in a subquery is not the outer table's.
        "select * from orders where exists (select 1 from generate_series(1, 3) g(customer_id) where customer_id = 450)",
    ] {
        refused_with(&p, &format!("{sql} for update"), FANS_OUT);
    }
    for sql in [
        "select * from orders where customer_id = 450 and note in (select note from items)",
        "select * from orders where customer_id = 450 union select * from items where customer_id = 900",
        "select * from orders where note = (select max(note) from orders)",
    ] {
        refused_with(&p, sql, "without equality of their key columns");
    }
    refused_with(
        &p,
        "with d as (delete from orders where customer_id = 450 returning *) select * from d",
        "data-modifying WITH",
    );
    refused_with(
        &p,
        "select xmlelement(name x, (select note from orders where customer_id = 450))",
        "cannot tell its rows' shard",
    );
}

#[test]
fn text_and_uuid_keys_in_conditions() {
    let text3 = planner(3, KeyType::Text);
    assert_eq!(
        plan(&text3, "select * from orders where customer_id = 'abc'"),
        Plan::Shard(1)
    );
    assert_eq!(
        plan(
            &text3,
            "select * from orders where customer_id = 'orders-42'"
        ),
        Plan::Shard(2)
    );
    assert_eq!(
        plan(
            &text3,
            "select * from orders where customer_id = 'orders-42'::text"
        ),
        Plan::Shard(2)
    );
    assert_eq!(
        plan(
            &text3,
            "select * from orders where customer_id = $1::varchar"
        ),
        by_param(0, KeyType::Text)
    );
    refused_with(
        &text3,
        "select * from orders where customer_id = 'abc'::varchar(2) for update",
        FANS_OUT,
    );
    let uuid3 = planner(3, KeyType::Uuid);
    let sql = format!("select * from orders where customer_id = '{UUID_A}'");
    assert_eq!(plan(&uuid3, &sql), Plan::Shard(1));
    let uuid2 = planner(2, KeyType::Uuid);
    let sql = format!("delete from orders where customer_id = '{UUID_B}'::uuid");
    assert_eq!(plan(&uuid2, &sql), Plan::Shard(1));
    assert_eq!(
        plan(&uuid2, "select * from orders where customer_id = $1"),
        by_param(0, KeyType::Uuid)
    );
    let int4 = planner(3, KeyType::Integer);
    assert_eq!(
        plan(&int4, "select * from orders where customer_id = 3000000000"),
        Plan::Shard(0)
    );
    assert_eq!(
        plan(&int4, "select * from orders where customer_id = 450"),
        Plan::Shard(int_shard(450, 3))
    );
}

#[test]
fn three_shards() {
    let p = planner(3, KeyType::BigInt);
    for (sql, want) in [
        ("select * from orders where customer_id = 0", Plan::Shard(2)),
        (
            "update orders set note = 'x' where customer_id = 900",
            Plan::Shard(1),
        ),
        ("delete from items where customer_id = -1", Plan::Shard(2)),
        (
            "select * from orders o join items i using (customer_id) where o.customer_id = 450",
            Plan::Shard(1),
        ),
        // 450 and 900 share shard 1 of 3.
        (
            "select * from orders o, items i where o.customer_id = 450 and i.customer_id = 900",
            Plan::Shard(1),
        ),
    ] {
        assert_eq!(plan(&p, sql), want, "{sql}");
    }
    let Plan::SplitInsert(parts) = plan(&p, "insert into orders values (0), (450), (-1), (900)")
    else {
        panic!("not split");
    };
    assert_eq!(
        parts,
        vec![
            (1, "INSERT INTO orders VALUES (450), (900)".to_owned()),
            (2, "INSERT INTO orders VALUES (0), (-1)".to_owned()),
        ]
    );
}

#[test]
fn a_planner_is_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Planner>();
    let p = std::sync::Arc::new(planner(2, KeyType::BigInt));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let sql = format!(
                        "select * from orders where customer_id = {}",
                        450 * (i % 2 + 1)
                    );
                    let want = if i % 2 == 0 { 1 } else { 0 };
                    assert_eq!(*p.plan(&sql), Plan::Shard(want));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no panic");
    }
}
