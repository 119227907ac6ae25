//! The API server's object store, standing in for etcd: namespaces and pods keyed by
//! (namespace, name), one resourceVersion counter shared by every kind, and a bounded
//! history of changes that watches replay from. `compact` forgets the history, so a watch
//! that asks to resume from before it gets `410 Gone`. Open watches are fed each change as
//! it is stored; a watcher too slow to keep up is dropped, as the real API server does.
//!
//! The store never does IO; the HTTP side (`api`, `watch`) reads and writes it under one lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::mpsc;

use super::objects::ApiObject;
use super::status::ApiError;
use super::{RecordedPatch, RecordedRequest};

/// Changes kept for watches to resume from; older ones are compacted away automatically.
const HISTORY_LIMIT: usize = 10_000;
/// Changes queued for one watch before it counts as too slow and is closed.
const WATCH_QUEUE: usize = 1_024;
/// Requests and patches kept for tests to inspect.
const RECORD_LIMIT: usize = 10_000;

/// (namespace, name); namespace is empty for cluster-scoped kinds.
pub(crate) type ObjectKey = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One stored change. For `Deleted`, `current` is the object as it was when deleted, carrying
/// the deletion's resourceVersion.
#[derive(Debug)]
pub(crate) struct Change<K> {
    pub(crate) resource_version: u64,
    pub(crate) kind: ChangeKind,
    pub(crate) previous: Option<K>,
    pub(crate) current: K,
}

/// What a new watch starts with: the changes after the resourceVersion it asked for, and the
/// queue that receives every later change.
pub(crate) struct Subscription<K> {
    pub(crate) backlog: Vec<Arc<Change<K>>>,
    pub(crate) live: mpsc::Receiver<Arc<Change<K>>>,
}

pub(crate) struct Collection<K> {
    objects: BTreeMap<ObjectKey, K>,
    history: VecDeque<Arc<Change<K>>>,
    watchers: Vec<mpsc::Sender<Arc<Change<K>>>>,
}

impl<K> Default for Collection<K> {
    fn default() -> Self {
        Collection { objects: BTreeMap::new(), history: VecDeque::new(), watchers: Vec::new() }
    }
}

#[derive(Default)]
pub(crate) struct Store {
    resource_version: u64,
    /// Changes at or below this resourceVersion are gone from every history.
    compacted: u64,
    pub(crate) namespaces: Collection<Namespace>,
    pub(crate) pods: Collection<Pod>,
    pub(crate) patches: Vec<RecordedPatch>,
    pub(crate) requests: Vec<RecordedRequest>,
}

impl Store {
    pub(crate) fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub(crate) fn get<K: ApiObject>(&self, key: &ObjectKey) -> Option<&K> {
        K::collection(self).objects.get(key)
    }

    /// Every object of a kind in key order (in `namespace` only, when given).
    pub(crate) fn list<K: ApiObject>(&self, namespace: Option<&str>) -> Vec<&K> {
        K::collection(self)
            .objects
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|want| ns == want))
            .map(|(_, o)| o)
            .collect()
    }

    /// Stores a new object: gives it a uid, a creation time and a resourceVersion.
    pub(crate) fn create<K: ApiObject>(&mut self, mut object: K) -> Result<K, ApiError> {
        let key = object.key()?;
        if K::collection(self).objects.contains_key(&key) {
            return Err(ApiError::AlreadyExists { resource: K::PLURAL, name: key.1 });
        }
        if K::NAMESPACED && self.get::<Namespace>(&(String::new(), key.0.clone())).is_none() {
            return Err(ApiError::NotFound { resource: "namespaces", name: key.0 });
        }
        self.resource_version += 1;
        let meta = object.metadata_mut();
        meta.uid.get_or_insert_with(new_uid);
        meta.creation_timestamp.get_or_insert_with(|| Time(k8s_openapi::jiff::Timestamp::now()));
        meta.resource_version = Some(self.resource_version.to_string());
        K::collection_mut(self).objects.insert(key, object.clone());
        self.record(ChangeKind::Added, None, object.clone());
        Ok(object)
    }

    /// Rewrites a stored object with `change`. The object keeps its identity (name,
    /// namespace, uid, creation time); a change that alters nothing stores nothing and keeps
    /// the resourceVersion, as the real API server does.
    pub(crate) fn update<K: ApiObject>(
        &mut self,
        key: &ObjectKey,
        change: impl FnOnce(&K) -> Result<K, ApiError>,
    ) -> Result<K, ApiError> {
        let old = self.get::<K>(key).cloned().ok_or_else(|| ApiError::not_found::<K>(key))?;
        let mut new = change(&old)?;
        let (old_meta, meta) = (old.metadata(), new.metadata_mut());
        if meta.name != old_meta.name || meta.namespace != old_meta.namespace {
            return Err(ApiError::Invalid {
                kind: K::KIND,
                name: key.1.clone(),
                field: "metadata.name".into(),
                message: "field is immutable".into(),
            });
        }
        meta.uid.clone_from(&old_meta.uid);
        meta.creation_timestamp.clone_from(&old_meta.creation_timestamp);
        meta.resource_version.clone_from(&old_meta.resource_version);
        if same_json(&new, &old) {
            return Ok(old);
        }
        self.resource_version += 1;
        new.metadata_mut().resource_version = Some(self.resource_version.to_string());
        K::collection_mut(self).objects.insert(key.clone(), new.clone());
        self.record(ChangeKind::Modified, Some(old), new.clone());
        Ok(new)
    }

    /// Removes an object; the returned copy carries the deletion's resourceVersion.
    pub(crate) fn delete<K: ApiObject>(&mut self, key: &ObjectKey) -> Result<K, ApiError> {
        let mut gone = K::collection_mut(self).objects.remove(key).ok_or_else(|| ApiError::not_found::<K>(key))?;
        self.resource_version += 1;
        gone.metadata_mut().resource_version = Some(self.resource_version.to_string());
        self.record(ChangeKind::Deleted, None, gone.clone());
        Ok(gone)
    }

    /// Forgets every change so far: a watch from an older resourceVersion gets `410 Gone`.
    pub(crate) fn compact(&mut self) {
        self.compacted = self.resource_version;
        self.namespaces.history.clear();
        self.pods.history.clear();
    }

    /// Starts a watch of kind `K` after `since` (or after now): the changes it missed and a
    /// queue for what comes next, registered under the same lock so nothing falls between.
    pub(crate) fn subscribe<K: ApiObject>(&mut self, since: Option<u64>) -> Result<Subscription<K>, ApiError> {
        let backlog = match since {
            Some(rv) if rv < self.compacted => {
                return Err(ApiError::Gone { requested: rv, oldest: self.compacted });
            }
            Some(rv) => K::collection(self).history.iter().filter(|c| c.resource_version > rv).cloned().collect(),
            None => Vec::new(),
        };
        let (tx, live) = mpsc::channel(WATCH_QUEUE);
        K::collection_mut(self).watchers.push(tx);
        Ok(Subscription { backlog, live })
    }

    /// Records a request; the oldest are forgotten past a bound.
    pub(crate) fn note_request(&mut self, request: RecordedRequest) {
        push_bounded(&mut self.requests, request);
    }

    pub(crate) fn note_patch(&mut self, patch: RecordedPatch) {
        push_bounded(&mut self.patches, patch);
    }

    fn record<K: ApiObject>(&mut self, kind: ChangeKind, previous: Option<K>, current: K) {
        let change = Arc::new(Change { resource_version: self.resource_version, kind, previous, current });
        let collection = K::collection_mut(self);
        collection.history.push_back(change.clone());
        let mut forgotten = None;
        if collection.history.len() > HISTORY_LIMIT {
            forgotten = collection.history.pop_front().map(|c| c.resource_version);
        }
        // A watch whose queue is full or whose client left is dropped; its client re-watches.
        collection.watchers.retain(|w| w.try_send(change.clone()).is_ok());
        if let Some(rv) = forgotten {
            self.compacted = self.compacted.max(rv);
        }
    }
}

fn push_bounded<T>(list: &mut Vec<T>, item: T) {
    if list.len() >= RECORD_LIMIT {
        list.remove(0);
    }
    list.push(item);
}

fn same_json<K: ApiObject>(a: &K, b: &K) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

fn new_uid() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}
