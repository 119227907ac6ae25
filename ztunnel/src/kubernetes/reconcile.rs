//! The node agent's decisions, without IO: what a pod of this node should be ([`want`]),
//! what to do next to get there ([`next_step`]), and how long to wait before retrying failed
//! work ([`retry_delay`]).
//!
//! A pod is looked at through [`PodView`], the few fields of the Kubernetes object that
//! matter. Pods not yet running (no address yet) wait: nothing is done to them, so a pod the
//! CNI plugin enrolled while the API still shows it pending stays enrolled.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::rules::{self, Decision, EnrollmentScope, PodFacts, REDIRECTION_ANNOTATION, REDIRECTION_ENABLED};
use crate::types::WorkloadUid;

type Map = BTreeMap<String, String>;

/// A pod's namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl PodKey {
    /// The workload uid istiod gives this pod: `<cluster>//Pod/<namespace>/<name>`.
    pub fn workload_uid(&self, cluster_id: &str) -> WorkloadUid {
        WorkloadUid::from(format!("{cluster_id}//Pod/{}/{}", self.namespace, self.name))
    }

    /// The pod named by a workload uid of the form [`PodKey::workload_uid`] makes.
    pub fn from_workload_uid(uid: &WorkloadUid) -> Option<PodKey> {
        let (_, rest) = uid.as_str().split_once("//Pod/")?;
        let (namespace, name) = rest.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| PodKey { namespace: namespace.into(), name: name.into() })
    }
}

/// The parts of a Pod the agent acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub key: PodKey,
    /// `metadata.uid`: tells a pod from a later one with the same name.
    pub kube_uid: String,
    pub labels: Map,
    pub annotations: Map,
    pub host_network: bool,
    /// `status.podIPs` (or `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// `status.phase`.
    pub phase: String,
}

impl PodView {
    /// Reads a Pod object; `None` without a name or namespace.
    pub fn from_pod(pod: &Pod) -> Option<PodView> {
        let meta = &pod.metadata;
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|list| list.iter().filter_map(|p| p.ip.parse().ok()).collect())
            .unwrap_or_default();
        if ips.is_empty()
            && let Some(ip) = status.and_then(|s| s.pod_ip.as_ref()).and_then(|ip| ip.parse().ok())
        {
            ips.push(ip);
        }
        Some(PodView {
            key: PodKey { namespace: meta.namespace.clone()?, name: meta.name.clone()? },
            kube_uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            host_network: pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false),
            ips,
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        })
    }

    /// The pod carries `ambient.istio.io/redirection: enabled`.
    pub fn annotated_enabled(&self) -> bool {
        self.annotations.get(REDIRECTION_ANNOTATION).map(String::as_str) == Some(REDIRECTION_ENABLED)
    }

    fn finished(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

/// What a pod should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Enrolled,
    /// Not enrolled, for this reason (Istio's rules).
    NotEnrolled(rules::SkipReason),
    /// Its containers have finished: released.
    Finished,
    /// Not running yet (no address): left as it is until it is.
    Wait,
}

/// Decides what `pod`, in a namespace labelled `namespace_labels`, should be.
pub fn want(pod: &PodView, namespace_labels: Option<&Map>, scope: &EnrollmentScope) -> Want {
    let facts = PodFacts {
        namespace: &pod.key.namespace,
        labels: Some(&pod.labels),
        annotations: Some(&pod.annotations),
        host_network: pod.host_network,
    };
    match rules::decide(&facts, namespace_labels, scope) {
        Decision::Skip(reason) => Want::NotEnrolled(reason),
        Decision::Enroll if pod.finished() => Want::Finished,
        Decision::Enroll if pod.ips.is_empty() => Want::Wait,
        Decision::Enroll => Want::Enrolled,
    }
}

/// What the agent holds for a pod it has enrolled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The `metadata.uid` of the pod enrolled; `None` when unknown (re-adopted after a
    /// restart, or enrolled by the CNI plugin before the API showed the pod).
    pub kube_uid: Option<String>,
}

/// The next thing to do for a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Enroll,
    /// Release the pod (a later round enrolls the new pod when a pod replaced it).
    Release,
    /// Set `ambient.istio.io/redirection: enabled`.
    Annotate,
    /// Remove that annotation.
    RemoveAnnotation,
    Nothing,
}

/// The step from what the pod is (`held`, its annotation) toward what it should be (`want`).
/// `annotation_pending` is the annotation state last patched and not yet seen on the pod
/// (so the same patch is not sent again while the watch catches up).
pub fn next_step(pod: &PodView, want: &Want, held: Option<&Held>, annotation_pending: Option<bool>) -> Step {
    let replaced = held.is_some_and(|h| h.kube_uid.as_deref().is_some_and(|uid| uid != pod.kube_uid));
    match (want, held) {
        (Want::Wait, _) => Step::Nothing,
        (_, Some(_)) if replaced => Step::Release,
        (Want::Enrolled, None) => Step::Enroll,
        (Want::Enrolled, Some(_)) if !pod.annotated_enabled() && annotation_pending != Some(true) => Step::Annotate,
        (Want::Enrolled, Some(_)) => Step::Nothing,
        (Want::NotEnrolled(_) | Want::Finished, Some(_)) => Step::Release,
        (Want::NotEnrolled(_) | Want::Finished, None)
            if pod.annotated_enabled() && annotation_pending != Some(false) =>
        {
            Step::RemoveAnnotation
        }
        (Want::NotEnrolled(_) | Want::Finished, None) => Step::Nothing,
    }
}

/// First retry delay of failed work; it doubles per failure up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Longest wait between retries.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The wait before retry number `failures` (1 = after the first failure): exponential,
/// capped, with `jitter` in `[0, 1)` spreading it over 80%..120% of the nominal delay so pods
/// that failed together do not retry together.
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let nominal = FIRST_RETRY_DELAY.saturating_mul(1 << exponent).min(MAX_RETRY_DELAY);
    nominal.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
