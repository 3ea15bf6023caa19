//! Pools for unit tests: a server target nobody listens on, settings to adjust, and
//! server connections over a local socket pair whose other end the test answers.

use std::sync::Arc;
use std::time::Duration;

use super::{Checkout, Groups, IdGen, Pool, PoolKey, PoolSettings, Start};
use crate::config::PoolMode;
use crate::net::Stream;
use crate::server::{BackendKey, RelayBuffers, ServerConn, ServerTarget};
use crate::shutdown::TaskTracker;

/// A transaction-mode pool of 5 for `db`/`user` whose server is unreachable, with
/// `adjust` applied to its settings.
pub(crate) fn pool(
    db: &str,
    user: &str,
    groups: Groups,
    adjust: impl FnOnce(&mut PoolSettings),
) -> Arc<Pool> {
    let target = ServerTarget {
        host: "127.0.0.1".into(),
        port: 1,
        database: db.into(),
        user: user.into(),
        password: None,
        application_name: None,
        tls: None,
        passthrough: None,
        scram_keys: Default::default(),
    };
    let mut settings = PoolSettings {
        size: 5,
        min_size: 0,
        mode: PoolMode::Transaction,
        wait_timeout: None,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: None,
        lifetime: None,
        reset_query: None,
        reset_query_always: false,
        reserve_size: 0,
        reserve_timeout: None,
        login_retry: None,
    };
    adjust(&mut settings);
    let key = PoolKey {
        database: db.into(),
        user: user.into(),
    };
    Pool::new(
        key,
        target,
        settings,
        Arc::new(IdGen::default()),
        groups,
        TaskTracker::default(),
    )
}

/// The server end of a [`fake_conn`]: the test plays PostgreSQL on it.
pub(crate) struct FakeServer {
    sock: tokio::net::UnixStream,
    buf: bytes::BytesMut,
}

impl FakeServer {
    /// The SQL of the next Query message pgsluice sends.
    pub(crate) async fn query(&mut self) -> String {
        use pgsluice_protocol::frame::split_message;
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(m) = split_message(&mut self.buf, 1 << 20).expect("a valid message") {
                assert_eq!(m.tag, b'Q', "expected a Query");
                let sql = m.body.strip_suffix(b"\0").expect("NUL-terminated");
                return String::from_utf8(sql.to_vec()).expect("UTF-8 SQL");
            }
            let n = self.sock.read_buf(&mut self.buf).await.expect("read");
            assert!(n > 0, "pgsluice closed the connection instead of a query");
        }
    }

    /// Answers a query: CommandComplete then ReadyForQuery(idle) when `ok`, else an
    /// ErrorResponse then ReadyForQuery(idle).
    pub(crate) async fn answer(&mut self, ok: bool) {
        use pgsluice_protocol::backend::{self, ErrorNotice, TxStatus};
        use pgsluice_protocol::SqlState;
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        if ok {
            backend::command_complete(&mut out, "DONE");
        } else {
            ErrorNotice::error(SqlState::ADMIN_SHUTDOWN, "no").write(&mut out);
        }
        backend::ready_for_query(&mut out, TxStatus::Idle);
        self.sock.write_all(&out).await.expect("write");
    }

    /// Everything pgsluice sends until it closes the connection.
    pub(crate) async fn until_closed(&mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        while self.sock.read_buf(&mut self.buf).await.expect("read") > 0 {}
        self.buf.split().to_vec()
    }

    /// Writes bytes nobody asked for: the connection becomes dirty.
    pub(crate) async fn chatter(&mut self) {
        use tokio::io::AsyncWriteExt;
        self.sock.write_all(b"N").await.expect("write");
    }
}

/// A logged-in server connection of `pool` over one end of a local socket pair (no
/// PostgreSQL), opened at `created`; the other end is returned for the test to play the
/// server. Must run inside a Tokio runtime.
pub(crate) fn fake_conn(pool: &Pool, created: std::time::Instant) -> (ServerConn, FakeServer) {
    let (ours, theirs) = tokio::net::UnixStream::pair().expect("socket pair");
    let conn = ServerConn {
        id: pool.ids.next(),
        stream: Stream::Unix(ours),
        key: Arc::new(BackendKey {
            pid: 1,
            secret: vec![0; 4],
        }),
        target: pool.target(),
        params: Default::default(),
        startup_params: Vec::new(),
        created,
        last_used: created,
        buffers: RelayBuffers {
            c2s: Box::default(),
            s2c: Box::default(),
        },
        ext: Default::default(),
    };
    let server = FakeServer {
        sock: theirs,
        buf: bytes::BytesMut::new(),
    };
    (conn, server)
}

/// A pool of `d`/`u` with groups of its own and `adjust`ed settings (size 5 otherwise).
pub(crate) fn standalone(adjust: impl FnOnce(&mut PoolSettings)) -> Arc<Pool> {
    pool("d", "u", Groups::standalone("d", "u"), adjust)
}

/// A checkout at `now` that must be allowed to open a connection, filled with a fake
/// one opened at `now`.
pub(crate) fn open(p: &Arc<Pool>, now: std::time::Instant) -> (Checkout, FakeServer) {
    match p.start_checkout(None, now).expect("checkout") {
        Start::Open(slot, _) => {
            let (conn, server) = fake_conn(p, now);
            (slot.fill(conn), server)
        }
        Start::Ready(_) => panic!("got an idle connection instead of a slot"),
        Start::Wait(_) => panic!("queued instead of getting a slot"),
    }
}
