//! What the node agent enrolls pods through: [`Enroller`], three operations (enroll a pod
//! from its network namespace, release it, list what Kubernetes enrolled), implemented by
//! the pod-lifecycle module ([`Pods`]). The agent only ever hands over the network
//! namespace, the addresses and the exclusions; capture needs nothing else (its programs sit
//! at a parent cgroup and select pods by namespace).

use std::future::Future;
use std::sync::Arc;

pub use crate::pods::PodEnrollment;
use crate::pods::records::EnrollSource;
use crate::pods::{Pods, PodsError};
use crate::types::WorkloadUid;

/// Failures of enrollment, naming the pod.
#[derive(Debug, thiserror::Error)]
pub enum EnrollerError {
    #[error(transparent)]
    Pods(#[from] PodsError),
}

impl EnrollerError {
    /// The pod was not enrolled to begin with (releasing it is then done).
    pub fn is_not_enrolled(&self) -> bool {
        matches!(self, EnrollerError::Pods(PodsError::NotEnrolled { .. }))
    }
}

/// Enrolls and releases pods.
pub trait Enroller: Send + Sync + 'static {
    fn enroll(&self, pod: PodEnrollment) -> impl Future<Output = Result<(), EnrollerError>> + Send;
    fn unenroll(&self, uid: &WorkloadUid) -> impl Future<Output = Result<(), EnrollerError>> + Send;
    /// The pods Kubernetes enrolled (also those re-adopted after a restart).
    fn enrolled(&self) -> impl Future<Output = Vec<WorkloadUid>> + Send;
}

impl Enroller for Arc<Pods> {
    async fn enroll(&self, pod: PodEnrollment) -> Result<(), EnrollerError> {
        Ok(Pods::enroll(self, pod, EnrollSource::Kubernetes).await?)
    }

    async fn unenroll(&self, uid: &WorkloadUid) -> Result<(), EnrollerError> {
        Ok(Pods::unenroll(self, uid).await?)
    }

    async fn enrolled(&self) -> Vec<WorkloadUid> {
        let records = Pods::enrolled(self).await;
        records.into_iter().filter(|r| r.source == EnrollSource::Kubernetes).map(|r| r.uid).collect()
    }
}
