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
    use super::*;

    #[test]
    fn keys_are_checked_and_removed() {
        let reg = Arc::new(CancelRegistry::default());
        let h = reg.register();
        let (pid, secret) = h.key();
        assert!(
            reg.lookup(pid, &secret.to_be_bytes()).is_none(),
            "no server yet"
        );
        let target = Arc::new(ServerTarget {
            host: "127.0.0.1".into(),
            port: 5432,
            database: "d".into(),
            user: "u".into(),
            password: None,
            application_name: None,
            tls: None,
            passthrough: None,
            scram_keys: Default::default(),
        });
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
