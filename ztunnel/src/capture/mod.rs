//! eBPF capture, the kernel side: loading the programs and maps, attaching them, and making
//! sockets inside a pod's network namespace. What a pod's enrollment means (the pod table,
//! serving, records, sources) belongs to [`crate::pods`], which drives this module.
//!
//! `start` checks the kernel (`requirements`) and fails naming every missing feature,
//! mounts bpffs if needed, loads the programs (re-adopting pinned maps), attaches the cgroup
//! programs (connect, bind, getpeername, sockops) *once* at the capture cgroup, and sets up the
//! kubelet probe exemption when `kubelet_cgroup` is set. The capture cgroup is a parent of
//! every pod's cgroup, the cgroup2 root unless configured (`--capture-cgroup`); the programs
//! select pods by the cookie of their network namespace (`pod_config`), never by cgroup:
//! - capture covers every process in an enrolled pod's namespace, whatever cgroup it runs
//!   in, which is what Istio's iptables rules inside the pod's namespace cover;
//! - it needs no knowledge of the kubelet's cgroup layout or QoS classes;
//! - it is in place when the CNI plugin adds the pod, before any of its containers exists.
//!
//! ztunnel's own sockets inside a pod's namespace (listeners, outbound dials, transparent
//! dials to the application) meet the same programs; each carries a mark
//! (`crate::in_pod`) that tells them apart. `sk_lookup` is attached per pod namespace.
//!
//! Pieces: `loader` (programs, pins, links), `maps` (the `#[repr(C)]` mirrors),
//! `pod_maps` (a pod's entries), `exclusions` (Istio's annotations in the maps),
//! [`netns`] (a worker thread inside a namespace), `sockets` (a pod's listeners and
//! dialling sockets, as plain sockets), `reply_routing`, `mounts`, `sys`.

pub(crate) mod exclusions;
pub(crate) mod loader;
pub(crate) mod maps;
pub(crate) mod mounts;
pub mod netns;
pub(crate) mod pod_maps;
pub(crate) mod programs;
pub(crate) mod reply_routing;
pub(crate) mod requirements;
pub(crate) mod sockets;
pub(crate) mod sys;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::info;

use loader::{LoadError, Loaded};
use netns::NetnsError;

/// Where capture keeps its state and where it attaches.
#[derive(Clone, Debug)]
pub struct CaptureSettings {
    /// bpffs directory for pinned maps and links (`/sys/fs/bpf/ztunnel`).
    pub pin_dir: PathBuf,
    /// The cgroup (v2) the capture programs are attached at, a parent of every pod's: a path
    /// under the cgroup2 mount or relative to it. `None`: the cgroup2 root.
    pub capture_cgroup: Option<PathBuf>,
    /// The kubelet's cgroup: connections its processes open from the host network namespace
    /// reach enrolled pods' applications directly (probes). `None`: nothing is exempt.
    pub kubelet_cgroup: Option<PathBuf>,
}

/// Failures of capture setup and of the kernel side of enrollment; each names the object.
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
}

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CaptureError + use<> {
    let path = path.display().to_string();
    move |source| CaptureError::Io { what, path, source }
}

/// Mounts bpffs if needed, checks the kernel, loads the programs (re-adopting pinned maps)
/// with ztunnel's `socket_mark`, attaches the cgroup programs at the capture cgroup and the
/// kubelet exemption. Pods enrolled earlier stay as the pinned maps and links hold them.
pub(crate) fn start(settings: &CaptureSettings, socket_mark: Option<u32>) -> Result<Arc<Loaded>, CaptureError> {
    mounts::ensure_bpffs(&settings.pin_dir).map_err(io_err("mounting bpffs for", &settings.pin_dir))?;
    requirements::check(&requirements::KernelProbe)?;
    let cgroup_root =
        mounts::cgroup2_root().map_err(io_err("finding cgroup2 in", Path::new("/proc/self/mountinfo")))?;
    let loaded = Arc::new(Loaded::load(&settings.pin_dir, socket_mark)?);
    let capture_cgroup = resolve_cgroup(&cgroup_root, settings.capture_cgroup.as_deref().unwrap_or(Path::new("/")))?;
    let dir = File::open(&capture_cgroup).map_err(io_err("opening the capture cgroup", &capture_cgroup))?;
    loaded.attach_capture_cgroup(&dir)?;
    info!(cgroup = %capture_cgroup.display(), "capture programs attached; pods are selected by network namespace");
    exempt_kubelet(&loaded, &cgroup_root, settings.kubelet_cgroup.as_deref())?;
    Ok(loaded)
}

/// Attaches the program that records the kubelet's connections from this (the host's)
/// network namespace, so that they bypass inbound capture, or removes it (`None`).
fn exempt_kubelet(loaded: &Loaded, cgroup_root: &Path, cgroup: Option<&Path>) -> Result<(), CaptureError> {
    let Some(cgroup) = cgroup else {
        loaded.set_host_probes(0, None)?;
        return Ok(());
    };
    let path = resolve_cgroup(cgroup_root, cgroup)?;
    let dir = File::open(&path).map_err(io_err("opening the kubelet cgroup", &path))?;
    let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(io_err("creating a socket in the host network namespace for", &path))?;
    let host_netns = sys::netns_cookie(std::os::fd::AsFd::as_fd(&probe))
        .map_err(io_err("reading the host network namespace cookie for", &path))?;
    loaded.set_host_probes(host_netns, Some(&dir))?;
    info!(cgroup = %path.display(), "host connections from the kubelet cgroup bypass inbound capture");
    Ok(())
}

/// A cgroup path under the cgroup2 mount `root`, or relative to it (`/` is the root itself).
fn resolve_cgroup(root: &Path, cgroup: &Path) -> Result<PathBuf, CaptureError> {
    let path = if cgroup.starts_with(root) {
        cgroup.to_path_buf()
    } else {
        root.join(cgroup.strip_prefix("/").unwrap_or(cgroup))
    };
    if !path.join("cgroup.procs").exists() {
        return Err(CaptureError::Io {
            what: "cgroup",
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("not a cgroup v2 directory under {}", root.display()),
            ),
        });
    }
    Ok(path)
}
