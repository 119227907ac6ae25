//! The network config the runtime passes on stdin: the standard fields (`cniVersion`, `name`,
//! `type`, `prevResult`) and ours, named like Istio's plugin:
//!
//! ```json
//! { "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ztunnel-cni",
//!   "log_level": "debug",
//!   "plugin_event_socket": "/var/run/ztunnel/pluginevent.sock",
//!   "system_namespace": "istio-system",
//!   "kubernetes": { "kubeconfig": "/etc/cni/net.d/ZZZ-ztunnel-cni-kubeconfig",
//!                   "cni_bin_dir": "/opt/cni/bin",
//!                   "exclude_namespaces": ["kube-system", "istio-system"],
//!                   "api_deadline_seconds": 30 },
//!   "prevResult": { ... } }
//! ```
//!
//! Fields are read one by one so a wrong one is reported by its path
//! (`kubernetes.exclude_namespaces[1]: expected a string`). Unknown fields are ignored: the
//! runtime adds its own (`runtimeConfig`, `args`, ...).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use ztunnel::kubernetes::cni_event::DEFAULT_SOCKET_PATH;
use ztunnel::kubernetes::rules::EnrollmentScope;

/// The spec versions whose configs and results this plugin handles. `prevResult` is passed
/// through as it came, so its exact layout (which differs between them) does not matter beyond
/// `ips[].address`, which all of them share.
pub(crate) const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// The version this plugin implements, reported by `VERSION`.
pub(crate) const IMPLEMENTED_VERSION: &str = "1.0.0";
/// How long ADD keeps trying to read the pod and its namespace from the API server, unless
/// configured (`kubernetes.api_deadline_seconds`). Istio's plugin tries for 30 s too.
pub(crate) const DEFAULT_API_DEADLINE: Duration = Duration::from_secs(30);

/// The parsed config.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PluginConfig {
    pub(crate) cni_version: String,
    pub(crate) prev_result: Option<Value>,
    /// A `tracing` filter (`error`, `warn`, `info`, `debug`, `trace`); `None`: log nothing.
    pub(crate) log_level: Option<String>,
    pub(crate) plugin_event_socket: PathBuf,
    /// `None`: the in-cluster config or `$KUBECONFIG`, as kube-rs infers it.
    pub(crate) kubeconfig: Option<PathBuf>,
    pub(crate) api_deadline: Duration,
    pub(crate) scope: EnrollmentScope,
}

impl PluginConfig {
    /// True when the config's version knows CHECK (0.4.0 and later).
    pub(crate) fn supports_check(&self) -> bool {
        !self.cni_version.starts_with("0.3.")
    }
}

/// What is wrong with the config.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("network config is not JSON: {0}")]
    NotJson(String),
    #[error("network config: {field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("cniVersion {0:?} is not supported (supported: {supported})", supported = SUPPORTED_VERSIONS.join(", "))]
    UnsupportedVersion(String),
}

impl ConfigError {
    fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { field: field.into(), problem: problem.into() }
    }
}

/// The `cniVersion` of a config that may be otherwise invalid (for error replies), if it has one.
pub(crate) fn version_hint(stdin: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_string)
}

/// Parses and checks the config on stdin.
pub(crate) fn parse(stdin: &[u8]) -> Result<PluginConfig, ConfigError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| ConfigError::NotJson(e.to_string()))?;
    let Value::Object(root) = value else {
        return Err(ConfigError::invalid("(top level)", "expected a JSON object"));
    };
    let cni_version = string(&root, "", "cniVersion")?.ok_or_else(|| ConfigError::invalid("cniVersion", "missing"))?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(ConfigError::UnsupportedVersion(cni_version));
    }
    string(&root, "", "name")?;
    string(&root, "", "type")?;
    let prev_result = match root.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(ConfigError::invalid("prevResult", "expected an object")),
    };
    let log_level = string(&root, "", "log_level")?.map(log_filter).transpose()?.flatten();
    let plugin_event_socket =
        string(&root, "", "plugin_event_socket")?.unwrap_or_else(|| DEFAULT_SOCKET_PATH.to_string()).into();
    let defaults = EnrollmentScope::default();
    let system_namespace = string(&root, "", "system_namespace")?.unwrap_or(defaults.system_namespace);
    let empty = Map::new();
    let kubernetes = match root.get("kubernetes") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(k)) => k,
        Some(_) => return Err(ConfigError::invalid("kubernetes", "expected an object")),
    };
    let kubeconfig = string(kubernetes, "kubernetes.", "kubeconfig")?.map(PathBuf::from);
    string(kubernetes, "kubernetes.", "cni_bin_dir")?;
    let excluded_namespaces =
        string_list(kubernetes, "kubernetes.", "exclude_namespaces")?.unwrap_or(defaults.excluded_namespaces);
    let api_deadline = match kubernetes.get("api_deadline_seconds") {
        None | Some(Value::Null) => DEFAULT_API_DEADLINE,
        Some(v) => v
            .as_u64()
            .filter(|s| (1..=300).contains(s))
            .map(Duration::from_secs)
            .ok_or_else(|| ConfigError::invalid("kubernetes.api_deadline_seconds", "expected 1 to 300"))?,
    };
    Ok(PluginConfig {
        cni_version,
        prev_result,
        log_level,
        plugin_event_socket,
        kubeconfig,
        api_deadline,
        scope: EnrollmentScope { system_namespace, excluded_namespaces },
    })
}

fn string(map: &Map<String, Value>, prefix: &str, key: &str) -> Result<Option<String>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ConfigError::invalid(format!("{prefix}{key}"), "expected a string")),
    }
}

fn string_list(map: &Map<String, Value>, prefix: &str, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
    let items = match map.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ConfigError::invalid(format!("{prefix}{key}"), "expected a list of strings")),
    };
    let strings = items.iter().enumerate().map(|(i, item)| {
        item.as_str()
            .map(str::to_string)
            .ok_or_else(|| ConfigError::invalid(format!("{prefix}{key}[{i}]"), "expected a string"))
    });
    strings.collect::<Result<Vec<_>, _>>().map(Some)
}

/// Istio's level names (plus `trace` and `off`); `none`/`off` turn logging off.
fn log_filter(level: String) -> Result<Option<String>, ConfigError> {
    match level.to_ascii_lowercase().as_str() {
        "" | "none" | "off" => Ok(None),
        l @ ("error" | "warn" | "info" | "debug" | "trace") => Ok(Some(l.to_string())),
        _ => Err(ConfigError::invalid(
            "log_level",
            format!("{level:?} is not one of none, error, warn, info, debug, trace"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config() {
        let conf = parse(
            br#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ztunnel-cni","log_level":"DEBUG",
                "plugin_event_socket":"/run/zt/pe.sock","system_namespace":"mesh",
                "kubernetes":{"kubeconfig":"/etc/cni/net.d/kc","cni_bin_dir":"/opt/cni/bin",
                              "exclude_namespaces":["kube-system"],"api_deadline_seconds":5},
                "runtimeConfig":{"portMappings":[]},
                "prevResult":{"cniVersion":"1.0.0","ips":[]}}"#,
        )
        .unwrap();
        assert_eq!(conf.log_level.as_deref(), Some("debug"));
        assert_eq!(conf.plugin_event_socket, PathBuf::from("/run/zt/pe.sock"));
        assert_eq!(conf.kubeconfig, Some(PathBuf::from("/etc/cni/net.d/kc")));
        assert_eq!(conf.api_deadline, Duration::from_secs(5));
        assert_eq!(
            conf.scope,
            EnrollmentScope { system_namespace: "mesh".into(), excluded_namespaces: vec!["kube-system".into()] }
        );
        assert!(conf.prev_result.is_some() && conf.supports_check());
    }

    #[test]
    fn defaults() {
        let conf = parse(br#"{"cniVersion":"0.3.1","name":"n","type":"ztunnel-cni"}"#).unwrap();
        assert_eq!(conf.plugin_event_socket, PathBuf::from(DEFAULT_SOCKET_PATH));
        assert_eq!((&conf.log_level, &conf.kubeconfig, &conf.prev_result), (&None, &None, &None));
        assert_eq!(conf.scope, EnrollmentScope::default());
        assert_eq!(conf.api_deadline, DEFAULT_API_DEADLINE);
        assert!(!conf.supports_check(), "0.3.x has no CHECK");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 9] = [
            (b"{", "network config is not JSON"),
            (b"[]", "(top level): expected a JSON object"),
            (br#"{"name":"n"}"#, "cniVersion: missing"),
            (br#"{"cniVersion":"0.2.0"}"#, "cniVersion \"0.2.0\" is not supported"),
            (br#"{"cniVersion":"1.0.0","prevResult":[]}"#, "prevResult: expected an object"),
            (br#"{"cniVersion":"1.0.0","log_level":"loud"}"#, "log_level: \"loud\" is not one of"),
            (br#"{"cniVersion":"1.0.0","kubernetes":{"kubeconfig":7}}"#, "kubernetes.kubeconfig: expected a string"),
            (
                br#"{"cniVersion":"1.0.0","kubernetes":{"exclude_namespaces":["a",1]}}"#,
                "kubernetes.exclude_namespaces[1]: expected a string",
            ),
            (
                br#"{"cniVersion":"1.0.0","kubernetes":{"api_deadline_seconds":0}}"#,
                "kubernetes.api_deadline_seconds: expected 1 to 300",
            ),
        ];
        for (input, want) in cases {
            let err = parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{}: got {err:?}, want {want:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn version_hint_survives_invalid_configs() {
        assert_eq!(version_hint(br#"{"cniVersion":"0.4.0","kubernetes":7}"#).as_deref(), Some("0.4.0"));
        assert_eq!(version_hint(b"{"), None);
    }
}
