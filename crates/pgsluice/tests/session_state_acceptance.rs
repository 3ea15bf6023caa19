//! Issue 17's acceptance run: transaction pooling without giving up session features.
//! One pgsluice, pool size 2, 20 clients: each LISTENs, sets its own search_path and
//! PREPAREs a statement of its own under the same name, then runs 10 transactions
//! (all 20 at once, so they keep changing server connections); every client sees its
//! own schema and its own statement every time, and every client receives each of 5
//! NOTIFYs sent by another client (100/100).

mod common;

use std::time::Duration;

use common::*;
use pgsluice::config::PoolMode;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};

const CLIENTS: usize = 20;
const TRANSACTIONS: usize = 10;
const NOTIFIES: usize = 5;

/// The rows of a simple query, each as its text columns.
async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_keep_listen_search_path_and_prepare_on_a_pool_of_two() {
    let s = setup(PoolMode::Transaction, 2).await;
    let direct = direct(&s.pg, DB).await;
    for i in 0..CLIENTS {
        direct
            .batch_execute(&format!(
                "create schema s{i} authorization {USER};
                 create table s{i}.t(x int); alter table s{i}.t owner to {USER};
                 insert into s{i}.t values ({i});"
            ))
            .await
            .unwrap();
    }

    let mut conns = Vec::new();
    for i in 0..CLIENTS {
        let conn = connect_full(s.addr).await;
        let c = &conn.client;
        c.batch_execute("LISTEN news").await.unwrap();
        c.batch_execute(&format!("SET search_path TO s{i}, public"))
            .await
            .unwrap();
        // The same name for everyone, a statement of one's own.
        c.batch_execute(&format!(
            "PREPARE mine AS SELECT {i} AS who, x, current_schema()::text FROM t"
        ))
        .await
        .unwrap();
        conns.push(conn);
    }

    // All at once: 20 clients, 2 server connections.
    let mut tasks = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..TRANSACTIONS {
                let got = rows(&conn.client, "BEGIN; EXECUTE mine; COMMIT").await;
                let want = vec![vec![i.to_string(), i.to_string(), format!("s{i}")]];
                assert_eq!(got, want, "client {i}, transaction {n}");
            }
            conn
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.expect("client task"));
    }
    // The pool's two connections, and the listener connection of the pool's hub.
    assert!(app_backends(&direct).await <= 3, "pool size respected");
    let listeners = count(
        &direct,
        "select count(*) from pg_stat_activity where usename = 'app' and query ilike 'listen%'",
    )
    .await;
    assert_eq!(
        listeners, 1,
        "one listener connection for the 20 listening clients"
    );

    // Another client notifies; every listener gets every notification, in order.
    let sender = connect(s.addr).await;
    for k in 0..NOTIFIES {
        sender
            .batch_execute(&format!("NOTIFY news, 'n{k}'"))
            .await
            .unwrap();
    }
    let mut delivered = 0;
    for (i, conn) in conns.iter_mut().enumerate() {
        let mut payloads = Vec::new();
        while payloads.len() < NOTIFIES {
            let m = tokio::time::timeout(Duration::from_secs(15), conn.messages.recv())
                .await
                .unwrap_or_else(|_| panic!("client {i}: only {payloads:?} arrived"))
                .expect("connection open");
            if let AsyncMessage::Notification(n) = m {
                assert_eq!(n.channel(), "news");
                payloads.push(n.payload().to_owned());
            }
        }
        let want: Vec<String> = (0..NOTIFIES).map(|k| format!("n{k}")).collect();
        assert_eq!(payloads, want, "client {i}");
        delivered += payloads.len();
    }
    assert_eq!(delivered, CLIENTS * NOTIFIES, "100/100");
    eprintln!("acceptance: {CLIENTS} clients x {TRANSACTIONS} transactions on a pool of 2 saw their own schema and statement every time; {delivered}/{} notifications delivered", CLIENTS * NOTIFIES);

    // Nothing of it reached a client that asked for none.
    let plain = connect(s.addr).await;
    let e = plain.batch_execute("EXECUTE mine").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("26000"));
    let path = simple_value(&plain, "show search_path").await.unwrap();
    assert_eq!(path.as_deref(), Some("\"$user\", public"));
}
