//! A bounded, sharded cache from exact SQL text to its [`Summary`].
//!
//! Keys are the whole text, compared byte for byte on every hit: two texts that hash
//! alike never share an entry, so a collision cannot send a write to a standby. The
//! cache is split into a few shards, each a `Mutex` held only for a lookup or an
//! insert (never while parsing), so clients on different cores rarely meet. Each shard
//! is bounded and evicts with the clock algorithm: a hit marks its entry, and the hand
//! passes over marked entries (clearing the mark) to evict the first unmarked one.
//! Hit and miss counters live in the shards too, so a hit touches no shared cache line
//! beyond its shard's.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use super::txn::Summary;
use super::CacheStats;
use crate::sync::LockExt;

/// Shards of a cache (a cache smaller than this has one shard per entry).
const SHARDS: usize = 8;

/// Texts longer than this are classified on every use, never cached, so a cache of
/// capacity N holds at most N × this many bytes of text.
pub const MAX_CACHED_TEXT_LEN: usize = 32 * 1024;

/// The cache: shards chosen by a keyed hash of the text.
pub(super) struct Cache {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

/// One shard: entries in a ring for the clock hand, and an index from text to slot.
struct Shard {
    capacity: usize,
    index: HashMap<Arc<str>, usize>,
    slots: Vec<Slot>,
    hand: usize,
    hits: u64,
    misses: u64,
}

struct Slot {
    text: Arc<str>,
    summary: Summary,
    /// Set by a hit, cleared by the passing clock hand.
    referenced: bool,
}

impl Cache {
    /// A cache of at most `capacity` texts in all (0: nothing is kept).
    pub(super) fn new(capacity: usize) -> Cache {
        // No shard without room: a small cache has fewer shards (a text hashed to an
        // empty shard would never be cached).
        let n = capacity.clamp(1, SHARDS);
        let shards = (0..n)
            .map(|i| {
                // Spread the capacity exactly: the first `capacity % n` get one more.
                let capacity = capacity / n + usize::from(i < capacity % n);
                Mutex::new(Shard {
                    capacity,
                    index: HashMap::new(),
                    slots: Vec::new(),
                    hand: 0,
                    hits: 0,
                    misses: 0,
                })
            })
            .collect();
        Cache {
            hasher: RandomState::new(),
            shards,
        }
    }

    /// The summary of `text`, computing it with `compute` (outside any lock) when it is
    /// not cached, and keeping it if it may be.
    pub(super) fn get_or(&self, text: &str, compute: impl FnOnce(&str) -> Summary) -> Summary {
        let shard = &self.shards[self.shard_of(text)];
        {
            let mut s = shard.locked();
            if let Some(summary) = s.hit(text) {
                return summary;
            }
            s.misses += 1;
        }
        let summary = compute(text);
        if text.len() <= MAX_CACHED_TEXT_LEN {
            shard.locked().insert(text, summary);
        }
        summary
    }

    fn shard_of(&self, text: &str) -> usize {
        // The high bits: the shard maps use the low ones of their own hashes.
        (self.hasher.hash_one(text) >> 58) as usize % self.shards.len()
    }

    /// Counters and size, summed over the shards.
    pub(super) fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for shard in self.shards.iter() {
            let s = shard.locked();
            stats.hits += s.hits;
            stats.misses += s.misses;
            stats.entries += s.slots.len();
            stats.capacity += s.capacity;
        }
        stats
    }
}

impl Shard {
    fn hit(&mut self, text: &str) -> Option<Summary> {
        let &i = self.index.get(text)?;
        let slot = &mut self.slots[i];
        slot.referenced = true;
        self.hits += 1;
        Some(slot.summary)
    }

    fn insert(&mut self, text: &str, summary: Summary) {
        if self.capacity == 0 || self.index.contains_key(text) {
            // Another client parsed the same text meanwhile: same text, same summary.
            return;
        }
        let text: Arc<str> = Arc::from(text);
        if self.slots.len() < self.capacity {
            self.index.insert(text.clone(), self.slots.len());
            self.slots.push(Slot {
                text,
                summary,
                referenced: false,
            });
            return;
        }
        // Full: advance the hand past referenced entries (at most one full turn).
        let victim = loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[i];
            if !std::mem::take(&mut slot.referenced) {
                break i;
            }
        };
        let old = std::mem::replace(
            &mut self.slots[victim],
            Slot {
                text: text.clone(),
                summary,
                referenced: false,
            },
        );
        self.index.remove(&old.text);
        self.index.insert(text, victim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::txn::Stmt;

    fn read() -> Summary {
        Summary::of(&[Stmt::Read])
    }

    #[test]
    fn the_cache_stays_within_its_capacity_and_keeps_hot_texts() {
        let cache = Cache::new(20);
        assert_eq!(cache.stats().capacity, 20);
        let mut computed = 0;
        // Alternate judgements, so a mix-up between entries would show.
        let summary_of = |i: usize| match i % 2 {
            0 => read(),
            _ => Summary::WRITE,
        };
        for i in 0..1000usize {
            let text = format!("select {i}");
            let got = cache.get_or(&text, |_| {
                computed += 1;
                summary_of(i)
            });
            assert_eq!(got, summary_of(i));
            // A text used on every round stays cached once it is in.
            cache.get_or("select hot", |_| read());
            assert!(cache.stats().entries <= 20);
        }
        assert_eq!(computed, 1000);
        let stats = cache.stats();
        assert_eq!(stats.entries, 20, "{stats:?}");
        // "select hot" missed once: it is referenced between any two inserts into its
        // shard, so the clock hand always passes over it.
        assert_eq!(stats.misses, 1000 + 1, "{stats:?}");
        assert_eq!(stats.hits, 999, "{stats:?}");
    }

    #[test]
    fn a_cached_text_is_computed_once_and_long_or_uncached_ones_every_time() {
        let cache = Cache::new(4);
        let mut computed = 0;
        for _ in 0..3 {
            cache.get_or("select 1", |_| {
                computed += 1;
                read()
            });
        }
        assert_eq!(computed, 1);
        let long = "x".repeat(MAX_CACHED_TEXT_LEN + 1);
        for _ in 0..2 {
            cache.get_or(&long, |_| {
                computed += 1;
                Summary::WRITE
            });
        }
        assert_eq!(computed, 3);

        let none = Cache::new(0);
        for _ in 0..2 {
            none.get_or("select 1", |_| {
                computed += 1;
                read()
            });
        }
        assert_eq!(computed, 5);
        assert_eq!(none.stats().entries, 0);
    }
}
