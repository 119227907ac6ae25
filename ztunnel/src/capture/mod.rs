//! eBPF capture: redirects enrolled pods' TCP traffic into per-pod listeners, without iptables.
//!
//! [`Capture::enroll`] first *captures* a pod: it records the pod in the `pod_config` map with
//! `POD_READY` clear (its connects are refused), attaches the programs to the pod's cgroup and
//! namespace with pinned links, and writes an enrollment record. Then it *serves* the pod: its
//! three listeners are bound inside its network namespace (by a thread that entered it), its
//! 15006 socket is registered for `sk_lookup`, and `POD_READY` is set. A pod that cannot be
//! served (a port is taken, its workload is not in state yet) stays captured and refusing,
//! *held*, and the keeper ([`Capture::keep_serving`]) retries with backoff; process readiness
//! stays down while a pod that state knows is held. [`Capture::unenroll`] removes all of it.
//!
//! Programs, maps and links live on the bpf filesystem, so capture outlives a ztunnel restart
//! (failing closed meanwhile). [`Capture::start`] re-adopts what the previous process enrolled
//! as held pods and serves them only once the config source has synced: a pod is released
//! only when proven gone (its namespace or cgroup is gone) or when its source unenrolls it.
//! Enrollment sources (local config, the control socket, later Kubernetes) all go through
//! `enroll`/`unenroll`.
//!
//! Serving a pod also installs its reply routing ([`reply_routing`]) so apps are dialled from
//! their clients' addresses, and [`Capture::start`] attaches the kubelet probe exemption when
//! `kubelet_cgroup` is set. `start` first checks the kernel ([`requirements`]) and fails naming
//! every missing feature; a pod's exclusions (Istio's annotations,
//! [`crate::state::CaptureExclusions`]) go into the per-pod exclusion maps ([`exclusions`]) when
//! it is enrolled and when the config changes them.

pub mod control;
pub(crate) mod exclusions;
mod keeper;
pub(crate) mod loader;
pub(crate) mod maps;
pub(crate) mod mounts;
pub mod netns;
pub(crate) mod programs;
pub mod records;
pub(crate) mod reply_routing;
pub(crate) mod requirements;
mod serving;
mod sockets;
pub(crate) mod sys;

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;
use tracing::{info, warn};

use crate::proxy::ProxyInputs;
use crate::proxy::pod::PodProxy;
use crate::readiness::Ready;
use crate::state::{CaptureExclusions, PodCapture};
use crate::types::WorkloadUid;
use keeper::Held;
use loader::{LoadError, Loaded};
use netns::{NetnsError, NetnsWorker};
use records::{EnrollRecord, EnrollSource, Records};

/// Where capture keeps its state.
#[derive(Clone, Debug)]
pub struct CaptureSettings {
    /// bpffs directory for pinned maps and links (`/sys/fs/bpf/ztunnel`).
    pub pin_dir: PathBuf,
    /// Directory for enrollment records (survives restarts).
    pub records_dir: PathBuf,
    /// The kubelet's cgroup: connections its processes open from the host network namespace
    /// reach enrolled pods' applications directly (probes). `None`: nothing is exempt.
    pub kubelet_cgroup: Option<PathBuf>,
}

/// Failures of capture setup and enrollment; each names the pod or object involved.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Kernel(#[from] requirements::MissingFeatures),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {uid}: no workload with this uid is in state")]
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

/// Reported once per process: without the pod's reply routing its applications see ztunnel's
/// address (127.0.0.6) instead of their clients'.
fn warn_no_reply_routing(uid: &str, error: &dyn std::fmt::Display) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        warn!(uid, %error, "cannot route answers to ztunnel inside the pod; its apps see 127.0.0.6 instead of the client's address");
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CaptureError + use<> {
    let path = path.display().to_string();
    move |source| CaptureError::Io { what, path, source }
}

/// One enrolled pod: captured from enrollment until release, served while its listeners run.
struct EnrolledPod {
    record: EnrollRecord,
    /// The thread inside the pod's namespace; started again when it could not be.
    worker: Option<Arc<NetnsWorker>>,
    /// The exclusions in the maps; `None` after a restart until the config says (they stayed
    /// in the pinned maps meanwhile).
    exclusions: Option<CaptureExclusions>,
    serving: Serving,
}

enum Serving {
    /// The pod's listeners run and `POD_READY` is set.
    Up(PodProxy),
    /// Captured with `POD_READY` clear: the pod's traffic is refused until the keeper serves it.
    Held(Held),
}

/// Capture for one node.
pub struct Capture {
    loaded: Arc<Loaded>,
    records: Records,
    inputs: ProxyInputs,
    ready: Ready,
    cgroup_root: PathBuf,
    pods: tokio::sync::Mutex<HashMap<WorkloadUid, EnrolledPod>>,
    /// Wakes the keeper when a pod is held.
    wake: Notify,
}

impl Capture {
    /// Mounts bpffs if needed, loads the programs (re-adopting pinned maps), and takes over the
    /// pods an earlier process enrolled: the ones proven gone are released, the others are kept
    /// captured and refusing until [`Capture::keep_serving`] serves them.
    pub async fn start(
        settings: CaptureSettings,
        inputs: ProxyInputs,
        ready: &Ready,
    ) -> Result<Arc<Capture>, CaptureError> {
        mounts::ensure_bpffs(&settings.pin_dir).map_err(io_err("mounting bpffs for", &settings.pin_dir))?;
        requirements::check(&requirements::KernelProbe)?;
        let cgroup_root =
            mounts::cgroup2_root().map_err(io_err("finding cgroup2 in", Path::new("/proc/self/mountinfo")))?;
        let loaded = Arc::new(Loaded::load(&settings.pin_dir, inputs.settings.socket_mark)?);
        let records = Records::open(&settings.records_dir)
            .map_err(io_err("opening enrollment records", &settings.records_dir))?;
        let capture = Arc::new(Capture {
            loaded,
            records,
            inputs,
            ready: ready.clone(),
            cgroup_root,
            pods: Default::default(),
            wake: Notify::new(),
        });
        capture.exempt_kubelet(settings.kubelet_cgroup.as_deref())?;
        capture.readopt().await;
        Ok(capture)
    }

    /// Pods enrolled now (served or held).
    pub async fn enrolled(&self) -> Vec<EnrollRecord> {
        self.pods.lock().await.values().map(|p| p.record.clone()).collect()
    }

    /// Enrolls the workload `uid` whose pod lives in `netns` and `cgroup`. Once this returns
    /// the pod is captured; if its listeners cannot start yet (a port is taken) it is held,
    /// refusing its traffic, and the keeper retries.
    pub async fn enroll(
        &self,
        uid: &WorkloadUid,
        netns: &Path,
        cgroup: &Path,
        source: EnrollSource,
    ) -> Result<(), CaptureError> {
        self.enroll_excluding(uid, netns, cgroup, source, &CaptureExclusions::default()).await
    }

    /// [`Capture::enroll`], keeping `exclusions` out of capture.
    pub async fn enroll_excluding(
        &self,
        uid: &WorkloadUid,
        netns: &Path,
        cgroup: &Path,
        source: EnrollSource,
        exclusions: &CaptureExclusions,
    ) -> Result<(), CaptureError> {
        let mut pods = self.pods.lock().await;
        if pods.contains_key(uid) {
            return Err(CaptureError::AlreadyEnrolled { uid: uid.to_string() });
        }
        let cgroup = self.resolve_cgroup(cgroup)?;
        let ips = self.workload_ips(uid)?;
        let worker = Arc::new(NetnsWorker::start(netns)?);
        let netns_cookie = worker
            .run(sockets::current_netns_cookie)
            .await?
            .map_err(io_err("reading the namespace cookie of", netns))?;
        let record = EnrollRecord { uid: uid.clone(), netns: netns.into(), cgroup, source, netns_cookie, ips };
        self.capture_pod(&record, exclusions)?;
        let mut pod = EnrolledPod {
            record,
            worker: Some(worker),
            exclusions: Some(exclusions.clone()),
            serving: Serving::Held(self.held(uid)),
        };
        match self.serve_pod(&mut pod.record, &mut pod.worker).await {
            Ok(proxy) => pod.serving = Serving::Up(proxy),
            Err(e) => {
                warn!(uid = uid.as_str(), error = %e, "pod captured, but its listeners cannot start; its traffic is refused until they do");
                self.wake.notify_one();
            }
        }
        info!(uid = uid.as_str(), netns = %netns.display(), "pod enrolled in capture");
        pods.insert(uid.clone(), pod);
        Ok(())
    }

    /// Removes a pod from capture: its traffic flows directly again.
    pub async fn unenroll(&self, uid: &WorkloadUid) -> Result<(), CaptureError> {
        let pod =
            self.pods.lock().await.remove(uid).ok_or_else(|| CaptureError::NotEnrolled { uid: uid.to_string() })?;
        if let Some(worker) = &pod.worker {
            match worker.run(reply_routing::remove).await {
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
            if let Err(e) =
                self.enroll_excluding(&w.uid, &w.netns, &w.cgroup, EnrollSource::Config, &w.exclusions).await
            {
                warn!(uid = %w.uid, error = %e, "cannot enroll pod from config");
            }
        }
    }

    /// The addresses of the workload `uid` in state.
    fn workload_ips(&self, uid: &WorkloadUid) -> Result<Vec<IpAddr>, CaptureError> {
        let workload = self
            .inputs
            .state
            .read()
            .workload_by_uid(uid)
            .ok_or_else(|| CaptureError::UnknownWorkload { uid: uid.to_string() })?;
        if workload.workload_ips.is_empty() {
            return Err(CaptureError::NoAddress { uid: uid.to_string() });
        }
        Ok(workload.workload_ips.clone())
    }

    /// Attaches the program that records the kubelet's connections from this (the host's)
    /// network namespace, so that they bypass inbound capture, or removes it (`None`).
    fn exempt_kubelet(&self, cgroup: Option<&Path>) -> Result<(), CaptureError> {
        let Some(cgroup) = cgroup else {
            self.loaded.set_host_probes(0, None)?;
            return Ok(());
        };
        let inside_root = if cgroup.starts_with(&self.cgroup_root) {
            cgroup.to_path_buf()
        } else {
            self.cgroup_root.join(cgroup.strip_prefix("/").unwrap_or(cgroup))
        };
        let path = self.resolve_cgroup(&inside_root)?;
        let dir = File::open(&path).map_err(io_err("opening the kubelet cgroup", &path))?;
        let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .map_err(io_err("creating a socket in the host network namespace for", &path))?;
        let host_netns = sys::netns_cookie(std::os::fd::AsFd::as_fd(&probe))
            .map_err(io_err("reading the host network namespace cookie for", &path))?;
        self.loaded.set_host_probes(host_netns, Some(&dir))?;
        info!(cgroup = %path.display(), "host connections from the kubelet cgroup bypass inbound capture");
        Ok(())
    }

    /// Rewrites an enrolled pod's exclusions when they differ from what the maps hold.
    async fn update_exclusions(&self, uid: &WorkloadUid, exclusions: &CaptureExclusions) {
        let mut pods = self.pods.lock().await;
        let Some(pod) = pods.get_mut(uid) else { return };
        if pod.exclusions.as_ref() == Some(exclusions) {
            return;
        }
        let ips = self.pod_ips(uid);
        let applied = self.loaded.exclusions.lock().unwrap_or_else(|e| e.into_inner()).apply(
            pod.record.netns_cookie,
            &ips,
            exclusions,
        );
        match applied {
            Ok(()) => {
                info!(uid = uid.as_str(), ?exclusions, "capture exclusions updated");
                pod.exclusions = Some(exclusions.clone());
            }
            Err(e) => warn!(uid = uid.as_str(), error = %e, "cannot update capture exclusions"),
        }
    }

    fn pod_ips(&self, uid: &WorkloadUid) -> Vec<IpAddr> {
        self.inputs.state.read().workload_by_uid(uid).map(|w| w.workload_ips.clone()).unwrap_or_default()
    }

    /// A cgroup path relative to the cgroup2 root, or an absolute one inside it.
    fn resolve_cgroup(&self, cgroup: &Path) -> Result<PathBuf, CaptureError> {
        let path = if cgroup.is_absolute() { cgroup.to_path_buf() } else { self.cgroup_root.join(cgroup) };
        if !path.starts_with(&self.cgroup_root) || !path.join("cgroup.procs").exists() {
            return Err(CaptureError::Io {
                what: "cgroup",
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("not a cgroup v2 directory under {}", self.cgroup_root.display()),
                ),
            });
        }
        Ok(path)
    }
}
