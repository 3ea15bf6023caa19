//! The relay lab (binary `relay-lab`, issue 18): a minimal transaction-pooling proxy
//! implemented three ways, to measure the floor each I/O model puts under the hot relay
//! loop, apart from everything else pgsluice does.
//!
//! Every model has the same semantics: a trust login toward the client (answered from
//! canned bytes), a fixed pool of server connections logged in once at start, and per
//! transaction: take an idle server (a `Vec` stack; FIFO queue of clients when none is
//! idle), forward the client's bytes, forward the server's bytes back while reading
//! message headers only, and give the server back at ReadyForQuery `I` once every Query
//! and Sync sent has been answered. Terminate closes the client only.
//!
//! - [`tokio_model`]: one tokio task per client (what pgsluice does today).
//! - [`mio_model`]: one epoll loop per worker owning every connection of that worker,
//!   edge-triggered, registered once (no `epoll_ctl` per transaction).
//! - [`uring_model`]: one io_uring per worker, multishot accept and receive into a
//!   provided-buffer ring, sends as single SQEs, one `io_uring_enter` per loop turn.
//!
//! The mio and io_uring loops share the sans-IO pooling logic in [`core`]. Nothing here
//! is pgsluice: no config, no auth, no limits, no error recovery beyond closing.

pub mod core;
pub mod mio_model;
pub mod tokio_model;
pub mod uring_model;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use bytes::BytesMut;
use pgsluice_protocol::backend::{self, TxStatus};
use pgsluice_protocol::startup::{parse_startup, write_startup, StartupPacket};

/// Which I/O model runs the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// One tokio task per client.
    Tokio,
    /// One epoll (mio) loop per worker.
    Mio,
    /// One io_uring loop per worker.
    Uring,
}

/// What the lab runs with.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The I/O model.
    pub model: Model,
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// Address of the backend (trust auth, e.g. pgsluice-fakepg).
    pub backend: SocketAddr,
    /// Server connections in total (split evenly between mio/uring workers).
    pub pool: usize,
    /// Worker threads (tokio: runtime workers, 1 = current_thread; mio/uring: loops).
    pub threads: usize,
}

/// Runs the lab until the process is killed.
pub fn run(cfg: &LabConfig) -> io::Result<()> {
    match cfg.model {
        Model::Tokio => tokio_model::run(cfg),
        Model::Mio => spawn_loops(cfg, mio_model::run_loop),
        Model::Uring => spawn_loops(cfg, uring_model::run_loop),
    }
}

/// Starts `cfg.threads` independent loops, each with its own SO_REUSEPORT listener and
/// `pool / threads` servers, and waits for them.
fn spawn_loops(
    cfg: &LabConfig,
    body: fn(TcpListener, Vec<TcpStream>) -> io::Result<()>,
) -> io::Result<()> {
    let threads = cfg.threads.max(1);
    let mut handles = Vec::new();
    for i in 0..threads {
        let listener = reuseport_listener(cfg.listen)?;
        let share = cfg.pool / threads + usize::from(i < cfg.pool % threads);
        let servers = (0..share.max(1))
            .map(|_| server_login(cfg.backend))
            .collect::<io::Result<Vec<_>>>()?;
        handles.push(std::thread::spawn(move || body(listener, servers)));
    }
    eprintln!("relay-lab listening on {}", cfg.listen);
    for h in handles {
        h.join()
            .map_err(|_| io::Error::other("a loop panicked"))??;
    }
    Ok(())
}

/// A non-blocking listener with SO_REUSEPORT, so that several loops share one port.
pub fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Connects to the backend and logs in (trust) with a blocking socket; returns the
/// connection idle, with TCP_NODELAY, still blocking.
pub fn server_login(backend: SocketAddr) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(backend)?;
    s.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    write_startup(&mut buf, &[("user", "u"), ("database", "db")]);
    s.write_all(&buf)?;
    let mut scan = Scanner::default();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("backend closed during login"));
        }
        let mut ready = false;
        scan.feed(&chunk[..n], |tag, _, _| ready |= tag == b'Z');
        if ready {
            return Ok(s);
        }
    }
}

/// The canned login answer: AuthenticationOk, ParameterStatus, BackendKeyData,
/// ReadyForQuery.
pub fn login_reply() -> Vec<u8> {
    let mut b = BytesMut::new();
    backend::auth_ok(&mut b);
    for (k, v) in [
        ("server_version", "15.0 (relay-lab)"),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
    ] {
        backend::parameter_status(&mut b, k, v);
    }
    backend::backend_key_data(&mut b, 4242, 7919);
    backend::ready_for_query(&mut b, TxStatus::Idle);
    b.to_vec()
}

/// Where a client's startup phase stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    /// Needs more bytes.
    NeedMore,
    /// Logged in; whatever is left in the buffer is protocol traffic.
    Done,
    /// Not something the lab serves (cancel, bad packet): close.
    Reject,
}

/// Consumes startup packets from `buf`, writing the answers (`N` to SSLRequest and
/// GSSENCRequest, `reply` to the StartupMessage) to `out`.
pub fn client_startup(buf: &mut BytesMut, out: &mut Vec<u8>, reply: &[u8]) -> Startup {
    loop {
        match parse_startup(buf) {
            Ok(None) => return Startup::NeedMore,
            Ok(Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest)) => out.push(b'N'),
            Ok(Some(StartupPacket::Startup { .. })) => {
                out.extend_from_slice(reply);
                return Startup::Done;
            }
            Ok(Some(_)) | Err(_) => return Startup::Reject,
        }
    }
}

/// Walks a byte stream of protocol messages by their headers only (tag + be32 length),
/// across reads of any size. For ReadyForQuery (`Z`) it also reads the status byte.
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    hdr: [u8; 6],
    have: usize,
    skip: usize,
}

impl Scanner {
    /// Feeds `data`; calls `on(tag, status, at)` for each message whose header ends in
    /// it, `status` being ReadyForQuery's status byte (0 for other tags) and `at` the
    /// offset in `data` where the message starts (0 if it started in an earlier call).
    pub fn feed(&mut self, data: &[u8], mut on: impl FnMut(u8, u8, usize)) {
        let mut i = 0;
        while i < data.len() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() - i);
                self.skip -= n;
                i += n;
                continue;
            }
            let at = if self.have == 0 { i } else { 0 };
            while i < data.len() {
                self.hdr[self.have] = data[i];
                self.have += 1;
                i += 1;
                if self.have == self.need() {
                    break;
                }
            }
            if self.have < self.need() {
                return;
            }
            let need = self.need();
            let len = u32::from_be_bytes([self.hdr[1], self.hdr[2], self.hdr[3], self.hdr[4]]);
            self.skip = (len as usize + 1).saturating_sub(need);
            self.have = 0;
            on(self.hdr[0], if need == 6 { self.hdr[5] } else { 0 }, at);
        }
    }

    fn need(&self) -> usize {
        if self.have > 0 && self.hdr[0] == b'Z' {
            6
        } else {
            5
        }
    }

    /// True when the stream stopped inside a message.
    pub fn mid_message(&self) -> bool {
        self.have > 0 || self.skip > 0
    }
}

/// Scans client bytes: how many Query/Sync messages they hold (each will be answered by
/// one ReadyForQuery), and where a Terminate starts, if one does.
pub fn scan_client(scan: &mut Scanner, data: &[u8]) -> (u32, Option<usize>) {
    let mut syncs = 0;
    let mut term = None;
    scan.feed(data, |tag, _, at| match tag {
        b'Q' | b'S' => syncs += 1,
        b'X' if term.is_none() => term = Some(at),
        _ => {}
    });
    (syncs, term)
}

/// Scans server bytes: how many ReadyForQuery they hold and the last one's status.
pub fn scan_server(scan: &mut Scanner, data: &[u8]) -> (u32, Option<u8>) {
    let mut ready = 0;
    let mut status = None;
    scan.feed(data, |tag, st, _| {
        if tag == b'Z' {
            ready += 1;
            status = Some(st);
        }
    });
    (ready, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Vec<u8> {
        let mut b = BytesMut::new();
        backend::command_complete(&mut b, "SELECT 1");
        backend::ready_for_query(&mut b, TxStatus::Idle);
        backend::ready_for_query(&mut b, TxStatus::InTransaction);
        b.to_vec()
    }

    #[test]
    fn scanner_finds_ready_for_query_at_any_split() {
        let bytes = answer();
        for cut in 0..=bytes.len() {
            let mut s = Scanner::default();
            let (n1, st1) = scan_server(&mut s, &bytes[..cut]);
            let (n2, st2) = scan_server(&mut s, &bytes[cut..]);
            assert_eq!(n1 + n2, 2, "cut at {cut}");
            assert_eq!(st2.or(st1), Some(b'T'));
            assert!(!s.mid_message());
        }
    }

    #[test]
    fn client_scan_counts_syncs_and_finds_terminate() {
        let mut b = BytesMut::new();
        pgsluice_protocol::frontend::query(&mut b, "select 1");
        pgsluice_protocol::frontend::sync(&mut b);
        let x_at = b.len();
        pgsluice_protocol::frontend::terminate(&mut b);
        assert_eq!(scan_client(&mut Scanner::default(), &b), (2, Some(x_at)));
    }

    #[test]
    fn startup_answers_ssl_then_logs_in() {
        let mut buf = BytesMut::new();
        pgsluice_protocol::startup::write_ssl_request(&mut buf);
        write_startup(&mut buf, &[("user", "u")]);
        let mut out = Vec::new();
        assert_eq!(client_startup(&mut buf, &mut out, b"R"), Startup::Done);
        assert_eq!(out, b"NR");
    }
}
