//! Model (c): one io_uring per worker. Multishot accept on the listener, one multishot
//! receive per socket into a provided-buffer ring (the kernel picks a buffer per
//! arrival; the bytes are copied into the core and the buffer goes straight back), and
//! one send SQE per socket with bytes to write. Every loop turn is one
//! `io_uring_enter`: it submits all the SQEs the previous turn queued and waits for at
//! least one completion. The ring is single-issuer with deferred task running, so the
//! kernel runs completions only inside that call.
//!
//! This is the only module of the lab with `unsafe`: the SQE pointers and the buffer
//! ring are shared with the kernel.
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io::{self, ErrorKind};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::core::{Core, Id};
use super::login_reply;

const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const BGID: u16 = 0;
const BUFS: u16 = 1024;
const BUF_LEN: usize = 4096;

/// A ring of provided buffers (`IORING_REGISTER_PBUF_RING`): the kernel takes a buffer
/// from its head for each receive; we give buffers back at its tail.
struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    mem: *mut u8,
    mem_layout: Layout,
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<BufRing> {
        let ring_layout =
            Layout::from_size_align(BUFS as usize * 16, 4096).map_err(io::Error::other)?;
        let mem_layout =
            Layout::from_size_align(BUFS as usize * BUF_LEN, 4096).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size; null is checked right after.
        let (ring, mem) = unsafe {
            (
                alloc_zeroed(ring_layout).cast::<BufRingEntry>(),
                alloc_zeroed(mem_layout),
            )
        };
        if ring.is_null() || mem.is_null() {
            return Err(io::Error::other("out of memory"));
        }
        let mut br = BufRing {
            ring,
            ring_layout,
            mem,
            mem_layout,
            tail: 0,
        };
        for bid in 0..BUFS {
            br.give_back(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Queues buffer `bid` at the tail (visible to the kernel after [`BufRing::publish`]).
    fn give_back(&mut self, bid: u16) {
        let idx = (self.tail & (BUFS - 1)) as usize;
        // SAFETY: idx < BUFS, inside the ring allocation; the kernel reads entries only
        // between its head and the published tail, and this one is past the tail.
        let e = unsafe { &mut *self.ring.add(idx) };
        // SAFETY: bid < BUFS, so the buffer lies inside `mem`.
        e.set_addr(unsafe { self.mem.add(bid as usize * BUF_LEN) } as u64);
        e.set_len(BUF_LEN as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: `ring` is the ring's first entry, page-aligned and initialised; the
        // tail field is shared with the kernel, hence the atomic release store.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast_mut();
            (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed to us.
    fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < BUFS && len <= BUF_LEN);
        // SAFETY: in bounds (checked); the kernel does not write a buffer it handed out
        // until `give_back` returns it, which needs `&mut self` while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.mem.add(bid as usize * BUF_LEN), len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts. `Uring` drops the ring (and so
        // the kernel's use of these buffers) before this.
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            dealloc(self.mem, self.mem_layout);
        }
    }
}

/// The driver's side of one connection.
#[derive(Default)]
struct Conn {
    stream: Option<TcpStream>,
    /// Bytes of the send in flight; untouched while `sending` (the SQE points into it).
    inflight: Vec<u8>,
    sent: usize,
    sending: bool,
    recv_armed: bool,
    closing: bool,
}

/// Field order matters: the ring drops first, so no operation still points at `conns`'
/// send buffers or at `bufs` when they are freed.
struct Uring {
    ring: IoUring,
    conns: Vec<Conn>,
    bufs: BufRing,
    core: Core,
}

fn ud(kind: u64, id: Id) -> u64 {
    ((id as u64) << 2) | kind
}

/// Runs one worker's loop on `listener` with `servers` (logged in, blocking) as its pool.
pub fn run_loop(listener: TcpListener, servers: Vec<TcpStream>) -> io::Result<()> {
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(16384)
        .build(4096)
        .or_else(|_| IoUring::new(4096))?;
    let bufs = BufRing::new()?;
    // SAFETY: the ring memory is page-aligned, BUFS entries long, and lives in `Uring`
    // next to the IoUring, which is dropped first.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring as u64, BUFS, BGID, 0)?;
    }
    let mut u = Uring {
        ring,
        conns: Vec::new(),
        bufs,
        core: Core::new(login_reply()),
    };
    u.push(
        opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
            .build()
            .user_data(ACCEPT),
    )?;
    for s in servers {
        s.set_nonblocking(true)?;
        let id = u.core.add_server();
        u.insert(id, s)?;
    }
    let mut cqes = Vec::with_capacity(1024);
    loop {
        match u.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        cqes.clear();
        cqes.extend(
            u.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, res, flags) in &cqes {
            let id = (data >> 2) as Id;
            match data & 3 {
                ACCEPT => u.accepted(&listener, res, flags)?,
                RECV => u.received(id, res, flags)?,
                _ => u.sent(id, res)?,
            }
        }
        u.bufs.publish();
        while let Some(id) = u.core.next_closed() {
            let c = &mut u.conns[id];
            c.closing = true;
            if let Some(s) = &c.stream {
                // Ends the multishot receive (it completes with 0) and any send.
                let _ = s.shutdown(Shutdown::Both);
            }
            u.maybe_free(id);
        }
        while let Some(id) = u.core.next_dirty() {
            u.start_send(id)?;
        }
    }
}

impl Uring {
    fn push(&mut self, e: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry points only at memory that outlives it: send SQEs at
            // `Conn::inflight`, not touched until their completion; receives at the
            // buffer ring. The ring drops before both.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn insert(&mut self, id: Id, stream: TcpStream) -> io::Result<()> {
        if self.conns.len() <= id {
            self.conns.resize_with(id + 1, Conn::default);
        }
        let fd = stream.as_raw_fd();
        self.conns[id] = Conn {
            stream: Some(stream),
            ..Conn::default()
        };
        self.arm_recv(id, fd)
    }

    fn arm_recv(&mut self, id: Id, fd: i32) -> io::Result<()> {
        self.conns[id].recv_armed = true;
        self.push(
            opcode::RecvMulti::new(Fd(fd), BGID)
                .build()
                .user_data(ud(RECV, id)),
        )
    }

    fn accepted(&mut self, listener: &TcpListener, res: i32, flags: u32) -> io::Result<()> {
        if res >= 0 {
            // SAFETY: a successful accept completion hands us a new descriptor we own.
            let s = unsafe { TcpStream::from_raw_fd(res) };
            let _ = s.set_nodelay(true);
            let id = self.core.add_client();
            self.insert(id, s)?;
        } else {
            eprintln!("relay-lab: accept: {}", io::Error::from_raw_os_error(-res));
        }
        if !cqueue::more(flags) {
            let e = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
                .build()
                .user_data(ACCEPT);
            self.push(e)?;
        }
        Ok(())
    }

    fn received(&mut self, id: Id, res: i32, flags: u32) -> io::Result<()> {
        if let Some(bid) = cqueue::buffer_select(flags) {
            if res > 0 {
                self.core.on_data(id, self.bufs.get(bid, res as usize));
            }
            self.bufs.give_back(bid);
        }
        let closing = self.conns[id].closing;
        let alive = res > 0 || res == -libc::ENOBUFS;
        if !alive && !closing {
            self.core.on_eof(id);
        }
        if !cqueue::more(flags) {
            self.conns[id].recv_armed = false;
            match &self.conns[id].stream {
                Some(s) if alive && !closing => {
                    let fd = s.as_raw_fd();
                    self.arm_recv(id, fd)?;
                }
                _ => self.maybe_free(id),
            }
        }
        Ok(())
    }

    fn sent(&mut self, id: Id, res: i32) -> io::Result<()> {
        let c = &mut self.conns[id];
        c.sending = false;
        if res < 0 {
            c.inflight.clear();
            if !c.closing {
                self.core.on_eof(id);
            }
            self.maybe_free(id);
            return Ok(());
        }
        c.sent += res as usize;
        if c.sent < c.inflight.len() {
            return self.send_inflight(id);
        }
        c.inflight.clear();
        c.sent = 0;
        self.maybe_free(id);
        self.start_send(id)
    }

    /// Moves the core's out bytes of `id` into its send buffer and submits them, unless
    /// a send is already in flight (its completion calls this again).
    fn start_send(&mut self, id: Id) -> io::Result<()> {
        let c = &mut self.conns[id];
        let out = self.core.out(id);
        if c.sending || c.closing || c.stream.is_none() || out.is_empty() {
            return Ok(());
        }
        std::mem::swap(out, &mut c.inflight);
        c.sent = 0;
        self.send_inflight(id)
    }

    fn send_inflight(&mut self, id: Id) -> io::Result<()> {
        let c = &mut self.conns[id];
        let Some(s) = &c.stream else { return Ok(()) };
        let rest = &c.inflight[c.sent..];
        let e = opcode::Send::new(Fd(s.as_raw_fd()), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud(SEND, id));
        c.sending = true;
        self.push(e)
    }

    /// Closes and frees `id` once the core closed it and nothing in flight refers to it.
    fn maybe_free(&mut self, id: Id) {
        let c = &mut self.conns[id];
        if c.closing && !c.sending && !c.recv_armed {
            *c = Conn::default();
            self.core.release_id(id);
        }
    }
}
