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
        let entry = Arc::new(Entry {
            secret,
            last: Mutex::new(None),
            last_key: AtomicUsize::new(0),
            active: AtomicBool::new(false),
            shards: AtomicBool::new(false),
        });
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
        let entry = Arc::new(Entry {
            secret,
            last: Mutex::new(None),
            last_key: AtomicUsize::new(0),
            active: AtomicBool::new(false),
            shards: AtomicBool::new(false),
        });
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
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn target(port: u16) -> Arc<ServerTarget> {
        Arc::new(ServerTarget {
            host: "127.0.0.1".into(),
            port,
            database: "d".into(),
            user: "u".into(),
            password: None,
            application_name: None,
            tls: None,
            passthrough: None,
            scram_keys: Default::default(),
        })
    }

    fn backend(pid: i32) -> Arc<BackendKey> {
        Arc::new(BackendKey {
            pid,
            secret: pid.to_be_bytes().to_vec(),
        })
    }

    /// The backend pid a cancel with this key would reach.
    fn reaches(reg: &CancelRegistry, (pid, secret): (i32, i32)) -> Option<i32> {
        reg.lookup(pid, &secret.to_be_bytes())
            .first()
            .map(|t| t.key.pid)
    }

    #[test]
    fn keys_are_positive_and_unique() {
        let reg = Arc::new(CancelRegistry::default());
        let handles: Vec<CancelHandle> = (0..1000).map(|_| reg.register()).collect();
        let pids: HashSet<i32> = handles.iter().map(|h| h.key().0).collect();
        assert_eq!(pids.len(), 1000);
        assert!(pids.iter().all(|&p| p > 0));
        assert_eq!(reg.len(), 1000);
    }

    #[test]
    fn pids_wrap_around_skipping_zero_and_those_in_use() {
        let reg = Arc::new(CancelRegistry::default());
        let first = reg.register();
        assert_eq!(first.key().0, 1);
        reg.next_pid.store(i32::MAX, Ordering::Relaxed);
        let last = reg.register();
        assert_eq!(last.key().0, i32::MAX);
        // Next come 0 (never issued) and 1 (still in use).
        let wrapped = reg.register();
        assert_eq!(wrapped.key().0, 2);
        // A pid is issued again once its client has gone.
        drop(first);
        reg.next_pid.store(1, Ordering::Relaxed);
        assert_eq!(reg.register().key().0, 1);
    }

    #[test]
    fn a_cancel_reaches_its_clients_server_only_with_the_right_secret() {
        let reg = Arc::new(CancelRegistry::default());
        let (a, b) = (reg.register(), reg.register());
        a.attach(&target(5432), &backend(10));
        b.attach(&target(5433), &backend(20));
        assert_eq!(reaches(&reg, a.key()), Some(10));
        assert_eq!(reaches(&reg, b.key()), Some(20));
        let t = reg.lookup(b.key().0, &b.key().1.to_be_bytes()).remove(0);
        assert_eq!(t.target.port, 5433);
        let (pid, secret) = a.key();
        for wrong in [secret ^ 1, secret ^ i32::MIN, b.key().1] {
            if wrong != secret {
                assert_eq!(reaches(&reg, (pid, wrong)), None, "secret {wrong:#x}");
            }
        }
        let bytes = secret.to_be_bytes();
        assert!(reg.lookup(pid, &bytes[..3]).is_empty(), "short secret");
        assert!(
            reg.lookup(pid, &[&bytes[..], &[0]].concat()).is_empty(),
            "long secret"
        );
        assert!(reg.lookup(pid, &[]).is_empty());
        assert_eq!(reaches(&reg, (i32::MAX, secret)), None, "unknown pid");
    }

    #[test]
    fn dropping_a_handle_removes_only_its_key() {
        let reg = Arc::new(CancelRegistry::default());
        let (a, b) = (reg.register(), reg.register());
        a.attach(&target(5432), &backend(10));
        b.attach(&target(5432), &backend(20));
        let a_key = a.key();
        drop(a);
        assert_eq!(reg.len(), 1);
        assert_eq!(reaches(&reg, a_key), None);
        assert_eq!(reaches(&reg, b.key()), Some(20));
        drop(b);
        assert!(reg.is_empty());
    }

    #[test]
    fn peered_keys_carry_the_peer_id_and_a_ttl() {
        let reg = Arc::new(CancelRegistry::default());
        let handles: Vec<CancelHandle> = (0..40_000).map(|_| reg.register_as(300)).collect();
        for h in &handles {
            let (pid, secret) = h.key();
            assert!(pid > 0);
            assert_eq!(peer_of(pid), 300);
            assert_eq!(secret.to_be_bytes()[3] & TTL_MASK, TTL_MASK);
        }
        // More clients than free pid bits: some share a pid, each key still reaches
        // its own client only.
        assert_eq!(reg.len(), 40_000);
        let (a, b) = (&handles[0], &handles[32_768]);
        a.attach(&target(5432), &backend(10));
        b.attach(&target(5432), &backend(20));
        assert_eq!(reaches(&reg, a.key()), Some(10));
        assert_eq!(reaches(&reg, b.key()), Some(20));
        let a_key = a.key();
        drop(handles);
        assert!(reg.is_empty());
        assert_eq!(reaches(&reg, a_key), None);
    }

    #[test]
    fn routes_follow_the_peer_id_and_the_ttl() {
        let reg = Arc::new(CancelRegistry::default());
        let mine = reg.register_as(7);
        let (pid, secret) = mine.key();
        let secret = secret.to_be_bytes();
        // Peering off: every key is looked up here, unchanged.
        assert_eq!(
            route(0, pid, &secret),
            CancelRoute::Local {
                secret: secret.to_vec()
            }
        );
        // Our own key, even after forwards lowered its TTL: looked up as issued.
        let mut forwarded = secret;
        forwarded[3] &= !TTL_MASK;
        assert_eq!(
            route(7, pid, &forwarded),
            CancelRoute::Local {
                secret: secret.to_vec()
            }
        );
        // Another peer's key: forwarded with the TTL lowered, until it is spent.
        let mut hops = 0;
        let mut key = secret;
        loop {
            match route(9, pid, &key) {
                CancelRoute::Peer {
                    peer_id,
                    pid: p,
                    secret: next,
                } => {
                    assert_eq!((peer_id, p), (7, pid));
                    assert_eq!(next[..3], secret[..3]);
                    key = next;
                    hops += 1;
                }
                CancelRoute::Exhausted { peer_id } => {
                    assert_eq!(peer_id, 7);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(hops, 3);
        // Malformed secrets are looked up (and found nowhere).
        assert!(matches!(route(7, pid, &[1, 2]), CancelRoute::Local { .. }));
        assert_eq!(peered_pid(0x1_2345, 0x3fff), 0x23ff_3f45);
    }

    #[test]
    fn peer_slots_follow_the_pool_size() {
        let reg = CancelRegistry::default();
        let a = reg.peer_slots(2, 3);
        assert_eq!(a.available_permits(), 3);
        assert!(Arc::ptr_eq(&a, &reg.peer_slots(2, 3)));
        let b = reg.peer_slots(2, 5);
        assert_eq!(b.available_permits(), 5);
        assert!(!Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn keys_are_checked_and_removed() {
        let reg = Arc::new(CancelRegistry::default());
        let h = reg.register();
        let (pid, secret) = h.key();
        assert!(
            reg.lookup(pid, &secret.to_be_bytes()).is_empty(),
            "no server yet"
        );
        let target = target(5432);
        let key = Arc::new(BackendKey {
            pid: 99,
            secret: vec![1, 2, 3, 4],
        });
        h.attach(&target, &key);
        assert_eq!(reg.lookup(pid, &secret.to_be_bytes()).remove(0).key.pid, 99);
        assert!(reg.lookup(pid, &(secret ^ 1).to_be_bytes()).is_empty());
        // Idle between transactions: nothing to cancel.
        h.detach();
        assert!(reg.lookup(pid, &secret.to_be_bytes()).is_empty());
        // Another connection replaces the remembered one; the same one is reused.
        let other = Arc::new(BackendKey {
            pid: 100,
            secret: vec![5, 6, 7, 8],
        });
        h.attach(&target, &other);
        assert_eq!(
            reg.lookup(pid, &secret.to_be_bytes()).remove(0).key.pid,
            100
        );
        h.detach();
        h.attach(&target, &key);
        assert_eq!(reg.lookup(pid, &secret.to_be_bytes()).remove(0).key.pid, 99);
        drop(h);
        assert!(reg.lookup(pid, &secret.to_be_bytes()).is_empty());
        assert!(reg.is_empty());
    }

    /// A key handed over from another process is registered as is; a pid in use is
    /// refused; the sequence moved past the old process's keys skips them.
    #[test]
    fn a_handed_over_key_keeps_its_pid_and_secret() {
        let old = Arc::new(CancelRegistry::default());
        let a = old.register();
        let (pid, secret) = a.key();
        let new = Arc::new(CancelRegistry::default());
        new.skip_pids_below(old.pid_floor());
        let moved = new.register_key(pid, secret).expect("free pid");
        assert_eq!(moved.key(), (pid, secret));
        assert!(new.register_key(pid, secret ^ 1).is_none(), "pid in use");
        let fresh = new.register();
        assert!(fresh.key().0 > pid, "{:?} after {pid}", fresh.key());
        let target = target(5432);
        let key = Arc::new(BackendKey {
            pid: 7,
            secret: vec![1, 2, 3, 4],
        });
        moved.attach(&target, &key);
        assert_eq!(new.lookup(pid, &secret.to_be_bytes()).remove(0).key.pid, 7);
        drop(moved);
        assert!(new.lookup(pid, &secret.to_be_bytes()).is_empty());
    }

    #[test]
    fn a_sharded_client_is_cancelled_on_every_shard_connection_it_holds() {
        let reg = Arc::new(CancelRegistry::default());
        let h = reg.register();
        let (pid, secret) = h.key();
        let secret = secret.to_be_bytes();
        let pids = |reg: &CancelRegistry| -> Vec<i32> {
            reg.lookup(pid, &secret).iter().map(|t| t.key.pid).collect()
        };
        h.attach_shards(vec![
            CancelTarget {
                target: target(1),
                key: backend(11),
            },
            CancelTarget {
                target: target(2),
                key: backend(12),
            },
        ]);
        assert_eq!(pids(&reg), vec![11, 12]);
        h.attach_shards(Vec::new());
        assert!(pids(&reg).is_empty(), "none held: dropped");
        h.attach_shards(vec![CancelTarget {
            target: target(1),
            key: backend(13),
        }]);
        assert_eq!(pids(&reg), vec![13]);
        drop(h);
        assert!(pids(&reg).is_empty());
        assert!(reg.shard_targets.locked().is_empty(), "nothing left behind");
    }
}
