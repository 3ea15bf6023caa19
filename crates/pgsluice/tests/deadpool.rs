//! deadpool-postgres used as an application would: a pool of 16 client connections
//! over pgsluice in transaction mode with 3 server connections, many concurrent tasks
//! running money transfers. Totals must come out exact.

mod common;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use pgsluice::config::PoolMode;
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

const ACCOUNTS: i32 = 20;
const START_BALANCE: i64 = 1000;
const TASKS: u64 = 60;
const TRANSFERS_PER_TASK: u64 = 15;
const SERVER_POOL: usize = 3;

#[tokio::test(flavor = "multi_thread")]
async fn deadpool_transfers_over_transaction_pool() {
    let s = setup(PoolMode::Transaction, SERVER_POOL).await;
    let mgr = Manager::from_config(
        app_config(s.addr),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    let pool = Pool::builder(mgr).max_size(16).build().unwrap();

    {
        let c = pool.get().await.unwrap();
        c.batch_execute(&format!(
            "create table accounts(id int primary key, balance bigint not null);
             insert into accounts select g, {START_BALANCE} from generate_series(1, {ACCOUNTS}) g;
             create table ledger(id bigserial primary key, src int, dst int, amount bigint);"
        ))
        .await
        .unwrap();
    }

    let committed = Arc::new(AtomicU64::new(0));
    let rolled_back = Arc::new(AtomicU64::new(0));
    let max_backends = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let pool = pool.clone();
        let committed = committed.clone();
        let rolled_back = rolled_back.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..TRANSFERS_PER_TASK {
                let mut client = pool.get().await.expect("deadpool get");
                let n = t * TRANSFERS_PER_TASK + i;
                let src = (n % ACCOUNTS as u64) as i32 + 1;
                let dst = ((n * 7 + 3) % ACCOUNTS as u64) as i32 + 1;
                if src == dst {
                    continue;
                }
                let amount = (n % 13 + 1) as i64;
                let tx = client.transaction().await.expect("begin");
                // Lock in id order so concurrent transfers cannot deadlock.
                let (first, second) = (src.min(dst), src.max(dst));
                for id in [first, second] {
                    let delta = if id == src { -amount } else { amount };
                    let updated = tx
                        .execute(
                            "update accounts set balance = balance + $1 where id = $2",
                            &[&delta, &id],
                        )
                        .await
                        .expect("update");
                    assert_eq!(updated, 1);
                }
                tx.execute(
                    "insert into ledger(src, dst, amount) values ($1, $2, $3)",
                    &[&src, &dst, &amount],
                )
                .await
                .expect("insert");
                if n % 5 == 1 {
                    tx.rollback().await.expect("rollback");
                    rolled_back.fetch_add(1, Ordering::Relaxed);
                } else {
                    tx.commit().await.expect("commit");
                    committed.fetch_add(1, Ordering::Relaxed);
                }
                // A consistent read outside any transaction (one round trip).
                let total: i64 = client
                    .query_typed("select sum(balance)::int8 from accounts", &[])
                    .await
                    .expect("sum")[0]
                    .get(0);
                assert_eq!(total, START_BALANCE * ACCOUNTS as i64);
            }
        }));
    }
    let direct = direct(&s.pg, DB).await;
    // Samples the server backends while the transfers run (dropped when they end).
    let sampler = {
        let max = max_backends.clone();
        let direct = &direct;
        async move {
            loop {
                let n = app_backends(direct).await;
                max.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    let workers = async {
        for t in tasks {
            t.await.expect("task panicked");
        }
    };
    let done = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::select! {
            _ = workers => {}
            () = sampler => {}
        }
    })
    .await;
    done.expect("transfers did not finish within 60 s");

    let committed = committed.load(Ordering::Relaxed);
    let rolled_back = rolled_back.load(Ordering::Relaxed);
    assert!(committed > 0 && rolled_back > 0);
    // Checked directly on PostgreSQL.
    let row = direct
        .query_one(
            "select (select sum(balance) from accounts)::int8, (select count(*) from ledger)::int8",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), START_BALANCE * ACCOUNTS as i64);
    assert_eq!(row.get::<_, i64>(1) as u64, committed);
    let mismatched = direct
        .query_one(
            "select count(*) from accounts a where a.balance <> $1::int8
               - coalesce((select sum(amount) from ledger where src = a.id), 0)::int8
               + coalesce((select sum(amount) from ledger where dst = a.id), 0)",
            &[&START_BALANCE],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(mismatched, 0, "balances disagree with the ledger");
    let max = max_backends.load(Ordering::Relaxed);
    assert!(
        (1..=SERVER_POOL as i64).contains(&max),
        "PostgreSQL saw {max} backends for a pool of {SERVER_POOL}"
    );
    let status = pool.status();
    assert!(
        status.size > SERVER_POOL,
        "deadpool opened only {} clients",
        status.size
    );

    // The application's own type lookups work too (typed parameter, prepared in a tx).
    let mut c = pool.get().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let v: i64 = tx
        .query_typed_one("select $1::int8 + 1", &[(&41i64, Type::INT8)])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 42);
    tx.commit().await.unwrap();
}
