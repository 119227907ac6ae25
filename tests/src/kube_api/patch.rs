//! The three patch formats a client may send, applied to an object's JSON:
//! JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge patch. Strategic
//! merge here is merge patch plus merging by key for the core/v1 lists Kubernetes declares
//! a merge key for (conditions, containers, owner references, pod IPs, finalizers); its
//! `$patch`-style directives are refused with an error naming where they appear.

use serde_json::{Map, Value};

use super::status::ApiError;

/// A patch body's format, from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchFormat {
    Merge,
    Strategic,
    Json,
}

impl PatchFormat {
    pub(crate) const ACCEPTED: &'static str =
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json";

    pub(crate) fn from_content_type(content_type: &str) -> Result<PatchFormat, ApiError> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Ok(PatchFormat::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchFormat::Strategic),
            "application/json-patch+json" => Ok(PatchFormat::Json),
            _ => Err(ApiError::UnsupportedMediaType { accepted: PatchFormat::ACCEPTED }),
        }
    }
}

/// Applies `patch` in `format` to `target`.
pub(crate) fn apply(format: PatchFormat, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match format {
        PatchFormat::Merge => {
            merge(target, patch);
            Ok(())
        }
        PatchFormat::Strategic => strategic(target, patch, ""),
        PatchFormat::Json => json_patch(target, patch),
    }
}

/// RFC 7386: objects merge member by member, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let object = target.as_object_mut().expect("made an object above");
    for (key, value) in members {
        if value.is_null() {
            object.remove(key);
        } else {
            merge(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// How a list at a path merges in a strategic merge patch.
enum ListMerge {
    ByKey(&'static str),
    Union,
}

fn list_merge(path: &str) -> Option<ListMerge> {
    Some(match path {
        "status.conditions" => ListMerge::ByKey("type"),
        "status.podIPs" => ListMerge::ByKey("ip"),
        "metadata.ownerReferences" => ListMerge::ByKey("uid"),
        "spec.containers" | "spec.initContainers" | "spec.volumes" => ListMerge::ByKey("name"),
        "metadata.finalizers" => ListMerge::Union,
        _ => return None,
    })
}

fn strategic(target: &mut Value, patch: &Value, path: &str) -> Result<(), ApiError> {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if let Some(directive) = members.keys().find(|k| k.starts_with('$')) {
        return Err(ApiError::BadRequest(format!(
            "strategic merge patch directive {directive} at {} is not supported by this server",
            if path.is_empty() { "the top level" } else { path }
        )));
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let object = target.as_object_mut().expect("made an object above");
    for (key, value) in members {
        let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match (value, list_merge(&child), object.get_mut(key)) {
            (Value::Null, _, _) => {
                object.remove(key);
            }
            (Value::Array(items), Some(how), Some(Value::Array(existing))) => merge_list(existing, items, how, &child)?,
            (_, _, Some(existing)) => strategic(existing, value, &child)?,
            (_, _, None) => {
                let mut fresh = Value::Null;
                strategic(&mut fresh, value, &child)?;
                object.insert(key.clone(), fresh);
            }
        }
    }
    Ok(())
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], how: ListMerge, path: &str) -> Result<(), ApiError> {
    for item in items {
        match how {
            ListMerge::Union => {
                if !existing.contains(item) {
                    existing.push(item.clone());
                }
            }
            ListMerge::ByKey(key) => {
                let id = item.get(key).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "strategic merge patch: an element of {path} lacks its merge key {key}"
                    ))
                })?;
                match existing.iter_mut().find(|e| e.get(key) == Some(id)) {
                    Some(old) => strategic(old, item, path)?,
                    None => existing.push(item.clone()),
                }
            }
        }
    }
    Ok(())
}

/// RFC 6902: a list of operations applied in order; any failure rejects the whole patch.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops =
        patch.as_array().ok_or_else(|| ApiError::BadRequest("a JSON patch must be a list of operations".into()))?;
    let mut result = target.clone();
    for (index, op) in ops.iter().enumerate() {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let fail = |why: &str| ApiError::Invalid {
            kind: "JSONPatch",
            name: String::new(),
            field: format!("operation {index} ({name} {path})"),
            message: why.to_string(),
        };
        let value = || op.get("value").cloned().ok_or_else(|| fail("missing value"));
        let from = || op.get("from").and_then(Value::as_str).ok_or_else(|| fail("missing from"));
        match name {
            "add" => add(&mut result, path, value()?).map_err(|e| fail(&e))?,
            "remove" => {
                remove(&mut result, path).map_err(|e| fail(&e))?;
            }
            "replace" => {
                remove(&mut result, path).map_err(|e| fail(&e))?;
                add(&mut result, path, value()?).map_err(|e| fail(&e))?;
            }
            "test" => {
                if result.pointer(path) != Some(&value()?) {
                    return Err(fail("test failed"));
                }
            }
            "move" => {
                let moved = remove(&mut result, from()?).map_err(|e| fail(&e))?;
                add(&mut result, path, moved).map_err(|e| fail(&e))?;
            }
            "copy" => {
                let copied = result.pointer(from()?).cloned().ok_or_else(|| fail("from path not found"))?;
                add(&mut result, path, copied).map_err(|e| fail(&e))?;
            }
            _ => return Err(fail("unknown operation")),
        }
    }
    *target = result;
    Ok(())
}

/// Splits a JSON pointer into its parent pointer and its last token (unescaped).
fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let cut = path.rfind('/').ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok((&path[..cut], path[cut + 1..].replace("~1", "/").replace("~0", "~")))
}

fn add(root: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *root = value;
        return Ok(());
    }
    let (parent, token) = split_pointer(path)?;
    match root.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(token, value);
            Ok(())
        }
        Some(Value::Array(list)) => {
            let at = if token == "-" {
                list.len()
            } else {
                token.parse::<usize>().map_err(|_| "invalid index".to_string())?
            };
            if at > list.len() {
                return Err("index out of range".into());
            }
            list.insert(at, value);
            Ok(())
        }
        _ => Err("path not found".into()),
    }
}

fn remove(root: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, token) = split_pointer(path)?;
    match root.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&token).ok_or_else(|| "path not found".into()),
        Some(Value::Array(list)) => {
            let at = token.parse::<usize>().map_err(|_| "invalid index".to_string())?;
            if at >= list.len() {
                return Err("index out of range".into());
            }
            Ok(list.remove(at))
        }
        _ => Err("path not found".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn patched(format: PatchFormat, target: Value, patch: Value) -> Result<Value, ApiError> {
        let mut t = target;
        apply(format, &mut t, &patch).map(|()| t)
    }

    #[test]
    fn merge_patch_sets_and_removes_annotations() {
        let pod = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}, "spec": {"x": 1}});
        let out =
            patched(PatchFormat::Merge, pod, json!({"metadata": {"annotations": {"a": null, "c": "3"}}})).unwrap();
        assert_eq!(out, json!({"metadata": {"annotations": {"b": "2", "c": "3"}}, "spec": {"x": 1}}));
    }

    #[test]
    fn strategic_merge_merges_conditions_by_type_and_replaces_other_lists() {
        let pod = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Init", "status": "True"}]},
                         "spec": {"tolerations": [{"key": "a"}]}});
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"tolerations": [{"key": "b"}]}});
        let out = patched(PatchFormat::Strategic, pod, patch).unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Init", "status": "True"}])
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "b"}]));
    }

    #[test]
    fn strategic_merge_refuses_directives_naming_where() {
        let err = patched(PatchFormat::Strategic, json!({}), json!({"metadata": {"labels": {"$patch": "replace"}}}))
            .expect_err("directive");
        assert!(err.to_string().contains("$patch at metadata.labels"), "{err}");
    }

    #[test]
    fn json_patch_applies_in_order_and_is_all_or_nothing() {
        let pod = json!({"metadata": {"labels": {"app": "web"}}});
        let ops = json!([
            {"op": "add", "path": "/metadata/annotations", "value": {}},
            {"op": "add", "path": "/metadata/annotations/ambient.istio.io~1redirection", "value": "enabled"},
            {"op": "test", "path": "/metadata/labels/app", "value": "web"},
            {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/name"},
            {"op": "remove", "path": "/metadata/labels/app"}
        ]);
        let out = patched(PatchFormat::Json, pod.clone(), ops).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"name": "web"}, "annotations": {"ambient.istio.io/redirection": "enabled"}}})
        );
        let failing = json!([{"op": "add", "path": "/metadata/x", "value": 1}, {"op": "remove", "path": "/nope/y"}]);
        let err = patched(PatchFormat::Json, pod, failing).expect_err("second op fails").to_string();
        assert!(err.contains("operation 1 (remove /nope/y)"), "{err}");
    }

    #[test]
    fn content_types_choose_the_format() {
        assert_eq!(PatchFormat::from_content_type("application/merge-patch+json").unwrap(), PatchFormat::Merge);
        assert_eq!(
            PatchFormat::from_content_type("application/strategic-merge-patch+json; charset=utf-8").unwrap(),
            PatchFormat::Strategic
        );
        assert_eq!(PatchFormat::from_content_type("application/apply-patch+yaml").unwrap_err().code(), 415);
    }
}
