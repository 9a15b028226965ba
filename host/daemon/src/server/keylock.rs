//! Per-attachment async locks: requests for the same (container id, ifname) run one at a time,
//! requests for different attachments run concurrently.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A map of async locks that forgets a key once nobody holds or waits for it.
pub struct KeyLocks<K: Eq + Hash + Clone> {
    locks: Arc<Mutex<HashMap<K, Arc<AsyncMutex<()>>>>>,
}

impl<K: Eq + Hash + Clone> Default for KeyLocks<K> {
    fn default() -> Self {
        KeyLocks {
            locks: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// Holds the lock of one key; dropping it releases the lock.
pub struct KeyGuard<K: Eq + Hash + Clone> {
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<Mutex<HashMap<K, Arc<AsyncMutex<()>>>>>,
}

impl<K: Eq + Hash + Clone> KeyLocks<K> {
    /// Waits for and takes the lock of `key`.
    pub async fn lock(&self, key: K) -> KeyGuard<K> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        KeyGuard {
            key,
            guard: Some(guard),
            locks: self.locks.clone(),
        }
    }

    /// Number of keys currently locked or waited for (for tests and introspection).
    pub fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is locked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash + Clone> Drop for KeyGuard<K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map's own reference left: nobody holds or waits; forget the key.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_serialises_other_keys_do_not() {
        let locks = Arc::new(KeyLocks::<&'static str>::default());
        let first = locks.lock("a").await;
        let _other = locks.lock("b").await;
        let mut waiter = Box::pin(locks.lock("a"));
        assert!(
            futures_util::FutureExt::now_or_never(&mut waiter).is_none(),
            "a second lock of the same key must wait"
        );
        assert!(
            futures_util::FutureExt::now_or_never(locks.lock("c")).is_some(),
            "another key does not wait"
        );
        drop(first);
        drop(waiter.await);
        drop(_other);
        assert!(locks.is_empty(), "keys are forgotten once released");
    }
}
