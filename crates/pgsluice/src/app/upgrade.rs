//! Both ends of the zero-downtime upgrade (`pgsluice --upgrade CONFIG`), over the
//! channel of [`crate::upgrade`].
//!
//! Old process (`serve_control`): listens on the control socket; on a request it
//! sends a copy of each listening socket, waits for the new process's `Ready`, stops
//! its accept loops (leaving the Unix socket file to the new process), starts
//! [`client::handover::begin_handover`] and forwards each departing client; when it
//! holds no client any more it says `Done` and asks itself to stop. Until `Ready`
//! nothing has changed for it: a new process that fails or says `Error` leaves it
//! serving as before.
//!
//! New process ([`Upgrade`]): [`Upgrade::connect`] gets the listeners (handed to
//! [`super::Instance::start_with`] through [`super::InstanceOptions::inherited`]);
//! [`Upgrade::ready`], once the instance runs and the pidfile names this process,
//! says so and adopts the clients that arrive ([`client::handover::adopt`]); once the
//! old process is done, it opens the control socket for the next upgrade.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{App, Instance};
use crate::admin::StopRequest;
use crate::client::handover::{self as handover, ClientImage, Departing};
use crate::config::General;
use crate::upgrade::{
    Channel, ChannelError, ControlSocket, ListenerKind, Message, PROTOCOL_VERSION,
};

/// A listening socket of the process being upgraded, as it arrives in the new one.
#[derive(Debug)]
pub struct InheritedListener {
    /// What it is.
    pub kind: ListenerKind,
    /// Its address (`ip:port`, or the Unix socket's path).
    pub addr: String,
    /// The socket.
    pub fd: OwnedFd,
}

/// What the new process gets from the one it replaces before it starts serving.
#[derive(Debug)]
pub struct Inherited {
    /// The listening sockets.
    pub listeners: Vec<InheritedListener>,
    /// The old process's cancel keys are all below this (see
    /// [`crate::cancel::CancelRegistry::skip_pids_below`]).
    pub key_floor: i32,
}

/// How many cancel keys the old process may still issue between telling its key
/// floor and stopping its accept loops (after `Ready`): the floor it sends is that far
/// above the keys it has issued. At most one key per accepted connection.
const KEY_HEADROOM: i32 = 1 << 20;

/// How long the old process waits for the new one's `Ready` (the new one starts its
/// instance in between) before it gives the upgrade up and serves further upgrade
/// requests; also how long the new one waits for the old one's listeners.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Takes the inherited listener of this kind and address out of `list`.
pub(super) fn take(
    list: &mut Vec<InheritedListener>,
    kind: ListenerKind,
    addr: &str,
) -> Option<OwnedFd> {
    let i = list.iter().position(|l| l.kind == kind && l.addr == addr)?;
    Some(list.swap_remove(i).fd)
}

/// Why `--upgrade` failed (the running process is then untouched).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The configuration names no control socket.
    #[error("cannot find the running pgsluice: set unix_socket_dir or pidfile (the control socket lives next to one of them)")]
    NoControlSocket,
    /// Nobody answers on the control socket.
    #[error("no running pgsluice to upgrade (or it is being upgraded already): cannot connect to {}: {source}", path.display())]
    NotFound {
        /// The control socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The channel failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The running process speaks another version of the channel.
    #[error("the running pgsluice speaks upgrade protocol {0}, this one {PROTOCOL_VERSION}")]
    Version(u16),
    /// The running process said no.
    #[error("the running pgsluice refused the upgrade: {0}")]
    Refused(String),
    /// The new process gave up before saying `Ready` (seen by the old one).
    #[error("the new pgsluice gave up: {0}")]
    GaveUp(String),
    /// The other process did not answer in time.
    #[error("the other pgsluice did not answer on the upgrade channel in time")]
    Timeout,
    /// A message out of turn.
    #[error("unexpected message on the upgrade channel: {0}")]
    Unexpected(String),
}

fn unexpected(m: Option<(Message, Option<OwnedFd>)>) -> UpgradeError {
    match m {
        Some((Message::Error { text }, _)) => UpgradeError::Refused(text),
        Some((m, _)) => UpgradeError::Unexpected(format!("{m:?}")),
        None => UpgradeError::Unexpected("the channel closed".into()),
    }
}

/// New process: an upgrade in progress.
#[derive(Debug)]
pub struct Upgrade {
    ch: Channel,
    old_pid: u32,
}

impl Upgrade {
    /// Finds the running process through the control socket of `g` and receives its
    /// listening sockets.
    pub async fn connect(g: &General) -> Result<(Upgrade, Inherited), UpgradeError> {
        let path = crate::upgrade::control_path(g).ok_or(UpgradeError::NoControlSocket)?;
        tokio::time::timeout(READY_TIMEOUT, Self::exchange(path))
            .await
            .unwrap_or(Err(UpgradeError::Timeout))
    }

    async fn exchange(path: PathBuf) -> Result<(Upgrade, Inherited), UpgradeError> {
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|source| UpgradeError::NotFound { path, source })?;
        let mut ch = Channel::new(stream);
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
            pid: std::process::id(),
        };
        ch.send(&hello, None).await?;
        let old_pid = match ch.recv().await? {
            Some((Message::Hello { version, pid }, _)) if version == PROTOCOL_VERSION => pid,
            Some((Message::Hello { version, .. }, _)) => {
                return Err(UpgradeError::Version(version))
            }
            other => return Err(unexpected(other)),
        };
        let mut listeners = Vec::new();
        let key_floor = loop {
            match ch.recv().await? {
                Some((Message::Listener { kind, addr }, Some(fd))) => {
                    listeners.push(InheritedListener { kind, addr, fd });
                }
                Some((Message::ListenersSent { key_floor }, _)) => break key_floor,
                other => return Err(unexpected(other)),
            }
        };
        tracing::info!(
            old_pid,
            listeners = listeners.len(),
            "upgrade: listeners received"
        );
        let inherited = Inherited {
            listeners,
            key_floor,
        };
        Ok((Upgrade { ch, old_pid }, inherited))
    }

    /// The pid of the process being upgraded.
    pub fn old_pid(&self) -> u32 {
        self.old_pid
    }

    /// Gives up: the old process keeps serving.
    pub async fn abort(mut self, why: &str) {
        let _ = self
            .ch
            .send(
                &Message::Error {
                    text: why.to_owned(),
                },
                None,
            )
            .await;
    }

    /// The new instance runs and the pidfile names this process: tells the old one and
    /// adopts the clients it sends (a tracked background task); once the old one is
    /// done, opens the control socket for the next upgrade.
    pub async fn ready(mut self, instance: &mut Instance) -> Result<(), UpgradeError> {
        let ready = Message::Ready {
            pid: std::process::id(),
        };
        self.ch.send(&ready, None).await?;
        tracing::info!(
            old_pid = self.old_pid,
            "upgrade: serving; the old process stops accepting"
        );
        let listeners = instance.take_handoff();
        let app = instance.app().clone();
        let (ch, old_pid) = (self.ch, self.old_pid);
        app.background.clone().spawn(async move {
            adopt_all(&app, ch, old_pid).await;
            // One upgrade at a time: this process can be upgraded in turn once the
            // old one has handed everything over.
            if !app.shutdown.is_requested() {
                serve_control(&app, listeners);
            }
        });
        Ok(())
    }
}

/// New process: takes on every client the old one sends, until it says `Done`.
async fn adopt_all(app: &Arc<App>, mut ch: Channel, old_pid: u32) {
    let mut shutdown = app.shutdown.watch();
    let (mut moved, mut refused) = (0usize, 0usize);
    loop {
        let next = tokio::select! {
            r = ch.recv() => r,
            _ = shutdown.requested() => break,
        };
        match next {
            Ok(Some((Message::Client { image }, Some(fd)))) => match ClientImage::decode(&image) {
                Ok(image) => match app.adopt_client(Departing { fd, image }) {
                    Ok(()) => moved += 1,
                    Err(e) => {
                        refused += 1;
                        tracing::warn!(error = %e, "upgrade: a handed-over client was closed");
                    }
                },
                Err(e) => {
                    refused += 1;
                    tracing::warn!(error = %e, "upgrade: a handed-over client was closed");
                }
            },
            Ok(Some((Message::Done, _))) => {
                tracing::info!(
                    old_pid,
                    moved,
                    refused,
                    "upgrade: done, the old process is stopping"
                );
                return;
            }
            Ok(other) => {
                tracing::warn!(error = %unexpected(other), "upgrade: channel ended early");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "upgrade: channel failed");
                break;
            }
        }
    }
    tracing::info!(old_pid, moved, refused, "upgrade: channel closed");
}

/// Old process: binds the control socket and serves upgrade requests with copies of
/// `listeners` (a tracked background task). A failure to bind is logged: the process
/// runs, but cannot be upgraded.
pub(super) fn serve_control(app: &Arc<App>, listeners: Vec<InheritedListener>) {
    let Some(path) = crate::upgrade::control_path(&app.config().general) else {
        return;
    };
    match crate::upgrade::bind_control(&path) {
        Ok(control) => {
            tracing::debug!("upgrade control socket {}", path.display());
            app.background
                .spawn(control_loop(app.clone(), control, listeners));
        }
        Err(e) => tracing::warn!(
            error = %e,
            "cannot open the upgrade control socket {}: `--upgrade` will not find this process",
            path.display()
        ),
    }
}

async fn control_loop(app: Arc<App>, control: ControlSocket, listeners: Vec<InheritedListener>) {
    let mut shutdown = app.shutdown.watch();
    loop {
        let accepted = tokio::select! {
            r = control.listener.accept() => r,
            _ = shutdown.requested() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "upgrade control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut ch = Channel::new(stream);
        let offered = tokio::select! {
            r = tokio::time::timeout(READY_TIMEOUT, offer(&app, &mut ch, &listeners)) => {
                r.unwrap_or(Err(UpgradeError::Timeout))
            }
            _ = shutdown.requested() => break,
        };
        match offered {
            Ok(new_pid) => {
                // The socket file is the new process's now (it bound its own), and so
                // are the listening sockets: should it die, they close with it.
                drop(control);
                drop(listeners);
                hand_over(&app, ch, new_pid).await;
                return;
            }
            Err(e) => tracing::warn!(error = %e, "upgrade abandoned; still serving"),
        }
    }
    // A plain shutdown: the control socket goes with the process.
    control.remove_file();
}

/// Old process: the exchange up to the new process's `Ready`; its pid.
async fn offer(
    app: &App,
    ch: &mut Channel,
    listeners: &[InheritedListener],
) -> Result<u32, UpgradeError> {
    match ch.recv().await? {
        Some((Message::Hello { version, pid }, _)) if version == PROTOCOL_VERSION => {
            tracing::info!(
                new_pid = pid,
                "upgrade requested: handing the listeners over"
            );
        }
        Some((Message::Hello { version, .. }, _)) => {
            let text =
                format!("this pgsluice speaks upgrade protocol {PROTOCOL_VERSION}, not {version}");
            let _ = ch.send(&Message::Error { text }, None).await;
            return Err(UpgradeError::Version(version));
        }
        other => return Err(unexpected(other)),
    }
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    ch.send(&hello, None).await?;
    for l in listeners {
        let m = Message::Listener {
            kind: l.kind,
            addr: l.addr.clone(),
        };
        ch.send(&m, Some(l.fd.as_fd())).await?;
    }
    let key_floor = handover::pid_floor(&app.clients).wrapping_add(KEY_HEADROOM) & 0x7fff_ffff;
    ch.send(&Message::ListenersSent { key_floor }, None).await?;
    match ch.recv().await? {
        Some((Message::Ready { pid }, _)) => Ok(pid),
        Some((Message::Error { text }, _)) => Err(UpgradeError::GaveUp(text)),
        other => Err(unexpected(other)),
    }
}

/// Old process, after `Ready`: stop accepting, send clients over as they become idle,
/// and stop once none is left.
async fn hand_over(app: &Arc<App>, ch: Channel, new_pid: u32) {
    app.handed_over.send_replace(true);
    tracing::info!(
        new_pid,
        clients = app.tracker.live(),
        "upgrade: the new process listens; handing clients over"
    );
    let (sink, mut departing) = tokio::sync::mpsc::unbounded_channel();
    app.begin_handover(sink);
    let mut shutdown = app.shutdown.watch();
    let mut out = Forwarder {
        ch: Some(ch),
        moved: 0,
        lost: 0,
    };
    let mut open = true;
    loop {
        tokio::select! {
            d = departing.recv(), if open => match d {
                Some(d) => out.forward(d, &mut departing).await,
                None => open = false,
            },
            // A departing client leaves the tracker after it is in the queue.
            () = app.tracker.wait() => {
                while let Ok(d) = departing.try_recv() {
                    out.forward(d, &mut departing).await;
                }
                break;
            }
            _ = shutdown.requested() => break,
        }
    }
    if let Some(ch) = &mut out.ch {
        let _ = ch.send(&Message::Done, None).await;
    }
    tracing::info!(
        new_pid,
        moved = out.moved,
        lost = out.lost,
        "upgrade: no client left here; stopping"
    );
    app.request_stop(StopRequest::WaitForServers);
}

/// Old process: sends departing clients down the channel while it works.
struct Forwarder {
    /// `None` once it failed.
    ch: Option<Channel>,
    moved: usize,
    lost: usize,
}

impl Forwarder {
    async fn forward(&mut self, d: Departing, queue: &mut UnboundedReceiver<Departing>) {
        if let Some(ch) = &mut self.ch {
            let m = Message::Client {
                image: d.image.encode(),
            };
            match ch.send(&m, Some(d.fd.as_fd())).await {
                Ok(()) => {
                    self.moved += 1;
                    return;
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "upgrade: the channel to the new process failed; the clients left stay here"
                    );
                    self.ch = None;
                    // A closed sink: clients stop departing and are served here.
                    queue.close();
                }
            }
        }
        // Dropping the descriptor closes the client's connection.
        self.lost += 1;
    }
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
