//! A bounded, short-lived cache of the secrets `auth_query` fetched.
//!
//! Entries expire after a TTL and the table holds at most a fixed number of them
//! (expired ones are purged first, then the oldest is evicted). A failed
//! authentication against a cached secret removes it, so that the next attempt
//! fetches the secret again (the password may have changed in PostgreSQL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::auth::UserSecret;
use crate::sync::LockExt;

/// Where a lookup runs: the server, database and user of the lookup connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupKey {
    /// Server host or socket directory.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database name on the server.
    pub dbname: String,
    /// The auth_user.
    pub user: String,
    /// The query (two databases may use different ones on the same server).
    pub query: String,
}

struct Entry {
    secret: Arc<UserSecret>,
    fetched: Instant,
}

/// Secrets by (lookup, user name), with a TTL and a size bound.
pub struct SecretCache {
    entries: Mutex<HashMap<(Arc<LookupKey>, String), Entry>>,
    ttl: Duration,
    capacity: usize,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCache")
            .field("entries", &self.len())
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl SecretCache {
    /// A cache keeping entries for `ttl`, at most `capacity` of them (0 = no caching).
    pub fn new(ttl: Duration, capacity: usize) -> SecretCache {
        SecretCache {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Arc<LookupKey>, String), Entry>> {
        self.entries.locked()
    }

    /// The secret of `user`, if cached and not older than the TTL at `now`.
    pub fn get(&self, key: &Arc<LookupKey>, user: &str, now: Instant) -> Option<Arc<UserSecret>> {
        let mut entries = self.lock();
        let k = (key.clone(), user.to_owned());
        let fresh = entries
            .get(&k)
            .map(|e| now.saturating_duration_since(e.fetched) < self.ttl)?;
        if fresh {
            entries.get(&k).map(|e| e.secret.clone())
        } else {
            entries.remove(&k);
            None
        }
    }

    /// Stores the secret of `user` fetched at `now`.
    pub fn insert(&self, key: &Arc<LookupKey>, user: &str, secret: Arc<UserSecret>, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        let k = (key.clone(), user.to_owned());
        if !entries.contains_key(&k) && entries.len() >= self.capacity {
            entries.retain(|_, e| now.saturating_duration_since(e.fetched) < self.ttl);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.fetched)
                    .map(|(k, _)| k.clone());
                if let Some(o) = oldest {
                    entries.remove(&o);
                }
            }
        }
        entries.insert(
            k,
            Entry {
                secret,
                fetched: now,
            },
        );
    }

    /// Forgets the secret of `user` (after a failed authentication with it).
    pub fn remove(&self, key: &Arc<LookupKey>, user: &str) {
        self.lock().remove(&(key.clone(), user.to_owned()));
    }

    /// Number of entries (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(db: &str) -> Arc<LookupKey> {
        Arc::new(LookupKey {
            host: "127.0.0.1".into(),
            port: 5432,
            dbname: db.into(),
            user: "lookup".into(),
            query: "q".into(),
        })
    }

    fn secret(pw: &str) -> Arc<UserSecret> {
        Arc::new(UserSecret::from_config("u", pw))
    }

    #[test]
    fn hit_miss_and_ttl() {
        let c = SecretCache::new(Duration::from_secs(10), 8);
        let t0 = Instant::now();
        let k = key("a");
        assert!(c.get(&k, "alice", t0).is_none());
        c.insert(&k, "alice", secret("pw"), t0);
        let got = c.get(&k, "alice", t0 + Duration::from_secs(9)).unwrap();
        assert_eq!(got.plain.as_deref(), Some("pw"));
        // Another lookup (database) or user is another entry.
        assert!(c.get(&key("b"), "alice", t0).is_none());
        assert!(c.get(&k, "bob", t0).is_none());
        // Expired: gone, and purged.
        assert!(c.get(&k, "alice", t0 + Duration::from_secs(10)).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn remove_forces_a_refetch() {
        let c = SecretCache::new(Duration::from_secs(10), 8);
        let t0 = Instant::now();
        let k = key("a");
        c.insert(&k, "alice", secret("old"), t0);
        c.remove(&k, "alice");
        assert!(c.get(&k, "alice", t0).is_none());
        c.insert(&k, "alice", secret("new"), t0);
        assert_eq!(
            c.get(&k, "alice", t0).unwrap().plain.as_deref(),
            Some("new")
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn bounded_evicting_expired_then_oldest() {
        let c = SecretCache::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let k = key("a");
        let s = |n: u64| t0 + Duration::from_secs(n);
        c.insert(&k, "u1", secret("1"), s(0));
        c.insert(&k, "u2", secret("2"), s(5));
        c.insert(&k, "u3", secret("3"), s(6));
        // Full: u1 (expired at 11) is purged first.
        c.insert(&k, "u4", secret("4"), s(11));
        assert_eq!(c.len(), 3);
        assert!(c.get(&k, "u1", s(11)).is_none());
        // Full, nothing expired: the oldest (u2) goes.
        c.insert(&k, "u5", secret("5"), s(12));
        assert_eq!(c.len(), 3);
        assert!(c.get(&k, "u2", s(12)).is_none());
        for u in ["u3", "u4", "u5"] {
            assert!(c.get(&k, u, s(12)).is_some(), "{u}");
        }
        // Replacing an entry does not evict another.
        c.insert(&k, "u5", secret("5b"), s(13));
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&k, "u5", s(13)).unwrap().plain.as_deref(), Some("5b"));
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = SecretCache::new(Duration::from_secs(10), 0);
        let k = key("a");
        c.insert(&k, "alice", secret("pw"), Instant::now());
        assert!(c.is_empty());
    }
}
