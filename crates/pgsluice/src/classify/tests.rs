//! The rules over a table of statements, requests built as a client sends them, the
//! cache's bound, and a micro-benchmark (ignored; run it in release mode).

use std::cell::Cell;
use std::sync::Arc;

use bytes::BytesMut;
use pgsluice_protocol::frontend;

use super::{Class, Classifier, ClassifierSettings};

use Class::{Read, ReadOnlyTransaction as Rot, Write};

fn classifier() -> Classifier {
    Classifier::new(ClassifierSettings {
        cache_capacity: 1000,
        extra_write_functions: vec![],
    })
}

const STATEMENTS: &[(&str, Class)] = &[
    // Queries that only read.
    ("select 1", Read),
    ("SELECT count(*) FROM t", Read),
    ("values (1), (2)", Read),
    ("table t", Read),
    (
        "select * from a union select * from b except select * from c",
        Read,
    ),
    (
        "select * from t where id in (select id from u where u.x > now())",
        Read,
    ),
    ("with x as (select 1) select * from x", Read),
    (
        "select current_setting('search_path'), pg_terminate_backend(42)",
        Read,
    ),
    ("select nextval_count, \"setval\" from t", Read),
    ("select 'nextval(''s'')', 'insert into t values (1)'", Read),
    ("select * from t -- for update", Read),
    ("/* insert into t */ select 1", Read),
    ("select 1; select 2;", Read),
    ("show search_path", Read),
    ("SET search_path = public, pg_catalog", Read),
    ("set local statement_timeout = 0", Read),
    ("set time zone 'UTC'", Read),
    ("reset all", Read),
    ("reset search_path", Read),
    ("explain select * from t", Read),
    (
        "explain (analyze, buffers) select * from t join u using (id)",
        Read,
    ),
    ("copy t to stdout", Read),
    ("copy (select * from t) to stdout with (format csv)", Read),
    // Locking clauses, INTO, data-modifying CTEs, anywhere.
    ("select * from t for update", Write),
    ("select * from t for share", Write),
    ("select * from t for no key update skip locked", Write),
    ("select * from t for key share", Write),
    ("select * from (select * from t for update) q", Write),
    (
        "select * from t where id in (select id from u for share)",
        Write,
    ),
    ("select into t2 from t", Write),
    ("select * into temp t2 from t", Write),
    (
        "with x as (delete from t returning *) select * from x",
        Write,
    ),
    (
        "with x as (select 1), y as (insert into t values (1) returning *) select * from x",
        Write,
    ),
    (
        "with x as (update t set a = 1 returning a) select * from x",
        Write,
    ),
    // Functions known to write, anywhere in the tree.
    ("select nextval('s')", Write),
    ("SELECT pg_catalog.NEXTVAL('s')", Write),
    ("select * from (select setval('s',1)) q", Write),
    ("select 1 union all select nextval('s')", Write),
    (
        "select coalesce(null, case when true then lastval() end)",
        Write,
    ),
    ("select currval('s')", Write),
    ("select * from generate_series(1, nextval('s'))", Write),
    (
        "select count(*) filter (where nextval('s') > 0) from t",
        Write,
    ),
    ("select array_agg(x order by setval('s', x)) from t", Write),
    (
        "with x as (select pg_advisory_lock(1)) select * from x",
        Write,
    ),
    ("select pg_try_advisory_xact_lock_shared(1)", Write),
    ("select set_config('a.b', 'c', false)", Write),
    ("select pg_notify('c', 'x')", Write),
    ("select txid_current(), pg_current_xact_id()", Write),
    ("select lo_create(0)", Write),
    ("select lowrite(lo_open(1, 131072), 'x')", Write),
    ("values (1), (nextval('s'))", Write),
    ("explain analyze select nextval('s')", Write),
    // Writes and everything else.
    ("select 1; insert into t values (1)", Write),
    ("insert into t values (1)", Write),
    ("update t set a = 1", Write),
    ("delete from t", Write),
    (
        "merge into t using u on t.id = u.id when matched then delete",
        Write,
    ),
    ("create table t (a int)", Write),
    ("drop table t", Write),
    ("truncate t", Write),
    ("explain analyze insert into t values (1)", Write),
    ("explain insert into t values (1)", Write),
    ("listen c", Write),
    ("notify c", Write),
    ("prepare p as select 1", Write),
    ("execute p", Write),
    ("deallocate p", Write),
    ("do $$ begin end $$", Write),
    ("call p()", Write),
    ("lock t", Write),
    ("vacuum t", Write),
    ("discard all", Write),
    ("declare c cursor for select 1", Write),
    ("copy t from stdin", Write),
    ("copy t to '/tmp/t.csv'", Write),
    ("copy t to program 'cat'", Write),
    ("copy (delete from t returning *) to stdout", Write),
    ("set transaction read write", Write),
    (
        "set session characteristics as transaction read only",
        Write,
    ),
    ("set transaction_read_only = off", Write),
    // Transactions.
    ("begin", Write),
    ("start transaction", Write),
    ("begin read write", Write),
    ("begin read write, read only", Write),
    ("begin; select 1", Write),
    ("commit", Write),
    ("rollback", Write),
    ("select 1; commit", Write),
    ("savepoint a", Write),
    ("set transaction read only", Write),
    ("begin read only; insert into t values (1)", Write),
    ("begin read only; select 1; commit; delete from t", Write),
    ("begin; select 1; set transaction read only", Write),
    // A hot standby refuses SERIALIZABLE.
    (
        "start transaction isolation level serializable, read only",
        Write,
    ),
    (
        "begin; set transaction isolation level serializable read only",
        Write,
    ),
    ("begin read only", Rot),
    ("BEGIN TRANSACTION READ ONLY", Rot),
    ("start transaction read only", Rot),
    ("begin read only; select 1", Rot),
    ("begin read only deferrable; select 1; commit", Rot),
    (
        "start transaction isolation level repeatable read, read only",
        Rot,
    ),
    ("begin; set transaction read only; select 1", Rot),
    ("begin; set transaction read only", Rot),
    // What cannot be judged.
    ("", Write),
    ("   ", Write),
    (";", Write),
    ("-- only a comment", Write),
    ("selec 1 frm t", Write),
    ("select (", Write),
];

#[test]
fn statements_classify_by_postgres_semantics() {
    let c = classifier();
    let mut wrong = Vec::new();
    for &(sql, want) in STATEMENTS {
        // Twice: parsed, then from the cache.
        for _ in 0..2 {
            let got = c.classify_sql(sql);
            if got != want {
                wrong.push(format!("{sql:?}: got {got:?}, want {want:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let stats = c.cache_stats();
    assert_eq!(stats.misses as usize, STATEMENTS.len(), "{stats:?}");
    assert_eq!(stats.hits as usize, STATEMENTS.len(), "{stats:?}");
}

/// Trees deeper than the protobuf decoder's nesting limit (100 messages: some 50
/// nested operators or 20 nested subqueries) are refused by `pg_query` and go to the
/// primary; shallower ones are judged. Nothing overflows the stack.
#[test]
fn deeply_nested_queries_are_write_not_a_crash() {
    let c = classifier();
    let sum = |n: usize| format!("select 1{}", "+1".repeat(n));
    let subqueries = |n: usize| format!("select {}1{}", "(select ".repeat(n), ")".repeat(n));
    assert_eq!(c.classify_sql(&sum(10)), Read);
    assert_eq!(c.classify_sql(&subqueries(10)), Read);
    assert_eq!(c.classify_sql(&sum(100_000)), Write);
    assert_eq!(c.classify_sql(&subqueries(5_000)), Write);
}

#[test]
fn extra_write_functions_are_writers_by_name_or_schema() {
    let c = Classifier::new(ClassifierSettings {
        cache_capacity: 0,
        extra_write_functions: vec!["audit.touch".into(), "Bump".into()],
    });
    for (sql, want) in [
        ("select bump()", Write),
        ("select myschema.BUMP(1)", Write),
        ("select * from t where x = audit.touch()", Write),
        ("select touch()", Read),
        ("select other.touch()", Read),
        ("select nextval('s')", Write),
    ] {
        assert_eq!(c.classify_sql(sql), want, "{sql}");
    }
    assert_eq!(classifier().classify_sql("select bump()"), Read);
}

#[test]
fn the_cache_stays_bounded_and_right() {
    let c = Classifier::new(ClassifierSettings {
        cache_capacity: 10,
        extra_write_functions: vec![],
    });
    let text = |i: usize| match i % 3 {
        0 => (format!("select {i} from t for update"), Write),
        _ => (format!("select {i}"), Read),
    };
    for round in 0..2 {
        for i in 0..300usize {
            let (sql, want) = text(i);
            assert_eq!(c.classify_sql(&sql), want, "round {round}, {sql}");
            assert!(c.cache_stats().entries <= 10);
        }
    }
    let stats = c.cache_stats();
    assert_eq!((stats.entries, stats.capacity), (10, 10), "{stats:?}");
    assert_eq!(stats.hits + stats.misses, 600, "{stats:?}");
}

#[test]
fn a_classifier_is_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Classifier>();
    let c = Arc::new(Classifier::new(ClassifierSettings {
        cache_capacity: 16,
        extra_write_functions: vec![],
    }));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let n = (i * 7 + t) % 40;
                    assert_eq!(c.classify_sql(&format!("select {n}")), Read);
                    assert_eq!(c.classify_sql(&format!("delete from t{n}")), Write);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a classifying thread panicked");
    }
    assert!(c.cache_stats().entries <= 16);
}

// --- classify_request ------------------------------------------------------------

/// A request built with the encoders pgsluice uses as a client.
fn request(build: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut buf = BytesMut::new();
    build(&mut buf);
    buf.to_vec()
}

fn extended(buf: &mut BytesMut, name: &str, sql: &str) {
    frontend::parse(buf, name, sql.as_bytes(), &[]);
    frontend::bind_text(buf, "", name, &[]);
    frontend::execute(buf, "", 0);
}

fn no_statements(_: &[u8]) -> Option<Arc<str>> {
    None
}

#[test]
fn simple_queries_classify_by_their_sql() {
    let c = classifier();
    let q = |sql: &str| request(|b| frontend::query(b, sql));
    assert_eq!(
        c.classify_request(&q("select count(*) from t"), &no_statements),
        Read
    );
    assert_eq!(
        c.classify_request(&q("insert into t values (1)"), &no_statements),
        Write
    );
    assert_eq!(
        c.classify_request(&q("begin read only; select 1"), &no_statements),
        Rot
    );
    // Several queries in one read chain like one text.
    let two = request(|b| {
        frontend::query(b, "begin");
        frontend::query(b, "set transaction read only; select 1");
    });
    assert_eq!(c.classify_request(&two, &no_statements), Rot);
    let two = request(|b| {
        frontend::query(b, "select 1");
        frontend::query(b, "select nextval('s')");
    });
    assert_eq!(c.classify_request(&two, &no_statements), Write);
    // SQL in another client_encoding (here LATIN1) is not judged.
    assert_eq!(
        c.classify_request(b"Q\0\0\0\x0eselect '\xe9'\0", &no_statements),
        Write
    );
}

#[test]
fn pipelines_classify_by_every_parse() {
    let c = classifier();
    let reads = request(|b| {
        extended(b, "", "select * from t where id = $1");
        frontend::target_message(b, frontend::tag::DESCRIBE, b'P', "");
        extended(b, "", "select 2");
        frontend::target_message(b, frontend::tag::CLOSE, b'S', "");
        frontend::sync(b);
    });
    assert_eq!(c.classify_request(&reads, &no_statements), Read);
    let mixed = request(|b| {
        extended(b, "", "select 1");
        extended(b, "", "update t set a = $1");
        frontend::sync(b);
    });
    assert_eq!(c.classify_request(&mixed, &no_statements), Write);
    let read_only = request(|b| {
        extended(b, "", "BEGIN READ ONLY");
        extended(b, "", "select 1");
        frontend::sync(b);
    });
    assert_eq!(c.classify_request(&read_only, &no_statements), Rot);
    let begin_then_set = request(|b| {
        extended(b, "", "begin");
        extended(b, "", "set transaction read only");
        extended(b, "", "select 1");
        frontend::sync(b);
    });
    assert_eq!(c.classify_request(&begin_then_set, &no_statements), Rot);
}

#[test]
fn a_bind_of_an_earlier_statement_asks_for_its_text() {
    let c = classifier();
    let bind_s1 = request(|b| {
        frontend::bind_text(b, "", "s1", &[Some(b"1")]);
        frontend::execute(b, "", 0);
        frontend::sync(b);
    });
    let asked = Cell::new(0);
    let known = |name: &[u8]| {
        asked.set(asked.get() + 1);
        (name == b"s1").then(|| Arc::from("select * from t where id = $1"))
    };
    assert_eq!(c.classify_request(&bind_s1, &known), Read);
    assert_eq!(asked.get(), 1);
    let writer = |_: &[u8]| Some(Arc::from("delete from t where id = $1"));
    assert_eq!(c.classify_request(&bind_s1, &writer), Write);
    assert_eq!(c.classify_request(&bind_s1, &no_statements), Write);

    // Parsed in the same bytes: judged at its Parse, the callback is not asked.
    let parse_and_bind = request(|b| {
        frontend::parse(b, "s1", b"select 1", &[]);
        frontend::parse(b, "s2", b"select 2", &[]);
        frontend::bind_text(b, "", "s1", &[]);
        frontend::execute(b, "", 0);
        frontend::bind_text(b, "", "s2", &[]);
        frontend::execute(b, "", 0);
        frontend::bind_text(b, "", "s1", &[]);
        frontend::execute(b, "", 0);
        frontend::sync(b);
    });
    asked.set(0);
    assert_eq!(c.classify_request(&parse_and_bind, &known), Read);
    assert_eq!(asked.get(), 0);
    // A Parse of BEGIN READ ONLY bound twice is still one BEGIN.
    let begin = request(|b| {
        frontend::parse(b, "b", b"begin read only", &[]);
        frontend::bind_text(b, "", "b", &[]);
        frontend::execute(b, "", 0);
        frontend::bind_text(b, "", "b", &[]);
        frontend::sync(b);
    });
    assert_eq!(c.classify_request(&begin, &no_statements), Rot);
}

#[test]
fn cut_off_unknown_or_empty_requests_are_write() {
    let c = classifier();
    let q = request(|b| frontend::query(b, "select 1"));
    assert_eq!(c.classify_request(&q, &no_statements), Read);
    for cut in [1, 3, 5, q.len() - 1] {
        assert_eq!(
            c.classify_request(&q[..cut], &no_statements),
            Write,
            "cut at {cut}"
        );
    }
    let then_cut = [q.clone(), q[..7].to_vec()].concat();
    assert_eq!(c.classify_request(&then_cut, &no_statements), Write);
    // FunctionCall (lo_write and friends go this way), CopyData, a bad length.
    let function_call = b"F\0\0\0\x12\0\0\x03\xfc\0\0\0\0\0\0\0\0";
    assert_eq!(c.classify_request(function_call, &no_statements), Write);
    let copy_data = [q.clone(), b"d\0\0\0\x05x".to_vec()].concat();
    assert_eq!(c.classify_request(&copy_data, &no_statements), Write);
    assert_eq!(c.classify_request(b"Q\0\0\0\x02", &no_statements), Write);
    // Nothing to judge.
    assert_eq!(c.classify_request(b"", &no_statements), Write);
    let sync = request(frontend::sync);
    assert_eq!(c.classify_request(&sync, &no_statements), Write);
    // A Parse without its query string.
    assert_eq!(c.classify_request(b"P\0\0\0\x06s\0", &no_statements), Write);
}

/// Classifies a typical Query message and an ORM-style join many times, warm (cached)
/// and cold (parsed every time), and prints the cost of one call. The answers are
/// checked on every run; the timings are only printed (read them from a release run:
/// `cargo test --release -p pgsluice --lib classify::tests::bench -- --nocapture`;
/// debug runs do 1/1000 of the calls).
#[test]
fn bench_classify_request() {
    use std::hint::black_box;
    use std::time::Instant;

    let q = request(|b| frontend::query(b, "select count(*) from t"));
    let orm = request(|b| {
        frontend::query(
            b,
            "SELECT u.id, u.name, o.total, p.title FROM users u JOIN orders o ON o.user_id = u.id \
             LEFT JOIN products p ON p.id = o.product_id WHERE u.active AND o.created_at > $1 \
             AND p.category IN (SELECT id FROM categories WHERE parent = $2) \
             ORDER BY o.created_at DESC LIMIT 50",
        )
    });
    let run = |name: &str, capacity: usize, msg: &[u8], n: u32| {
        let c = Classifier::new(ClassifierSettings {
            cache_capacity: capacity,
            extra_write_functions: vec![],
        });
        assert_eq!(c.classify_request(msg, &no_statements), Read);
        let n = if cfg!(debug_assertions) { n / 1000 } else { n };
        let start = Instant::now();
        for _ in 0..n {
            assert_eq!(
                black_box(c.classify_request(black_box(msg), &no_statements)),
                Read
            );
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("{name}: {ns:.0} ns per classify_request");
    };
    run("warm, select count(*) from t", 1024, &q, 2_000_000);
    run("cold, select count(*) from t", 0, &q, 20_000);
    run("warm, ORM-style join query", 1024, &orm, 2_000_000);
    run("cold, ORM-style join query", 0, &orm, 5_000);
    // Of a cold call, the part pg_query::parse takes (libpg_query, then protobuf out
    // of C and back in through prost).
    for (name, msg, n) in [("count", &q, 20_000u32), ("ORM-style", &orm, 5_000)] {
        let sql = std::str::from_utf8(&msg[5..msg.len() - 1]).expect("ASCII");
        let start = Instant::now();
        for _ in 0..n {
            black_box(pg_query::parse(black_box(sql), 0).is_ok());
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("pg_query::parse alone, {name}: {ns:.0} ns");
    }
}
