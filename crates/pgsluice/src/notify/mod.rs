//! LISTEN/NOTIFY for pools that share server connections (transaction and statement
//! mode).
//!
//! A `LISTEN` cannot run on a pooled connection: the subscription would stay with the
//! connection, which the next transaction hands to another client. Instead each pool
//! with listening clients keeps one connection of its own, the *listener*, outside the
//! pool's count, which LISTENs to the union of its clients' channels. What it receives
//! is queued to every client subscribed to the channel (in the order the connection got
//! it, which is PostgreSQL's commit order) and delivered when the client is idle, as
//! PostgreSQL delivers notifications between transactions.
//!
//! - [`hub`]: the sans-IO state (subscriptions, the LISTEN set, queues).
//! - [`listener`]: the task that owns the listener connection (reconnects with backoff
//!   and re-LISTENs every channel when it is lost).
//! - [`NotifyHub`]: the two joined, as a pool holds it. A client's session is its
//!   guard: dropping the session removes the client from the hub.
//!
//! This module knows nothing of pools or clients: a pool gives it a [`Connector`], and
//! a client a [`Mailbox`] to wake.

pub mod hub;
mod listener;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::oneshot;

pub use hub::{Bound, ClientId, Failure};
use hub::{Hub, Listened};

use crate::error::ServerError;
use crate::server::ServerConn;
use crate::shutdown::{ShutdownWatch, TaskTracker};
use crate::sync::LockExt;

/// How much one client's queue may hold before the client is disconnected
/// (FATAL 53200): messages, and bytes (a payload reaches 8000 bytes).
pub const QUEUE_BOUND: Bound = Bound {
    messages: 10_000,
    bytes: 16 << 20,
};

/// How long a client's LISTEN waits for the listener connection's LISTEN.
const LISTEN_WAIT: Duration = Duration::from_secs(30);

/// What a subscriber is to the hub: something to wake.
pub trait Mailbox: Send + Sync + std::fmt::Debug {
    /// Messages were queued for it (its queue was empty).
    fn mail(&self);
    /// Its queue overflowed: it must be disconnected.
    fn overflowed(&self);
    /// Its id, for logs.
    fn id(&self) -> u64;
}

/// Opens the listener connection (the pool's target, as the pool logs in).
pub trait Connector: Send + Sync {
    /// A new logged-in connection.
    fn connect(&self)
        -> Pin<Box<dyn Future<Output = Result<ServerConn, ServerError>> + Send + '_>>;
}

type Token = oneshot::Sender<Result<(), Failure>>;

/// The hub's state and whether its listener task runs, under one lock.
struct Inner {
    hub: Hub<Arc<dyn Mailbox>, Token>,
    /// Named statements of LISTEN / UNLISTEN text clients prepared (drivers that
    /// prepare every statement, asyncpg's `fetch`): the text, by client and name.
    statements: std::collections::HashMap<ClientId, std::collections::HashMap<String, String>>,
    task: bool,
    /// Shut down: no more listener task.
    closed: bool,
}

/// A pool's notification hub: the subscriptions of its clients and the listener task.
pub struct NotifyHub {
    /// The pool's name, for logs.
    label: String,
    inner: Mutex<Inner>,
    /// Wakes the listener task: a subscription changed.
    kick: tokio::sync::Notify,
    connector: Box<dyn Connector>,
    tracker: TaskTracker,
    shutdown: ShutdownWatch,
}

impl std::fmt::Debug for NotifyHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyHub")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl NotifyHub {
    /// A hub with no subscriber; its listener task starts (in `tracker`) at the first
    /// LISTEN and ends at shutdown or when no channel is left.
    pub fn new(
        label: String,
        connector: Box<dyn Connector>,
        tracker: TaskTracker,
        shutdown: ShutdownWatch,
        bound: Bound,
    ) -> NotifyHub {
        NotifyHub {
            label,
            inner: Mutex::new(Inner {
                hub: Hub::new(bound),
                statements: std::collections::HashMap::new(),
                task: false,
                closed: false,
            }),
            kick: tokio::sync::Notify::new(),
            connector,
            tracker,
            shutdown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.locked()
    }

    /// Subscribes `client` to `channel`; returns once the listener connection LISTENs
    /// to it, or with why it cannot.
    pub async fn listen(
        self: &Arc<Self>,
        client: ClientId,
        mailbox: impl FnOnce() -> Arc<dyn Mailbox>,
        channel: &str,
    ) -> Result<(), Failure> {
        let channel = hub::channel_name(channel);
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut inner = self.lock();
            if inner.closed || self.shutdown.is_requested() {
                return Err(Failure::ShuttingDown);
            }
            if let Listened::Done(_) = inner.hub.listen(client, mailbox, channel, tx) {
                return Ok(());
            }
            !std::mem::replace(&mut inner.task, true)
        };
        if start {
            self.tracker.spawn(listener::run(self.clone()));
        } else {
            self.kick.notify_one();
        }
        match tokio::time::timeout(LISTEN_WAIT, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Failure::ShuttingDown),
            Err(_) => {
                self.unlisten(client, channel);
                Err(Failure::Unreachable(format!(
                    "the notification listener did not LISTEN within {LISTEN_WAIT:?}"
                )))
            }
        }
    }

    /// `UNLISTEN channel` of `client`.
    pub fn unlisten(&self, client: ClientId, channel: &str) {
        self.lock().hub.unlisten(client, hub::channel_name(channel));
        self.kick.notify_one();
    }

    /// `UNLISTEN *` of `client`.
    pub fn unlisten_all(&self, client: ClientId) {
        self.lock().hub.unlisten_all(client);
        self.kick.notify_one();
    }

    /// Remembers that `client` prepared statement `name` with LISTEN-family `sql`.
    pub fn remember_statement(&self, client: ClientId, name: &str, sql: &str) {
        let mut inner = self.lock();
        inner
            .statements
            .entry(client)
            .or_default()
            .insert(name.to_owned(), sql.to_owned());
    }

    /// The text of `client`'s statement `name`, when it is one it prepared here.
    pub fn statement(&self, client: ClientId, name: &str) -> Option<String> {
        let inner = self.lock();
        inner.statements.get(&client)?.get(name).cloned()
    }

    /// Forgets `client`'s statement `name` (Close); whether it was one of these.
    pub fn forget_statement(&self, client: ClientId, name: &str) -> bool {
        let mut inner = self.lock();
        let Some(map) = inner.statements.get_mut(&client) else {
            return false;
        };
        let found = map.remove(name).is_some();
        if map.is_empty() {
            inner.statements.remove(&client);
        }
        found
    }

    /// Forgets `client` (it left): every subscription, its queue and its statements.
    pub fn remove(&self, client: ClientId) {
        let mut inner = self.lock();
        inner.statements.remove(&client);
        inner.hub.remove(client);
        drop(inner);
        self.kick.notify_one();
    }

    /// Appends what is queued for `client` to `out`; how many messages.
    pub fn drain(&self, client: ClientId, out: &mut BytesMut) -> usize {
        self.lock().hub.drain(client, out)
    }

    /// How many clients listen to at least one channel.
    pub fn listening_clients(&self) -> usize {
        self.lock().hub.listening_clients()
    }

    /// How many messages wait in the clients' queues.
    pub fn queued_messages(&self) -> usize {
        self.lock().hub.queued()
    }

    /// The channels the listener connection is to LISTEN to.
    pub fn channels(&self) -> Vec<String> {
        self.lock().hub.wanted()
    }

    /// Sends each settled waiter its outcome.
    fn settle(settled: Vec<(Token, Result<(), Failure>)>) {
        for (tx, outcome) in settled {
            let _ = tx.send(outcome);
        }
    }

    /// Wakes subscribers with new mail.
    fn wake(woken: Vec<Arc<dyn Mailbox>>) {
        for m in woken {
            m.mail();
        }
    }
}
