//! Kubernetes as an enrollment source: which pods of this node belong in the mesh, and the
//! messages the chained CNI plugin sends to ztunnel when a pod is created.
//!
//! - [`rules`]: Istio's enrollment rules (`istio.io/dataplane-mode` on the namespace or the
//!   pod, and the exceptions), pure and shared by the node agent and the CNI plugin so both
//!   decide alike.
//! - [`cni_event`]: the request the CNI plugin sends over the plugin-event socket on ADD, and
//!   the answer it waits for.

pub mod cni_event;
pub mod rules;
