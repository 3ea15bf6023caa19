//! Model (b): one epoll loop (mio) per worker owning every client and server socket of
//! that worker. Each socket is registered once, edge-triggered, for reading and writing:
//! no `epoll_ctl` per transaction. A read shorter than the buffer is taken as "drained"
//! (a stream socket's next arrival raises a new edge), which saves the EAGAIN read per
//! event. Out buffers are written after all events of one `epoll_wait` are handled.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};

use mio::net::{TcpListener as MioListener, TcpStream as MioStream};
use mio::{Events, Interest, Poll, Token};

use super::core::{Core, Id};
use super::login_reply;

const LISTENER: Token = Token(usize::MAX);
const CHUNK: usize = 16 * 1024;

struct Loop {
    poll: Poll,
    core: Core,
    socks: Vec<Option<MioStream>>,
}

/// Runs one worker's loop on `listener` with `servers` (logged in, blocking) as its pool.
pub fn run_loop(listener: TcpListener, servers: Vec<TcpStream>) -> io::Result<()> {
    let poll = Poll::new()?;
    let mut listener = MioListener::from_std(listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut lp = Loop {
        poll,
        core: Core::new(login_reply()),
        socks: Vec::new(),
    };
    for s in servers {
        s.set_nonblocking(true)?;
        let id = lp.core.add_server();
        lp.insert(id, MioStream::from_std(s))?;
    }
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; CHUNK];
    loop {
        if let Err(e) = lp.poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events {
            if ev.token() == LISTENER {
                lp.accept(&listener)?;
                continue;
            }
            let id = ev.token().0;
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                lp.read(id, &mut chunk);
            }
            if ev.is_writable() {
                lp.flush(id);
            }
        }
        while let Some(id) = lp.core.next_dirty() {
            lp.flush(id);
        }
        while let Some(id) = lp.core.next_closed() {
            lp.socks[id] = None; // closing the fd also removes it from the epoll set
            lp.core.release_id(id);
        }
    }
}

impl Loop {
    fn insert(&mut self, id: Id, mut s: MioStream) -> io::Result<()> {
        self.poll.registry().register(
            &mut s,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if self.socks.len() <= id {
            self.socks.resize_with(id + 1, || None);
        }
        self.socks[id] = Some(s);
        Ok(())
    }

    fn accept(&mut self, listener: &MioListener) -> io::Result<()> {
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    let id = self.core.add_client();
                    self.insert(id, s)?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("relay-lab: accept: {e}");
                    return Ok(());
                }
            }
        }
    }

    fn read(&mut self, id: Id, chunk: &mut [u8]) {
        loop {
            let Some(s) = self.socks.get_mut(id).and_then(Option::as_mut) else {
                return;
            };
            match s.read(chunk) {
                Ok(0) => return self.core.on_eof(id),
                Ok(n) => {
                    self.core.on_data(id, &chunk[..n]);
                    if n < chunk.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.core.on_eof(id),
            }
        }
    }

    fn flush(&mut self, id: Id) {
        let Some(s) = self.socks.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let out = self.core.out(id);
        while !out.is_empty() {
            match s.write(out) {
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.core.on_eof(id),
            }
        }
    }
}
