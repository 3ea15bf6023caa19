//! The sans-IO core of a pool's notification hub: who listens to what, what the
//! listener connection must LISTEN or UNLISTEN next, and each client's queue of
//! messages to deliver. No socket, no clock, no task: the listener task
//! ([`super::listener`]) feeds it what its connection says and sends what it asks;
//! clients subscribe and drain through [`super::NotifyHub`].
//!
//! The connection's LISTEN set is reconciled, not commanded: the hub knows which
//! channels have subscribers and which ones the connection listens to, and
//! [`Hub::next_op`] hands out one LISTEN or UNLISTEN at a time to close the gap. A
//! reconnect is then just "the connection listens to nothing": every channel with a
//! subscriber is LISTENed again.
//!
//! `S` is what the hub keeps of a subscriber to wake it (the client's admin entry);
//! `W` is a waiter's token, handed back with the outcome once the LISTEN it waits for
//! has succeeded or failed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use pgsluice_protocol::backend::{ErrorNotice, Severity};
use pgsluice_protocol::SqlState;

/// A client's id (its [`crate::pool::ClientInfo::id`]).
pub type ClientId = u64;

/// PostgreSQL's longest identifier in bytes (NAMEDATALEN - 1): longer channel names
/// are truncated by the server, so they are here too.
pub const MAX_CHANNEL_BYTES: usize = 63;

/// The message queued to every client that was listening when the listener
/// connection was lost, once every channel is LISTENed again.
pub const LOST_MESSAGE: &str = "pgsluice: the notification listener's server connection was lost and re-established; notifications sent in between may have been lost";

/// A channel name as the server keeps it: truncated to [`MAX_CHANNEL_BYTES`] on a
/// character boundary.
pub fn channel_name(raw: &str) -> &str {
    if raw.len() <= MAX_CHANNEL_BYTES {
        return raw;
    }
    let mut end = MAX_CHANNEL_BYTES;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    &raw[..end]
}

/// What the listener connection must run next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `LISTEN channel`.
    Listen(String),
    /// `UNLISTEN channel`.
    Unlisten(String),
}

impl Op {
    /// The statement, the channel quoted as an identifier.
    pub fn sql(&self) -> String {
        let (verb, ch) = match self {
            Op::Listen(ch) => ("LISTEN", ch),
            Op::Unlisten(ch) => ("UNLISTEN", ch),
        };
        format!("{verb} \"{}\"", ch.replace('"', "\"\""))
    }

    fn channel(&self) -> &str {
        match self {
            Op::Listen(ch) | Op::Unlisten(ch) => ch,
        }
    }
}

/// Why a LISTEN a client waits for did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server refused the LISTEN (SQLSTATE and message as sent).
    Rejected {
        /// SQLSTATE.
        code: String,
        /// Message.
        message: String,
    },
    /// The listener connection could not be opened.
    Unreachable(String),
    /// pgsluice is shutting down.
    ShuttingDown,
}

/// What [`Hub::listen`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Listened<W> {
    /// The client is subscribed now: the token comes back.
    Done(W),
    /// The channel must be LISTENed first; the token is handed back with the outcome.
    Waiting,
}

/// Whom a delivery concerns.
#[derive(Debug)]
pub struct Fanout<S> {
    /// Subscribers whose queue was empty: wake them.
    pub wake: Vec<S>,
    /// Subscribers whose queue just overflowed: disconnect them.
    pub overflow: Vec<S>,
}

impl<S> Default for Fanout<S> {
    fn default() -> Self {
        Fanout {
            wake: Vec::new(),
            overflow: Vec::new(),
        }
    }
}

/// How much a client's queue may hold before the client is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Messages.
    pub messages: usize,
    /// Bytes (notification payloads reach 8000 bytes each).
    pub bytes: usize,
}

/// One subscribed client.
#[derive(Debug)]
struct Sub<S> {
    handle: S,
    /// Its channels; `true` once active (its LISTEN answered).
    channels: BTreeMap<String, bool>,
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
    /// Its queue overflowed: it gets nothing more and is being disconnected.
    overflowed: bool,
}

/// One channel some client subscribes to, or the connection still listens to.
#[derive(Debug, Default)]
struct Chan {
    members: BTreeSet<ClientId>,
    /// The listener connection LISTENs to it (its LISTEN was answered).
    listened: bool,
}

/// The listener connection as the hub sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// Not connected.
    Down,
    /// Connected, at most one statement in flight.
    Up(Option<Op>),
}

/// A client waiting for its LISTEN.
#[derive(Debug)]
struct Waiter<W> {
    client: ClientId,
    channel: String,
    token: W,
}

/// The hub's state: subscriptions, the connection's LISTEN set, queues.
#[derive(Debug)]
pub struct Hub<S, W> {
    bound: Bound,
    subs: HashMap<ClientId, Sub<S>>,
    chans: BTreeMap<String, Chan>,
    waiters: Vec<Waiter<W>>,
    /// Channels whose LISTEN state may differ from what their subscribers want.
    dirty: BTreeSet<String>,
    link: Link,
    /// Clients that were listening when the connection was lost, told once every
    /// channel is LISTENed again.
    lossy: BTreeSet<ClientId>,
}

impl<S: Clone, W> Hub<S, W> {
    /// An empty hub whose queues hold up to `bound`.
    pub fn new(bound: Bound) -> Self {
        Hub {
            bound,
            subs: HashMap::new(),
            chans: BTreeMap::new(),
            waiters: Vec::new(),
            dirty: BTreeSet::new(),
            link: Link::Down,
            lossy: BTreeSet::new(),
        }
    }

    /// Subscribes `client` to `channel` (already truncated, see [`channel_name`]).
    /// Done at once when the connection listens to it already; else the token waits
    /// for the outcome of the channel's LISTEN.
    pub fn listen(
        &mut self,
        client: ClientId,
        handle: impl FnOnce() -> S,
        channel: &str,
        token: W,
    ) -> Listened<W> {
        let ready = self.is_listened(channel);
        let sub = self.subs.entry(client).or_insert_with(|| Sub {
            handle: handle(),
            channels: BTreeMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            overflowed: false,
        });
        if sub.channels.get(channel) == Some(&true) {
            return Listened::Done(token);
        }
        sub.channels.insert(channel.to_owned(), ready);
        let chan = self.chans.entry(channel.to_owned()).or_default();
        chan.members.insert(client);
        if ready {
            return Listened::Done(token);
        }
        self.dirty.insert(channel.to_owned());
        self.waiters.push(Waiter {
            client,
            channel: channel.to_owned(),
            token,
        });
        Listened::Waiting
    }

    /// Whether the connection listens to `channel` and no UNLISTEN of it is in flight.
    fn is_listened(&self, channel: &str) -> bool {
        self.chans.get(channel).is_some_and(|c| c.listened)
            && !matches!(&self.link, Link::Up(Some(Op::Unlisten(ch))) if ch == channel)
    }

    /// `UNLISTEN channel` of `client`.
    pub fn unlisten(&mut self, client: ClientId, channel: &str) {
        if let Some(sub) = self.subs.get_mut(&client) {
            sub.channels.remove(channel);
        }
        self.waiters
            .retain(|w| !(w.client == client && w.channel == channel));
        self.leave(client, channel);
    }

    /// `UNLISTEN *` of `client`.
    pub fn unlisten_all(&mut self, client: ClientId) {
        let channels = match self.subs.get_mut(&client) {
            Some(sub) => std::mem::take(&mut sub.channels),
            None => return,
        };
        self.waiters.retain(|w| w.client != client);
        for ch in channels.keys() {
            self.leave(client, ch);
        }
    }

    /// Forgets `client` altogether (it left), its queue included.
    pub fn remove(&mut self, client: ClientId) {
        self.unlisten_all(client);
        self.subs.remove(&client);
        self.lossy.remove(&client);
    }

    /// Takes `client` out of `channel`'s members; the channel is UNLISTENed when it
    /// was the last one.
    fn leave(&mut self, client: ClientId, channel: &str) {
        let Some(chan) = self.chans.get_mut(channel) else {
            return;
        };
        chan.members.remove(&client);
        if chan.members.is_empty() {
            if chan.listened {
                self.dirty.insert(channel.to_owned());
            } else if !matches!(&self.link, Link::Up(Some(op)) if op.channel() == channel) {
                self.chans.remove(channel);
                self.dirty.remove(channel);
            }
        }
    }

    /// The next statement for the listener connection, when it is up and idle and a
    /// channel's LISTEN state must change; it is then in flight until [`Hub::op_done`].
    pub fn next_op(&mut self) -> Option<Op> {
        if self.link != Link::Up(None) {
            return None;
        }
        while let Some(ch) = self.dirty.pop_first() {
            let Some(chan) = self.chans.get(&ch) else {
                continue;
            };
            let op = match (chan.members.is_empty(), chan.listened) {
                (false, false) => Op::Listen(ch),
                (true, true) => Op::Unlisten(ch),
                (true, false) => {
                    self.chans.remove(&ch);
                    continue;
                }
                (false, true) => continue,
            };
            self.link = Link::Up(Some(op.clone()));
            return Some(op);
        }
        None
    }

    /// The statement in flight was answered: `Ok`, or the server's error. Returns the
    /// waiters it settles, with their outcome, and the subscribers to wake (the
    /// "may have been lost" notice, once the last channel is LISTENed again).
    #[allow(clippy::type_complexity)]
    pub fn op_done(
        &mut self,
        result: Result<(), Failure>,
    ) -> (Vec<(W, Result<(), Failure>)>, Vec<S>) {
        let Link::Up(Some(op)) = std::mem::replace(&mut self.link, Link::Up(None)) else {
            return (Vec::new(), Vec::new());
        };
        let mut settled = Vec::new();
        match op {
            Op::Listen(ch) => {
                let ok = result.is_ok();
                let mut members = Vec::new();
                if let Some(chan) = self.chans.get_mut(&ch) {
                    chan.listened = ok;
                    members.extend(chan.members.iter().copied());
                    if chan.members.is_empty() {
                        self.dirty.insert(ch.clone());
                    }
                }
                // Pending members become active, or leave when the LISTEN failed;
                // members already active (from before a reconnect) stay.
                for id in members {
                    let Some(sub) = self.subs.get_mut(&id) else {
                        continue;
                    };
                    match sub.channels.get_mut(&ch) {
                        Some(active) if !*active && ok => *active = true,
                        Some(false) => {
                            sub.channels.remove(&ch);
                            self.leave(id, &ch);
                        }
                        _ => {}
                    }
                }
                let (mine, rest) = std::mem::take(&mut self.waiters)
                    .into_iter()
                    .partition(|w| w.channel == ch);
                self.waiters = rest;
                settled.extend(mine.into_iter().map(|w| (w.token, result.clone())));
            }
            Op::Unlisten(ch) => {
                if let Some(chan) = self.chans.get_mut(&ch) {
                    chan.listened = false;
                    if chan.members.is_empty() {
                        self.chans.remove(&ch);
                    } else {
                        self.dirty.insert(ch);
                    }
                }
            }
        }
        (settled, self.resubscribed())
    }

    /// After a reconnect, once every channel is LISTENed again: queues the notice to
    /// every client that was listening when the connection was lost.
    fn resubscribed(&mut self) -> Vec<S> {
        let settled = self.link == Link::Up(None)
            && self
                .chans
                .values()
                .all(|c| c.listened || c.members.is_empty());
        if self.lossy.is_empty() || !settled {
            return Vec::new();
        }
        let mut notice = BytesMut::new();
        ErrorNotice {
            severity: Severity::Warning,
            code: SqlState::WARNING,
            message: LOST_MESSAGE,
            detail: None,
            hint: Some("re-read whatever state the notifications announce"),
        }
        .write(&mut notice);
        let notice = notice.freeze();
        let mut fan = Fanout::default();
        for id in std::mem::take(&mut self.lossy) {
            if let Some(sub) = self.subs.get_mut(&id) {
                push(sub, &notice, self.bound, &mut fan);
            }
        }
        fan.wake
    }

    /// The listener connection is up (and listens to nothing yet): every channel with
    /// subscribers is to be LISTENed.
    pub fn connected(&mut self) {
        self.link = Link::Up(None);
        self.chans.retain(|_, c| {
            c.listened = false;
            !c.members.is_empty()
        });
        self.dirty = self.chans.keys().cloned().collect();
    }

    /// The listener connection was lost: nothing is LISTENed any more, and every
    /// client listening now is told once its channels are LISTENed again.
    pub fn lost(&mut self) {
        if matches!(self.link, Link::Up(_)) {
            for (id, sub) in &self.subs {
                if sub.channels.values().any(|active| *active) {
                    self.lossy.insert(*id);
                }
            }
        }
        self.link = Link::Down;
        self.chans.retain(|_, c| {
            c.listened = false;
            !c.members.is_empty()
        });
        self.dirty.clear();
    }

    /// Connecting failed: every client waiting for a LISTEN gets `why`, and leaves
    /// the channel it waited for. Clients already listening stay (the connection is
    /// retried).
    pub fn fail_waiters(&mut self, why: &Failure) -> Vec<(W, Result<(), Failure>)> {
        let waiters = std::mem::take(&mut self.waiters);
        let mut settled = Vec::with_capacity(waiters.len());
        for w in waiters {
            if let Some(sub) = self.subs.get_mut(&w.client) {
                if sub.channels.get(&w.channel) == Some(&false) {
                    sub.channels.remove(&w.channel);
                }
            }
            self.leave(w.client, &w.channel);
            settled.push((w.token, Err(why.clone())));
        }
        settled
    }

    /// A NotificationResponse (the whole message, `msg`) for `channel` came: queued
    /// to every active subscriber, in arrival order.
    pub fn deliver(&mut self, channel: &str, msg: &Bytes) -> Fanout<S> {
        let mut fan = Fanout::default();
        let Some(chan) = self.chans.get(channel) else {
            return fan;
        };
        for id in &chan.members {
            let Some(sub) = self.subs.get_mut(id) else {
                continue;
            };
            if sub.channels.get(channel) == Some(&true) {
                push(sub, msg, self.bound, &mut fan);
            }
        }
        fan
    }

    /// Appends `client`'s queued messages to `out` and empties its queue; how many.
    pub fn drain(&mut self, client: ClientId, out: &mut BytesMut) -> usize {
        let Some(sub) = self.subs.get_mut(&client) else {
            return 0;
        };
        let n = sub.queue.len();
        out.reserve(sub.queued_bytes);
        for m in sub.queue.drain(..) {
            out.extend_from_slice(&m);
        }
        sub.queued_bytes = 0;
        n
    }

    /// Whether `client` has messages queued.
    pub fn has_queued(&self, client: ClientId) -> bool {
        self.subs.get(&client).is_some_and(|s| !s.queue.is_empty())
    }

    /// The channels `client` subscribes to.
    pub fn channels_of(&self, client: ClientId) -> Vec<String> {
        self.subs
            .get(&client)
            .map(|s| s.channels.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The channels the listener connection should LISTEN to (those with subscribers).
    pub fn wanted(&self) -> Vec<String> {
        self.chans
            .iter()
            .filter(|(_, c)| !c.members.is_empty())
            .map(|(ch, _)| ch.clone())
            .collect()
    }

    /// How many messages wait in the queues, over every client.
    pub fn queued(&self) -> usize {
        self.subs.values().map(|s| s.queue.len()).sum()
    }

    /// How many clients listen to at least one channel.
    pub fn listening_clients(&self) -> usize {
        self.subs
            .values()
            .filter(|s| !s.channels.is_empty())
            .count()
    }

    /// Whether the listener has nothing to do: no channel wanted or listened, no
    /// statement in flight, no waiter.
    pub fn is_idle(&self) -> bool {
        self.chans.is_empty() && self.waiters.is_empty() && !matches!(self.link, Link::Up(Some(_)))
    }
}

/// Queues `msg` to `sub`, unless its queue would pass `bound`: it then overflows.
fn push<S: Clone>(sub: &mut Sub<S>, msg: &Bytes, bound: Bound, fan: &mut Fanout<S>) {
    if sub.overflowed {
        return;
    }
    if sub.queue.len() >= bound.messages || sub.queued_bytes + msg.len() > bound.bytes {
        sub.overflowed = true;
        sub.queue = VecDeque::new();
        sub.queued_bytes = 0;
        fan.overflow.push(sub.handle.clone());
        return;
    }
    if sub.queue.is_empty() {
        fan.wake.push(sub.handle.clone());
    }
    sub.queued_bytes += msg.len();
    sub.queue.push_back(msg.clone());
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
