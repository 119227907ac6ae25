//! Watches: a stream of JSON lines `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": …}`
//! with the real API server's semantics.
//!
//! - No resourceVersion (or `0`): `ADDED` for every current object, then changes.
//! - resourceVersion N: every change after N, then live changes; N older than the last
//!   compaction gets one `ERROR` event carrying a `410 Expired` Status, then the stream ends.
//! - `sendInitialEvents=true`: the current objects, then a `BOOKMARK` annotated
//!   `k8s.io/initial-events-end`, then changes (streaming lists).
//! - Selectors apply to both sides of a change: an object that stops matching is sent as
//!   `DELETED`, one that starts matching as `ADDED`.
//! - `allowWatchBookmarks`: `BOOKMARK`s carry the resourceVersion the watch has seen up to,
//!   sent every minute, when the test asks, and before `timeoutSeconds` ends the stream.
//!
//! Each watch is a task writing to the response body; it ends when the client leaves, the
//! timeout passes, the test closes every watch, or the store drops it for being too slow.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::WatchEvent;
use serde_json::json;
use tokio::sync::mpsc;

use super::api::Filter;
use super::objects::ApiObject;
use super::routes::Query;
use super::server::Shared;
use super::status::ApiError;
use super::store::{Change, ChangeKind, Subscription};

/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// The longest a watch lasts when the client names no timeout (the real server picks 30-60 min).
const LONGEST_WATCH: Duration = Duration::from_secs(30 * 60);
/// Lines buffered between the watch task and the connection.
const BODY_QUEUE: usize = 64;
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// A response body fed line by line by a watch task.
pub(crate) struct WatchBody(mpsc::Receiver<Bytes>);

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

/// What the watch sends first.
enum Start<K> {
    /// The current objects as `ADDED`, optionally closed by the initial-events-end bookmark.
    Snapshot {
        objects: Vec<K>,
        end_bookmark: bool,
    },
    Backlog(Vec<Arc<Change<K>>>),
}

/// Starts a watch of kind `K` (in `namespace`, when given). Returns the body and the code to
/// record: 200, or 410 when the stream consists of the `Expired` error alone.
pub(crate) fn start<K: ApiObject>(
    shared: &Arc<Shared>,
    namespace: Option<String>,
    query: &Query,
) -> Result<(WatchBody, u16), ApiError> {
    let filter = Filter::parse::<K>(query)?;
    let (tx, rx) = mpsc::channel(BODY_QUEUE);
    let mut store = shared.lock();
    let snapshot = |store: &super::store::Store| -> Vec<K> {
        store.list::<K>(namespace.as_deref()).into_iter().filter(|o| filter.matches(*o)).cloned().collect()
    };
    let (start, live) = match (query.resource_version, query.send_initial_events) {
        (_, Some(true)) => {
            let objects = snapshot(&store);
            (Start::Snapshot { objects, end_bookmark: query.allow_bookmarks }, store.subscribe::<K>(None)?.live)
        }
        (None, Some(false)) => (Start::Backlog(Vec::new()), store.subscribe::<K>(None)?.live),
        (None, None) => {
            let objects = snapshot(&store);
            (Start::Snapshot { objects, end_bookmark: false }, store.subscribe::<K>(None)?.live)
        }
        (Some(rv), _) => match store.subscribe::<K>(Some(rv)) {
            Ok(Subscription { backlog, live }) => (Start::Backlog(backlog), live),
            Err(gone @ ApiError::Gone { .. }) => {
                let _ = tx.try_send(line(&WatchEvent::<K>::ErrorStatus(gone.to_status())));
                return Ok((WatchBody(rx), 410));
            }
            Err(other) => return Err(other),
        },
    };
    let seen = query.resource_version.unwrap_or(store.resource_version());
    drop(store);
    let timeout = query.timeout_seconds.map(Duration::from_secs).unwrap_or(LONGEST_WATCH).min(LONGEST_WATCH);
    let stream = WatchStream {
        shared: shared.clone(),
        tx,
        filter,
        in_scope: Box::new(in_scope::<K>(namespace)),
        bookmarks: query.allow_bookmarks,
        seen,
    };
    tokio::spawn(stream.run(start, live, timeout));
    Ok((WatchBody(rx), 200))
}

fn in_scope<K: ApiObject>(namespace: Option<String>) -> impl Fn(&K) -> bool + Send + Sync {
    move |o: &K| namespace.is_none() || o.metadata().namespace == namespace
}

struct WatchStream<K> {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Bytes>,
    filter: Filter,
    in_scope: Box<dyn Fn(&K) -> bool + Send + Sync>,
    bookmarks: bool,
    /// The newest resourceVersion of this kind the watch has processed.
    seen: u64,
}

impl<K: ApiObject> WatchStream<K> {
    async fn run(mut self, start: Start<K>, mut live: mpsc::Receiver<Arc<Change<K>>>, timeout: Duration) {
        let mut bookmark_asked = self.shared.bookmarks.subscribe();
        let mut closed = self.shared.close_watches.subscribe();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        let started = match start {
            Start::Snapshot { objects, end_bookmark } => {
                let mut ok = true;
                for object in objects {
                    ok = ok && self.send(line(&WatchEvent::Added(object))).await;
                }
                if ok && end_bookmark {
                    let annotations = BTreeMap::from([(INITIAL_EVENTS_END.to_string(), "true".to_string())]);
                    ok = self.send(bookmark::<K>(self.seen, annotations)).await;
                }
                ok
            }
            Start::Backlog(changes) => {
                let mut ok = true;
                for change in changes {
                    ok = ok && self.deliver(&change).await;
                }
                ok
            }
        };
        if !started {
            return;
        }
        loop {
            tokio::select! {
                change = live.recv() => match change {
                    Some(change) => if !self.deliver(&change).await { return },
                    // Dropped by the store for falling behind: end, the client re-watches.
                    None => return,
                },
                asked = bookmark_asked.changed() => {
                    if asked.is_err() || !self.bookmark(&mut live).await { return }
                }
                _ = every.tick() => if !self.bookmark(&mut live).await { return },
                _ = closed.changed() => return,
                () = &mut deadline => {
                    self.bookmark(&mut live).await;
                    return;
                }
                () = self.tx.closed() => return,
            }
        }
    }

    /// Sends what `change` means to this watch (perhaps nothing); false once the client left.
    async fn deliver(&mut self, change: &Change<K>) -> bool {
        self.seen = self.seen.max(change.resource_version);
        let matches = |o: &K| (self.in_scope)(o) && self.filter.matches(o);
        let was = change.previous.as_ref().is_some_and(matches);
        let is = matches(&change.current);
        let event = match (change.kind, was, is) {
            (ChangeKind::Added, _, true) => WatchEvent::Added(change.current.clone()),
            (ChangeKind::Deleted, _, true) => WatchEvent::Deleted(change.current.clone()),
            (ChangeKind::Modified, true, true) => WatchEvent::Modified(change.current.clone()),
            (ChangeKind::Modified, false, true) => WatchEvent::Added(change.current.clone()),
            (ChangeKind::Modified, true, false) => {
                // Left the selection: the last state it matched in, at this change's version.
                let mut last = change.previous.clone().expect("was matched, so it exists");
                last.metadata_mut().resource_version = Some(change.resource_version.to_string());
                WatchEvent::Deleted(last)
            }
            _ => return true,
        };
        self.send(line(&event)).await
    }

    /// Sends a bookmark at the newest version processed, after taking in what is queued.
    async fn bookmark(&mut self, live: &mut mpsc::Receiver<Arc<Change<K>>>) -> bool {
        while let Ok(change) = live.try_recv() {
            if !self.deliver(&change).await {
                return false;
            }
        }
        !self.bookmarks || self.send(bookmark::<K>(self.seen, BTreeMap::new())).await
    }

    async fn send(&self, line: Bytes) -> bool {
        self.tx.send(line).await.is_ok()
    }
}

fn line<K: ApiObject>(event: &WatchEvent<K>) -> Bytes {
    let mut text = serde_json::to_vec(event).expect("watch events serialize");
    text.push(b'\n');
    Bytes::from(text)
}

/// A `BOOKMARK` event: an otherwise empty object of the kind (with `apiVersion` and `kind`,
/// which clients require) carrying only the resourceVersion and annotations.
fn bookmark<K: ApiObject>(resource_version: u64, annotations: BTreeMap<String, String>) -> Bytes {
    let mut object = K::default();
    let meta = object.metadata_mut();
    meta.resource_version = Some(resource_version.to_string());
    meta.annotations = Some(annotations);
    let mut text = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": object})).expect("serializes");
    text.push(b'\n');
    Bytes::from(text)
}
