//! SQL-level PREPARE / EXECUTE / DEALLOCATE in transaction pooling (issue 17), against
//! real PostgreSQL: statements follow their client across server connections, clients
//! never meet on a name, and every answer (results, errors, their positions) is what
//! PostgreSQL gives a client of its own.

mod common;

use common::*;
use pgsluice::config::PoolMode;
use tokio_postgres::error::ErrorPosition;
use tokio_postgres::{Client, SimpleQueryMessage};

/// The first column of every row of a simple query.
async fn values(c: &Client, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .collect())
}

async fn one(c: &Client, sql: &str) -> String {
    let v = values(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    assert_eq!(v.len(), 1, "{sql}: {v:?}");
    v[0].clone()
}

async fn err(c: &Client, sql: &str) -> tokio_postgres::Error {
    match c.simple_query(sql).await {
        Ok(r) => panic!("{sql} succeeded: {} messages", r.len()),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_the_client_to_another_connection() {
    let s = setup(PoolMode::Transaction, 2).await;
    let a = connect(s.addr).await;
    let pid_prepared = one(
        &a,
        "prepare p(int) as select $1 * 2 + 0 * pg_backend_pid(); select pg_backend_pid()",
    )
    .await;
    let h1 = connect(s.addr).await;
    let h2 = connect(s.addr).await;
    // Two clients hold both server connections, then release one: A runs on it.
    let hold_all_but = async |keep_prepared_one: bool| {
        let pid1 = one(&h1, "begin; select pg_backend_pid()").await;
        let pid2 = one(&h2, "begin; select pg_backend_pid()").await;
        assert_ne!(pid1, pid2);
        let on_prepared = if pid1 == pid_prepared { &h1 } else { &h2 };
        let other = if pid1 == pid_prepared { &h2 } else { &h1 };
        let (release, hold) = if keep_prepared_one {
            (other, on_prepared)
        } else {
            (on_prepared, other)
        };
        release.batch_execute("commit").await.unwrap();
        hold
    };
    // A's next transaction runs on the other connection, which lacks the statement.
    let hold = hold_all_but(true).await;
    let v = values(&a, "execute p(5); select pg_backend_pid()")
        .await
        .unwrap();
    assert_eq!(v[0], "10");
    assert_ne!(v[1], pid_prepared, "A moved to the other connection");
    hold.batch_execute("commit").await.unwrap();
    // And back on the first one, where it still is.
    let hold = hold_all_but(false).await;
    let v = values(&a, "execute p(21); select pg_backend_pid()")
        .await
        .unwrap();
    assert_eq!(v[0], "42");
    assert_eq!(v[1], pid_prepared);
    // EXPLAIN EXECUTE and CREATE TABLE AS EXECUTE name the statement too.
    let plan = values(&a, "explain (costs off) execute p(1)")
        .await
        .unwrap();
    assert!(!plan.is_empty());
    a.batch_execute("create table t_ctas as execute p(4)")
        .await
        .unwrap();
    assert_eq!(one(&a, "select * from t_ctas").await, "8");
    hold.batch_execute("commit").await.unwrap();
    // On the server the statement has pgsluice's name, never the client's.
    assert_eq!(
        one(
            &a,
            "select count(*) from pg_prepared_statements where name = 'p'"
        )
        .await,
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_preparing_the_same_name_get_their_own_statements() {
    let s = setup(PoolMode::Transaction, 1).await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    a.batch_execute("prepare q as select 'from a'")
        .await
        .unwrap();
    b.batch_execute("prepare q as select 'from b'")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(one(&a, "execute q").await, "from a");
        assert_eq!(one(&b, "execute q").await, "from b");
    }
    b.batch_execute("deallocate q").await.unwrap();
    assert_eq!(one(&a, "execute q").await, "from a");
    let e = err(&b, "execute q").await;
    assert_eq!(code(&e).as_deref(), Some("26000"), "{e:?}");
    // One server connection: both statements sat on it, under different names.
    b.batch_execute("prepare q as select 'b again'")
        .await
        .unwrap();
    assert_eq!(one(&b, "execute q").await, "b again");
    assert_eq!(one(&a, "execute q").await, "from a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_postgres_errors_under_the_clients_names() {
    let s = setup(PoolMode::Transaction, 2).await;
    let direct = direct(&s.pg, DB).await;
    let a = connect(s.addr).await;
    a.batch_execute("prepare p(int) as select $1")
        .await
        .unwrap();
    // Duplicate.
    let e = err(&a, "prepare p as select 2").await;
    assert_eq!(code(&e).as_deref(), Some("42P05"));
    assert_eq!(message(&e), "prepared statement \"p\" already exists");
    assert_eq!(
        e.as_db_error().unwrap().where_(),
        None,
        "no DO-block context"
    );
    // Unknown names, also in pgsluice's own name space.
    for sql in ["execute nope", "deallocate nope", "execute pgsluice_sql_1"] {
        let e = err(&a, sql).await;
        assert_eq!(code(&e).as_deref(), Some("26000"), "{sql}");
        let name = sql.split(' ').nth(1).unwrap();
        assert_eq!(
            message(&e),
            format!("prepared statement \"{name}\" does not exist")
        );
    }
    // Wrong arguments: the server's message names p, and the position points into the
    // client's text, as PostgreSQL's own answer does.
    let e = err(&a, "execute p(1, 2)").await;
    assert_eq!(code(&e).as_deref(), Some("42601"));
    assert_eq!(
        message(&e),
        "wrong number of parameters for prepared statement \"p\""
    );
    direct
        .batch_execute("prepare p(int) as select $1")
        .await
        .unwrap();
    let sql = "select 1; execute p('x')";
    let pooled = err(&a, sql).await;
    let own = direct.simple_query(sql).await.unwrap_err();
    assert_eq!(code(&pooled), code(&own));
    let pos = |e: &tokio_postgres::Error| match e.as_db_error().unwrap().position() {
        Some(ErrorPosition::Original(p)) => *p,
        other => panic!("{other:?}"),
    };
    assert_eq!(pos(&pooled), pos(&own));
    // Not transactional: a PREPARE stays after its transaction fails and rolls back.
    a.batch_execute("begin").await.unwrap();
    a.batch_execute("prepare r as select 'r'").await.unwrap();
    let e = err(&a, "select 1/0").await;
    assert_eq!(code(&e).as_deref(), Some("22012"));
    let e = err(&a, "execute r").await;
    assert_eq!(code(&e).as_deref(), Some("25P02"));
    a.batch_execute("rollback").await.unwrap();
    assert_eq!(one(&a, "execute r").await, "r");
    // A failed PREPARE leaves no name; one after an error in the same text never ran.
    let e = err(&a, "prepare m as select * from missing").await;
    assert_eq!(code(&e).as_deref(), Some("42P01"));
    let e = err(&a, "select 1/0; prepare n as select 1").await;
    assert_eq!(code(&e).as_deref(), Some("22012"));
    for sql in ["execute m", "execute n"] {
        assert_eq!(code(&err(&a, sql).await).as_deref(), Some("26000"), "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_drops_every_statement_of_the_client() {
    let s = setup(PoolMode::Transaction, 2).await;
    let a = connect(s.addr).await;
    let b = connect(s.addr).await;
    b.batch_execute("prepare kept as select 'b'").await.unwrap();
    a.batch_execute("prepare x as select 1; prepare y as select 2")
        .await
        .unwrap();
    let st = a.prepare("select 3").await.unwrap();
    assert_eq!(a.query_one(&st, &[]).await.unwrap().get::<_, i32>(0), 3);
    a.batch_execute("deallocate all").await.unwrap();
    for sql in ["execute x", "execute y"] {
        assert_eq!(code(&err(&a, sql).await).as_deref(), Some("26000"), "{sql}");
    }
    // As in PostgreSQL, protocol-level statements went too.
    let e = a.query_one(&st, &[]).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("26000"), "{e:?}");
    // Another client's statements do not.
    assert_eq!(one(&b, "execute kept").await, "b");
    // The names can be used again.
    a.batch_execute("prepare x as select 'new x'")
        .await
        .unwrap();
    assert_eq!(one(&a, "execute x").await, "new x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_bound_evicts_sql_statements_too() {
    let s = setup_with(PoolMode::Transaction, 1, |c, _| {
        c.general.max_prepared_statements = 2;
    })
    .await;
    let a = connect(s.addr).await;
    for i in 0..5 {
        a.batch_execute(&format!("prepare s{i} as select {i}"))
            .await
            .unwrap();
    }
    let held = one(&a, "select count(*) from pg_prepared_statements").await;
    assert!(held.parse::<i32>().unwrap() <= 2, "{held} statements held");
    for i in 0..5 {
        assert_eq!(one(&a, &format!("execute s{i}")).await, i.to_string());
    }
    let held = one(&a, "select count(*) from pg_prepared_statements").await;
    assert!(held.parse::<i32>().unwrap() <= 2, "{held} statements held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_works_in_the_extended_protocol_prepare_is_refused() {
    let s = setup(PoolMode::Transaction, 2).await;
    let a = connect(s.addr).await;
    let h = connect(s.addr).await;
    a.batch_execute("prepare p(int) as select $1 + 1")
        .await
        .unwrap();
    // A named statement (tokio-postgres prepare: Parse + Describe), then run on both
    // server connections: the SQL statement is prepared where the Parse goes.
    let st = a.prepare("execute p(41)").await.unwrap();
    assert_eq!(st.columns().len(), 1, "described with its row");
    for _ in 0..3 {
        // Hold one connection so that A alternates.
        h.batch_execute("begin").await.unwrap();
        assert_eq!(a.query_one(&st, &[]).await.unwrap().get::<_, i32>(0), 42);
        h.batch_execute("commit").await.unwrap();
        assert_eq!(a.query_one(&st, &[]).await.unwrap().get::<_, i32>(0), 42);
    }
    let v: i32 = a.query_one("execute p(1)", &[]).await.unwrap().get(0);
    assert_eq!(v, 2);
    // Deallocated: the driver's statement fails rather than run the old one.
    a.batch_execute("deallocate p").await.unwrap();
    let e = a.query_one(&st, &[]).await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("26000"), "{e:?}");
    // PREPARE and DEALLOCATE are refused in a Parse.
    for sql in ["prepare q as select 1", "deallocate all"] {
        let e = a.query(sql, &[]).await.unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("0A000"), "{e:?}");
        let db = e.as_db_error().unwrap();
        assert!(
            db.message().contains("extended protocol"),
            "{}",
            db.message()
        );
        assert!(db.hint().unwrap_or("").contains("simple queries"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_scripts_prepare_and_execute() {
    let s = setup(PoolMode::Transaction, 1).await;
    let other = connect(s.addr).await;
    let script = "prepare p(text) as select 'hello ' || $1;\n\
                  execute p('one');\n\
                  begin;\n\
                  execute p('two');\n\
                  commit;\n\
                  deallocate p;\n\
                  prepare p as select 'again';\n\
                  execute p;\n";
    let out = tokio::task::block_in_place(|| {
        psql(
            s.addr,
            USER,
            PASSWORD,
            DB,
            &["-v", "ON_ERROR_STOP=1"],
            script,
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello one\nhello two\nagain");
    // psql -c: one Query message with several statements.
    let out = tokio::task::block_in_place(|| {
        psql(
            s.addr,
            USER,
            PASSWORD,
            DB,
            &["-c", "prepare q as select 7; execute q; execute q"],
            "",
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "7\n7");
    // Nothing of psql's sessions answers to their names for another client.
    let e = err(&other, "execute q").await;
    assert_eq!(code(&e).as_deref(), Some("26000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_and_asyncpg_simple_queries() {
    let s = setup(PoolMode::Transaction, 2).await;
    run_python("sql_prepare.py", s.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_executes_in_the_extended_protocol() {
    let s = setup(PoolMode::Transaction, 2).await;
    let lines = run_java("JdbcSqlPrepare.java", s.addr);
    assert_eq!(
        lines,
        [
            "default_prepare=0A000",
            "extended_sum=420",
            "simple=10",
            "after_deallocate=26000",
            "OK"
        ]
    );
}
