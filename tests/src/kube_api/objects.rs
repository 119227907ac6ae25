//! The kinds the test API server serves (core/v1 `Namespace` and `Pod`, as k8s-openapi
//! values) and what differs between them: URL plural, scope, the field-selector fields the
//! real API server supports, and which parts of an object a write to the main resource or to
//! the `status` subresource may change. Also small builders tests use to make objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, NamespaceStatus, Pod, PodIP, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ListableResource, Metadata, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::status::ApiError;
use super::store::{Collection, ObjectKey, Store};

/// A kind the server stores, lists, watches and patches.
pub(crate) trait ApiObject:
    Resource
    + ListableResource
    + Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Default
    + Send
    + Sync
    + 'static
{
    /// The resource name in URLs and error messages.
    const PLURAL: &'static str;
    const NAMESPACED: bool;

    fn collection(store: &Store) -> &Collection<Self>;
    fn collection_mut(store: &mut Store) -> &mut Collection<Self>;

    /// The value of a field-selector field, or `None` when the real API server does not
    /// support selecting this kind by that field.
    fn field(&self, field: &str) -> Option<String>;

    /// A write to the main resource cannot change the status.
    fn keep_on_update(&mut self, old: &Self);

    /// A write to the status subresource can change the status and the metadata (labels,
    /// annotations), never the spec or the owner references.
    fn keep_on_status_update(&mut self, old: &Self);

    /// Where the object is stored; fails when it lacks a name (or a namespace).
    fn key(&self) -> Result<ObjectKey, ApiError> {
        let meta = self.metadata();
        let name = meta.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| ApiError::Invalid {
            kind: Self::KIND,
            name: String::new(),
            field: "metadata.name".into(),
            message: "name is required".into(),
        })?;
        let namespace = match (Self::NAMESPACED, meta.namespace.clone().filter(|n| !n.is_empty())) {
            (false, _) => String::new(),
            (true, Some(ns)) => ns,
            (true, None) => {
                return Err(ApiError::Invalid {
                    kind: Self::KIND,
                    name,
                    field: "metadata.namespace".into(),
                    message: "namespace is required".into(),
                });
            }
        };
        Ok((namespace, name))
    }
}

impl ApiObject for Namespace {
    const PLURAL: &'static str = "namespaces";
    const NAMESPACED: bool = false;

    fn collection(store: &Store) -> &Collection<Self> {
        &store.namespaces
    }
    fn collection_mut(store: &mut Store) -> &mut Collection<Self> {
        &mut store.namespaces
    }

    fn field(&self, field: &str) -> Option<String> {
        match field {
            "metadata.name" => Some(self.metadata.name.clone().unwrap_or_default()),
            "status.phase" => Some(self.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()),
            _ => None,
        }
    }

    fn keep_on_update(&mut self, old: &Self) {
        self.status.clone_from(&old.status);
    }

    fn keep_on_status_update(&mut self, old: &Self) {
        self.spec.clone_from(&old.spec);
    }
}

impl ApiObject for Pod {
    const PLURAL: &'static str = "pods";
    const NAMESPACED: bool = true;

    fn collection(store: &Store) -> &Collection<Self> {
        &store.pods
    }
    fn collection_mut(store: &mut Store) -> &mut Collection<Self> {
        &mut store.pods
    }

    fn field(&self, field: &str) -> Option<String> {
        let spec = self.spec.as_ref();
        let status = self.status.as_ref();
        let text = |v: Option<&String>| v.cloned().unwrap_or_default();
        Some(match field {
            "metadata.name" => text(self.metadata.name.as_ref()),
            "metadata.namespace" => text(self.metadata.namespace.as_ref()),
            "spec.nodeName" => text(spec.and_then(|s| s.node_name.as_ref())),
            "spec.serviceAccountName" => text(spec.and_then(|s| s.service_account_name.as_ref())),
            "spec.hostNetwork" => spec.and_then(|s| s.host_network).unwrap_or(false).to_string(),
            "status.phase" => text(status.and_then(|s| s.phase.as_ref())),
            "status.podIP" => text(status.and_then(|s| s.pod_ip.as_ref())),
            _ => return None,
        })
    }

    fn keep_on_update(&mut self, old: &Self) {
        self.status.clone_from(&old.status);
    }

    fn keep_on_status_update(&mut self, old: &Self) {
        self.spec.clone_from(&old.spec);
        self.metadata.owner_references.clone_from(&old.metadata.owner_references);
        self.metadata.deletion_timestamp.clone_from(&old.metadata.deletion_timestamp);
    }
}

/// A namespace named `name` with `labels`, phase Active.
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(string_map(labels)), ..Default::default() },
        status: Some(NamespaceStatus { phase: Some("Active".into()), ..Default::default() }),
        ..Default::default()
    }
}

/// A running pod `namespace/name` scheduled on `node` with address `ip`.
pub fn pod(namespace: &str, name: &str, node: &str, ip: &str) -> Pod {
    Pod {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(namespace.into()), ..Default::default() },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            service_account_name: Some("default".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            ..Default::default()
        }),
    }
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
