//! Reads the pod and its namespace from the API server (kube-rs, with the plugin's kubeconfig)
//! and applies Istio's enrollment rules to them (`ztunnel::kubernetes::rules::decide`).
//!
//! Failed reads are retried once a second until the configured deadline, as Istio's plugin
//! does; each request is bounded too, so a black-holed API server cannot hold ADD longer.
//! What the caller does when the deadline passes is decided in [`super`].

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use ztunnel::kubernetes::rules::{Decision, PodFacts, decide};

use super::config::PluginConfig;
use super::env::PodRef;

/// The longest a single API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between attempts.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The rules' verdict on a pod, and its uid as the API server knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) decision: Decision,
    pub(crate) uid: Option<String>,
}

/// Why the pod could not be judged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("kubeconfig {path}: {detail}")]
    Kubeconfig { path: String, detail: String },
    #[error("no Kubernetes client config (in-cluster or $KUBECONFIG): {0}")]
    Infer(String),
    #[error("building the Kubernetes client for {server}: {detail}")]
    Client { server: String, detail: String },
    #[error("pod {pod}: the API server {server} did not give the pod and its namespace within {deadline:?}: {last}")]
    Unreachable { pod: PodRef, server: String, deadline: Duration, last: String },
}

/// Reads `pod` and its namespace and applies the rules, within `conf.api_deadline`.
pub(crate) fn judge(conf: &PluginConfig, pod: &PodRef) -> Result<Verdict, LookupError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LookupError::Client { server: "(none)".into(), detail: format!("starting a runtime: {e}") })?;
    runtime.block_on(judge_async(conf, pod))
}

async fn judge_async(conf: &PluginConfig, pod: &PodRef) -> Result<Verdict, LookupError> {
    let started = Instant::now();
    let (client, server) = client(conf).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let namespaces: Api<Namespace> = Api::all(client);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let left = conf.api_deadline.saturating_sub(started.elapsed());
        let limit = left.min(REQUEST_TIMEOUT);
        let read = async {
            let found = pods.get(&pod.name).await.map_err(|e| format!("reading pod {pod}: {e}"))?;
            let namespace = namespaces
                .get(&pod.namespace)
                .await
                .map_err(|e| format!("reading namespace {}: {e}", pod.namespace))?;
            Ok::<_, String>((found, namespace))
        };
        let last = match tokio::time::timeout(limit, read).await {
            Ok(Ok((found, namespace))) => return Ok(verdict(conf, &found, &namespace)),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {limit:?}"),
        };
        tracing::debug!(%pod, attempt, error = %last, "API read failed");
        let left = conf.api_deadline.saturating_sub(started.elapsed());
        if left <= RETRY_INTERVAL {
            return Err(LookupError::Unreachable { pod: pod.clone(), server, deadline: conf.api_deadline, last });
        }
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

fn verdict(conf: &PluginConfig, pod: &Pod, namespace: &Namespace) -> Verdict {
    let facts = PodFacts {
        namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
        labels: pod.metadata.labels.as_ref(),
        annotations: pod.metadata.annotations.as_ref(),
        host_network: pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false),
    };
    Verdict { decision: decide(&facts, namespace.metadata.labels.as_ref(), &conf.scope), uid: pod.metadata.uid.clone() }
}

/// The client config: the configured kubeconfig file, else what kube-rs infers.
async fn client_config(conf: &PluginConfig) -> Result<Config, LookupError> {
    let mut config = match &conf.kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| LookupError::Kubeconfig { path: shown.clone(), detail: e.to_string() })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| LookupError::Kubeconfig { path: shown, detail: e.to_string() })?
        }
        None => Config::infer().await.map_err(|e| LookupError::Infer(e.to_string()))?,
    };
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    Ok(config)
}

/// The client, and the API server's URL for messages.
async fn client(conf: &PluginConfig) -> Result<(Client, String), LookupError> {
    let config = client_config(conf).await?;
    let server = config.cluster_url.to_string();
    let client =
        Client::try_from(config).map_err(|e| LookupError::Client { server: server.clone(), detail: e.to_string() })?;
    Ok((client, server))
}
