//! Model (a): one tokio task per client, as pgsluice does. The pool is a mutex-guarded
//! stack of idle server streams plus a FIFO of waiting clients' oneshot senders; a
//! checked-out server is owned by the client task, which relays with `select!` on both
//! sockets until the transaction ends.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::{client_startup, login_reply, scan_client, scan_server, LabConfig, Scanner, Startup};

/// Idle servers and waiting clients.
#[derive(Default)]
struct Pool {
    inner: Mutex<PoolInner>,
}

#[derive(Default)]
struct PoolInner {
    idle: Vec<TcpStream>,
    waiters: VecDeque<oneshot::Sender<TcpStream>>,
}

impl Pool {
    async fn acquire(&self) -> io::Result<TcpStream> {
        let rx = {
            let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = p.idle.pop() {
                return Ok(s);
            }
            let (tx, rx) = oneshot::channel();
            p.waiters.push_back(tx);
            rx
        };
        rx.await.map_err(|_| io::Error::other("pool gone"))
    }

    fn release(&self, mut s: TcpStream) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(tx) = p.waiters.pop_front() {
            match tx.send(s) {
                Ok(()) => return,
                Err(back) => s = back, // that client left while waiting
            }
        }
        p.idle.push(s);
    }
}

/// Runs model (a): current_thread runtime for 1 thread, multi-thread otherwise.
pub fn run(cfg: &LabConfig) -> io::Result<()> {
    let rt = if cfg.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async {
        let pool = Arc::new(Pool::default());
        for _ in 0..cfg.pool.max(1) {
            let s = super::server_login(cfg.backend)?;
            s.set_nonblocking(true)?;
            pool.release(TcpStream::from_std(s)?);
        }
        let listener = TcpListener::bind(cfg.listen).await?;
        eprintln!("relay-lab listening on {}", listener.local_addr()?);
        let reply: Arc<[u8]> = login_reply().into();
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (pool, reply) = (pool.clone(), reply.clone());
            // The lab runs until killed: client tasks end with their socket.
            tokio::spawn(async move {
                let _ = client(stream, &pool, &reply).await;
            });
        }
    })
}

async fn client(mut c: TcpStream, pool: &Pool, reply: &[u8]) -> io::Result<()> {
    let mut cbuf = BytesMut::with_capacity(4096);
    let mut out = Vec::new();
    loop {
        if c.read_buf(&mut cbuf).await? == 0 {
            return Ok(());
        }
        let st = client_startup(&mut cbuf, &mut out, reply);
        c.write_all(&out).await?;
        out.clear();
        match st {
            Startup::NeedMore => {}
            Startup::Done => break,
            Startup::Reject => return Ok(()),
        }
    }
    let mut cscan = Scanner::default();
    let mut sscan = Scanner::default();
    let mut sbuf = BytesMut::with_capacity(8192);
    let mut pending = 0u32;
    loop {
        if cbuf.is_empty() && c.read_buf(&mut cbuf).await? == 0 {
            return Ok(());
        }
        let (syncs, term) = scan_client(&mut cscan, &cbuf);
        if term.is_some() {
            return Ok(()); // between transactions: nothing to forward
        }
        pending += syncs;
        let mut s = pool.acquire().await?;
        s.write_all(&cbuf).await?;
        cbuf.clear();
        let mut status = b'I';
        // Relay until every Query/Sync is answered and the server is idle.
        loop {
            tokio::select! {
                biased;
                r = s.read_buf(&mut sbuf) => {
                    if r? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let (ready, st) = scan_server(&mut sscan, &sbuf);
                    pending = pending.saturating_sub(ready);
                    status = st.unwrap_or(status);
                    c.write_all(&sbuf).await?;
                    sbuf.clear();
                }
                r = c.read_buf(&mut cbuf) => {
                    if r? == 0 {
                        return Ok(()); // mid-transaction: the server is dropped
                    }
                    let (syncs, term) = scan_client(&mut cscan, &cbuf);
                    pending += syncs;
                    let end = term.unwrap_or(cbuf.len());
                    s.write_all(&cbuf[..end]).await?;
                    cbuf.clear();
                    if term.is_some() {
                        return Ok(());
                    }
                }
            }
            if pending == 0 && status == b'I' && !sscan.mid_message() && !cscan.mid_message() {
                break;
            }
        }
        pool.release(s);
    }
}
