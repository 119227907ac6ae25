//! The node agent's view of the API server: a kube-rs client (from `--kubeconfig`, else
//! `KUBECONFIG` or `~/.kube/config`, else the in-cluster service account) and two
//! watcher/reflector pairs: all Namespaces, and the Pods of this node
//! (`fieldSelector=spec.nodeName=<node>`).
//!
//! The reflectors' stores are what the agent acts on. kube-rs's watcher relists after a
//! `410 Gone` and retries a broken watch with backoff; meanwhile the stores keep their last
//! complete state, so an API-server outage changes nothing that is captured, and the changes
//! made during it apply once the watch resumes (a relist replaces a store only once it is
//! complete). The agent's first round waits for both first listings, so pods enrolled before
//! a restart are never released for want of having heard of them.

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use super::agent::NodeAgent;
use super::enroller::Enroller;
use crate::drain::DrainWatch;

/// Failures of connecting to the API server.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("finding the Kubernetes API server (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for `kubeconfig` when given, else as kube-rs infers it.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, WatchError> {
    let config = match kubeconfig {
        Some(path) => {
            let shown = || path.display().to_string();
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|source| WatchError::Kubeconfig { path: shown(), source })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| WatchError::Kubeconfig { path: shown(), source })?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Runs the watches and the agent's rounds until the drain starts.
pub async fn run<E: Enroller>(agent: Arc<NodeAgent<E>>, stores: Stores, drain: DrainWatch) {
    let Stores { pods, namespaces, pod_writer, namespace_writer } = stores;
    let client = agent.client().clone();
    let node_pods = watcher::Config::default().fields(&format!("spec.nodeName={}", agent.settings().node));
    let pod_events = reflector::reflector(pod_writer, watcher(Api::<Pod>::all(client.clone()), node_pods))
        .default_backoff()
        .map(|e| e.map(|_| ()))
        .boxed();
    let namespace_events =
        reflector::reflector(namespace_writer, watcher(Api::<Namespace>::all(client), watcher::Config::default()))
            .default_backoff()
            .map(|e| e.map(|_| ()))
            .boxed();
    let watches = async {
        let mut events = futures_util::stream::select(pod_events, namespace_events);
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => agent.wake.notify_one(),
                Err(e) => warn!(error = %e, "Kubernetes watch failed; retrying (what is captured stays as it is)"),
            }
        }
    };
    let rounds = async {
        agent.adopt_enrolled().await;
        if pods.wait_until_ready().await.is_err() || namespaces.wait_until_ready().await.is_err() {
            return;
        }
        info!("node agent synced with the API server");
        loop {
            agent.reconcile(&pods, &namespaces).await;
            let retry = agent.next_retry();
            tokio::select! {
                _ = agent.wake.notified() => {}
                _ = async { match retry { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    debug!("retrying failed node agent work");
                }
            }
        }
    };
    tokio::select! {
        _ = watches => warn!("Kubernetes watches ended"),
        _ = rounds => {}
        _ = drain.signaled() => {}
    }
}

/// The reflector stores and their writers (the stores are shared with the plugin events).
pub struct Stores {
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pod_writer: reflector::store::Writer<Pod>,
    namespace_writer: reflector::store::Writer<Namespace>,
}

impl Stores {
    pub fn new() -> Stores {
        let (pods, pod_writer) = reflector::store();
        let (namespaces, namespace_writer) = reflector::store();
        Stores { pods, namespaces, pod_writer, namespace_writer }
    }
}

impl Default for Stores {
    fn default() -> Self {
        Stores::new()
    }
}
