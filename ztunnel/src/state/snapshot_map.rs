//! [`SnapshotMap`]: a hash map whose clones share storage, so that every state snapshot can
//! be a clone of the working copy and one change copies only a small part of it.
//!
//! The entries are split over [`SHARDS`] ordinary hash maps by hash; the shards sit behind
//! `Arc`s, and so does the list of shards. Cloning the map clones one `Arc`. Changing an entry
//! copies the list of shard pointers and the one shard holding the entry, if a snapshot still
//! shares them (`Arc::make_mut`), so a change to a map of n entries costs O(n / SHARDS), with
//! no per-entry overhead over a plain `HashMap`. Persistent trees (HAMTs, B-trees) make a
//! change cheaper still, but cost more memory per entry and more time per lookup, and state
//! is read on every connection and changed rarely.
//!
//! Values should be cheap to clone (`Arc`s, small copies): copying a shard clones its values.
//! Iteration order is unspecified. This module knows nothing of workloads or services.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// Shards per map. 64 keeps a 50,000-entry map's copy per change near 800 entries while an
/// empty map costs a few KiB.
pub(super) const SHARDS: usize = 64;

type Hasher = foldhash::fast::RandomState;

#[derive(Clone)]
pub(super) struct SnapshotMap<K, V> {
    hasher: Hasher,
    shards: Arc<[Arc<HashMap<K, V, Hasher>>]>,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for SnapshotMap<K, V> {
    fn default() -> Self {
        let hasher = Hasher::default();
        let shards = (0..SHARDS).map(|_| Arc::new(HashMap::with_hasher(hasher.clone()))).collect();
        SnapshotMap { hasher, shards }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for SnapshotMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.shards.iter().flat_map(|s| s.iter())).finish()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SnapshotMap<K, V> {
    fn shard_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The middle bits: `HashMap` itself uses the low bits for the bucket and the top
        // seven as a tag, so entries of one shard still spread over its buckets.
        (self.hasher.hash_one(key) >> 32) as usize % SHARDS
    }

    pub(super) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(key)].get(key)
    }

    /// The shard holding `key`, made unique to this map first.
    fn shard_mut<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut HashMap<K, V, Hasher> {
        let i = self.shard_of(key);
        let shards = Arc::make_mut(&mut self.shards);
        Arc::make_mut(&mut shards[i])
    }

    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.shard_mut(&key).insert(key, value)
    }

    /// The value of `key`, made unique to this map (its shard is copied if shared).
    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key)?;
        self.shard_mut(key).get_mut(key)
    }

    /// The value of `key`, inserting `make()` first if there is none.
    pub(super) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = self.shard_of(&key);
        let shard = Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[i]);
        shard.entry(key).or_insert_with(make)
    }

    pub(super) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Look first, so removing an absent key copies nothing.
        self.get(key)?;
        self.shard_mut(key).remove(key)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_are_snapshots() {
        let mut map = SnapshotMap::<u32, Arc<str>>::default();
        for i in 0..1000 {
            map.insert(i, format!("v{i}").into());
        }
        let snapshot = map.clone();
        assert_eq!(map.insert(7, "changed".into()).as_deref(), Some("v7"));
        assert_eq!(map.remove(&8).as_deref(), Some("v8"));
        assert_eq!(map.remove(&5000), None);
        map.insert(5000, "new".into());
        assert_eq!((map.iter().count(), snapshot.iter().count()), (1000, 1000));
        assert_eq!(snapshot.get(&7).map(|v| &**v), Some("v7"), "a snapshot must not see later changes");
        assert_eq!(snapshot.get(&8).map(|v| &**v), Some("v8"));
        assert_eq!(snapshot.get(&5000), None);
        assert_eq!(map.get(&7).map(|v| &**v), Some("changed"));
        assert_eq!(map.get(&8), None);
        let shared = map.shards.iter().zip(snapshot.shards.iter()).filter(|(a, b)| Arc::ptr_eq(a, b)).count();
        assert!(shared >= SHARDS - 3, "only the changed shards may be copied, {shared} of {SHARDS} still shared");
    }

    #[test]
    fn looks_up_by_borrowed_key() {
        let mut map = SnapshotMap::<Arc<str>, u8>::default();
        map.insert("a".into(), 1);
        assert_eq!(map.get("a"), Some(&1));
        assert_eq!(map.remove("a"), Some(1));
        assert_eq!((map.iter().count(), map.get("a")), (0, None));
    }
}
