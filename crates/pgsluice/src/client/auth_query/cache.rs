//! A bounded, short-lived cache of what `auth_query` answered: the secrets it
//! fetched, and the users it did not find (a negative entry, so that a flood of
//! logins for unknown names does not run the query for each of them).
//!
//! Entries expire after their TTL (secrets: a fixed TTL; misses: the shorter
//! `auth_query_miss_ttl`) and the table holds at most a fixed number of them (expired
//! ones are purged first, then the one expiring soonest is evicted, so misses go
//! before secrets). A failed authentication against a cached secret removes it, so
//! that the next attempt fetches the secret again (the password may have changed in
//! PostgreSQL).

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

/// What the cache knows of a user.
#[derive(Debug, Clone)]
pub enum Cached {
    /// auth_query returned this secret.
    Found(Arc<UserSecret>),
    /// auth_query found no usable secret (no such role, NULL password, cannot log in).
    Missing,
}

struct Entry {
    answer: Cached,
    expires: Instant,
}

/// Answers by (lookup, user name), with a TTL and a size bound.
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

    /// What is cached for `user` and still valid at `now`.
    pub fn get(&self, key: &Arc<LookupKey>, user: &str, now: Instant) -> Option<Cached> {
        let mut entries = self.lock();
        let k = (key.clone(), user.to_owned());
        let fresh = entries.get(&k).map(|e| now < e.expires)?;
        if fresh {
            entries.get(&k).map(|e| e.answer.clone())
        } else {
            entries.remove(&k);
            None
        }
    }

    /// Stores the secret of `user` fetched at `now`, for the cache's TTL.
    pub fn insert(&self, key: &Arc<LookupKey>, user: &str, secret: Arc<UserSecret>, now: Instant) {
        self.store(key, user, Cached::Found(secret), now, now + self.ttl);
    }

    /// Remembers for `ttl` from `now` that auth_query found no secret for `user`
    /// (`ttl` zero: not remembered).
    pub fn insert_miss(&self, key: &Arc<LookupKey>, user: &str, now: Instant, ttl: Duration) {
        if !ttl.is_zero() {
            self.store(key, user, Cached::Missing, now, now + ttl);
        }
    }

    fn store(
        &self,
        key: &Arc<LookupKey>,
        user: &str,
        answer: Cached,
        now: Instant,
        expires: Instant,
    ) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        let k = (key.clone(), user.to_owned());
        if !entries.contains_key(&k) && entries.len() >= self.capacity {
            entries.retain(|_, e| now < e.expires);
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                if let Some(o) = soonest {
                    entries.remove(&o);
                }
            }
        }
        entries.insert(k, Entry { answer, expires });
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

    #[track_caller]
    fn found(c: Option<Cached>) -> Arc<UserSecret> {
        match c {
            Some(Cached::Found(s)) => s,
            other => panic!("expected a secret, got {other:?}"),
        }
    }

    #[test]
    fn misses_are_remembered_for_their_own_ttl_and_evicted_first() {
        let c = SecretCache::new(Duration::from_secs(30), 2);
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let k = key("a");
        c.insert_miss(&k, "ghost", s(0), Duration::from_secs(5));
        assert!(matches!(c.get(&k, "ghost", s(4)), Some(Cached::Missing)));
        // Past its TTL the user is looked up again (it may have been created).
        assert!(c.get(&k, "ghost", s(5)).is_none());
        assert!(c.is_empty());
        // A zero TTL remembers nothing.
        c.insert_miss(&k, "ghost", s(6), Duration::ZERO);
        assert!(c.is_empty());
        // Full: the entry expiring soonest (the miss, though newer) is evicted.
        c.insert(&k, "alice", secret("pw"), s(6));
        c.insert_miss(&k, "ghost", s(7), Duration::from_secs(5));
        c.insert(&k, "bob", secret("pw"), s(8));
        assert_eq!(c.len(), 2);
        assert!(c.get(&k, "ghost", s(8)).is_none());
        found(c.get(&k, "alice", s(8)));
        // A found secret replaces a remembered miss.
        c.insert_miss(&k, "bob", s(9), Duration::from_secs(5));
        c.insert(&k, "bob", secret("new"), s(10));
        assert_eq!(found(c.get(&k, "bob", s(10))).plain.as_deref(), Some("new"));
    }

    #[test]
    fn hit_miss_and_ttl() {
        let c = SecretCache::new(Duration::from_secs(10), 8);
        let t0 = Instant::now();
        let k = key("a");
        assert!(c.get(&k, "alice", t0).is_none());
        c.insert(&k, "alice", secret("pw"), t0);
        let got = found(c.get(&k, "alice", t0 + Duration::from_secs(9)));
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
        assert_eq!(found(c.get(&k, "alice", t0)).plain.as_deref(), Some("new"));
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
        assert_eq!(found(c.get(&k, "u5", s(13))).plain.as_deref(), Some("5b"));
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = SecretCache::new(Duration::from_secs(10), 0);
        let k = key("a");
        c.insert(&k, "alice", secret("pw"), Instant::now());
        assert!(c.is_empty());
    }
}
