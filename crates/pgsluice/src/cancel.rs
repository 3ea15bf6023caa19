//! Cancel keys: pgsluice issues its own BackendKeyData to clients and maps each key to
//! the server connection that client is using at that moment.
//!
//! A CancelRequest arrives on a new connection; it is forwarded (over another new
//! connection) to the PostgreSQL backend the client is using, or dropped harmlessly
//! when the client holds no server connection, as PostgreSQL drops unknown keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use subtle::ConstantTimeEq;

use crate::server::{BackendKey, ServerTarget};

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
    current: Mutex<Option<CancelTarget>>,
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
            current: Mutex::new(None),
        });
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
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
        let entry = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pid)
            .cloned()?;
        if secret.len() != 4 || !bool::from(entry.secret.ct_eq(secret)) {
            return None;
        }
        let current = entry
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        current
    }

    /// Number of registered clients.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
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

    /// Records the server connection the client now uses (None when it has none).
    pub fn set_current(&self, target: Option<CancelTarget>) {
        *self.entry.current.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.pid);
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
        h.set_current(Some(CancelTarget {
            target,
            key: Arc::new(BackendKey {
                pid: 99,
                secret: vec![1, 2, 3, 4],
            }),
        }));
        assert_eq!(reg.lookup(pid, &secret.to_be_bytes()).unwrap().key.pid, 99);
        assert!(reg.lookup(pid, &(secret ^ 1).to_be_bytes()).is_none());
        drop(h);
        assert!(reg.lookup(pid, &secret.to_be_bytes()).is_none());
        assert!(reg.is_empty());
    }
}
