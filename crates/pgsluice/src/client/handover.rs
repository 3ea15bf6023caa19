//! Clients crossing to a new process in a zero-downtime upgrade (`pgsluice --upgrade`).
//!
//! The old process, once the new one has its listening sockets, calls
//! [`begin_handover`]: from then on every pool client that can move (see below) is taken
//! at its next idle point (a parked one at once), its socket and its [`ClientImage`] are
//! sent to the sink as a [`Departing`], and the old process forgets it. The upgrade
//! channel (`crate::upgrade`) carries them over a Unix socket (the socket with
//! SCM_RIGHTS), and the new process calls [`adopt`] for each: the client goes on
//! there, never having noticed.
//!
//! How a client is taken: [`begin_handover`] marks every client's admin entry "asked
//! to move" (the parking sweep's flag, so the idle wait checks nothing new) and wakes
//! it. A session at its idle point then stops as for parking, and on its way to the
//! lot (`task::park_client`) departs instead; the lot's keeper sends its
//! parked clients at once. A client inside a transaction is taken when the transaction
//! ends (its idle point). Clients that cannot move stay and are served here: under
//! TLS, in session mode once they hold a server (they never get back to the idle
//! point), LISTENing (their subscriptions are this process's), of a sharded database,
//! of the admin console, or with a named statement that EXECUTEs a SQL-level one.
//!
//! In the new process, [`CancelRegistry::skip_pids_below`](crate::cancel::CancelRegistry::skip_pids_below)
//! with the old process's [`pid_floor`] keeps the new process's own cancel keys (and
//! client ids) clear of those of the clients it adopts.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use pgsluice_protocol::SqlState;

use super::session::Session;
use super::task::{live, park_client, Resume};
use super::{enter, Admission, ClientContext, PoolLogin};
use crate::admin::Console;
use crate::error::ClientNotice;
use crate::net::Stream;
use crate::pool::listing::socket_endpoints;
use crate::shutdown::TaskToken;

pub use super::handover_image::{
    ClientImage, Departing, ExtraParam, HandoverSink, ImageError, PreparedImage, SqlPreparedImage,
    TrafficImage, IMAGE_VERSION, MAX_IMAGE_LEN,
};

/// Old process: from now on, every pool client that can move is sent to `sink` at its
/// next idle point, parked clients at once. Clients that cannot move (under TLS, in
/// session mode holding a server, of the admin console, of a sharded database) stay and
/// are served here until they leave.
pub fn begin_handover(ctx: &ClientContext, sink: HandoverSink) {
    ctx.handover.begin(sink);
    tracing::info!("handing clients over to the new process");
    for pool in ctx.router.pools() {
        for c in pool.clients() {
            c.ask_to_move();
        }
    }
    if let Some(lot) = &ctx.parking {
        lot.ring();
    }
}

/// Old process: where its cancel key sequence stands (see the module's header); the
/// new process passes it to `ctx.cancel.skip_pids_below` before it serves anyone.
pub fn pid_floor(ctx: &ClientContext) -> i32 {
    ctx.cancel.pid_floor()
}

/// Why a handed-over client could not be taken on (its socket is then closed).
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// Its database or user is not in this process's configuration.
    #[error("client of {database}/{user} has no pool here")]
    NoPool {
        /// The database it was logged into.
        database: String,
        /// Its user.
        user: String,
    },
    /// Its state cannot go on here: its database is sharded in this process's
    /// configuration.
    #[error("the client's database is sharded here: its session cannot be adopted")]
    Unsupported,
    /// A client limit of this process is reached (max_client_conn,
    /// max_db_client_connections, max_user_client_connections); the client is told.
    #[error("client refused: {0}")]
    Limit(String),
    /// A client here holds its cancel key's pid already.
    #[error("cancel key pid {0} is in use here")]
    KeyInUse(i32),
    /// The descriptor is not a usable TCP or Unix socket.
    #[error("client socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// New process: takes on a client handed over by the old one: places under the client
/// limits (`admission`, taken by the caller as the accept loop does), an entry in the
/// admin views, its cancel key registered, then parked (or its session started when
/// bytes came with it). Must run inside the runtime.
pub fn adopt(
    ctx: &Arc<ClientContext>,
    _console: Arc<dyn Console>,
    departing: Departing,
    admission: Admission,
    token: TaskToken,
) -> Result<(), AdoptError> {
    let Departing { fd, image } = departing;
    let socket = ClientFd::of(fd)?;
    let route = match ctx.router.route(&image.database, &image.user) {
        Ok(r) => r,
        Err(n) => {
            socket.tell(&n);
            return Err(AdoptError::NoPool {
                database: image.database,
                user: image.user,
            });
        }
    };
    if route.shards().is_some() {
        return Err(AdoptError::Unsupported);
    }
    let refuse = |socket: ClientFd, notice: ClientNotice| {
        socket.tell(&notice);
        AdoptError::Limit(notice.message)
    };
    if let Admission::Full = admission {
        let n = ClientNotice::fatal(
            SqlState::TOO_MANY_CONNECTIONS,
            "no more connections allowed (max_client_conn)",
        );
        return Err(refuse(socket, n));
    }
    let db_slot = match ctx.router.admit_db_client(&image.database) {
        Ok(s) => s,
        Err(n) => return Err(refuse(socket, n)),
    };
    let user_slot = match ctx.router.admit_user_client(&image.user) {
        Ok(s) => s,
        Err(n) => return Err(refuse(socket, n)),
    };
    let (pid, secret) = image.cancel_key;
    let cancel = ctx
        .cancel
        .register_key(pid, secret)
        .ok_or(AdoptError::KeyInUse(pid))?;
    if let Some(p) = image
        .passthrough
        .as_ref()
        .filter(|_| *route.home().key().user == *image.user)
    {
        // As a login does: every host's pool of a replicated database logs in with it.
        for pool in route.pools() {
            pool.set_passthrough(p.clone());
        }
    }
    let stream = socket.into_stream()?;
    let endpoints = socket_endpoints(&stream);
    let session = Session::from_image(ctx.clone(), route.clone(), &image, cancel);
    let login = PoolLogin {
        // The pool key holds the database name: share it, as a login does.
        database: route.home().key().database.clone(),
        route,
        user: image.user.as_str().into(),
        application_name: image.application_name.clone(),
        _slots: [db_slot, user_slot],
    };
    let o = enter(
        session,
        stream,
        login,
        endpoints,
        Some(image.connect_time_us),
        admission,
        token,
    );
    if ctx.live.load().config.general.log_connections {
        tracing::info!(
            client = pid,
            peer = %endpoints.0,
            db = %image.database,
            user = %image.user,
            "client adopted from the old process"
        );
    }
    if o.session.has_pending() {
        tokio::spawn(live(o, Resume::Fresh));
    } else if let Err(o) = park_client(ctx, o, std::time::Instant::now()) {
        tokio::spawn(live(o, Resume::Fresh));
    }
    Ok(())
}

/// A handed-over socket, by kind.
enum ClientFd {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl ClientFd {
    /// The kind of socket `fd` is: an inet socket has an inet address; anything else
    /// must be a connected Unix socket.
    fn of(fd: OwnedFd) -> std::io::Result<ClientFd> {
        let tcp = std::net::TcpStream::from(fd);
        let s = if tcp.local_addr().is_ok() {
            ClientFd::Tcp(tcp)
        } else {
            let unix = std::os::unix::net::UnixStream::from(OwnedFd::from(tcp));
            unix.local_addr()?;
            ClientFd::Unix(unix)
        };
        s.set_nonblocking()?;
        Ok(s)
    }

    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            ClientFd::Tcp(s) => s.set_nonblocking(true),
            ClientFd::Unix(s) => s.set_nonblocking(true),
        }
    }

    /// Under this process's reactor.
    fn into_stream(self) -> std::io::Result<Stream> {
        Ok(match self {
            ClientFd::Tcp(s) => Stream::from(tokio::net::TcpStream::from_std(s)?),
            ClientFd::Unix(s) => Stream::from(tokio::net::UnixStream::from_std(s)?),
        })
    }

    /// Sends `notice` without waiting (best effort: a few bytes into an idle
    /// client's empty send buffer); the socket closes when `self` drops.
    fn tell(self, notice: &ClientNotice) {
        use std::io::Write;
        let mut out = bytes::BytesMut::with_capacity(128);
        notice.write(&mut out);
        let _ = match &self {
            ClientFd::Tcp(s) => (&*s).write(&out),
            ClientFd::Unix(s) => (&*s).write(&out),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handed-over descriptor is recognised as TCP or Unix, and made non-blocking;
    /// anything else is refused.
    #[test]
    fn a_descriptor_is_taken_for_what_it_is() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (tcp, _) = listener.accept().unwrap();
        let ClientFd::Tcp(tcp) = ClientFd::of(tcp.into()).unwrap() else {
            panic!("TCP taken for Unix");
        };
        let mut b = [0; 1];
        let r = std::io::Read::read(&mut &tcp, &mut b);
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::WouldBlock);

        let (unix, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(
            ClientFd::of(unix.into()).unwrap(),
            ClientFd::Unix(_)
        ));

        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(ClientFd::of(file.into()).is_err());
    }
}
