//! Local enrollment of workloads in eBPF capture: a workload on this node may name its pod's
//! network namespace in the local config (an extension of Istio's format, which has no such
//! field; on Kubernetes the node agent finds it instead). A `cgroup` field, which earlier
//! versions required, is accepted and ignored with a warning: capture selects a pod by its
//! network namespace.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::capture_exclusions::CaptureExclusions;
use crate::types::WorkloadUid;

/// Where a workload's pod lives on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCapture {
    /// The workload's uid.
    pub uid: WorkloadUid,
    /// Node the workload runs on.
    pub node: Arc<str>,
    /// The pod's network namespace (`/var/run/netns/NAME` or `/proc/PID/ns/net`).
    pub netns: PathBuf,
    /// Traffic kept out of capture, from the block's `annotations` (Istio's pod annotations).
    pub exclusions: CaptureExclusions,
}

/// The `capture` block of a workload entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CaptureEntry {
    #[serde(default)]
    pub netns: String,
    /// Ignored (earlier versions needed it); present only to warn about it.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// The pod's annotations, as Kubernetes would give them; the capture exclusion ones
    /// (`traffic.sidecar.istio.io/exclude*`, `ambient.istio.io/bypass-inbound-capture`) apply.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}
