//! Telling istiod a pod is captured: a merge patch of `pods/status` setting the annotation
//! `ambient.istio.io/redirection: enabled` once the pod is captured, and removing it (`null`)
//! once it is released, as istio-cni's node agent does. istiod marks a workload as
//! HBONE-capable only when it sees the annotation.
//!
//! Patching the status subresource needs only `patch` on `pods/status`, not on `pods`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};

use super::reconcile::PodKey;
use super::rules::{REDIRECTION_ANNOTATION, REDIRECTION_ENABLED};

/// Bound on one patch, so an unreachable API server delays a retry, not the agent.
pub const PATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed patch, naming the pod.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("pod {pod}: patching {REDIRECTION_ANNOTATION} in pods/status: {source}")]
    Patch {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {pod}: patching {REDIRECTION_ANNOTATION} in pods/status: no answer within {PATCH_TIMEOUT:?}")]
    Timeout { pod: String },
}

/// The merge patch that sets (`true`) or removes (`false`) the annotation.
pub fn redirection_patch(enabled: bool) -> serde_json::Value {
    let value = if enabled { serde_json::Value::from(REDIRECTION_ENABLED) } else { serde_json::Value::Null };
    serde_json::json!({ "metadata": { "annotations": { REDIRECTION_ANNOTATION: value } } })
}

/// Sets or removes the annotation on `pod`. Removing it from a pod that no longer exists
/// succeeds (there is nothing left to tell).
pub async fn set_redirection(client: &kube::Client, pod: &PodKey, enabled: bool) -> Result<(), StatusError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let patch = Patch::Merge(redirection_patch(enabled));
    let params = PatchParams::default();
    match tokio::time::timeout(PATCH_TIMEOUT, api.patch_status(&pod.name, &params, &patch)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(status))) if status.code == 404 && !enabled => Ok(()),
        Ok(Err(source)) => Err(StatusError::Patch { pod: pod.to_string(), source }),
        Err(_) => Err(StatusError::Timeout { pod: pod.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_set_and_remove_the_annotation() {
        assert_eq!(
            redirection_patch(true).to_string(),
            r#"{"metadata":{"annotations":{"ambient.istio.io/redirection":"enabled"}}}"#
        );
        assert_eq!(
            redirection_patch(false).to_string(),
            r#"{"metadata":{"annotations":{"ambient.istio.io/redirection":null}}}"#
        );
    }
}
