//! Options of the Kubernetes node agent (`--kubernetes`), with the environment variables
//! Istio's ztunnel chart sets, and the plain data they parse into.

use std::path::PathBuf;

use clap::Args;

use crate::kubernetes::cni_event::DEFAULT_SOCKET_PATH;
use crate::kubernetes::proc_netns::DEFAULT_PROC_ROOT;
use crate::kubernetes::rules::{DEFAULT_SYSTEM_NAMESPACE, EnrollmentScope};

#[derive(Debug, Clone, Args)]
pub struct KubernetesArgs {
    /// Run the node agent: watch this node's Pods and the Namespaces, and enroll pods in
    /// capture as Istio's ambient labels say (needs --capture).
    #[arg(long, env = "ZTUNNEL_KUBERNETES")]
    pub kubernetes: bool,

    /// Kubeconfig file for the API server. Unset: `KUBECONFIG`, `~/.kube/config`, or the
    /// in-cluster service account.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The host's `/proc` (`/host/proc` when ztunnel runs in a container), where running
    /// pods' network namespaces are found.
    #[arg(long, default_value = DEFAULT_PROC_ROOT)]
    pub proc_root: PathBuf,

    /// Unix socket on which the CNI plugin announces new pods.
    #[arg(long, default_value = DEFAULT_SOCKET_PATH)]
    pub plugin_event_socket: PathBuf,

    /// Namespaces whose pods are never enrolled (comma-separated). Default: `kube-system`
    /// and the system namespace.
    #[arg(long, value_delimiter = ',')]
    pub excluded_namespaces: Option<Vec<String>>,

    /// Istio's system namespace, where ztunnel runs (its own pods are never enrolled).
    #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_SYSTEM_NAMESPACE)]
    pub system_namespace: String,

    /// Istio's cluster id as the chart passes it to proxies; when set, it names the cluster in
    /// the workload uids of pods (otherwise `--cluster-id`).
    #[arg(long, env = "ISTIO_META_CLUSTER_ID", hide = true)]
    pub meta_cluster_id: Option<String>,

    /// The chart's grace period of ztunnel's pod: the drain deadline is kept a second short
    /// of it so connections are closed cleanly before the kubelet kills the process.
    #[arg(long, env = "TERMINATION_GRACE_PERIOD_SECONDS", hide = true)]
    pub termination_grace_period_seconds: Option<u64>,
}

/// The node agent's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub kubeconfig: Option<PathBuf>,
    pub proc_root: PathBuf,
    pub plugin_event_socket: PathBuf,
    pub scope: EnrollmentScope,
    /// The first part of pod workload uids.
    pub cluster_id: String,
}

impl KubernetesArgs {
    /// The agent's settings when `--kubernetes` is on; `cluster_id` is `--cluster-id`.
    pub(super) fn config(&self, cluster_id: &str) -> Option<KubernetesConfig> {
        self.kubernetes.then(|| KubernetesConfig {
            kubeconfig: self.kubeconfig.clone(),
            proc_root: self.proc_root.clone(),
            plugin_event_socket: self.plugin_event_socket.clone(),
            scope: EnrollmentScope {
                system_namespace: self.system_namespace.clone(),
                excluded_namespaces: self
                    .excluded_namespaces
                    .clone()
                    .unwrap_or_else(|| vec!["kube-system".to_string(), self.system_namespace.clone()]),
            },
            cluster_id: self.meta_cluster_id.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| cluster_id.into()),
        })
    }
}
