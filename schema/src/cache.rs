//! Read-through caches of rows that every request reads (sessions, a group's roster).
//!
//! The database stays the source of truth. A write that changes a cached row invalidates it
//! once its transaction has committed (see `with_conn!`'s `after` hook). A reader that loaded a
//! row from the database before that write committed must not put the old row back: each
//! invalidation bumps a generation, and a reader stores what it loaded only if the generation
//! is still the one it saw before reading.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Most entries kept; past it the cache starts over (cheap, and bounds memory).
const MAX_ENTRIES: usize = 100_000;

/// A generation-guarded map.
#[derive(Debug)]
pub(crate) struct GenCache<K, V> {
    inner: Mutex<Inner<K, V>>,
}

#[derive(Debug)]
struct Inner<K, V> {
    generation: u64,
    entries: HashMap<K, V>,
}

impl<K: Hash + Eq, V: Clone> Default for GenCache<K, V> {
    fn default() -> Self {
        GenCache {
            inner: Mutex::new(Inner {
                generation: 0,
                entries: HashMap::new(),
            }),
        }
    }
}

impl<K: Hash + Eq, V: Clone> GenCache<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value, or the generation to pass to [`GenCache::fill`] after reading it.
    pub(crate) fn get<Q>(&self, key: &Q) -> Result<V, u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = self.lock();
        inner.entries.get(key).cloned().ok_or(inner.generation)
    }

    /// Stores a value read from the database, unless something was invalidated since
    /// `generation` was handed out (the value may predate that write).
    pub(crate) fn fill(&self, generation: u64, key: K, value: V) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(key, value);
    }

    /// Forgets one key.
    pub(crate) fn invalidate<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.remove(key);
    }

    /// Forgets everything.
    pub(crate) fn invalidate_all(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let cache: GenCache<String, u32> = GenCache::default();
        let Err(generation) = cache.get("k") else {
            panic!("empty cache returned a value")
        };
        // A write commits and invalidates while the reader is loading the old row.
        cache.invalidate("k");
        cache.fill(generation, "k".into(), 1);
        assert!(cache.get("k").is_err());
        // A read that started after the invalidation is kept.
        let Err(generation) = cache.get("k") else {
            panic!("stale value cached")
        };
        cache.fill(generation, "k".into(), 2);
        assert_eq!(cache.get("k"), Ok(2));
        cache.invalidate_all();
        assert!(cache.get("k").is_err());
    }
}
