//! A bounded cache from exact statement text to its [`Plan`].
//!
//! One `Mutex`, held for a lookup or an insert only (never while parsing). When full,
//! the oldest entry goes (first in, first out): plans are cheap to recompute and a
//! hot text comes back at its next use. Texts longer than
//! [`crate::classify::MAX_CACHED_TEXT_LEN`] are planned every time, so the cache
//! holds at most capacity × that many bytes of text.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::Plan;
use crate::classify::MAX_CACHED_TEXT_LEN;
use crate::sync::LockExt;

/// The cache (see the module doc).
#[derive(Debug)]
pub(super) struct PlanCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    plans: HashMap<Arc<str>, Arc<Plan>>,
    /// Insertion order, oldest first.
    order: VecDeque<Arc<str>>,
}

impl PlanCache {
    /// A cache of at most `capacity` plans (0: none kept).
    pub(super) fn new(capacity: usize) -> PlanCache {
        PlanCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The plan of `text`, computed by `compute` (outside the lock) when not cached.
    pub(super) fn get_or(&self, text: &str, compute: impl FnOnce(&str) -> Arc<Plan>) -> Arc<Plan> {
        if let Some(plan) = self.inner.locked().plans.get(text) {
            return plan.clone();
        }
        let plan = compute(text);
        if self.capacity > 0 && text.len() <= MAX_CACHED_TEXT_LEN {
            let mut inner = self.inner.locked();
            if !inner.plans.contains_key(text) {
                while inner.order.len() >= self.capacity {
                    let Some(old) = inner.order.pop_front() else {
                        break;
                    };
                    inner.plans.remove(&old);
                }
                let key: Arc<str> = Arc::from(text);
                inner.order.push_back(key.clone());
                inner.plans.insert(key, plan.clone());
            }
        }
        plan
    }

    /// Plans cached now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.inner.locked().plans.len()
    }
}
