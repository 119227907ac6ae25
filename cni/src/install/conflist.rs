//! Chaining this plugin into a network config and taking it out again, as pure functions on
//! the config's JSON.
//!
//! A runtime reads either a list (`{"cniVersion", "name", "plugins": [...]}`, usually
//! `*.conflist`) or a single plugin config (`{"cniVersion", "name", "type", ...}`, `*.conf`).
//! [`chain`] puts our entry last in the list (a single config becomes a two-plugin list with the
//! same `cniVersion` and `name`), replacing any earlier entry of ours, so re-running never
//! duplicates it; every other field and plugin stays as it was. [`unchain`] removes exactly
//! the entries whose `type` is ours.

use serde_json::{Map, Value, json};

use crate::plugin::config::SUPPORTED_VERSIONS;

/// Our entries' `type`: the binary's name in the CNI bin dir.
pub(crate) const PLUGIN_TYPE: &str = "ztunnel-cni";

type Object = Map<String, Value>;

/// A network config, by kind.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum NetworkConfig {
    List(Object),
    Single(Object),
}

/// A field of a network config that is not what a runtime would accept.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) problem: String,
}

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), problem: problem.into() }
}

/// Tells a list from a single config and checks what a runtime needs: a supported
/// `cniVersion`, and a `type` on every plugin.
pub(crate) fn classify(value: Value) -> Result<NetworkConfig, FieldError> {
    let Value::Object(config) = value else { return Err(field_error("(top level)", "expected a JSON object")) };
    match config.get("cniVersion") {
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => {}
        Some(Value::String(v)) => {
            return Err(field_error(
                "cniVersion",
                format!("{v:?} is not supported by {PLUGIN_TYPE} (supported: {})", SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        Some(_) => return Err(field_error("cniVersion", "expected a string")),
        None => return Err(field_error("cniVersion", "missing")),
    }
    if config.contains_key("plugins") {
        plugins(&config)?;
        return Ok(NetworkConfig::List(config));
    }
    match config.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(NetworkConfig::Single(config)),
        _ => Err(field_error("type", "missing (neither a plugin list nor a single plugin config)")),
    }
}

/// The list's plugins, checked: a non-empty list of objects with a `type`.
fn plugins(list: &Object) -> Result<&Vec<Value>, FieldError> {
    let Some(Value::Array(plugins)) = list.get("plugins") else {
        return Err(field_error("plugins", "expected a list"));
    };
    if plugins.is_empty() {
        return Err(field_error("plugins", "empty"));
    }
    for (i, plugin) in plugins.iter().enumerate() {
        match plugin.get("type") {
            Some(Value::String(t)) if !t.is_empty() => {}
            _ if !plugin.is_object() => return Err(field_error(format!("plugins[{i}]"), "expected an object")),
            _ => return Err(field_error(format!("plugins[{i}].type"), "missing")),
        }
    }
    Ok(plugins)
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// `config` with `entry` as its last plugin, and whether that changed anything.
pub(crate) fn chain(config: NetworkConfig, entry: &Value) -> (Object, bool) {
    match config {
        NetworkConfig::Single(single) => {
            let mut list = Object::new();
            for key in ["cniVersion", "name"] {
                if let Some(v) = single.get(key) {
                    list.insert(key.to_string(), v.clone());
                }
            }
            list.insert("plugins".into(), json!([Value::Object(single), entry]));
            (list, true)
        }
        NetworkConfig::List(mut list) => {
            let Some(Value::Array(plugins)) = list.get_mut("plugins") else {
                unreachable!("classify checked the plugins list")
            };
            let ours = plugins.iter().filter(|p| is_ours(p)).count();
            if ours == 1 && plugins.last() == Some(entry) {
                return (list, false);
            }
            plugins.retain(|p| !is_ours(p));
            plugins.push(entry.clone());
            (list, true)
        }
    }
}

/// `list` without our entries, and how many there were. Anything that is not a list of
/// plugins is returned as it is.
pub(crate) fn unchain(mut list: Object) -> (Object, usize) {
    let Some(Value::Array(plugins)) = list.get_mut("plugins") else { return (list, 0) };
    let before = plugins.len();
    plugins.retain(|p| !is_ours(p));
    let removed = before - plugins.len();
    (list, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conflist the `cni_chain` suite runs through libcni: bridge with host-local IPAM,
    /// then portmap (the layout of many clusters' primary network).
    fn bridge_list() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "podnet",
            "disableCheck": false,
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/16"}]]}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
    }

    fn ours() -> Value {
        json!({"type": PLUGIN_TYPE, "name": PLUGIN_TYPE, "plugin_event_socket": "/var/run/ztunnel/pluginevent.sock"})
    }

    fn list(value: Value) -> NetworkConfig {
        classify(value).unwrap()
    }

    #[test]
    fn chains_last_and_keeps_everything_else() {
        let (chained, changed) = chain(list(bridge_list()), &ours());
        assert!(changed);
        let mut want = bridge_list();
        want["plugins"].as_array_mut().unwrap().push(ours());
        assert_eq!(Value::Object(chained), want);
    }

    #[test]
    fn chaining_again_changes_nothing() {
        let (once, _) = chain(list(bridge_list()), &ours());
        let (twice, changed) = chain(list(Value::Object(once.clone())), &ours());
        assert!(!changed, "a second install finds the entry in place");
        assert_eq!(twice, once);
    }

    #[test]
    fn an_old_or_misplaced_entry_is_replaced_and_moved_last() {
        let mut config = bridge_list();
        let plugins = config["plugins"].as_array_mut().unwrap();
        plugins.insert(0, json!({"type": PLUGIN_TYPE, "log_level": "debug"}));
        plugins.push(json!({"type": PLUGIN_TYPE, "log_level": "info"}));
        let (chained, changed) = chain(list(config), &ours());
        assert!(changed);
        let types: Vec<&str> =
            chained["plugins"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["bridge", "portmap", PLUGIN_TYPE], "one entry of ours, last");
        assert_eq!(chained["plugins"][2], ours(), "the new entry replaces the old ones");
    }

    #[test]
    fn a_single_config_becomes_a_list() {
        let single = json!({"cniVersion": "0.3.1", "name": "mynet", "type": "bridge", "bridge": "cni0",
                            "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}});
        let (chained, changed) = chain(list(single.clone()), &ours());
        assert!(changed);
        assert_eq!(
            Value::Object(chained),
            json!({"cniVersion": "0.3.1", "name": "mynet", "plugins": [single, ours()]})
        );
    }

    #[test]
    fn unchain_removes_exactly_our_entries() {
        let (chained, _) = chain(list(bridge_list()), &ours());
        let (restored, removed) = unchain(chained);
        assert_eq!(removed, 1);
        assert_eq!(Value::Object(restored), bridge_list());
        let Value::Object(untouched) = bridge_list() else { unreachable!() };
        assert_eq!(unchain(untouched.clone()), (untouched, 0));
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            (json!([]), "(top level): expected a JSON object"),
            (json!({"name": "x", "plugins": []}), "cniVersion: missing"),
            (json!({"cniVersion": "9.9.9", "plugins": []}), "cniVersion: \"9.9.9\" is not supported by ztunnel-cni"),
            (json!({"cniVersion": "1.0.0", "plugins": {}}), "plugins: expected a list"),
            (json!({"cniVersion": "1.0.0", "plugins": []}), "plugins: empty"),
            (json!({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}, 3]}), "plugins[1]: expected an object"),
            (
                json!({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}, {"name": "x"}]}),
                "plugins[1].type: missing",
            ),
            (json!({"cniVersion": "1.0.0", "name": "x"}), "type: missing"),
        ];
        for (config, want) in cases {
            let err = classify(config.clone()).unwrap_err().to_string();
            assert!(err.starts_with(want), "{config}: got {err:?}, want {want:?}");
        }
    }
}
