//! The non-streaming verbs: list (selectors, resourceVersion, paging), get, patch of a pod or
//! its `status` subresource, and the discovery documents (`/version`, `/api`, `/api/v1`,
//! `/apis`). Each returns the JSON body to send; errors are `ApiError`s.

use std::net::SocketAddr;

use k8s_openapi::List;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroupList, APIResource, APIResourceList, APIVersions, ListMeta, ServerAddressByClientCIDR,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde_json::Value;

use super::RecordedPatch;
use super::objects::ApiObject;
use super::patch::{self, PatchFormat};
use super::routes::Query;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{ObjectKey, Store};

/// Both selectors of a list or watch, parsed for kind `K`.
pub(crate) struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub(crate) fn parse<K: ApiObject>(query: &Query) -> Result<Filter, ApiError> {
        Ok(Filter {
            labels: LabelSelector::parse(&query.label_selector)?,
            fields: FieldSelector::parse::<K>(&query.field_selector)?,
        })
    }

    pub(crate) fn matches<K: ApiObject>(&self, object: &K) -> bool {
        self.labels.matches(object.metadata().labels.as_ref()) && self.fields.matches(object)
    }
}

/// A list of the current state. Paging walks the objects in key order; a continue token is
/// the key of the last object returned.
pub(crate) fn list<K: ApiObject>(store: &Store, namespace: Option<&str>, query: &Query) -> Result<Value, ApiError> {
    let filter = Filter::parse::<K>(query)?;
    let current = store.resource_version();
    if let Some(rv) = query.resource_version {
        if rv > current {
            return Err(ApiError::TooLargeResourceVersion { requested: rv, current });
        }
        if query.resource_version_match.as_deref() == Some("Exact") && rv != current {
            return Err(ApiError::BadRequest(format!(
                "resourceVersionMatch=Exact for {rv}: this server lists only the current state ({current})"
            )));
        }
    }
    let after = query.continue_token.as_deref().map(parse_continue).transpose()?;
    let mut items: Vec<K> = store
        .list::<K>(namespace)
        .into_iter()
        .filter(|o| after.as_ref().is_none_or(|after| o.key().is_ok_and(|k| &k > after)))
        .filter(|o| filter.matches(*o))
        .cloned()
        .collect();
    let mut continue_ = None;
    if let Some(limit) = query.limit.filter(|l| items.len() > *l) {
        items.truncate(limit);
        continue_ = items.last().and_then(|o| o.key().ok()).map(|(ns, name)| format!("{ns}/{name}"));
    }
    let list = List::<K> {
        items,
        metadata: ListMeta { resource_version: Some(current.to_string()), continue_, ..Default::default() },
    };
    Ok(serde_json::to_value(list).expect("k8s-openapi lists serialize"))
}

fn parse_continue(token: &str) -> Result<ObjectKey, ApiError> {
    token
        .split_once('/')
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .ok_or_else(|| ApiError::BadRequest(format!("invalid continue token {token:?}")))
}

pub(crate) fn get<K: ApiObject>(store: &Store, key: &ObjectKey) -> Result<Value, ApiError> {
    let object = store.get::<K>(key).ok_or_else(|| ApiError::not_found::<K>(key))?;
    Ok(serde_json::to_value(object).expect("k8s-openapi objects serialize"))
}

/// A patch as the handler received it.
pub(crate) struct PatchRequest<'a> {
    pub(crate) key: ObjectKey,
    pub(crate) status: bool,
    pub(crate) content_type: &'a str,
    pub(crate) body: &'a [u8],
    pub(crate) query: &'a Query,
}

/// Applies a patch to the main resource or its status subresource and stores the result
/// (unless `dryRun=All`). A `metadata.resourceVersion` in the patched object that is not the
/// stored one is a conflict, as on a real cluster.
pub(crate) fn patch<K: ApiObject>(store: &mut Store, request: &PatchRequest<'_>) -> Result<Value, ApiError> {
    let format = PatchFormat::from_content_type(request.content_type)?;
    let body: Value = serde_json::from_slice(request.body).map_err(|e| {
        ApiError::BadRequest(format!("the patch for {} {:?} is not JSON: {e}", K::PLURAL, request.key.1))
    })?;
    let name = request.key.1.clone();
    let apply = |old: &K| -> Result<K, ApiError> {
        let mut doc = serde_json::to_value(old).expect("k8s-openapi objects serialize");
        patch::apply(format, &mut doc, &body)?;
        let sent_version = doc.pointer("/metadata/resourceVersion").and_then(Value::as_str);
        if sent_version.is_some() && sent_version != old.metadata().resource_version.as_deref() {
            return Err(ApiError::Conflict {
                resource: K::PLURAL,
                name: name.clone(),
                message: "the object has been modified; please apply your changes to the latest version and try again"
                    .into(),
            });
        }
        let mut new: K = serde_json::from_value(doc).map_err(|e| ApiError::Invalid {
            kind: K::KIND,
            name: name.clone(),
            field: "body".into(),
            message: format!("the patched object is not a valid {}: {e}", K::KIND),
        })?;
        if request.status {
            new.keep_on_status_update(old);
        } else {
            new.keep_on_update(old);
        }
        Ok(new)
    };
    let result = if request.query.dry_run {
        let old = store.get::<K>(&request.key).ok_or_else(|| ApiError::not_found::<K>(&request.key))?;
        apply(old)?
    } else {
        store.update::<K>(&request.key, apply)?
    };
    store.note_patch(RecordedPatch {
        namespace: request.key.0.clone(),
        name: request.key.1.clone(),
        subresource: request.status.then(|| "status".to_string()),
        format,
        body,
        field_manager: request.query.field_manager.clone(),
        dry_run: request.query.dry_run,
    });
    Ok(serde_json::to_value(result).expect("k8s-openapi objects serialize"))
}

/// The version a client's discovery sees: the Kubernetes release whose API k8s-openapi was
/// built for.
pub(crate) fn version() -> Value {
    let info = Info {
        major: "1".into(),
        minor: "33".into(),
        git_version: "v1.33.0".into(),
        platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        ..Default::default()
    };
    serde_json::to_value(info).expect("serializes")
}

pub(crate) fn api_versions(addr: SocketAddr) -> Value {
    let versions = APIVersions {
        versions: vec!["v1".into()],
        server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
            client_cidr: "0.0.0.0/0".into(),
            server_address: addr.to_string(),
        }],
    };
    serde_json::to_value(versions).expect("serializes")
}

pub(crate) fn core_resources() -> Value {
    let resource = |name: &str, kind: &str, namespaced: bool, verbs: &[&str]| APIResource {
        name: name.into(),
        kind: kind.into(),
        namespaced,
        singular_name: String::new(),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    };
    let list = APIResourceList {
        group_version: "v1".into(),
        resources: vec![
            resource("namespaces", "Namespace", false, &["get", "list", "watch"]),
            resource("pods", "Pod", true, &["get", "list", "patch", "watch"]),
            resource("pods/status", "Pod", true, &["get", "patch"]),
        ],
    };
    serde_json::to_value(list).expect("serializes")
}

pub(crate) fn api_groups() -> Value {
    serde_json::to_value(APIGroupList { groups: Vec::new() }).expect("serializes")
}
