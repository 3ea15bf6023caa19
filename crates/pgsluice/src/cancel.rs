//! Cancel keys: pgsluice issues its own BackendKeyData to clients and maps each key to
//! the server connection that client is using at that moment.
//!
//! A CancelRequest arrives on a new connection; it is forwarded (over another new
//! connection) to the PostgreSQL backend the client is using, or dropped harmlessly
//! when the client holds no server connection, as PostgreSQL drops unknown keys.
//!
//! With peering (`peer_id` > 0), keys follow PgBouncer's layout so that processes of
//! a group can route each other's cancels: of the 8 key bytes (pid then secret, both
//! big-endian), bytes 1 and 2 hold the issuing process's peer id (low byte first),
//! byte 0 loses its sign bit (the pid stays positive), and the two low bits of byte 7
//! are a forwarding TTL, 3 when issued and lowered by one at each forward
//! ([`route`]). The other 45 bits stay random or sequential.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::server::{BackendKey, ServerTarget};
use crate::sync::LockExt;

/// Where a cancel for a client goes right now.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// The server address.
    pub target: Arc<ServerTarget>,
    /// PostgreSQL's key for the backend.
    pub key: Arc<BackendKey>,
}

#[derive(Debug)]
struct Entry {
    secret: [u8; 4],
    /// The server connection the client last used, kept between its transactions: a
    /// client that gets the same connection again only sets `active`.
    last: Mutex<Option<CancelTarget>>,
    /// Address of `last`'s backend key (0 for none), to recognise it without the lock.
    /// `last` holds that key alive, so the address cannot be reused meanwhile.
    last_key: AtomicUsize,
    /// True while the client uses `last` (or, with `shards`, its shard connections).
    active: AtomicBool,
    /// A client of a sharded database: its targets (one per shard connection it holds)
    /// are in the registry's `shard_targets`, not in `last`.
    shards: AtomicBool,
}

impl Entry {
    /// A client's entry, holding no server connection yet.
    fn new(secret: [u8; 4]) -> Arc<Entry> {
        Arc::new(Entry {
            secret,
            last: Mutex::new(None),
            last_key: AtomicUsize::new(0),
            active: AtomicBool::new(false),
            shards: AtomicBool::new(false),
        })
    }
}

/// The forwarding TTL bits of a peered key (the low bits of its last byte).
const TTL_MASK: u8 = 0x03;

/// Where a CancelRequest goes, decided from its key alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelRoute {
    /// One of this process's keys: look it up here, with this secret (the TTL bits
    /// restored as issued).
    Local {
        /// The secret to look up.
        secret: Vec<u8>,
    },
    /// Another process's key: forward this key (TTL lowered) to that peer.
    Peer {
        /// The peer that issued the key.
        peer_id: u16,
        /// The pid to send.
        pid: i32,
        /// The secret to send.
        secret: [u8; 4],
    },
    /// Another process's key that was forwarded too many times already.
    Exhausted {
        /// The peer that issued the key.
        peer_id: u16,
    },
}

/// The peer id a peered key carries (bytes 1 and 2 of the key, low byte first).
pub fn peer_of(pid: i32) -> u16 {
    let b = pid.to_be_bytes();
    u16::from(b[1]) | (u16::from(b[2]) << 8)
}

/// Where a CancelRequest with key (`pid`, `secret`) goes, for a process whose own peer
/// id is `own` (0 = peering off: every key is local, as issued).
pub fn route(own: u16, pid: i32, secret: &[u8]) -> CancelRoute {
    let Ok(mut secret4) = <[u8; 4]>::try_from(secret) else {
        return CancelRoute::Local {
            secret: secret.to_vec(),
        };
    };
    if own == 0 {
        return CancelRoute::Local {
            secret: secret.to_vec(),
        };
    }
    let peer_id = peer_of(pid);
    if peer_id == own {
        secret4[3] |= TTL_MASK;
        return CancelRoute::Local {
            secret: secret4.to_vec(),
        };
    }
    if secret4[3] & TTL_MASK == 0 {
        return CancelRoute::Exhausted { peer_id };
    }
    secret4[3] -= 1;
    CancelRoute::Peer {
        peer_id,
        pid,
        secret: secret4,
    }
}

/// A pid carrying `peer_id` and 15 bits of `seq` (PgBouncer's layout).
fn peered_pid(seq: u32, peer_id: u16) -> i32 {
    let [lo, hi] = peer_id.to_le_bytes();
    let [_, _, s_hi, s_lo] = seq.to_be_bytes();
    i32::from_be_bytes([s_hi & 0x7f, lo, hi, s_lo])
}

/// All live clients' cancel keys.
#[derive(Debug)]
pub struct CancelRegistry {
    /// By pid; a pid is unique except, rarely, with peering (15 free bits), where the
    /// secret tells the clients apart.
    entries: Mutex<HashMap<i32, Vec<Arc<Entry>>>>,
    next_pid: AtomicI32,
    /// Per peer: its pool_size and the permits of cancels forwarded to it at once.
    peer_slots: Mutex<HashMap<u16, (usize, Arc<Semaphore>)>>,
    /// The shard connections of clients of sharded databases, by their entry's
    /// address (kept here rather than in every client's entry: few clients need it).
    shard_targets: Mutex<HashMap<usize, Vec<CancelTarget>>>,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        CancelRegistry {
            entries: Mutex::new(HashMap::new()),
            next_pid: AtomicI32::new(1),
            peer_slots: Mutex::new(HashMap::new()),
            shard_targets: Mutex::new(HashMap::new()),
        }
    }
}

/// A client's registration; dropping it removes the key.
#[derive(Debug)]
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    pid: i32,
    entry: Arc<Entry>,
}

impl CancelRegistry {
    /// Issues a new key for a client (peering off).
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        self.register_as(0)
    }

    /// Issues a new key for a client of the process with peer id `peer_id` (0 =
    /// peering off: a positive sequential pid and a random secret).
    pub fn register_as(self: &Arc<Self>, peer_id: u16) -> CancelHandle {
        let mut secret: [u8; 4] = rand::random();
        if peer_id != 0 {
            secret[3] |= TTL_MASK;
        }
        let entry = Entry::new(secret);
        let mut map = self.entries.locked();
        let pid = if peer_id == 0 {
            loop {
                // Positive pids, wrapping; skip any still in use.
                let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
                if pid != 0 && !map.contains_key(&pid) {
                    break pid;
                }
            }
        } else {
            // 15 free bits: skip pids in use for a while, then share one (the
            // secret still tells the two clients apart).
            let mut pid = 0;
            for _ in 0..64 {
                #[allow(clippy::cast_sign_loss)]
                let seq = self.next_pid.fetch_add(1, Ordering::Relaxed) as u32;
                pid = peered_pid(seq, peer_id);
                if !map.contains_key(&pid) {
                    break;
                }
            }
            pid
        };
        map.entry(pid).or_default().push(entry.clone());
        CancelHandle {
            registry: self.clone(),
            pid,
            entry,
        }
    }

    /// Registers a key issued by another process (a client handed over in an
    /// upgrade), so that a CancelRequest with it reaches this one. `None` when a
    /// client here holds the pid already (its id in the admin views would be taken
    /// twice): [`CancelRegistry::skip_pids_below`] with the old process's
    /// [`CancelRegistry::pid_floor`] keeps this process's own keys clear of them.
    pub fn register_key(self: &Arc<Self>, pid: i32, secret: i32) -> Option<CancelHandle> {
        let secret = secret.to_be_bytes();
        let entry = Entry::new(secret);
        let mut map = self.entries.locked();
        if map.contains_key(&pid) {
            return None;
        }
        map.insert(pid, vec![entry.clone()]);
        drop(map);
        Some(CancelHandle {
            registry: self.clone(),
            pid,
            entry,
        })
    }

    /// Where this process's key sequence stands: every key it issued so far came
    /// before it (an upgrade hands it to the new process).
    pub fn pid_floor(&self) -> i32 {
        self.next_pid.load(Ordering::Relaxed)
    }

    /// Moves the key sequence past `floor` (another process's
    /// [`CancelRegistry::pid_floor`]), so that this process's keys do not take the
    /// pids of clients that process hands over.
    pub fn skip_pids_below(&self, floor: i32) {
        self.next_pid.fetch_max(floor, Ordering::Relaxed);
    }

    /// Where a cancel request goes: the server connection the client is using (or,
    /// for a client of a sharded database, every shard connection it holds), if the
    /// key is valid; empty when the client holds none.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Vec<CancelTarget> {
        let Some(entry) = self.find(pid, secret) else {
            return Vec::new();
        };
        if !entry.active.load(Ordering::Acquire) {
            return Vec::new();
        }
        if entry.shards.load(Ordering::Acquire) {
            let addr = Arc::as_ptr(&entry) as usize;
            return self
                .shard_targets
                .locked()
                .get(&addr)
                .cloned()
                .unwrap_or_default();
        }
        let last = entry.last.locked().clone();
        last.into_iter().collect()
    }

    /// The entry of key (`pid`, `secret`).
    fn find(&self, pid: i32, secret: &[u8]) -> Option<Arc<Entry>> {
        let entry = {
            let map = self.entries.locked();
            map.get(&pid)?
                .iter()
                .find(|e| secret.len() == 4 && bool::from(e.secret.ct_eq(secret)))
                .cloned()?
        };
        Some(entry)
    }

    /// The permits of cancel requests forwarded to peer `peer_id` at once (its
    /// `pool_size`); a changed size starts a new set.
    pub fn peer_slots(&self, peer_id: u16, pool_size: usize) -> Arc<Semaphore> {
        let mut slots = self.peer_slots.locked();
        match slots.get(&peer_id) {
            Some((size, s)) if *size == pool_size => s.clone(),
            _ => {
                let s = Arc::new(Semaphore::new(pool_size));
                slots.insert(peer_id, (pool_size, s.clone()));
                s
            }
        }
    }

    /// Number of registered clients.
    pub fn len(&self) -> usize {
        self.entries.locked().values().map(Vec::len).sum()
    }

    /// True when no client is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CancelHandle {
    /// The (pid, secret) pair to send in BackendKeyData.
    pub fn key(&self) -> (i32, i32) {
        (self.pid, i32::from_be_bytes(self.entry.secret))
    }

    /// Records the server connection the client now uses. Only the client's own task
    /// calls this (and [`CancelHandle::detach`]), so the identity check needs no lock.
    pub fn attach(&self, target: &Arc<ServerTarget>, key: &Arc<BackendKey>) {
        let e = &self.entry;
        let key_addr = Arc::as_ptr(key) as usize;
        if e.last_key.load(Ordering::Relaxed) != key_addr {
            *e.last.locked() = Some(CancelTarget {
                target: target.clone(),
                key: key.clone(),
            });
            e.last_key.store(key_addr, Ordering::Relaxed);
        }
        e.active.store(true, Ordering::Release);
    }

    /// The client no longer uses a server connection: cancels are dropped, as
    /// PostgreSQL drops them for an idle backend.
    pub fn detach(&self) {
        self.entry.active.store(false, Ordering::Release);
    }

    /// A client of a sharded database now holds these shard connections: a cancel
    /// goes to all of them (a query may run on several at once). Empty: none, as
    /// [`CancelHandle::detach`].
    pub fn attach_shards(&self, targets: Vec<CancelTarget>) {
        let e = &self.entry;
        let addr = Arc::as_ptr(e) as usize;
        if targets.is_empty() {
            e.active.store(false, Ordering::Release);
            self.registry.shard_targets.locked().remove(&addr);
            return;
        }
        self.registry.shard_targets.locked().insert(addr, targets);
        e.shards.store(true, Ordering::Release);
        e.active.store(true, Ordering::Release);
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        if self.entry.shards.load(Ordering::Acquire) {
            let addr = Arc::as_ptr(&self.entry) as usize;
            self.registry.shard_targets.locked().remove(&addr);
        }
        let mut map = self.registry.entries.locked();
        if let Some(bucket) = map.get_mut(&self.pid) {
            bucket.retain(|e| !Arc::ptr_eq(e, &self.entry));
            if bucket.is_empty() {
                map.remove(&self.pid);
            }
        }
    }
}

#[cfg(test)]
#[path = "cancel_tests.rs"]
mod tests;
