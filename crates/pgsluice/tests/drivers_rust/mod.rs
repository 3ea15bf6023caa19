//! The Rust drivers of the driver matrix (tokio-postgres, deadpool-postgres, sqlx),
//! each through pgsluice in transaction pooling with SCRAM. See ../drivers.rs.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, Row};
use tokio_postgres::{Client, NoTls};

use crate::common::*;

/// Lines `id\tcopy id\n` for ids 1000..3000: what every driver COPYs in, and expects
/// back from COPY out.
pub(crate) fn copy_data() -> String {
    (1000..3000).map(|i| format!("{i}\tcopy {i}\n")).collect()
}

/// The COPY out statement matching [`copy_data`].
pub(crate) const COPY_OUT: &str =
    "copy (select id, label from matrix where id >= 1000 order by id) to stdout";

/// Checks on PostgreSQL itself (not through pgsluice) what a driver left in `matrix`:
/// the 3 rows its committed transaction inserted, and `copied` rows from COPY.
pub(crate) fn assert_matrix_rows(s: &Setup, copied: usize) {
    assert_eq!(
        pg_sql(&s.pg, "select count(*) from matrix where label = 'tx'"),
        "3",
        "the committed transaction's rows"
    );
    assert_eq!(
        pg_sql(&s.pg, "select count(*) from matrix where id >= 1000"),
        copied.to_string(),
        "rows from COPY"
    );
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    code(e).unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// A transaction (checked committed), an error mid-transaction, COPY in and out and a
/// cancel on one tokio-postgres client (plain or from a deadpool).
async fn transaction_error_copy_cancel(c: &mut Client, s: &Setup) {
    let tx = c.transaction().await.unwrap();
    let ins = tx
        .prepare("insert into matrix values ($1, 'tx')")
        .await
        .unwrap();
    for id in 1..=3i32 {
        assert_eq!(tx.execute(&ins, &[&id]).await.unwrap(), 1);
    }
    tx.commit().await.unwrap();
    assert_eq!(
        pg_sql(&s.pg, "select count(*) from matrix where label = 'tx'"),
        "3"
    );

    let tx = c.transaction().await.unwrap();
    let e = tx.batch_execute("select 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    let e = tx.query_typed("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "a statement after the error");
    tx.rollback().await.unwrap();
    assert_eq!(count(c, "select 42::int8").await, 42);

    let sink = c
        .copy_in("copy matrix(id, label) from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(copy_data())).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2000);
    let out: Vec<Bytes> = c
        .copy_out(COPY_OUT)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out.concat()).unwrap(), copy_data());

    let direct = direct(&s.pg, DB).await;
    let token = c.cancel_token();
    let canceller = tokio::spawn(async move {
        wait_active_query(&direct, "pg_sleep(10)").await;
        token.cancel_query(NoTls).await.expect("cancel request");
    });
    let start = Instant::now();
    let e = c.simple_query("select pg_sleep(10)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57014");
    assert!(start.elapsed() < Duration::from_millis(9500));
    canceller.await.unwrap();
    assert_eq!(count(c, "select 7::int8").await, 7);
}

/// tokio-postgres: named prepared statements outside transactions (pgsluice carries
/// them to whichever server connection runs them), then the rest of the matrix.
pub(crate) async fn tokio_postgres(s: &Setup) {
    let mut c = connect(s.addr).await;
    let other = connect(s.addr).await;
    c.batch_execute("create table matrix(id int primary key, label text)")
        .await
        .unwrap();
    let st = c
        .prepare("select $1::int4 * 2, $2::text || '!'")
        .await
        .unwrap();
    let st_other = other.prepare("select $1::int4 + 1").await.unwrap();
    for i in 0..50i32 {
        let row = c.query_one(&st, &[&i, &format!("v{i}")]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 2);
        assert_eq!(row.get::<_, String>(1), format!("v{i}!"));
        let row = other.query_one(&st_other, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    transaction_error_copy_cancel(&mut c, s).await;
}

/// deadpool-postgres: `prepare_cached` from 10 concurrent pooled clients, then the
/// rest of the matrix on one pooled client.
pub(crate) async fn deadpool(s: &Setup) {
    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    let mgr = Manager::from_config(
        app_config(s.addr),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(mgr).max_size(6).build().unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute("create table matrix(id int primary key, label text)")
        .await
        .unwrap();
    let tasks = (0..10i32).map(|k| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..10i32 {
                let c = pool.get().await.expect("deadpool get");
                let st = c
                    .prepare_cached("select $1::int4 * $2::int4")
                    .await
                    .unwrap();
                let v: i32 = c.query_one(&st, &[&i, &k]).await.unwrap().get(0);
                assert_eq!(v, i * k, "task {k}");
            }
        })
    });
    for t in futures_util::future::join_all(tasks).await {
        t.expect("task panicked");
    }
    let mut c = pool.get().await.unwrap();
    transaction_error_copy_cancel(&mut c, s).await;
}

fn db_code(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// sqlx (postgres, tokio): its statement cache (named statements) on a connection and
/// a PgPool, a transaction, an error mid-transaction, COPY in and out. sqlx has no
/// cancel API.
pub(crate) async fn sqlx(s: &Setup) {
    let opts = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(s.addr.port())
        .username(USER)
        .password(PASSWORD)
        .database(DB);
    let mut conn = PgConnection::connect_with(&opts)
        .await
        .expect("sqlx connect");
    sqlx::query("create table matrix(id int primary key, label text)")
        .execute(&mut conn)
        .await
        .unwrap();
    for i in 0..50i32 {
        let row = sqlx::query("select $1::int4 * 2, $2::text || '!'")
            .bind(i)
            .bind(format!("v{i}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<i32, _>(0), i * 2);
        assert_eq!(row.get::<String, _>(1), format!("v{i}!"));
    }
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect_with(opts)
        .await
        .expect("sqlx pool");
    let tasks = (0..10i32).map(|k| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..10i32 {
                let v: i32 = sqlx::query_scalar("select $1::int4 * $2::int4")
                    .bind(i)
                    .bind(k)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                assert_eq!(v, i * k, "task {k}");
            }
        })
    });
    for t in futures_util::future::join_all(tasks).await {
        t.expect("task panicked");
    }

    let mut tx = conn.begin().await.unwrap();
    for id in 1..=3i32 {
        sqlx::query("insert into matrix values ($1, 'tx')")
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    let e = sqlx::query("select 1/0")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(db_code(&e), "22012");
    let e = sqlx::query("select 1").execute(&mut *tx).await.unwrap_err();
    assert_eq!(db_code(&e), "25P02", "a statement after the error");
    tx.rollback().await.unwrap();
    let v: i32 = sqlx::query_scalar("select 42")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, 42);

    let mut copy = conn
        .copy_in_raw("copy matrix(id, label) from stdin")
        .await
        .unwrap();
    copy.send(copy_data().into_bytes()).await.unwrap();
    assert_eq!(copy.finish().await.unwrap(), 2000);
    let out: Vec<Bytes> = conn
        .copy_out_raw(COPY_OUT)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out.concat()).unwrap(), copy_data());
    pool.close().await;
    conn.close().await.unwrap();
}
