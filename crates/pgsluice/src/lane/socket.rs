//! A socket on a lane: the plain socket, and its readiness word that the lane's epoll
//! events set and failed system calls clear.
//!
//! The word holds four readiness bits and a tick that every event advances. A read
//! that finds nothing (or reads less than it had room for: the socket is drained)
//! clears the readable bit only if no event came since the word was read before the
//! call, the rule that keeps an edge-triggered registration from losing a wake-up.
//! "Closed" bits are sticky: the end of a stream is reported once by epoll and stays.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Lane;
use crate::sync::LockExt;

const READABLE: usize = 1;
const WRITABLE: usize = 2;
const READ_CLOSED: usize = 4;
const WRITE_CLOSED: usize = 8;
const TICK: usize = 16;

const CAN_READ: usize = READABLE | READ_CLOSED;
const CAN_WRITE: usize = WRITABLE | WRITE_CLOSED;

/// A plain socket a lane can hold.
#[derive(Debug)]
pub enum Sock {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// A Unix-domain socket.
    Unix(std::os::unix::net::UnixStream),
}

impl Sock {
    pub(super) fn fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        }
    }

    // The system calls go through rustix, straight to the kernel: libc's wrappers
    // of recv and send are cancellation points, which cost about 120 instructions a
    // transaction in switching asynchronous cancellation on and off (callgrind).

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(rustix::net::recv(self, buf, RecvFlags::empty())?.0)
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(self, buf, SendFlags::NOSIGNAL)?)
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(rustix::io::writev(self, bufs)?)
    }
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }
}

/// A socket's readiness, shared by the lane (which sets it) and the socket's user.
#[derive(Debug)]
pub(super) struct Io {
    state: AtomicUsize,
    reader: WakerSlot,
    writer: WakerSlot,
}

/// The waker of a socket's user in one direction.
///
/// Registering is the common case of every poll that finds the socket not ready, and
/// it is almost always the same task again: the slot keeps the stored waker's data
/// and vtable addresses beside it, so that case is two loads, no lock. The stored
/// waker keeps its data alive, so no other waker can have the same data address while
/// it is stored. (A socket has one user per direction at a time.)
#[derive(Debug, Default)]
struct WakerSlot {
    waker: Mutex<Option<Waker>>,
    data: AtomicUsize,
    vtable: AtomicUsize,
}

impl WakerSlot {
    fn register(&self, w: &Waker) {
        let (data, vtable) = (w.data() as usize, std::ptr::from_ref(w.vtable()) as usize);
        if self.data.load(Ordering::Acquire) == data
            && self.vtable.load(Ordering::Acquire) == vtable
        {
            return;
        }
        let mut slot = self.waker.locked();
        if !slot.as_ref().is_some_and(|s| s.will_wake(w)) {
            *slot = Some(w.clone());
        }
        self.data.store(data, Ordering::Release);
        self.vtable.store(vtable, Ordering::Release);
    }

    fn wake(&self) {
        if let Some(w) = &*self.waker.locked() {
            w.wake_by_ref();
        }
    }
}

impl Io {
    /// Assumed ready both ways: the first call finds out (at most one EAGAIN).
    pub(super) fn new() -> Io {
        Io {
            state: AtomicUsize::new(READABLE | WRITABLE),
            reader: WakerSlot::default(),
            writer: WakerSlot::default(),
        }
    }

    /// An epoll event for this socket (on the lane's thread).
    pub(super) fn event(&self, ev: &mio::event::Event) {
        let mut bits = 0;
        if ev.is_readable() {
            bits |= READABLE;
        }
        if ev.is_read_closed() || ev.is_error() {
            bits |= READ_CLOSED;
        }
        if ev.is_writable() {
            bits |= WRITABLE;
        }
        if ev.is_write_closed() || ev.is_error() {
            bits |= WRITE_CLOSED;
        }
        let prev = match self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some((s | bits).wrapping_add(TICK))
            }) {
            Ok(prev) | Err(prev) => prev,
        };
        // Only a bit that was clear can have a user waiting for it: a user waits only
        // after it saw the bit clear (twice, around registering its waker), and the
        // event that set it since woke that user. Most events say "writable" with the
        // socket never having been full, so the writer is not woken for nothing.
        // Wakers stay registered: the socket's user is the same task from one
        // transaction to the next, so it is not cloned again each time.
        let new = bits & !prev;
        if new & CAN_READ != 0 {
            self.reader.wake();
        }
        if new & CAN_WRITE != 0 {
            self.writer.wake();
        }
    }

    /// The state word when `mask` is ready; else registers `cx` and checks again.
    fn ready(&self, mask: usize, cx: &mut Context<'_>) -> Poll<usize> {
        let s = self.state.load(Ordering::Acquire);
        if s & mask != 0 {
            return Poll::Ready(s);
        }
        if mask == CAN_READ {
            self.reader.register(cx.waker());
        } else {
            self.writer.register(cx.waker());
        }
        let s = self.state.load(Ordering::Acquire);
        if s & mask != 0 {
            Poll::Ready(s)
        } else {
            Poll::Pending
        }
    }

    /// Clears `bit`, unless an event came since `seen` was read.
    fn clear(&self, seen: usize, bit: usize) {
        let _ = self
            .state
            .compare_exchange(seen, seen & !bit, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// A read's result, with the readable bit cleared (unless an event came since
    /// `seen`) when it shows the socket drained: nothing there, or less than the
    /// `room` it was given.
    fn after_read(&self, seen: usize, r: io::Result<usize>, room: usize) -> io::Result<usize> {
        let drained = match &r {
            Ok(n) => *n > 0 && *n < room,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        if drained {
            self.clear(seen, READABLE);
        }
        r
    }

    fn readable_now(&self) -> Option<usize> {
        let s = self.state.load(Ordering::Acquire);
        (s & CAN_READ != 0).then_some(s)
    }
}

/// A socket registered with a lane. Usable from any thread; its wake-ups come from
/// the lane's epoll set.
#[derive(Debug)]
pub struct LaneSocket {
    sock: Option<Sock>,
    io: std::sync::Arc<Io>,
    lane: Lane,
    token: usize,
}

impl LaneSocket {
    pub(super) fn new(sock: Sock, io: std::sync::Arc<Io>, lane: Lane, token: usize) -> Self {
        LaneSocket {
            sock: Some(sock),
            io,
            lane,
            token,
        }
    }

    fn sock(&self) -> &Sock {
        // Only `into_sock` takes it, consuming the socket.
        self.sock
            .as_ref()
            .expect("a lane socket holds its socket until into_sock")
    }

    /// The plain socket, out of the lane's epoll set (non-blocking).
    pub fn into_sock(mut self) -> Sock {
        let sock = self.sock.take().expect("a lane socket holds its socket");
        self.lane.forget(self.token, Some(sock.fd()));
        sock
    }

    /// Whether the socket is in `lane`'s epoll set.
    pub fn is_on(&self, lane: &Lane) -> bool {
        std::sync::Arc::ptr_eq(&self.lane.shared, &lane.shared)
    }

    /// Whether the socket is in the epoll set of the lane this thread runs.
    pub fn is_on_current(&self) -> bool {
        super::is_current(&self.lane)
    }

    /// The plain socket, to look at (addresses, credentials).
    pub fn get_ref(&self) -> &Sock {
        self.sock()
    }

    /// Ready once the socket is readable (data or its end), without reading.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.ready(CAN_READ, cx).map(|_| Ok(()))
    }

    /// Reads into `buf` without waiting: WouldBlock when nothing is there.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(seen) = self.io.readable_now() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        self.read_seen(seen, buf)
    }

    /// Reads into the spare capacity of `buf` without waiting (WouldBlock when
    /// nothing is there), without zeroing it first.
    pub fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let Some(seen) = self.io.readable_now() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let room = buf.capacity() - buf.len();
        loop {
            let read = rustix::net::recv(self.sock(), buf.spare_capacity_mut(), RecvFlags::empty())
                .map(|((filled, _), _)| filled.len());
            let n = match read {
                Err(Errno::INTR) => continue,
                r => self.io.after_read(seen, r.map_err(io::Error::from), room)?,
            };
            #[allow(unsafe_code)]
            // SAFETY: the kernel wrote the first `n` bytes of the spare capacity:
            // rustix returns exactly them as the initialised part of the buffer it
            // was given, and `n <= room`.
            unsafe {
                buf.set_len(buf.len() + n);
            }
            return Ok(n);
        }
    }

    fn read_seen(&self, seen: usize, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            return match self.sock().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => self.io.after_read(seen, r, buf.len()),
            };
        }
    }

    /// Whether an idle connection's peer closed it or sent something: a peek, paid
    /// only when the lane saw the socket turn readable.
    pub fn is_closed_or_dirty(&self) -> bool {
        let Some(seen) = self.io.readable_now() else {
            return false;
        };
        let mut probe = [0u8; 1];
        match rustix::net::recv(
            self.sock(),
            &mut probe[..],
            rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
        ) {
            Err(rustix::io::Errno::AGAIN) => {
                self.io.clear(seen, READABLE);
                false
            }
            _ => true,
        }
    }

    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&Sock) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let seen = std::task::ready!(self.io.ready(CAN_WRITE, cx));
            match write(self.sock()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.io.clear(seen, WRITABLE);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return Poll::Ready(r),
            }
        }
    }
}

impl Drop for LaneSocket {
    fn drop(&mut self) {
        // Closing the descriptor takes it out of the epoll set; the token goes back.
        if self.sock.is_some() {
            self.lane.forget(self.token, None);
        }
    }
}

impl AsyncRead for LaneSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let seen = std::task::ready!(this.io.ready(CAN_READ, cx));
            // Zeroes only what was never initialised (the relay's buffers are).
            let dst = buf.initialize_unfilled();
            match this.read_seen(seen, dst) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for LaneSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |s| s.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |s| s.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = match self.sock() {
            Sock::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Sock::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
        Poll::Ready(match r {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}
