//! Locks that survive a panicking holder.
//!
//! pgsluice's mutexes guard short, self-contained updates (pool counts, maps of
//! clients and cancel keys, small caches). A panic while one is held cannot leave
//! the data worse than losing that one update, so a poisoned mutex hands its data
//! back instead of failing every later client. This is the one place that decides
//! so; every lock in the crate goes through [`LockExt::locked`].

use std::sync::{Mutex, MutexGuard, PoisonError};

/// `Mutex::lock` that takes the data back from a poisoned mutex.
pub(crate) trait LockExt<T: ?Sized> {
    /// Locks the mutex; a poisoned one is used as it is (see the module doc).
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_hands_out_its_data() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let mut g = m2.locked();
            *g = 2;
            panic!("holder panics");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*m.locked(), 2);
    }
}
