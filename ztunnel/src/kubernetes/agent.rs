//! The node agent's work: keeps the pods of this node enrolled or released as Istio's rules
//! say, from the Pods and Namespaces the watches ([`super::watch`]) keep in their stores and
//! from the CNI plugin's events ([`super::plugin_events`]).
//!
//! One round ([`NodeAgent::reconcile`]) looks at every pod of the node: it decides what the
//! pod should be ([`reconcile::want`]), takes the next step ([`reconcile::next_step`]): enroll
//! (its network namespace found through the host's `/proc`, verified to hold the pod's
//! address), release, or set / remove the `ambient.istio.io/redirection` annotation; and
//! releases pods that left the store (deleted). Failed work is logged with the pod, counted,
//! remembered for `/config_dump` and retried after a jittered, growing delay. Enrolling and
//! releasing are serialized (one round or one plugin event at a time); annotation patches go
//! out after the round, so an unreachable API server never holds up a plugin event.
//!
//! The agent never releases a pod because it has not heard of it yet: pods re-adopted after a
//! restart are kept until the first complete listing of the node's pods says otherwise, and a
//! pod the plugin enrolled is kept for [`PLUGIN_GRACE`] while the watch catches up.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::reflector::Store;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use super::agent_metrics::AgentMetrics;
use super::cni_event::{Answer, PodAdded};
use super::enroller::{Enroller, PodEnrollment};
use super::proc_netns;
use super::reconcile::{self, Held, PodKey, PodView, Step, Want};
use super::rules::EnrollmentScope;
use super::status;
use crate::state::CaptureExclusions;
use crate::types::WorkloadUid;

/// How long a pod the CNI plugin enrolled is kept while the watch has not shown it yet.
pub const PLUGIN_GRACE: Duration = Duration::from_secs(60);

/// What the agent needs to know about its node.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub node: String,
    /// Istio's cluster id: the first part of workload uids.
    pub cluster_id: String,
    pub scope: EnrollmentScope,
    /// The host's `/proc`.
    pub proc_root: PathBuf,
}

/// What the agent remembers about one pod.
#[derive(Clone, Debug)]
struct Tracked {
    uid: WorkloadUid,
    held: Option<Held>,
    /// When the plugin enrolled it (kept for [`PLUGIN_GRACE`] while absent from the store).
    plugin_enrolled_at: Option<Instant>,
    want: Option<Want>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    /// The annotation state last patched and not yet seen on the pod.
    annotation_pending: Option<bool>,
}

impl Tracked {
    fn new(uid: WorkloadUid) -> Tracked {
        Tracked {
            uid,
            held: None,
            plugin_enrolled_at: None,
            want: None,
            failures: 0,
            retry_at: None,
            last_error: None,
            annotation_pending: None,
        }
    }

    fn state(&self) -> &'static str {
        match (&self.held, &self.want) {
            (Some(_), _) => "enrolled",
            (None, Some(Want::Enrolled)) if self.failures > 0 => "failed",
            (None, Some(Want::Enrolled) | Some(Want::Wait) | None) => "waiting",
            (None, _) => "skipped",
        }
    }

    fn failed(&mut self, key: &PodKey, what: &str, error: String, metrics: &AgentMetrics) {
        self.failures += 1;
        let delay = reconcile::retry_delay(self.failures, rand::random());
        self.retry_at = Some(Instant::now() + delay);
        warn!(pod = %key, uid = self.uid.as_str(), error = %error, retry_in = ?delay, "{what} failed");
        self.last_error = Some(error);
        metrics.counted("failed");
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        self.last_error = None;
    }
}

/// One pod in `/config_dump`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDump {
    pub pod: String,
    pub uid: String,
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub failures: u32,
}

/// The node agent.
pub struct NodeAgent<E: Enroller> {
    settings: AgentSettings,
    enroller: E,
    client: kube::Client,
    metrics: AgentMetrics,
    /// Serializes enrolling and releasing.
    work: tokio::sync::Mutex<()>,
    pods: Mutex<HashMap<PodKey, Tracked>>,
    /// Wakes the agent for a round (a watch event, a plugin event).
    pub(crate) wake: Notify,
}

impl<E: Enroller> NodeAgent<E> {
    pub fn new(settings: AgentSettings, enroller: E, client: kube::Client, metrics: AgentMetrics) -> NodeAgent<E> {
        NodeAgent {
            settings,
            enroller,
            client,
            metrics,
            work: Default::default(),
            pods: Default::default(),
            wake: Notify::new(),
        }
    }

    pub(crate) fn client(&self) -> &kube::Client {
        &self.client
    }

    pub(crate) fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, HashMap<PodKey, Tracked>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes over the pods Kubernetes enrolled before a restart (kept until the first full
    /// listing says otherwise).
    pub async fn adopt_enrolled(&self) {
        let uids = self.enroller.enrolled().await;
        let mut tracked = self.tracked();
        for uid in uids {
            let Some(key) = PodKey::from_workload_uid(&uid) else {
                warn!(uid = uid.as_str(), "a Kubernetes-enrolled pod with an unexpected uid; left as it is");
                continue;
            };
            info!(pod = %key, "pod enrolled before the restart stays enrolled");
            tracked.entry(key).or_insert_with(|| Tracked::new(uid)).held = Some(Held { kube_uid: None });
        }
    }

    /// When the next retry is due, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.tracked().values().filter_map(|t| t.retry_at).min()
    }

    /// One round over the node's pods (see the module documentation).
    pub async fn reconcile(&self, pods: &Store<Pod>, namespaces: &Store<Namespace>) {
        let work = self.work.lock().await;
        let labels: HashMap<String, BTreeMap<String, String>> = namespaces
            .state()
            .iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, n.metadata.labels.clone().unwrap_or_default())))
            .collect();
        let views: Vec<PodView> = pods.state().iter().filter_map(|p| PodView::from_pod(p)).collect();
        let mut patches = Vec::new();
        for view in &views {
            let want = reconcile::want(view, labels.get(&view.key.namespace), &self.settings.scope);
            let (step, due) = {
                let mut tracked = self.tracked();
                let uid = view.key.workload_uid(&self.settings.cluster_id);
                let entry = tracked.entry(view.key.clone()).or_insert_with(|| Tracked::new(uid));
                if entry.want.as_ref() != Some(&want) {
                    // What the pod should be changed: earlier failures say nothing about the new work.
                    entry.succeeded();
                }
                entry.want = Some(want.clone());
                if entry.annotation_pending == Some(view.annotated_enabled()) {
                    entry.annotation_pending = None;
                }
                if let Some(held) = entry.held.as_mut().filter(|h| h.kube_uid.is_none()) {
                    held.kube_uid = Some(view.kube_uid.clone());
                }
                let due = entry.retry_at.is_none_or(|t| t <= Instant::now());
                (reconcile::next_step(view, &want, entry.held.as_ref(), entry.annotation_pending), due)
            };
            match step {
                Step::Nothing => {}
                _ if !due => {}
                Step::Enroll => {
                    if self.enroll_running(view).await {
                        patches.push((view.key.clone(), true));
                    }
                }
                Step::Release => {
                    if self.release(&view.key).await {
                        patches.push((view.key.clone(), false));
                        // A pod that replaced the released one may be enrolled next round.
                        self.wake.notify_one();
                    }
                }
                Step::Annotate => patches.push((view.key.clone(), true)),
                Step::RemoveAnnotation => patches.push((view.key.clone(), false)),
            }
        }
        self.release_absent(&views).await;
        self.update_gauges();
        drop(work);
        for (key, enabled) in patches {
            self.patch(&key, enabled).await;
        }
    }

    /// Releases held pods that left the store (deleted) and forgets the others.
    async fn release_absent(&self, views: &[PodView]) {
        let absent: Vec<(PodKey, bool)> = {
            let tracked = self.tracked();
            let now = Instant::now();
            tracked
                .iter()
                .filter(|(key, _)| !views.iter().any(|v| &v.key == *key))
                .filter(|(_, t)| t.plugin_enrolled_at.is_none_or(|at| now.duration_since(at) > PLUGIN_GRACE))
                .filter(|(_, t)| t.retry_at.is_none_or(|at| at <= now))
                .map(|(key, t)| (key.clone(), t.held.is_some()))
                .collect()
        };
        for (key, held) in absent {
            if !held || self.release(&key).await {
                self.tracked().remove(&key);
            }
        }
    }

    /// Enrolls a running pod found through `/proc`; true when it is enrolled.
    async fn enroll_running(&self, view: &PodView) -> bool {
        let uid = view.key.workload_uid(&self.settings.cluster_id);
        let exclusions = match CaptureExclusions::from_annotations(&view.key.to_string(), &view.annotations) {
            Ok(e) => e,
            Err(e) => return self.record(&view.key, "enrolling the pod", Err(e.to_string()), None),
        };
        let (proc_root, ips) = (self.settings.proc_root.clone(), view.ips.clone());
        let found = tokio::task::spawn_blocking(move || proc_netns::find_pod_netns(&proc_root, &ips)).await;
        let netns = match found {
            Ok(Ok(found)) => found.path,
            Ok(Err(e)) => {
                return self.record(&view.key, "finding the pod's network namespace", Err(e.to_string()), None);
            }
            Err(e) => return self.record(&view.key, "finding the pod's network namespace", Err(e.to_string()), None),
        };
        let enrolled = PodEnrollment { uid, netns: netns.clone(), ips: view.ips.clone(), exclusions };
        let result = self.enroller.enroll(enrolled).await.map_err(|e| e.to_string());
        if result.is_ok() {
            info!(pod = %view.key, netns = %netns.display(), "pod enrolled");
        }
        self.record(&view.key, "enrolling the pod", result, Some(Some(Held { kube_uid: Some(view.kube_uid.clone()) })))
    }

    /// Releases a held pod; true when it is released.
    async fn release(&self, key: &PodKey) -> bool {
        let Some(uid) = self.tracked().get(key).map(|t| t.uid.clone()) else { return true };
        let result = match self.enroller.unenroll(&uid).await {
            Err(e) if !e.is_not_enrolled() => Err(e.to_string()),
            _ => Ok(()),
        };
        if result.is_ok() {
            info!(pod = %key, "pod released");
            if let Some(t) = self.tracked().get_mut(key) {
                t.plugin_enrolled_at = None;
            }
        }
        self.record(key, "releasing the pod", result, Some(None))
    }

    /// Records the outcome of work on `key`: on success `held` (when given) becomes its
    /// enrollment; on failure the error is logged, counted and scheduled for a retry.
    fn record(&self, key: &PodKey, what: &str, result: Result<(), String>, held: Option<Option<Held>>) -> bool {
        let mut tracked = self.tracked();
        let uid = key.workload_uid(&self.settings.cluster_id);
        let entry = tracked.entry(key.clone()).or_insert_with(|| Tracked::new(uid));
        match result {
            Ok(()) => {
                entry.succeeded();
                if let Some(held) = held {
                    self.metrics.counted(if held.is_some() { "enrolled" } else { "released" });
                    entry.held = held;
                }
                true
            }
            Err(error) => {
                entry.failed(key, what, error, &self.metrics);
                false
            }
        }
    }

    async fn patch(&self, key: &PodKey, enabled: bool) {
        let result = status::set_redirection(&self.client, key, enabled).await;
        let mut tracked = self.tracked();
        let Some(entry) = tracked.get_mut(key) else { return };
        match result {
            Ok(()) => {
                entry.annotation_pending = Some(enabled);
                entry.last_error = None;
            }
            Err(e) => entry.failed(key, "telling istiod (pods/status)", e.to_string(), &self.metrics),
        }
    }

    fn update_gauges(&self) {
        let tracked = self.tracked();
        for state in super::agent_metrics::POD_STATES {
            self.metrics.set_pods(state, tracked.values().filter(|t| t.state() == state).count());
        }
    }

    /// Enrolls the pod the CNI plugin just created, before answering it.
    pub async fn pod_added(&self, added: PodAdded, pods: Option<&Store<Pod>>) -> Answer {
        let _work = self.work.lock().await;
        let key = PodKey { namespace: added.pod_namespace.clone(), name: added.pod_name.clone() };
        let uid = key.workload_uid(&self.settings.cluster_id);
        let current = self.tracked().get(&key).and_then(|t| t.held.clone());
        if let Some(held) = current {
            if held.kube_uid.as_deref() == Some(added.pod_uid.as_str()) {
                // The runtime retried ADD for a pod already captured.
                return Answer::captured();
            }
            if !self.release(&key).await {
                return Answer::failed(format!("pod {key}: releasing the pod it replaces failed"));
            }
        }
        let annotations = pods
            .and_then(|store| store.state().into_iter().find(|p| PodView::from_pod(p).is_some_and(|v| v.key == key)))
            .and_then(|p| p.metadata.annotations.clone())
            .unwrap_or_default();
        let exclusions = match CaptureExclusions::from_annotations(&key.to_string(), &annotations) {
            Ok(e) => e,
            Err(e) => return Answer::failed(e.to_string()),
        };
        let enrollment = PodEnrollment { uid, netns: added.netns.clone(), ips: added.ips.clone(), exclusions };
        let result = self.enroller.enroll(enrollment).await.map_err(|e| e.to_string());
        let held = Some(Some(Held { kube_uid: Some(added.pod_uid.clone()) }));
        if !self.record(&key, "enrolling the new pod", result.clone(), held) {
            return Answer::failed(format!("pod {key}: {}", result.err().unwrap_or_default()));
        }
        if let Some(t) = self.tracked().get_mut(&key) {
            t.plugin_enrolled_at = Some(Instant::now());
        }
        info!(pod = %key, netns = %added.netns.display(), "new pod enrolled on the plugin's event");
        self.update_gauges();
        self.wake.notify_one();
        Answer::captured()
    }

    /// The pods the agent knows, for `/config_dump`.
    pub fn dump(&self) -> Vec<PodDump> {
        let tracked = self.tracked();
        let mut out: Vec<PodDump> = tracked
            .iter()
            .map(|(key, t)| {
                let (decision, reason) = match &t.want {
                    Some(Want::Enrolled) => ("enroll", None),
                    Some(Want::NotEnrolled(reason)) => ("skip", Some(reason.to_string())),
                    Some(Want::Finished) => ("skip", Some("the pod has finished".to_string())),
                    Some(Want::Wait) => ("wait", Some("the pod has no address yet".to_string())),
                    None => ("unknown", Some("not seen in the API yet".to_string())),
                };
                PodDump {
                    pod: key.to_string(),
                    uid: t.uid.to_string(),
                    decision: decision.to_string(),
                    reason,
                    state: t.state(),
                    last_error: t.last_error.clone(),
                    failures: t.failures,
                }
            })
            .collect();
        out.sort_by(|a, b| a.pod.cmp(&b.pod));
        out
    }
}
