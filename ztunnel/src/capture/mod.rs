//! eBPF capture: redirects enrolled pods' TCP traffic into per-pod listeners, without iptables.
//!
//! [`Capture::enroll`] gives a pod its three listeners inside its network namespace (made by a
//! thread that entered it), records the pod in the `pod_config` map, registers its 15006
//! socket for `sk_lookup`, and attaches the programs to the pod's cgroup and namespace with
//! pinned links. [`Capture::unenroll`] removes all of it. Programs, maps and links live on the
//! bpf filesystem, so capture outlives a ztunnel restart (failing closed meanwhile) and
//! [`Capture::start`] re-adopts what the previous process enrolled. Enrollment sources (local
//! config, the control socket, later Kubernetes) all go through `enroll`/`unenroll`.
//! Enrolling also installs the pod's reply routing ([`reply_routing`]) so apps are dialled from
//! their clients' addresses, and [`Capture::start`] attaches the kubelet probe exemption when
//! `kubelet_cgroup` is set.

pub mod control;
pub mod loader;
pub mod maps;
pub mod mounts;
pub mod netns;
pub mod programs;
pub mod records;
pub mod reply_routing;
mod sockets;
pub mod sys;

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use crate::proxy::ProxyInputs;
use crate::proxy::pod::{PodContext, PodProxy};
use crate::state::PodCapture;
use loader::{LoadError, Loaded};
use maps::{IpKey, PodConfig};
use netns::{NetnsError, NetnsWorker};
use records::{EnrollRecord, EnrollSource, Records, pod_key};
use sockets::{MapOrigDst, PodListenerSet, PodSockets};

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

struct EnrolledPod {
    record: EnrollRecord,
    /// Runs jobs in the pod's namespace (removing its reply routing at unenroll).
    worker: Arc<NetnsWorker>,
    _proxy: PodProxy,
}

/// Capture for one node.
pub struct Capture {
    loaded: Arc<Loaded>,
    records: Records,
    inputs: ProxyInputs,
    cgroup_root: PathBuf,
    pods: tokio::sync::Mutex<HashMap<String, EnrolledPod>>,
}

impl Capture {
    /// Mounts bpffs if needed, loads the programs (re-adopting pinned maps), and re-adopts or
    /// cleans up the pods an earlier process enrolled.
    pub async fn start(settings: CaptureSettings, inputs: ProxyInputs) -> Result<Arc<Capture>, CaptureError> {
        mounts::ensure_bpffs(&settings.pin_dir).map_err(io_err("mounting bpffs for", &settings.pin_dir))?;
        let cgroup_root =
            mounts::cgroup2_root().map_err(io_err("finding cgroup2 in", Path::new("/proc/self/mountinfo")))?;
        let loaded = Arc::new(Loaded::load(&settings.pin_dir)?);
        let records = Records::open(&settings.records_dir)
            .map_err(io_err("opening enrollment records", &settings.records_dir))?;
        let capture = Arc::new(Capture { loaded, records, inputs, cgroup_root, pods: Default::default() });
        capture.exempt_kubelet(settings.kubelet_cgroup.as_deref())?;
        capture.readopt().await;
        Ok(capture)
    }

    /// Pods enrolled now.
    pub async fn enrolled(&self) -> Vec<EnrollRecord> {
        self.pods.lock().await.values().map(|p| p.record.clone()).collect()
    }

    /// Enrolls the workload `uid` whose pod lives in `netns` and `cgroup`.
    pub async fn enroll(
        &self,
        uid: &str,
        netns: &Path,
        cgroup: &Path,
        source: EnrollSource,
    ) -> Result<(), CaptureError> {
        let mut pods = self.pods.lock().await;
        if pods.contains_key(uid) {
            return Err(CaptureError::AlreadyEnrolled { uid: uid.into() });
        }
        let cgroup = self.resolve_cgroup(cgroup)?;
        let record = EnrollRecord { uid: uid.into(), netns: netns.into(), cgroup, source, netns_cookie: 0 };
        let pod = self.bring_up(record, true).await?;
        info!(uid, netns = %netns.display(), "pod enrolled in capture");
        pods.insert(uid.into(), pod);
        Ok(())
    }

    /// Removes a pod from capture: its traffic flows directly again.
    pub async fn unenroll(&self, uid: &str) -> Result<(), CaptureError> {
        let pod = self.pods.lock().await.remove(uid).ok_or_else(|| CaptureError::NotEnrolled { uid: uid.into() })?;
        match pod.worker.run(reply_routing::remove).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(uid, error = %e, "cannot remove the pod's reply routing"),
            Err(e) => warn!(uid, error = %e, "cannot remove the pod's reply routing"),
        }
        self.tear_down(&pod.record)?;
        info!(uid, "pod unenrolled from capture");
        Ok(())
    }

    /// Makes the config-sourced enrollments match `wanted` (the config's capture blocks for
    /// this node). Failures are logged per pod; the others proceed.
    pub async fn reconcile_config(&self, wanted: &[Arc<PodCapture>]) {
        let current: Vec<EnrollRecord> = self.enrolled().await;
        for record in current.iter().filter(|r| r.source == EnrollSource::Config) {
            let still_wanted = wanted.iter().any(|w| *w.uid == record.uid && w.netns == record.netns);
            if !still_wanted && let Err(e) = self.unenroll(&record.uid).await {
                warn!(uid = record.uid, error = %e, "cannot unenroll pod removed from config");
            }
        }
        for w in wanted {
            if current.iter().any(|r| r.uid == *w.uid && r.netns == w.netns) {
                continue;
            }
            if let Err(e) = self.enroll(&w.uid, &w.netns, &w.cgroup, EnrollSource::Config).await {
                warn!(uid = %w.uid, error = %e, "cannot enroll pod from config");
            }
        }
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

    /// Creates listeners, fills maps, attaches programs (unless re-adopting pinned links) and
    /// starts the pod proxy. Undoes its own steps when one fails.
    async fn bring_up(&self, mut record: EnrollRecord, attach: bool) -> Result<EnrolledPod, CaptureError> {
        let uid = record.uid.clone();
        let workload = self
            .inputs
            .state
            .read()
            .workload_by_uid(&uid)
            .ok_or_else(|| CaptureError::UnknownWorkload { uid: uid.clone() })?;
        let ip4 = workload.workload_ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let ip6 = workload.workload_ips.iter().find_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        if ip4.is_none() && ip6.is_none() {
            return Err(CaptureError::NoAddress { uid });
        }
        let worker = Arc::new(NetnsWorker::start(&record.netns)?);
        let mark = self.inputs.settings.socket_mark;
        let (has4, has6) = (ip4.is_some(), ip6.is_some());
        let sets = worker
            .run(move || -> std::io::Result<Vec<PodListenerSet>> {
                let mut sets = Vec::new();
                if has4 {
                    sets.push(PodListenerSet::bind(false, mark)?);
                }
                if has6 {
                    sets.push(PodListenerSet::bind(true, mark)?);
                }
                Ok(sets)
            })
            .await?
            .map_err(io_err("creating listeners in", &record.netns))?;
        record.netns_cookie = sets[0].netns_cookie;
        let map_err = |reason: String| CaptureError::Map { uid: uid.clone(), reason };
        // Each family's 15006 socket receives that family's inbound plaintext (sk_lookup).
        let addrs: Vec<IpAddr> = ip4.map(IpAddr::V4).into_iter().chain(ip6.map(IpAddr::V6)).collect();
        for (ip, set) in addrs.iter().zip(&sets) {
            let inserted = self.loaded.inbound_sockets.lock().unwrap_or_else(|e| e.into_inner()).insert(
                IpKey::from(*ip),
                set.inbound_plain.as_raw_fd(),
                0,
            );
            if let Err(e) = inserted {
                self.forget_maps(&record, &addrs);
                return Err(map_err(format!("registering the 15006 socket for {ip}: {e}")));
            }
        }
        let config = PodConfig::new(ip4, ip6).with_ready(true);
        if let Err(e) =
            self.loaded.pod_config.lock().unwrap_or_else(|e| e.into_inner()).insert(record.netns_cookie, config, 0)
        {
            self.forget_maps(&record, &addrs);
            return Err(map_err(format!("adding the pod to pod_config: {e}")));
        }
        let key = pod_key(&uid);
        if attach {
            let opened = File::open(&record.cgroup)
                .map_err(io_err("opening cgroup", &record.cgroup))
                .and_then(|cg| Ok((cg, File::open(&record.netns).map_err(io_err("opening netns", &record.netns))?)));
            let attached = opened.and_then(|(cg, ns)| Ok(self.loaded.attach_pod(&key, &cg, &ns)?));
            if let Err(e) = attached {
                self.forget_maps(&record, &addrs);
                return Err(e);
            }
        }
        if let Err(e) = self.records.save(&record) {
            warn!(uid, error = %e, "cannot save enrollment record; a restart will not re-adopt this pod");
        }
        let listeners = sets
            .into_iter()
            .map(PodListenerSet::into_tokio)
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err("registering listeners of", &record.netns))?;
        let reply_routing = match worker.run(reply_routing::install).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                warn_no_reply_routing(&uid, &e);
                false
            }
            Err(e) => {
                warn_no_reply_routing(&uid, &e);
                false
            }
        };
        let ctx = PodContext {
            workload_uid: workload.uid.clone(),
            sockets: Arc::new(PodSockets::new(worker.clone(), reply_routing.then(|| self.loaded.clone()))),
            orig_dst: Arc::new(MapOrigDst(self.loaded.clone())),
        };
        let proxy = PodProxy::start(self.inputs.clone(), listeners, ctx);
        Ok(EnrolledPod { record, worker, _proxy: proxy })
    }

    fn forget_maps(&self, record: &EnrollRecord, addrs: &[IpAddr]) {
        let _ = self.loaded.pod_config.lock().unwrap_or_else(|e| e.into_inner()).remove(&record.netns_cookie);
        let mut sockets = self.loaded.inbound_sockets.lock().unwrap_or_else(|e| e.into_inner());
        for ip in addrs {
            let _ = sockets.remove(&IpKey::from(*ip));
        }
    }

    /// Removes a pod's map entries, links and record.
    fn tear_down(&self, record: &EnrollRecord) -> Result<(), CaptureError> {
        let addrs =
            self.inputs.state.read().workload_by_uid(&record.uid).map(|w| w.workload_ips.clone()).unwrap_or_default();
        self.forget_maps(record, &addrs);
        self.loaded.detach_pod(&pod_key(&record.uid))?;
        self.records
            .remove(&record.uid)
            .map_err(io_err("removing the enrollment record of", Path::new(&record.uid)))?;
        Ok(())
    }

    /// After a restart: pods whose namespace still exists get listeners again (their links
    /// stayed pinned); the others, and links without a record, are cleaned up.
    async fn readopt(&self) {
        let records = self.records.load_all();
        let mut pods = self.pods.lock().await;
        for record in records {
            let alive = record.netns.exists() && record.cgroup.exists();
            if alive {
                let attach = !self.loaded.pod_links_dir(&pod_key(&record.uid)).exists();
                match self.bring_up(record.clone(), attach).await {
                    Ok(pod) => {
                        info!(uid = record.uid, "re-adopted captured pod");
                        pods.insert(record.uid.clone(), pod);
                        continue;
                    }
                    Err(e) => warn!(uid = record.uid, error = %e, "cannot re-adopt captured pod; removing its capture"),
                }
            }
            if let Err(e) = self.tear_down(&record) {
                warn!(uid = record.uid, error = %e, "cleaning up a pod that is gone");
            }
        }
        let known: Vec<String> = pods.keys().map(|uid| pod_key(uid)).collect();
        for orphan in self.loaded.pinned_pods().into_iter().filter(|k| !known.contains(k)) {
            if let Err(e) = self.loaded.detach_pod(&orphan) {
                warn!(pod = orphan, error = %e, "cannot remove links of an unknown pod");
            }
        }
    }
}
