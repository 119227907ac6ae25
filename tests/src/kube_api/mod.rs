//! A test Kubernetes API server, so kube-rs clients (the node agent, tests) run for real
//! against it: HTTPS on 127.0.0.1 with a CA the test writes into a kubeconfig, bearer-token
//! authentication, and core/v1 `Namespace` and `Pod` objects as k8s-openapi values.
//!
//! It serves list (label and field selectors, resourceVersion, paging), watch (JSON lines,
//! resourceVersion semantics, bookmarks, `410 Gone` after compaction, timeouts, streaming
//! lists), get, and patch of pods and of `pods/status` (merge, strategic merge and JSON
//! patch), plus the discovery documents. One resourceVersion counter covers every object.
//!
//! Tests script it through [`KubeApiServer`]: create, change and delete objects as a
//! controller or kubectl would, `compact` the history, stop and restart on the same port
//! (an API-server outage: the objects survive, open watches break), and read back what
//! clients patched and requested. It is not a full API server: no admission, no other kinds,
//! no creates or deletes through HTTP, and lists show only the current state.

mod api;
mod objects;
mod patch;
mod routes;
mod selector;
mod server;
mod status;
mod store;
mod tls;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use objects::{namespace, pod};
pub use patch::PatchFormat;
pub use status::ApiError;

use server::Shared;

/// One patch a client sent, as received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedPatch {
    pub namespace: String,
    pub name: String,
    /// `Some("status")` for a patch of the status subresource.
    pub subresource: Option<String>,
    pub format: PatchFormat,
    pub body: serde_json::Value,
    pub field_manager: Option<String>,
    pub dry_run: bool,
}

/// One request a client made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string (still percent-encoded).
    pub query: String,
    /// The HTTP status; for a watch refused with an `ERROR` event (`410 Gone`), that code.
    pub code: u16,
}

/// A running test API server and the handle tests script it with.
pub struct KubeApiServer {
    shared: Arc<Shared>,
    tls: Arc<ServerConfig>,
    kubeconfig: PathBuf,
    running: Mutex<Option<JoinHandle<()>>>,
}

impl KubeApiServer {
    /// Starts on an ephemeral port of 127.0.0.1. `dir` receives the CA (`kube-ca.crt`) and a
    /// kubeconfig (`kubeconfig`) for it.
    pub async fn start(dir: &Path) -> KubeApiServer {
        let listener = bind("127.0.0.1:0".parse().expect("literal")).await;
        KubeApiServer::start_on(dir, listener)
    }

    /// Like [`KubeApiServer::start`] on a listener the caller bound, which must be on
    /// 127.0.0.1 (the serving certificate names that address).
    pub fn start_on(dir: &Path, listener: TcpListener) -> KubeApiServer {
        let addr = listener.local_addr().expect("bound listener has an address");
        let token = format!("test-token-{}", hex::encode(rand::random::<[u8; 8]>()));
        let (ca_pem, tls) = tls::generate();
        let ca_file = dir.join("kube-ca.crt");
        std::fs::write(&ca_file, ca_pem).unwrap_or_else(|e| panic!("write {}: {e}", ca_file.display()));
        let kubeconfig = dir.join("kubeconfig");
        let text = tls::kubeconfig(addr, &ca_file, &token);
        std::fs::write(&kubeconfig, text).unwrap_or_else(|e| panic!("write {}: {e}", kubeconfig.display()));
        let shared = Arc::new(Shared::new(token, addr));
        let task = server::serve(shared.clone(), tls.clone(), listener);
        KubeApiServer { shared, tls, kubeconfig, running: Mutex::new(Some(task)) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The kubeconfig written at start (usable as `KUBECONFIG`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Writes another copy of the kubeconfig to `path`.
    pub fn kubeconfig(&self, path: &Path) {
        std::fs::copy(&self.kubeconfig, path)
            .unwrap_or_else(|e| panic!("copy the kubeconfig to {}: {e}", path.display()));
    }

    /// A kube-rs client configured from the kubeconfig file, as a user's would be.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("our kubeconfig parses");
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.expect("our kubeconfig loads");
        kube::Client::try_from(config).expect("kube client from our kubeconfig")
    }

    /// The newest resourceVersion of the store.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().resource_version()
    }

    pub fn create_namespace(&self, namespace: Namespace) -> Result<Namespace, ApiError> {
        self.shared.lock().create(namespace)
    }

    /// Replaces a namespace (labels, status, everything but its identity).
    pub fn update_namespace(&self, namespace: Namespace) -> Result<Namespace, ApiError> {
        let key = store_key(&namespace)?;
        self.shared.lock().update::<Namespace>(&key, |_| Ok(namespace))
    }

    /// Changes a namespace in place.
    pub fn modify_namespace(&self, name: &str, change: impl FnOnce(&mut Namespace)) -> Result<Namespace, ApiError> {
        self.shared.lock().update::<Namespace>(&(String::new(), name.into()), |old| {
            let mut new = old.clone();
            change(&mut new);
            Ok(new)
        })
    }

    /// Sets (`Some`) or removes (`None`) labels of a namespace.
    pub fn set_namespace_labels(&self, name: &str, labels: &[(&str, Option<&str>)]) -> Result<Namespace, ApiError> {
        self.modify_namespace(name, |ns| apply_labels(&mut ns.metadata, labels))
    }

    /// Deletes a namespace and, first, every pod in it.
    pub fn delete_namespace(&self, name: &str) -> Result<Namespace, ApiError> {
        let mut store = self.shared.lock();
        let pods: Vec<_> = store.list::<Pod>(Some(name)).into_iter().filter_map(|p| store_key(p).ok()).collect();
        for key in pods {
            store.delete::<Pod>(&key)?;
        }
        store.delete::<Namespace>(&(String::new(), name.into()))
    }

    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        self.shared.lock().get::<Namespace>(&(String::new(), name.into())).cloned()
    }

    /// Creates a pod; its namespace must exist.
    pub fn create_pod(&self, pod: Pod) -> Result<Pod, ApiError> {
        self.shared.lock().create(pod)
    }

    /// Replaces a pod (spec, status, everything but its identity).
    pub fn update_pod(&self, pod: Pod) -> Result<Pod, ApiError> {
        let key = store_key(&pod)?;
        self.shared.lock().update::<Pod>(&key, |_| Ok(pod))
    }

    /// Changes a pod in place.
    pub fn modify_pod(&self, namespace: &str, name: &str, change: impl FnOnce(&mut Pod)) -> Result<Pod, ApiError> {
        self.shared.lock().update::<Pod>(&(namespace.into(), name.into()), |old| {
            let mut new = old.clone();
            change(&mut new);
            Ok(new)
        })
    }

    /// Sets (`Some`) or removes (`None`) labels of a pod.
    pub fn set_pod_labels(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, Option<&str>)],
    ) -> Result<Pod, ApiError> {
        self.modify_pod(namespace, name, |pod| apply_labels(&mut pod.metadata, labels))
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        self.shared.lock().delete::<Pod>(&(namespace.into(), name.into()))
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.shared.lock().get::<Pod>(&(namespace.into(), name.into())).cloned()
    }

    /// Forgets the change history: a watch from an older resourceVersion gets `410 Gone`.
    /// Open watches go on.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// Makes every open watch that allows bookmarks send one now.
    pub fn bookmark_now(&self) {
        self.shared.bookmarks.send_modify(|n| *n += 1);
    }

    /// Ends every open watch cleanly, as the server does when a watch times out; clients
    /// re-watch from the last resourceVersion they saw.
    pub fn close_watches(&self) {
        self.shared.close_watches.send_modify(|n| *n += 1);
    }

    /// Stops serving: the port refuses connections and every open connection breaks. The
    /// objects are kept.
    pub async fn stop(&self) {
        let task = self.running.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.abort();
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Serves again on the same port with the same objects, CA and token.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = bind(self.shared.addr).await;
        let task = server::serve(self.shared.clone(), self.tls.clone(), listener);
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    /// Every patch clients sent that the server accepted, oldest first.
    pub fn patches(&self) -> Vec<RecordedPatch> {
        self.shared.lock().patches.clone()
    }

    /// Every request clients made, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        if let Some(task) = self.running.lock().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
        self.close_watches();
    }
}

fn store_key<K: objects::ApiObject>(object: &K) -> Result<store::ObjectKey, ApiError> {
    object.key()
}

fn apply_labels(meta: &mut ObjectMeta, labels: &[(&str, Option<&str>)]) {
    let map = meta.labels.get_or_insert_with(Default::default);
    for (key, value) in labels {
        match value {
            Some(v) => map.insert(key.to_string(), v.to_string()),
            None => map.remove(*key),
        };
    }
}

/// Binds `addr`, retrying for a while: a port just released may be busy for a moment.
async fn bind(addr: SocketAddr) -> TcpListener {
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind the test API server to {addr}");
}
