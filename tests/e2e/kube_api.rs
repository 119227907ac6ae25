//! The test Kubernetes API server driven by real kube-rs clients: lists with selectors,
//! `watcher` and `reflector` through changes, compaction (`410 Gone` and a relist), an
//! outage and restart, bookmarks, and `pods/status` patches. Loopback only; each test has
//! its own server, port and directory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use serde_json::json;
use ztunnel_tests::kube_api::{KubeApiServer, PatchFormat, namespace, pod};
use ztunnel_tests::wait::eventually;

const WAIT: Duration = Duration::from_secs(20);
const REDIRECTION: &str = "ambient.istio.io/redirection";

async fn server() -> (tempfile::TempDir, KubeApiServer) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = KubeApiServer::start(dir.path()).await;
    server
        .create_namespace(namespace("apps", &[("istio.io/dataplane-mode", "ambient")]))
        .expect("create namespace apps");
    (dir, server)
}

/// What a kube-rs watcher reported, one line per event, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn contains(&self, line: &str) -> bool {
        self.lines().iter().any(|l| l == line)
    }

    /// Runs `stream` in the background, describing each item.
    fn follow(
        &self,
        stream: impl futures_util::Stream<Item = Result<Event<Pod>, watcher::Error>> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let seen = self.0.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                seen.lock().unwrap().push(describe(item));
            }
        })
    }
}

fn describe(item: Result<Event<Pod>, watcher::Error>) -> String {
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let labels = |p: &Pod| format!("{:?}", p.metadata.labels.clone().unwrap_or_default());
    match item {
        Ok(Event::Init) => "init".into(),
        Ok(Event::InitApply(p)) => format!("init-apply {}", name(&p)),
        Ok(Event::InitDone) => "init-done".into(),
        Ok(Event::Apply(p)) => {
            let redirection = p.metadata.annotations.as_ref().and_then(|a| a.get(REDIRECTION));
            let note = redirection.map(|v| format!(" redirection={v}")).unwrap_or_default();
            format!("apply {} {}{note}", name(&p), labels(&p))
        }
        Ok(Event::Delete(p)) => format!("delete {}", name(&p)),
        Err(watcher::Error::WatchError(status)) => format!("error {}", status.code),
        Err(_) => "error".into(),
    }
}

fn names(store: &Store<Pod>) -> Vec<String> {
    let mut names: Vec<String> = store.state().iter().filter_map(|p| p.metadata.name.clone()).collect();
    names.sort();
    names
}

#[path = "kube_api/clients.rs"]
mod clients;
#[path = "kube_api/lists.rs"]
mod lists;
#[path = "kube_api/patches.rs"]
mod patches;
#[path = "kube_api/watches.rs"]
mod watches;
