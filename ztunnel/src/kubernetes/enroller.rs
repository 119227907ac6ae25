//! What the node agent enrolls pods through: [`Enroller`], three operations (enroll a pod
//! from its network namespace, release it, list what Kubernetes enrolled), implemented for
//! today's [`Capture`] by [`CaptureEnroller`].
//!
//! `Capture` attaches its cgroup programs to each pod's cgroup, so [`CaptureEnroller`] finds
//! the cgroup from a process of the pod's namespace (`<proc root>/<pid>/cgroup`, the oldest
//! process: the sandbox's pause process). The agent itself only ever hands over the network
//! namespace, the addresses and the exclusions.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::capture::records::EnrollSource;
use crate::capture::{Capture, CaptureError};
use crate::state::CaptureExclusions;
use crate::types::WorkloadUid;

use super::proc_netns::{self, ProcNetnsError};

/// One pod to enroll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEnrollment {
    pub uid: WorkloadUid,
    /// The pod's network namespace as a path on this host.
    pub netns: PathBuf,
    pub ips: Vec<IpAddr>,
    pub exclusions: CaptureExclusions,
}

/// Failures of enrollment, naming the pod.
#[derive(Debug, thiserror::Error)]
pub enum EnrollerError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("pod {uid}: finding its cgroup: {source}")]
    Cgroup {
        uid: String,
        #[source]
        source: ProcNetnsError,
    },
}

impl EnrollerError {
    /// The pod was not enrolled to begin with (releasing it is then done).
    pub fn is_not_enrolled(&self) -> bool {
        matches!(self, EnrollerError::Capture(CaptureError::NotEnrolled { .. }))
    }
}

/// Enrolls and releases pods.
pub trait Enroller: Send + Sync + 'static {
    fn enroll(&self, pod: PodEnrollment) -> impl Future<Output = Result<(), EnrollerError>> + Send;
    fn unenroll(&self, uid: &WorkloadUid) -> impl Future<Output = Result<(), EnrollerError>> + Send;
    /// The pods Kubernetes enrolled (also those re-adopted after a restart).
    fn enrolled(&self) -> impl Future<Output = Vec<WorkloadUid>> + Send;
}

/// [`Enroller`] over eBPF [`Capture`].
pub struct CaptureEnroller {
    pub capture: Arc<Capture>,
    /// The host's `/proc`.
    pub proc_root: PathBuf,
}

impl Enroller for CaptureEnroller {
    async fn enroll(&self, pod: PodEnrollment) -> Result<(), EnrollerError> {
        let (proc_root, netns) = (self.proc_root.clone(), pod.netns.clone());
        let cgroup = tokio::task::spawn_blocking(move || {
            let pid = proc_netns::process_in_netns(&proc_root, &netns)?;
            proc_netns::cgroup_of(&proc_root, pid)
        })
        .await
        .map_err(|e| EnrollerError::Cgroup {
            uid: pod.uid.to_string(),
            source: ProcNetnsError::Read { path: pod.netns.display().to_string(), source: std::io::Error::other(e) },
        })?
        .map_err(|source| EnrollerError::Cgroup { uid: pod.uid.to_string(), source })?;
        self.capture.enroll_excluding(&pod.uid, &pod.netns, &cgroup, EnrollSource::Kubernetes, &pod.exclusions).await?;
        Ok(())
    }

    async fn unenroll(&self, uid: &WorkloadUid) -> Result<(), EnrollerError> {
        Ok(self.capture.unenroll(uid).await?)
    }

    async fn enrolled(&self) -> Vec<WorkloadUid> {
        let records = self.capture.enrolled().await;
        records.into_iter().filter(|r| r.source == EnrollSource::Kubernetes).map(|r| r.uid).collect()
    }
}
