//! A controllable TCP proxy for fault injection: [`FaultProxy`] forwards
//! connections from an ephemeral port on 127.0.0.1 to an upstream address (a
//! PostgreSQL cluster) and can simulate network failures on command:
//!
//! - [`FaultProxy::cut`]: every open connection is closed on both sides, and new
//!   connections are accepted and closed at once until [`FaultProxy::resume`]
//!   (a network outage);
//! - [`FaultProxy::blackhole`]: nothing is forwarded any more, but every socket
//!   stays open and new connections are accepted and held (a partition: bytes
//!   already read are kept and delivered, in order, after a resume);
//! - [`FaultProxy::resume`]: back to forwarding.
//!
//! Plain std threads (two per connection plus the acceptor); meant for tests
//! with a handful to a few hundred connections.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a [`FaultProxy`] currently does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Bytes are forwarded both ways.
    Forward,
    /// Sockets stay open, nothing is forwarded; new connections are held.
    Blackhole,
    /// Open connections were closed; new ones are closed as soon as accepted.
    Down,
}

/// A TCP proxy between tests and an upstream server that can cut or stall the
/// network on command. Drop closes the listener and every connection.
///
/// ```no_run
/// use pgsluice_testkit::{FaultProxy, PgCluster};
///
/// let pg = PgCluster::start()?;
/// let proxy = FaultProxy::start(pg.addr())?;
/// // Point the pooler's backend at 127.0.0.1:proxy.port() instead of pg.port().
/// proxy.blackhole(); // stall everything
/// proxy.resume();    // held bytes flow again
/// proxy.cut();       // close every connection; refuse new ones until resume
/// proxy.resume();
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    /// Signalled on every mode change (blackholed pumps wait on it).
    changed: Condvar,
}

struct State {
    mode: ProxyMode,
    /// Bumped by `cut`: pumps of connections from an older epoch stop.
    epoch: u64,
    next_id: u64,
    /// Open connections: (id, client side, upstream side).
    open: Vec<(u64, TcpStream, TcpStream)>,
    accepted: u64,
    stopping: bool,
}

impl FaultProxy {
    /// Listens on 127.0.0.1:0 and forwards every accepted connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State {
                mode: ProxyMode::Forward,
                epoch: 0,
                next_id: 0,
                open: Vec::new(),
                accepted: 0,
                stopping: false,
            }),
            changed: Condvar::new(),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The upstream address.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.shared.lock().mode
    }

    /// Connections accepted since start (including those closed at once while down).
    pub fn accepted(&self) -> u64 {
        self.shared.lock().accepted
    }

    /// Connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.shared.lock().open.len()
    }

    /// Closes every open connection on both sides (the peers see EOF) and closes
    /// new connections as soon as they are accepted, until [`FaultProxy::resume`].
    pub fn cut(&self) {
        let mut st = self.shared.lock();
        st.mode = ProxyMode::Down;
        st.epoch += 1;
        close_all(&mut st);
        self.shared.changed.notify_all();
    }

    /// Stops forwarding without closing anything: open connections stall, new
    /// connections are accepted (and connected upstream) but stall too.
    pub fn blackhole(&self) {
        self.shared.lock().mode = ProxyMode::Blackhole;
        self.shared.changed.notify_all();
    }

    /// Forwards again; bytes held during a blackhole are delivered.
    pub fn resume(&self) {
        self.shared.lock().mode = ProxyMode::Forward;
        self.shared.changed.notify_all();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stopping = true;
            st.epoch += 1;
            close_all(&mut st);
            self.shared.changed.notify_all();
        }
        // Wake the acceptor; it sees `stopping` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn close_all(st: &mut State) {
    for (_, client, server) in st.open.drain(..) {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        let Ok(client) = incoming else { continue };
        {
            let mut st = shared.lock();
            if st.stopping {
                return;
            }
            st.accepted += 1;
            if st.mode == ProxyMode::Down {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
        }
        let s = shared.clone();
        let _ = std::thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || connect_upstream(client, s));
    }
}

/// Connects to the upstream and starts the two pumps of one connection.
fn connect_upstream(client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(10)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (id, epoch) = {
        let mut st = shared.lock();
        if st.stopping || st.mode == ProxyMode::Down {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) else {
            return;
        };
        st.next_id += 1;
        let id = st.next_id;
        st.open.push((id, c, s));
        (id, st.epoch)
    };
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        forget(&shared, id);
        return;
    };
    let s = shared.clone();
    let up = std::thread::Builder::new()
        .name("fault-proxy-up".into())
        .spawn(move || pump(client, server2, &s, id, epoch));
    if up.is_err() {
        forget(&shared, id);
        return;
    }
    pump(server, client2, &shared, id, epoch);
}

/// Copies `from` to `to` until either side ends or the connection is cut,
/// holding each chunk while the proxy is blackholed.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, id: u64, epoch: u64) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut st = shared.lock();
            while st.mode == ProxyMode::Blackhole && st.epoch == epoch && !st.stopping {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.epoch != epoch || st.stopping || st.mode == ProxyMode::Down {
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // One side ended: end the whole connection, as a router would.
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    forget(shared, id);
}

fn forget(shared: &Shared, id: u64) {
    shared.lock().open.retain(|(i, _, _)| *i != id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An upstream echo server.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = io::copy(&mut r, &mut s);
                });
            }
        });
        addr
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    fn connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        s
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn forwards_blackholes_cuts_and_resumes() {
        let p = FaultProxy::start(echo()).unwrap();
        let mut a = connect(p.addr(), Duration::from_secs(10));
        assert_eq!(roundtrip(&mut a, b"hello").unwrap(), b"hello");
        assert_eq!(p.open_connections(), 1);

        // Blackhole: no answer, but the socket stays open; held bytes arrive after resume.
        p.blackhole();
        assert_eq!(p.mode(), ProxyMode::Blackhole);
        a.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        a.write_all(b"held").unwrap();
        let mut b = [0u8; 4];
        let e = a.read(&mut b).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e:?}"
        );
        // A new connection is accepted and held too.
        let mut c = connect(p.addr(), Duration::from_millis(300));
        c.write_all(b"new").unwrap();
        assert!(c.read(&mut b).is_err());
        p.resume();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        a.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"held");
        let mut b3 = [0u8; 3];
        c.read_exact(&mut b3).unwrap();
        assert_eq!(&b3, b"new");
        wait_until("two open connections", || p.open_connections() == 2);

        // Cut: both see EOF; new connections are closed at once.
        p.cut();
        assert_eq!(a.read(&mut b).unwrap_or(0), 0);
        assert_eq!(c.read(&mut b).unwrap_or(0), 0);
        assert_eq!(p.open_connections(), 0);
        let mut d = connect(p.addr(), Duration::from_secs(10));
        let _ = d.write_all(b"x");
        assert_eq!(d.read(&mut b).unwrap_or(0), 0);

        // Resume: new connections work again.
        p.resume();
        let mut e = connect(p.addr(), Duration::from_secs(10));
        assert_eq!(roundtrip(&mut e, b"again").unwrap(), b"again");
        assert!(p.accepted() >= 4);
    }

    #[test]
    fn a_blackholed_connection_ends_when_cut() {
        let p = FaultProxy::start(echo()).unwrap();
        let mut a = connect(p.addr(), Duration::from_secs(10));
        assert_eq!(roundtrip(&mut a, b"x").unwrap(), b"x");
        p.blackhole();
        a.write_all(b"stuck").unwrap();
        p.cut();
        let mut b = [0u8; 8];
        assert_eq!(a.read(&mut b).unwrap_or(0), 0);
        wait_until("no open connection", || p.open_connections() == 0);
    }

    #[test]
    fn drop_closes_connections() {
        let p = FaultProxy::start(echo()).unwrap();
        let mut a = connect(p.addr(), Duration::from_secs(10));
        assert_eq!(roundtrip(&mut a, b"x").unwrap(), b"x");
        let addr = p.addr();
        drop(p);
        let mut b = [0u8; 1];
        assert_eq!(a.read(&mut b).unwrap_or(0), 0);
        // The listener is gone.
        assert!(TcpStream::connect(addr).is_err());
    }
}
