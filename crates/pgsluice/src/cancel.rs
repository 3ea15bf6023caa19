//! Cancel keys: pgsluice issues its own BackendKeyData to clients and maps each key to
//! the server connection that client is using at that moment.
//!
//! A CancelRequest arrives on a new connection; it is forwarded (over another new
//! connection) to the PostgreSQL backend the client is using, or dropped harmlessly
//! when the client holds no server connection, as PostgreSQL drops unknown keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use subtle::ConstantTimeEq;

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
    /// True while the client uses `last`.
    active: AtomicBool,
}

/// All live clients' cancel keys.
#[derive(Debug)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<i32, Arc<Entry>>>,
    next_pid: AtomicI32,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        CancelRegistry {
            entries: Mutex::new(HashMap::new()),
            next_pid: AtomicI32::new(1),
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
    /// Issues a new key for a client.
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        let secret: [u8; 4] = rand::random();
        let entry = Arc::new(Entry {
            secret,
            last: Mutex::new(None),
            last_key: AtomicUsize::new(0),
            active: AtomicBool::new(false),
        });
        let mut map = self.entries.locked();
        let pid = loop {
            // Positive pids, wrapping; skip any still in use.
            let pid = self.next_pid.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
            if pid != 0 && !map.contains_key(&pid) {
                break pid;
            }
        };
        map.insert(pid, entry.clone());
        CancelHandle {
            registry: self.clone(),
            pid,
            entry,
        }
    }

    /// The server target for a cancel request, if the key is valid and the client is
    /// using a server connection.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let entry = self.entries.locked().get(&pid).cloned()?;
        if secret.len() != 4 || !bool::from(entry.secret.ct_eq(secret)) {
            return None;
        }
        if !entry.active.load(Ordering::Acquire) {
            return None;
        }
        let last = entry.last.locked().clone();
        last
    }

    /// Number of registered clients.
    pub fn len(&self) -> usize {
        self.entries.locked().len()
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
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.entries.locked().remove(&self.pid);
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
        reg.lookup(pid, &secret.to_be_bytes()).map(|t| t.key.pid)
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
        let t = reg.lookup(b.key().0, &b.key().1.to_be_bytes()).unwrap();
        assert_eq!(t.target.port, 5433);
        let (pid, secret) = a.key();
        for wrong in [secret ^ 1, secret ^ i32::MIN, b.key().1] {
            if wrong != secret {
                assert_eq!(reaches(&reg, (pid, wrong)), None, "secret {wrong:#x}");
            }
        }
        let bytes = secret.to_be_bytes();
        assert!(reg.lookup(pid, &bytes[..3]).is_none(), "short secret");
        assert!(
            reg.lookup(pid, &[&bytes[..], &[0]].concat()).is_none(),
            "long secret"
        );
        assert!(reg.lookup(pid, &[]).is_none());
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
    fn keys_are_checked_and_removed() {
        let reg = Arc::new(CancelRegistry::default());
        let h = reg.register();
        let (pid, secret) = h.key();
        assert!(
            reg.lookup(pid, &secret.to_be_bytes()).is_none(),
            "no server yet"
        );
        let target = target(5432);
        let key = Arc::new(BackendKey {
            pid: 99,
            secret: vec![1, 2, 3, 4],
        });
        h.attach(&target, &key);
        assert_eq!(reg.lookup(pid, &secret.to_be_bytes()).unwrap().key.pid, 99);
        assert!(reg.lookup(pid, &(secret ^ 1).to_be_bytes()).is_none());
        // Idle between transactions: nothing to cancel.
        h.detach();
        assert!(reg.lookup(pid, &secret.to_be_bytes()).is_none());
        // Another connection replaces the remembered one; the same one is reused.
        let other = Arc::new(BackendKey {
            pid: 100,
            secret: vec![5, 6, 7, 8],
        });
        h.attach(&target, &other);
        assert_eq!(reg.lookup(pid, &secret.to_be_bytes()).unwrap().key.pid, 100);
        h.detach();
        h.attach(&target, &key);
        assert_eq!(reg.lookup(pid, &secret.to_be_bytes()).unwrap().key.pid, 99);
        drop(h);
        assert!(reg.lookup(pid, &secret.to_be_bytes()).is_none());
        assert!(reg.is_empty());
    }
}
