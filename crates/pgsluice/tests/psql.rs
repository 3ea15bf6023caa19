//! psql through the pooler: simple queries, multi-statement scripts, `\copy` both ways,
//! and an error followed by a good query.

mod common;

use common::*;
use pgsluice::config::PoolMode;

fn run(addr: std::net::SocketAddr, script: &str) -> std::process::Output {
    tokio::task::block_in_place(|| psql(addr, USER, PASSWORD, DB, &[], script))
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_simple_and_multi_statement_queries() {
    let s = setup(PoolMode::Transaction, 2).await;
    let out = run(s.addr, "select 1 + 1;\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2");

    // A script of several statements, each its own Query message.
    let out = run(
        s.addr,
        "create table t(a int, b text);\n\
         insert into t values (1, 'one'), (2, 'two'), (3, 'three');\n\
         select sum(a) from t;\n\
         select string_agg(b, ',' order by a) from t;\n\
         select current_user, current_database();\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "6\none,two,three\napp|appdb");

    // Several statements in one Query message (psql -c): all results come back.
    let out = tokio::task::block_in_place(|| {
        psql(
            s.addr,
            USER,
            PASSWORD,
            DB,
            &["-c", "select 10; select 20; select count(*) from t"],
            "",
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10\n20\n3");

    // The data really is on the server.
    assert_eq!(pg_sql(&s.pg, "select count(*) from t"), "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_copy_in_and_out() {
    let s = setup(PoolMode::Transaction, 2).await;
    let dir = std::env::temp_dir().join(format!("pgsluice-psql-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.csv");
    let output = dir.join("out.csv");
    let mut csv = String::new();
    for i in 0..20_000 {
        csv.push_str(&format!("{i},\"row {i}, with a comma\",{}\n", i * 3));
    }
    std::fs::write(&input, &csv).unwrap();

    let script = format!(
        "create table c(id int primary key, label text, n int);\n\
         \\copy c from '{}' with (format csv)\n\
         select count(*), sum(n) from c;\n\
         \\copy (select * from c order by id) to '{}' with (format csv)\n\
         select 'after copy';\n",
        input.display(),
        output.display()
    );
    let out = run(s.addr, &script);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected_sum: i64 = (0..20_000i64).map(|i| i * 3).sum();
    assert_eq!(
        stdout(&out),
        format!("20000|{expected_sum}\nafter copy"),
        "stderr: {}",
        stderr(&out)
    );
    let copied = std::fs::read_to_string(&output).unwrap();
    assert_eq!(copied.len(), csv.len());
    assert!(copied == csv, "COPY OUT differs from what COPY IN loaded");
    assert_eq!(pg_sql(&s.pg, "select count(*) from c"), "20000");

    // A COPY that fails half way (bad row) reports the error and the session goes on.
    std::fs::write(&input, "1,dup,1\n").unwrap();
    let script = format!(
        "\\copy c from '{}' with (format csv)\nselect 'still here';\n",
        input.display()
    );
    let out = run(s.addr, &script);
    assert!(
        stderr(&out).contains("duplicate key value"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "still here");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_error_then_good_query() {
    let s = setup(PoolMode::Transaction, 1).await;
    let out = run(
        s.addr,
        "select 1/0;\n\
         select 42;\n\
         begin;\n\
         select * from no_such_table;\n\
         select 1;\n\
         rollback;\n\
         select 43;\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("division by zero"), "{err}");
    assert!(
        err.contains("relation \"no_such_table\" does not exist"),
        "{err}"
    );
    assert!(
        err.contains("current transaction is aborted"),
        "the statement after the error inside the transaction must be refused: {err}"
    );
    assert_eq!(stdout(&out), "42\n43");

    // With ON_ERROR_STOP psql exits with status 3 at the first error.
    let out = tokio::task::block_in_place(|| {
        psql(
            s.addr,
            USER,
            PASSWORD,
            DB,
            &["-v", "ON_ERROR_STOP=1"],
            "select 'before';\nselect 1/0;\nselect 'never';\n",
        )
    });
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "before");

    // And the pooler still serves a new client on its single server connection.
    let out = run(s.addr, "select 'fine';\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "fine");
}
