//! tokio-postgres through the pooler: simple and extended queries, prepared statements,
//! COPY both ways, pipelining, transactions, notices, errors and very large fields.
//!
//! These tests mostly use `query_typed` (unnamed statement, one round trip) or the
//! simple protocol out of a transaction. Named statements (`prepare`, `query`) are safe
//! there too since pgsluice carries them across server connections in transaction mode
//! (docs/prepared-statements.md); tests/prepared.rs and tests/drivers.rs cover them.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use pgsluice::config::PoolMode;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

fn rows_of(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn simple_query_with_several_statements() {
    let s = setup(PoolMode::Transaction, 2).await;
    let c = connect(s.addr).await;
    let msgs = c
        .simple_query(
            "create table t(a int, b text); insert into t values (1,'x'),(2,null); \
             select a, b from t order by a; select 'done'",
        )
        .await
        .unwrap();
    assert_eq!(
        rows_of(&msgs),
        vec![
            vec![Some("1".into()), Some("x".into())],
            vec![Some("2".into()), None],
            vec![Some("done".into())],
        ]
    );
    let completes = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(completes, vec![0, 2, 2, 1]);
    // Empty query string.
    let msgs = c.simple_query("").await.unwrap();
    assert!(rows_of(&msgs).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn extended_query_with_parameters() {
    let s = setup(PoolMode::Transaction, 2).await;
    let c = connect(s.addr).await;
    // Unnamed statement, one round trip: fine in transaction mode.
    let rows = c
        .query_typed(
            "select $1::int4 + $2::int4, $3::text || '!', $4::bytea",
            &[
                (&40i32, Type::INT4),
                (&2i32, Type::INT4),
                (&"hé", Type::TEXT),
                (&vec![0u8, 1, 255], Type::BYTEA),
            ],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    assert_eq!(rows[0].get::<_, &str>(1), "hé!");
    assert_eq!(rows[0].get::<_, Vec<u8>>(2), vec![0u8, 1, 255]);
    // NULL parameter and many rows.
    let rows = c
        .query_typed(
            "select g, $1::text from generate_series(1, 5000) g",
            &[(&None::<String>, Type::TEXT)],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999].get::<_, i32>(0), 5000);
    assert_eq!(rows[0].get::<_, Option<&str>>(1), None);

    // Prepare + execute inside a transaction (the server is held throughout).
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    let stmt = tx.prepare("select $1::int8 * 2").await.unwrap();
    for i in 0..20i64 {
        let v: i64 = tx.query_one(&stmt, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i * 2);
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_statement_reuse_in_session_mode() {
    let s = setup(PoolMode::Session, 2).await;
    let c = connect(s.addr).await;
    c.batch_execute("create table kv(k int primary key, v text)")
        .await
        .unwrap();
    let insert = c.prepare("insert into kv values ($1, $2)").await.unwrap();
    let select = c.prepare("select v from kv where k = $1").await.unwrap();
    for k in 0..200i32 {
        c.execute(&insert, &[&k, &format!("v{k}")]).await.unwrap();
    }
    for k in (0..200i32).step_by(7) {
        let v: String = c.query_one(&select, &[&k]).await.unwrap().get(0);
        assert_eq!(v, format!("v{k}"));
    }
    // The statements are named, server-side objects of this session.
    let n = count(
        &c,
        "select count(*) from pg_prepared_statements where not from_sql",
    )
    .await;
    assert!(
        n >= 2,
        "expected the two protocol-level statements, got {n}"
    );
    // An SQL-level PREPARE works too.
    c.batch_execute("prepare p(int) as select $1 + 1")
        .await
        .unwrap();
    assert_eq!(
        simple_value(&c, "execute p(41)").await.unwrap().as_deref(),
        Some("42")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_in_and_copy_out() {
    let s = setup(PoolMode::Transaction, 2).await;
    let c = connect(s.addr).await;
    c.batch_execute("create table big(id int, payload text)")
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..50_000 {
        expected.extend_from_slice(
            format!("{i}\tpayload number {i} {}\n", "z".repeat(i % 50)).as_bytes(),
        );
    }
    let sink = c.copy_in("COPY big FROM STDIN").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    // Send in uneven chunks that split rows.
    for chunk in expected.chunks(10_007) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let n = sink.as_mut().finish().await.unwrap();
    assert_eq!(n, 50_000);
    assert_eq!(count(&c, "select count(*) from big").await, 50_000);

    let stream = c
        .copy_out("COPY (select * from big order by id) TO STDOUT")
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "COPY OUT differs from COPY IN data");

    // A COPY IN the server rejects: the error arrives and the client goes on.
    let sink = c.copy_in("COPY big FROM STDIN").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    sink.send(Bytes::from_static(b"not-a-number\tx\n"))
        .await
        .unwrap();
    let err = sink.as_mut().finish().await.unwrap_err();
    assert_eq!(code(&err).as_deref(), Some("22P02"), "{err:?}");
    assert_eq!(count(&c, "select count(*) from big").await, 50_000);

    // A COPY OUT that fails half way: some data, then the error, and the client goes on.
    let stream = c
        .copy_out("COPY (select 10 / (5000 - g) from generate_series(1, 10000) g) TO STDOUT")
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut err = None;
    while let Some(chunk) = stream.next().await {
        if let Err(e) = chunk {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the COPY OUT must end with an error");
    assert_eq!(code(&err).as_deref(), Some("22012"), "{err:?}");
    assert_eq!(count(&c, "select count(*) from big").await, 50_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_queries_on_one_client() {
    let s = setup(PoolMode::Transaction, 1).await;
    let c = connect(s.addr).await;
    // tokio-postgres writes all of these before reading any answer.
    let (a, b, e, d) = tokio::join!(
        c.query_typed("select 1::int4, pg_sleep(0.05)::text", &[]),
        c.query_typed("select $1::int4 * 10", &[(&2i32, Type::INT4)]),
        c.query_typed("select 1/0", &[]),
        c.query_typed("select 'last'::text", &[]),
    );
    assert_eq!(a.unwrap()[0].get::<_, i32>(0), 1);
    assert_eq!(b.unwrap()[0].get::<_, i32>(0), 20);
    assert_eq!(code(&e.unwrap_err()).as_deref(), Some("22012"));
    assert_eq!(d.unwrap()[0].get::<_, &str>(0), "last");

    // A longer pipeline, results in order.
    let futs = (0..100i32).map(|i| {
        let c = &c;
        async move {
            let rows = c
                .query_typed("select $1::int4 + 1", &[(&i, Type::INT4)])
                .await?;
            Ok::<i32, tokio_postgres::Error>(rows[0].get(0))
        }
    });
    let got = futures_util::future::try_join_all(futs).await.unwrap();
    assert_eq!(got, (1..=100).collect::<Vec<i32>>());

    // Simple queries pipelined too.
    let (x, y) = tokio::join!(c.simple_query("select 'x'"), c.simple_query("select 'y'"));
    assert_eq!(rows_of(&x.unwrap()), vec![vec![Some("x".to_owned())]]);
    assert_eq!(rows_of(&y.unwrap()), vec![vec![Some("y".to_owned())]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_prepared_statements_in_session_mode() {
    let s = setup(PoolMode::Session, 1).await;
    let c = connect(s.addr).await;
    let stmt = c.prepare("select $1::int4 * $1::int4").await.unwrap();
    let futs = (0..50i32).map(|i| {
        let (c, stmt) = (&c, &stmt);
        async move { c.query_one(stmt, &[&i]).await.map(|r| r.get::<_, i32>(0)) }
    });
    let got = futures_util::future::try_join_all(futs).await.unwrap();
    assert_eq!(got, (0..50).map(|i| i * i).collect::<Vec<i32>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_commit_and_rollback() {
    let s = setup(PoolMode::Transaction, 2).await;
    let mut c = connect(s.addr).await;
    c.batch_execute("create table acc(id int primary key, n int)")
        .await
        .unwrap();

    let tx = c.transaction().await.unwrap();
    tx.execute("insert into acc values (1, 10)", &[])
        .await
        .unwrap();
    let n: i64 = tx
        .query_one("select count(*) from acc", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    tx.rollback().await.unwrap();
    assert_eq!(count(&c, "select count(*) from acc").await, 0);
    assert_eq!(pg_sql(&s.pg, "select count(*) from acc"), "0");

    let tx = c.transaction().await.unwrap();
    tx.execute("insert into acc values (2, 20)", &[])
        .await
        .unwrap();
    // Not visible to others before COMMIT.
    assert_eq!(pg_sql(&s.pg, "select count(*) from acc"), "0");
    tx.commit().await.unwrap();
    assert_eq!(pg_sql(&s.pg, "select count(*) from acc"), "1");

    // Dropping a Transaction rolls back.
    {
        let tx = c.transaction().await.unwrap();
        tx.execute("insert into acc values (3, 30)", &[])
            .await
            .unwrap();
    }
    assert_eq!(count(&c, "select count(*) from acc").await, 1);

    // Savepoints.
    let mut tx = c.transaction().await.unwrap();
    tx.execute("insert into acc values (4, 40)", &[])
        .await
        .unwrap();
    let sp = tx.savepoint("sp").await.unwrap();
    sp.execute("insert into acc values (5, 50)", &[])
        .await
        .unwrap();
    sp.rollback().await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        pg_sql(
            &s.pg,
            "select string_agg(id::text, ',' order by id) from acc"
        ),
        "2,4"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notice_is_delivered() {
    let s = setup(PoolMode::Transaction, 1).await;
    let mut conn = connect_full(s.addr).await;
    conn.client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
        .await
        .unwrap();
    let msg = tokio::time::timeout(PROMPTLY, conn.messages.recv())
        .await
        .expect("no notice within the deadline")
        .expect("connection closed");
    match msg {
        AsyncMessage::Notice(n) => {
            assert_eq!(n.message(), "hello 42");
            assert_eq!(n.severity(), "NOTICE");
            assert_eq!(n.code().code(), "00000");
        }
        other => panic!("expected a notice, got {other:?}"),
    }
    // A WARNING raised inside a transaction arrives too.
    let tx = conn.client.transaction().await.unwrap();
    tx.batch_execute("DO $$ BEGIN RAISE WARNING 'careful'; END $$")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    match tokio::time::timeout(PROMPTLY, conn.messages.recv()).await {
        Ok(Some(AsyncMessage::Notice(n))) => assert_eq!(n.message(), "careful"),
        other => panic!("expected a warning, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_inside_and_outside_a_transaction() {
    let s = setup(PoolMode::Transaction, 1).await;
    let mut c = connect(s.addr).await;

    // Outside a transaction: error, then the next query works.
    let e = c.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("22012"));
    assert_eq!(message(&e), "division by zero");
    let e = c
        .query_typed("select * from missing", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("42P01"));
    assert_eq!(count(&c, "select 5::int8").await, 5);

    // Inside: the transaction is aborted until ROLLBACK, then all is well.
    c.batch_execute("begin").await.unwrap();
    let e = c.batch_execute("select 1/0").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("22012"));
    let e = c.batch_execute("select 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("25P02"), "{e:?}");
    c.batch_execute("rollback").await.unwrap();
    assert_eq!(count(&c, "select 6::int8").await, 6);

    // An error in a Transaction object, then commit is refused as a rollback.
    let tx = c.transaction().await.unwrap();
    let e = tx.execute("select 1/0", &[]).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("22012"));
    let _ = tx.commit().await;
    assert_eq!(count(&c, "select 7::int8").await, 7);

    // A syntax error through the extended protocol.
    let e = c.query_typed("selec 1", &[]).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("42601"));
    assert_eq!(count(&c, "select 8::int8").await, 8);
}

const HUNDRED_MB: usize = 100 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn large_field_in_a_result() {
    let s = setup(PoolMode::Transaction, 1).await;
    let c = connect(s.addr).await;
    let rows = tokio::time::timeout(
        Duration::from_secs(60),
        c.query_typed("select repeat('x', 100*1024*1024)", &[]),
    )
    .await
    .expect("100 MB result took too long")
    .unwrap();
    let v: &str = rows[0].get(0);
    assert_eq!(v.len(), HUNDRED_MB);
    assert!(v.bytes().all(|b| b == b'x'));
    drop(rows);
    assert_eq!(count(&c, "select 1::int8").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_field_as_a_parameter() {
    let s = setup(PoolMode::Transaction, 1).await;
    let c = connect(s.addr).await;
    let big = "y".repeat(HUNDRED_MB);
    let rows = tokio::time::timeout(
        Duration::from_secs(60),
        c.query_typed(
            "select length($1::text), md5($1::text) = md5(repeat('y', 100*1024*1024))",
            &[(&big, Type::TEXT)],
        ),
    )
    .await
    .expect("100 MB parameter took too long")
    .unwrap();
    assert_eq!(rows[0].get::<_, i32>(0) as usize, HUNDRED_MB);
    assert!(rows[0].get::<_, bool>(1), "the parameter arrived altered");
    assert_eq!(count(&c, "select 2::int8").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_notify_in_session_mode() {
    let s = setup(PoolMode::Session, 2).await;
    let mut a = connect_full(s.addr).await;
    a.client.batch_execute("listen chan").await.unwrap();
    let b = connect(s.addr).await;
    b.batch_execute("notify chan, 'first'; select pg_notify('chan', 'second')")
        .await
        .unwrap();
    // A is idle: the notifications must still reach it.
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(PROMPTLY, a.messages.recv()).await {
            Ok(Some(AsyncMessage::Notification(n))) => {
                assert_eq!(n.channel(), "chan");
                got.push(n.payload().to_owned());
            }
            Ok(Some(_)) => {}
            other => panic!("no notification for the idle listener: {other:?} (got {got:?})"),
        }
    }
    assert_eq!(got, vec!["first", "second"]);
}
