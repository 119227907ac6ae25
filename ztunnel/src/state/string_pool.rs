//! [`StringPool`]: one shared copy of each text that many workloads and services repeat
//! (namespace, node, service account, trust domain, cluster id, network, canonical labels,
//! service hostnames), so that 50,000 workloads on 500 nodes hold 500 node names, not 50,000.
//!
//! Conversions of xDS resources take their strings from a pool; texts unique to one resource
//! (uids, pod names) should not go through it. Texts no longer used by any workload or
//! service are dropped by [`StringPool::prune`].

use std::collections::HashSet;
use std::sync::Arc;

/// Texts below this count are never pruned; above it, a prune runs when the pool has doubled.
const PRUNE_FLOOR: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct StringPool {
    texts: HashSet<Arc<str>, foldhash::fast::RandomState>,
    /// Size after the last prune.
    kept: usize,
}

impl StringPool {
    /// The pooled copy of `text`, added first if new.
    pub(crate) fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.texts.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = text.into();
        self.texts.insert(shared.clone());
        shared
    }

    /// Drops texts only the pool holds, once the pool has grown to twice its size after the
    /// last prune (so churn costs amortized O(1) per text).
    pub(crate) fn prune(&mut self) {
        if self.texts.len() < PRUNE_FLOOR.max(2 * self.kept) {
            return;
        }
        self.texts.retain(|t| Arc::strong_count(t) > 1);
        self.kept = self.texts.len();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.texts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_texts_and_prunes_unused_ones() {
        let mut pool = StringPool::default();
        let a = pool.get("ns-1");
        assert!(Arc::ptr_eq(&a, &pool.get("ns-1")), "the same text must be shared");
        let held: Vec<Arc<str>> = (0..PRUNE_FLOOR).map(|i| pool.get(&format!("node-{i}"))).collect();
        drop(held);
        assert_eq!(pool.len(), PRUNE_FLOOR + 1);
        pool.prune();
        assert_eq!(pool.len(), 1, "only the text still in use is kept");
        assert!(Arc::ptr_eq(&a, &pool.get("ns-1")));
    }
}
