//! Kubernetes as an enrollment source: the node agent that keeps the pods of this node
//! enrolled in capture as Istio's ambient rules say, and the messages the chained CNI plugin
//! sends to it when a pod is created.
//!
//! - [`rules`]: Istio's enrollment rules (`istio.io/dataplane-mode` on the namespace or the
//!   pod, and the exceptions), pure and shared by the node agent and the CNI plugin so both
//!   decide alike.
//! - [`cni_event`]: the request the CNI plugin sends over the plugin-event socket on ADD, and
//!   the answer it waits for; [`plugin_events`] serves that socket.
//! - [`reconcile`]: the agent's decisions without IO (what a pod should be, the next step,
//!   retry delays); [`agent`] does the work; [`watch`] keeps the API server's Pods (of this
//!   node) and Namespaces in reflector stores; [`status`] patches the
//!   `ambient.istio.io/redirection` annotation; [`proc_netns`] finds a running pod's network
//!   namespace through the host's `/proc`; [`enroller`] is what the agent enrolls through.
//!
//! RBAC the agent needs, and no more: `namespaces` and `pods` get/list/watch, and
//! `pods/status` patch.
//!
//! This module must not reach into capture's internals: it enrolls and releases through
//! [`enroller::Enroller`] only.

pub mod agent;
pub mod agent_metrics;
pub mod cni_event;
pub mod enroller;
pub mod plugin_events;
pub mod proc_netns;
pub mod reconcile;
pub mod rules;
pub mod status;
pub mod watch;

use std::sync::Arc;

use agent::NodeAgent;
use cni_event::{Answer, PodAdded};
use enroller::Enroller;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

/// The agent with the pod store it looks new pods up in: what serves plugin events.
pub struct PluginEventTarget<E: Enroller> {
    pub agent: Arc<NodeAgent<E>>,
    pub pods: Store<Pod>,
}

impl<E: Enroller> plugin_events::PodAddedHandler for PluginEventTarget<E> {
    async fn pod_added(&self, added: PodAdded) -> Answer {
        self.agent.pod_added(added, Some(&self.pods)).await
    }
}
