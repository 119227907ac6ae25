//! A pod's enrollment in capture: the enrolled-pod table, capture-then-serve, the keeper,
//! re-adoption after a restart, the records, and the control socket.
//!
//! Every enrollment source calls the same small interface:
//!
//! - [`Pods::enroll`]`(`[`PodEnrollment`]` { uid, netns, ips, exclusions }, `[`EnrollSource`]`)`
//! - [`Pods::unenroll`]`(&uid)`
//! - [`Pods::enrolled`]`()`, the pods enrolled now.
//!
//! The sources are the local config's `capture` blocks ([`Pods::reconcile_config`]), the
//! control socket ([`control`], `ztunnel enroll`), and the Kubernetes node agent
//! ([`crate::kubernetes`]). A pod is named by its network namespace alone: the capture
//! programs sit at a parent cgroup of every pod and select pods by namespace cookie (see
//! [`crate::capture`]), so no cgroup is needed.
//!
//! `enroll` first *captures* the pod: its exclusions and a refusing `pod_config` entry go into
//! the maps, `sk_lookup` is attached to its namespace, and a record is written. Then it
//! *serves* the pod: its three listeners are bound inside its namespace, its 15006 socket is
//! registered for `sk_lookup`, and `POD_READY` is set. A pod that cannot be served (a port is
//! taken, its workload is not in state yet) stays captured and refusing, *held*, and the keeper
//! ([`Pods::keep_serving`]) retries with backoff; process readiness stays down while a pod that
//! state knows is held. The pod's addresses come from its workload in state, or from the
//! caller (`ips`: a CNI plugin knows them before istiod does) until state has the workload.
//! `unenroll` removes all of it.
//!
//! Programs, maps and links live on the bpf filesystem, so capture outlives a ztunnel restart
//! (failing closed meanwhile). [`Pods::start`] re-adopts what the previous process enrolled as
//! held pods and serves them only once the config source has synced. A pod is released only
//! when its namespace is proven destroyed or its source unenrolls it; a recorded path that no
//! longer holds the recorded namespace leaves it held until a source enrolls it again.

pub mod control;
mod keeper;
pub mod records;
mod serving;
mod wrapped;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;
use tracing::{info, warn};

use crate::capture::loader::Loaded;
use crate::capture::netns::{NetnsError, NetnsWorker};
use crate::capture::sockets::current_netns_cookie;
use crate::capture::{CaptureError, CaptureSettings};
use crate::proxy::ProxyInputs;
use crate::proxy::pod::PodProxy;
use crate::readiness::Ready;
use crate::state::{CaptureExclusions, PodCapture};
use crate::types::WorkloadUid;
use keeper::Held;
use records::Records;
pub use records::{EnrollRecord, EnrollSource};

/// What a source knows of a pod it enrolls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEnrollment {
    /// The pod's workload uid (Istio's `cluster//v1/Pod/namespace/name`).
    pub uid: WorkloadUid,
    /// The pod's network namespace (`/var/run/netns/NAME` or `/proc/PID/ns/net`).
    pub netns: PathBuf,
    /// The pod's addresses, used until state has its workload; may be empty.
    pub ips: Vec<IpAddr>,
    /// Traffic kept out of capture (Istio's pod annotations).
    pub exclusions: CaptureExclusions,
}

/// Where enrollment keeps its state, and the kernel side's settings.
#[derive(Clone, Debug)]
pub struct PodsSettings {
    pub capture: CaptureSettings,
    /// Directory for enrollment records (survives restarts).
    pub records_dir: PathBuf,
}

/// Failures of enrollment; each names the pod or object involved.
#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("pod {uid}: no workload with this uid is in state and the enrollment gives no address")]
    UnknownWorkload { uid: String },
    #[error("pod {uid}: the workload has no address")]
    NoAddress { uid: String },
    #[error("pod {uid} is already enrolled")]
    AlreadyEnrolled { uid: String },
    #[error("pod {uid} is not enrolled")]
    NotEnrolled { uid: String },
    #[error("pod {uid}: {reason}")]
    Map { uid: String, reason: String },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PodsError + use<> {
    let capture_err = crate::capture::io_err(what, path);
    move |source| PodsError::Capture(capture_err(source))
}

fn map_err(uid: &WorkloadUid) -> impl FnOnce(crate::capture::pod_maps::PodMapError) -> PodsError + use<> {
    let uid = uid.to_string();
    move |e| PodsError::Map { uid, reason: e.to_string() }
}

/// Reported once per process: without the pod's reply routing its applications see ztunnel's
/// address (127.0.0.6) instead of their clients'.
fn warn_no_reply_routing(uid: &str, error: &dyn std::fmt::Display) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        warn!(uid, %error, "cannot route answers to ztunnel inside the pod; its apps see 127.0.0.6 instead of the client's address");
    }
}

/// One enrolled pod: captured from enrollment until release, served while its listeners run.
struct EnrolledPod {
    record: EnrollRecord,
    /// The thread inside the pod's namespace; `None` while the recorded path does not hold
    /// the recorded namespace (a re-adopted pod waiting for its source).
    worker: Option<Arc<NetnsWorker>>,
    /// The exclusions in the maps; `None` after a restart until a source says (they stayed
    /// in the pinned maps meanwhile).
    exclusions: Option<CaptureExclusions>,
    /// Taken over from an earlier process and not enrolled again since.
    readopted: bool,
    serving: Serving,
}

enum Serving {
    /// The pod's listeners run and `POD_READY` is set.
    Up(PodProxy),
    /// Captured with `POD_READY` clear: the pod's traffic is refused until the keeper serves it.
    Held(Held),
}

/// The enrolled pods of one node.
pub struct Pods {
    loaded: Arc<Loaded>,
    records: Records,
    inputs: ProxyInputs,
    ready: Ready,
    pods: tokio::sync::Mutex<HashMap<WorkloadUid, EnrolledPod>>,
    /// Wakes the keeper when a pod is held.
    wake: Notify,
}

impl Pods {
    /// Starts capture (see [`crate::capture`]) and takes over the pods an earlier process
    /// enrolled: the ones proven gone are released, the others are kept captured and refusing
    /// until [`Pods::keep_serving`] serves them.
    pub async fn start(settings: PodsSettings, inputs: ProxyInputs, ready: &Ready) -> Result<Arc<Pods>, PodsError> {
        let loaded = crate::capture::start(&settings.capture, inputs.settings.socket_mark)?;
        let records = Records::open(&settings.records_dir)
            .map_err(io_err("opening enrollment records", &settings.records_dir))?;
        let pods = Arc::new(Pods {
            loaded,
            records,
            inputs,
            ready: ready.clone(),
            pods: Default::default(),
            wake: Notify::new(),
        });
        pods.readopt().await;
        Ok(pods)
    }

    /// Pods enrolled now (served or held).
    pub async fn enrolled(&self) -> Vec<EnrollRecord> {
        self.pods.lock().await.values().map(|p| p.record.clone()).collect()
    }

    /// Enrolls a pod. Once this returns the pod is captured; if its listeners cannot start
    /// yet (a port is taken, its workload is not in state) it is held, refusing its traffic,
    /// and the keeper retries. A pod held since a restart is taken over when `netns` is the
    /// namespace it was captured in, and replaced when it is another one.
    pub async fn enroll(&self, pod: PodEnrollment, source: EnrollSource) -> Result<(), PodsError> {
        let mut pods = self.pods.lock().await;
        let uid = pod.uid.clone();
        let worker = Arc::new(NetnsWorker::start(&pod.netns)?);
        let netns_cookie =
            worker.run(current_netns_cookie).await?.map_err(io_err("reading the namespace cookie of", &pod.netns))?;
        if let Some(existing) = pods.get_mut(&uid) {
            if !existing.readopted {
                return Err(PodsError::AlreadyEnrolled { uid: uid.to_string() });
            }
            if existing.record.netns_cookie == netns_cookie {
                self.take_over(existing, pod, source, worker)?;
                info!(uid = uid.as_str(), "pod held since the restart enrolled again: it is served");
                self.wake.notify_one();
                return Ok(());
            }
            info!(uid = uid.as_str(), "pod held since the restart enrolled with another namespace; replacing it");
            if let Some(old) = pods.remove(&uid) {
                self.tear_down(&old.record)?;
            }
        }
        let ips = self.enrollment_ips(&uid, &pod.ips)?;
        let record = EnrollRecord { uid: uid.clone(), netns: pod.netns.clone(), source, netns_cookie, ips };
        self.capture_pod(&record, &pod.exclusions)?;
        let mut enrolled = EnrolledPod {
            record,
            worker: Some(worker),
            exclusions: Some(pod.exclusions),
            readopted: false,
            serving: Serving::Held(self.held(&uid)),
        };
        match self.serve_pod(&mut enrolled.record, &mut enrolled.worker).await {
            Ok(proxy) => enrolled.serving = Serving::Up(proxy),
            Err(e) => {
                warn!(uid = uid.as_str(), error = %e, "pod captured, but its listeners cannot start; its traffic is refused until they do");
                self.wake.notify_one();
            }
        }
        info!(uid = uid.as_str(), netns = %pod.netns.display(), "pod enrolled in capture");
        pods.insert(uid, enrolled);
        Ok(())
    }

    /// A re-adopted pod enrolled again in the namespace it was captured in: the new path,
    /// source and exclusions are kept, and the keeper serves it.
    fn take_over(
        &self,
        existing: &mut EnrolledPod,
        pod: PodEnrollment,
        source: EnrollSource,
        worker: Arc<NetnsWorker>,
    ) -> Result<(), PodsError> {
        let record = &mut existing.record;
        if record.ips.is_empty() {
            record.ips = self.enrollment_ips(&pod.uid, &pod.ips)?;
        }
        record.netns = pod.netns;
        record.source = source;
        self.loaded.apply_exclusions(record.netns_cookie, &record.ips, &pod.exclusions).map_err(map_err(&pod.uid))?;
        if let Err(e) = self.records.save(record) {
            warn!(uid = pod.uid.as_str(), error = %e, "cannot save enrollment record");
        }
        existing.worker = Some(worker);
        existing.exclusions = Some(pod.exclusions);
        existing.readopted = false;
        Ok(())
    }

    /// Removes a pod from capture: its traffic flows directly again.
    pub async fn unenroll(&self, uid: &WorkloadUid) -> Result<(), PodsError> {
        let pod = self.pods.lock().await.remove(uid).ok_or_else(|| PodsError::NotEnrolled { uid: uid.to_string() })?;
        if let Some(worker) = &pod.worker {
            match worker.run(crate::capture::reply_routing::remove).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(uid = uid.as_str(), error = %e, "cannot remove the pod's reply routing"),
                Err(e) => warn!(uid = uid.as_str(), error = %e, "cannot remove the pod's reply routing"),
            }
        }
        self.tear_down(&pod.record)?;
        info!(uid = uid.as_str(), "pod unenrolled from capture");
        Ok(())
    }

    /// Makes the config-sourced enrollments match `wanted` (the config's capture blocks for
    /// this node). Failures are logged per pod; the others proceed.
    pub async fn reconcile_config(&self, wanted: &[Arc<PodCapture>]) {
        let current: Vec<EnrollRecord> = self.enrolled().await;
        for record in current.iter().filter(|r| r.source == EnrollSource::Config) {
            let still_wanted = wanted.iter().any(|w| w.uid == record.uid && w.netns == record.netns);
            if !still_wanted && let Err(e) = self.unenroll(&record.uid).await {
                warn!(uid = record.uid.as_str(), error = %e, "cannot unenroll pod removed from config");
            }
        }
        for w in wanted {
            if current.iter().any(|r| r.uid == w.uid && r.netns == w.netns) {
                self.update_exclusions(&w.uid, &w.exclusions).await;
                continue;
            }
            let pod = PodEnrollment {
                uid: w.uid.clone(),
                netns: w.netns.clone(),
                ips: Vec::new(),
                exclusions: w.exclusions.clone(),
            };
            if let Err(e) = self.enroll(pod, EnrollSource::Config).await {
                warn!(uid = %w.uid, error = %e, "cannot enroll pod from config");
            }
        }
    }

    /// The addresses of the workload `uid` in state.
    fn workload_ips(&self, uid: &WorkloadUid) -> Result<Vec<IpAddr>, PodsError> {
        let workload = self
            .inputs
            .state
            .read()
            .workload_by_uid(uid)
            .ok_or_else(|| PodsError::UnknownWorkload { uid: uid.to_string() })?;
        if workload.workload_ips.is_empty() {
            return Err(PodsError::NoAddress { uid: uid.to_string() });
        }
        Ok(workload.workload_ips.clone())
    }

    /// The addresses to capture a pod with: its workload's, else the ones its source gave.
    fn enrollment_ips(&self, uid: &WorkloadUid, given: &[IpAddr]) -> Result<Vec<IpAddr>, PodsError> {
        match self.workload_ips(uid) {
            Ok(ips) => Ok(ips),
            Err(_) if !given.is_empty() => Ok(given.to_vec()),
            Err(e) => Err(e),
        }
    }

    /// Rewrites an enrolled pod's exclusions when they differ from what the maps hold.
    async fn update_exclusions(&self, uid: &WorkloadUid, exclusions: &CaptureExclusions) {
        let mut pods = self.pods.lock().await;
        let Some(pod) = pods.get_mut(uid) else { return };
        if pod.exclusions.as_ref() == Some(exclusions) {
            return;
        }
        match self.loaded.apply_exclusions(pod.record.netns_cookie, &pod.record.ips, exclusions) {
            Ok(()) => {
                info!(uid = uid.as_str(), ?exclusions, "capture exclusions updated");
                pod.exclusions = Some(exclusions.clone());
            }
            Err(e) => warn!(uid = uid.as_str(), error = %e, "cannot update capture exclusions"),
        }
    }
}
