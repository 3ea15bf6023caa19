//! One stream type for TCP, Unix-domain sockets and TLS over TCP, so the rest of the
//! code is written once.
//!
//! TLS streams differ from plain sockets in two ways that matter here:
//!
//! * Writes: rustls may keep encrypted bytes that the socket did not take yet, and the
//!   relay never calls `flush` (a no-op for sockets). So a TLS write is acknowledged
//!   only once its ciphertext is in the kernel: [`Stream::poll_write`] answers
//!   `Pending` until then and the caller's retry (with the same bytes first, as every
//!   `AsyncWrite` user does) gets the count. A write is never lost or sent twice.
//! * Probes without reading ([`Stream::poll_read_ready`], [`Stream::try_read_buf`],
//!   [`Stream::is_closed_or_dirty`]): rustls may hold decrypted bytes that the socket
//!   no longer shows, so its buffer is checked first. [`Stream::is_closed_or_dirty`]
//!   is conservative: any byte waiting on the socket of an idle TLS connection (even a
//!   TLS record carrying no data, such as a session ticket) counts as dirty.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::lane::{Lane, LaneSocket, Sock};

/// A TLS connection accepted from a client (pgsluice is the TLS server).
pub type AcceptedTls = tokio_rustls::server::TlsStream<TcpStream>;
/// A TLS connection to a server (pgsluice is the TLS client).
pub type ConnectedTls = tokio_rustls::client::TlsStream<TcpStream>;

/// A connected socket: TCP, Unix-domain, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection (TCP_NODELAY set).
    Tcp(TcpStream),
    /// A Unix-domain socket connection.
    Unix(UnixStream),
    /// A TLS connection from a client.
    TlsAccepted(Box<TlsIo<AcceptedTls>>),
    /// A TLS connection to a server.
    TlsConnected(Box<TlsIo<ConnectedTls>>),
    /// A plain TCP or Unix socket in a relay lane's epoll set ([`crate::lane`]).
    Lane(LaneSocket),
    /// No socket: one lost in a failed move to a lane (the system refused the epoll
    /// registration). Reads find the end of the stream, writes fail, the liveness
    /// probe says closed: its owner ends it as it would a closed connection.
    Closed,
}

/// A TLS stream with what pgsluice keeps beside it.
#[derive(Debug)]
pub struct TlsIo<S> {
    inner: S,
    /// Plaintext bytes accepted by the TLS layer whose ciphertext is not all sent yet.
    unacked: usize,
    /// `tls-server-end-point` channel binding data (RFC 5929) of the server certificate
    /// of this connection, when it has one. Shared: every client accepted with one
    /// certificate points to the same bytes.
    end_point: Option<Arc<[u8]>>,
}

impl<S> TlsIo<S> {
    /// Wraps a TLS stream whose server certificate has the channel binding data
    /// `end_point`.
    pub fn new(inner: S, end_point: Option<Arc<[u8]>>) -> TlsIo<S> {
        TlsIo {
            inner,
            unacked: 0,
            end_point,
        }
    }

    /// The TLS stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> TlsIo<S> {
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.unacked == 0 {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            self.unacked = n;
        }
        std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        Poll::Ready(Ok(std::mem::take(&mut self.unacked)))
    }
}

/// Reads what `s` has without waiting: WouldBlock when nothing is there.
///
/// Goes through `poll_read` rather than tokio's `try_read`: a read shorter than the
/// room given tells tokio the socket is drained, so the next read waits for the
/// reactor instead of paying a system call that fails with EAGAIN.
fn try_read_now<S: AsyncRead + Unpin>(s: &mut S, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    use std::future::Future;
    use tokio::io::AsyncReadExt;
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let mut cx = Context::from_waker(Waker::noop());
    // `read_buf` fills the spare capacity without zeroing it first.
    match std::pin::pin!(s.read_buf(buf)).poll(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// Whether the peer of an idle TLS connection closed it or sent anything: rustls holds
/// plaintext or a close_notify, or the socket has bytes or EOF. Reads nothing.
fn tls_closed_or_dirty(tcp: &TcpStream, tls: &rustls::CommonState) -> bool {
    if !tls.wants_read() {
        return true;
    }
    let mut cx = Context::from_waker(Waker::noop());
    let mut probe = [0u8; 1];
    let mut rb = ReadBuf::new(&mut probe);
    !matches!(tcp.poll_peek(&mut cx, &mut rb), Poll::Pending)
}

impl Stream {
    /// Non-blocking liveness probe for an idle connection: `true` when the peer closed it
    /// or sent something unexpected. Costs no system call while the reactor has not seen
    /// the socket become readable.
    pub fn is_closed_or_dirty(&self) -> bool {
        let mut probe = [0u8; 1];
        let r = match self {
            Stream::Tcp(s) => s.try_read(&mut probe),
            Stream::Unix(s) => s.try_read(&mut probe),
            Stream::Lane(s) => return s.is_closed_or_dirty(),
            Stream::Closed => return true,
            Stream::TlsAccepted(t) => {
                let (tcp, conn) = t.inner.get_ref();
                return tls_closed_or_dirty(tcp, conn);
            }
            Stream::TlsConnected(t) => {
                let (tcp, conn) = t.inner.get_ref();
                return tls_closed_or_dirty(tcp, conn);
            }
        };
        !matches!(r, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads what is available without waiting (WouldBlock when nothing is).
    pub fn try_read_buf(&mut self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => try_read_now(s, buf),
            Stream::Unix(s) => try_read_now(s, buf),
            Stream::Lane(s) => s.try_read_buf(buf),
            Stream::Closed => Ok(0),
            Stream::TlsAccepted(t) => try_read_now(&mut t.inner, buf),
            Stream::TlsConnected(t) => try_read_now(&mut t.inner, buf),
        }
    }

    /// Ready once the socket is readable (data or EOF), without reading; registers `cx`
    /// otherwise, with no future to keep (an idle client's task stays small). For TLS:
    /// at once when rustls already holds plaintext (or a close_notify); a wake-up may
    /// also come for a TLS record without data, after which
    /// [`Stream::try_read_buf`] says WouldBlock.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            Stream::Lane(s) => s.poll_read_ready(cx),
            Stream::Closed => Poll::Ready(Ok(())),
            Stream::TlsAccepted(t) => {
                let (tcp, conn) = t.inner.get_ref();
                if !conn.wants_read() {
                    return Poll::Ready(Ok(()));
                }
                tcp.poll_read_ready(cx)
            }
            Stream::TlsConnected(t) => {
                let (tcp, conn) = t.inner.get_ref();
                if !conn.wants_read() {
                    return Poll::Ready(Ok(()));
                }
                tcp.poll_read_ready(cx)
            }
        }
    }

    /// Moves a plain socket into `lane`'s epoll set (out of tokio's reactor, or off
    /// another lane, so that its wake-ups reach the thread that uses it). A TLS stream,
    /// or a socket already on `lane`, stays as it is. A socket the system refuses to
    /// register is lost (logged) and reads as closed, which ends its connection.
    pub fn join_lane(&mut self, lane: &Lane) {
        let plain = match std::mem::replace(self, Stream::Closed) {
            Stream::Tcp(t) => t.into_std().map(Sock::Tcp),
            Stream::Unix(u) => u.into_std().map(Sock::Unix),
            // Two epoll_ctl calls, against a cross-thread wake-up at every event.
            Stream::Lane(s) if !s.is_on(lane) => Ok(s.into_sock()),
            other => {
                *self = other;
                return;
            }
        };
        *self = match plain.and_then(|p| lane.adopt(p)) {
            Ok(s) => Stream::Lane(s),
            Err(e) => {
                tracing::warn!(error = %e, "a socket could not join a relay lane; it is closed");
                Stream::Closed
            }
        };
    }

    /// On a relay lane's thread, moves the socket into that lane (see
    /// [`Stream::join_lane`]); a socket already there costs one thread-local look and
    /// no reference count. Elsewhere, nothing.
    pub fn join_current_lane(&mut self) {
        if matches!(self, Stream::Lane(s) if s.is_on_current()) {
            return;
        }
        if let Some(lane) = crate::lane::current() {
            self.join_lane(&lane);
        }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsAccepted(_) | Stream::TlsConnected(_))
    }

    /// The TLS session of a TLS stream (negotiated protocol, cipher suite, group).
    pub fn tls_state(&self) -> Option<&rustls::CommonState> {
        match self {
            Stream::Tcp(_) | Stream::Unix(_) | Stream::Lane(_) | Stream::Closed => None,
            Stream::TlsAccepted(t) => Some(t.inner.get_ref().1),
            Stream::TlsConnected(t) => Some(t.inner.get_ref().1),
        }
    }

    /// The TCP socket under a TCP or TLS stream.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Unix(_) | Stream::Lane(_) | Stream::Closed => None,
            Stream::TlsAccepted(t) => Some(t.inner.get_ref().0),
            Stream::TlsConnected(t) => Some(t.inner.get_ref().0),
        }
    }

    /// `tls-server-end-point` channel binding data of a TLS connection whose server
    /// certificate allows it (RFC 5929); `None` otherwise.
    pub fn tls_server_end_point(&self) -> Option<&[u8]> {
        match self {
            Stream::TlsAccepted(t) => t.end_point.as_deref(),
            Stream::TlsConnected(t) => t.end_point.as_deref(),
            _ => None,
        }
    }

    /// The certificate a TLS client presented (DER), if any.
    pub fn client_certificate(&self) -> Option<&[u8]> {
        match self {
            Stream::TlsAccepted(t) => t
                .inner
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref()),
            _ => None,
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        let _ = s.set_nodelay(true);
        Stream::Tcp(s)
    }
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Self {
        Stream::Unix(s)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsAccepted(t) => Pin::new(&mut t.inner).poll_read(cx, buf),
            Stream::TlsConnected(t) => Pin::new(&mut t.inner).poll_read(cx, buf),
            Stream::Lane(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsAccepted(t) => t.poll_write(cx, buf),
            Stream::TlsConnected(t) => t.poll_write(cx, buf),
            Stream::Lane(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsAccepted(t) => Pin::new(&mut t.inner).poll_flush(cx),
            Stream::TlsConnected(t) => Pin::new(&mut t.inner).poll_flush(cx),
            Stream::Lane(s) => Pin::new(s).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsAccepted(t) => Pin::new(&mut t.inner).poll_shutdown(cx),
            Stream::TlsConnected(t) => Pin::new(&mut t.inner).poll_shutdown(cx),
            Stream::Lane(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Lane(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            // One slice at a time, with the acknowledgement rule of poll_write.
            Stream::TlsAccepted(t) => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                t.poll_write(cx, first)
            }
            Stream::TlsConnected(t) => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                t.poll_write(cx, first)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        !self.is_tls()
    }
}

/// True when `stream` is a unix-socket connection from the OS user this process runs as
/// (peer credentials from the kernel; the process's own uid read from `/proc/self`).
pub fn peer_is_same_user(stream: &Stream) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Some(uid), Ok(me)) = (peer_uid(stream), std::fs::metadata("/proc/self")) else {
        return false;
    };
    uid == me.uid()
}

/// The uid of the process at the other end of a unix-socket connection (from the
/// kernel); `None` for TCP or when the kernel does not say.
pub fn peer_uid(stream: &Stream) -> Option<u32> {
    let Stream::Unix(s) = stream else {
        return None;
    };
    s.peer_cred().ok().map(|c| c.uid())
}

/// The name of the OS user `uid` (the system's user database, as `getpwuid_r`); `None`
/// when it has none. May block (NSS): call it off the async workers.
#[allow(unsafe_code)]
pub fn os_user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // `pwd` is plain old data that getpwuid_r fills (zeroed is a valid value for it);
    // `pw_name` points into `buf`, which outlives the read below.
    // SAFETY: every pointer passed is live, writable memory of the stated size; a
    // non-null `result` means `pw_name` is a NUL-terminated string.
    let name = unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pwd.pw_name).to_owned()
    };
    name.into_string().ok()
}

/// Sends a FATAL error and closes, best effort.
pub async fn send_fatal(stream: &mut Stream, notice: &crate::error::ClientNotice) {
    let mut out = bytes::BytesMut::with_capacity(128);
    notice.write(&mut out);
    // Boxed: a timer is large, and this runs once per connection at most.
    let _ = Box::pin(tokio::time::timeout(
        std::time::Duration::from_secs(2),
        async {
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
        },
    ))
    .await;
}
