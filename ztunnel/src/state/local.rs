//! Reads Istio ztunnel's local config file (YAML, the `LOCAL_XDS_PATH` format) and validates
//! it into a [`LocalConfig`], or explains the first problem: file, entry
//! (`workloads[1] (uid "…")`), field (`workloadIps[0]`), and line/column where the YAML parser
//! knows them. [`apply`] swaps a validated config into the shared state, and logs a warning
//! for every workload the new config drops (its traffic leaves the mesh).
//!
//! Parsing is bounded before the YAML parser runs: the file must be a regular file of at most
//! [`MAX_CONFIG_BYTES`](super::MAX_CONFIG_BYTES) (`local_file`) and its flow collections may
//! nest at most [`MAX_FLOW_NESTING`](super::MAX_FLOW_NESTING) deep (`yaml_depth`). Loading and
//! parsing are blocking work: async callers run them on a blocking thread (`spawn_blocking`),
//! never on a runtime worker.
//!
//! Nothing here watches files (that is `watch`) or answers lookups (that is `store`).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tracing::warn;

use super::SharedState;
use super::capture::PodCapture;
use super::local_file::read_config_file;
use super::local_format::LocalConfigFile;
use super::service::Service;
use super::store::ProxyState;
use super::validate::{Rejection, service_label, validate, workload_label};
use super::validate_policy::{namespace_label, policy_label};
use super::workload::Workload;
use super::yaml_depth::{MAX_FLOW_NESTING, check_flow_nesting};
use crate::policy::Authorization;

/// A parsed and validated local config, ready to [`apply`].
#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub(super) workloads: Vec<Workload>,
    pub(super) services: Vec<Service>,
    pub(super) policies: Vec<Authorization>,
    /// Problems that did not reject the file, logged when it is applied.
    pub(super) warnings: Vec<String>,
    pub(super) captures: Vec<PodCapture>,
    /// The exact bytes this config came from, so a file watcher can tell whether the file
    /// changed since.
    pub(super) source: Arc<[u8]>,
}

impl LocalConfig {
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }
    pub fn services(&self) -> &[Service] {
        &self.services
    }
    /// Workloads to enroll in eBPF capture (the `capture` extension).
    pub fn captures(&self) -> &[PodCapture] {
        &self.captures
    }
    /// Authorization policies, including the STRICT mTLS policy when a workload needs it.
    pub fn policies(&self) -> &[Authorization] {
        &self.policies
    }
    /// Problems that did not reject the file (such as a listed policy it does not define).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Line and column (both 1-based) in the YAML text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalConfigError {
    #[error("cannot read local config {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("local config {file} is {kind}, not a regular file: only a regular file (or a symlink to one) is read")]
    NotRegularFile { file: String, kind: &'static str },
    #[error("local config {file} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { file: String, size: u64, limit: u64 },
    #[error("local config {file} contains no YAML document (expected workloads, services, policies)")]
    Empty { file: String },
    #[error("local config {file}: {}", describe(.entry, .field, .reason, .location))]
    Invalid {
        file: String,
        /// The list entry at fault, like `workloads[1] (uid "a")`; `None` for file-level problems.
        entry: Option<String>,
        /// The field inside the entry, like `workloadIps[0]`.
        field: Option<String>,
        reason: String,
        /// Known for YAML syntax and type errors.
        location: Option<Location>,
    },
}

fn describe(entry: &Option<String>, field: &Option<String>, reason: &str, location: &Option<Location>) -> String {
    let mut out = String::new();
    if let Some(entry) = entry {
        out.push_str(entry);
        out.push_str(": ");
    }
    if let Some(field) = field {
        out.push_str(field);
        out.push_str(": ");
    }
    out.push_str(reason);
    if let Some(at) = location {
        out.push_str(&format!(" at {at}"));
    }
    out
}

/// Reads and validates the local config at `path`. `default_trust_domain` fills in workloads
/// that do not set `trustDomain`. Blocking: from async code, call it in `spawn_blocking`.
pub fn load_local_config(path: &Path, default_trust_domain: &str) -> Result<LocalConfig, LocalConfigError> {
    let bytes = read_config_file(path)?;
    parse_local_config(&bytes, &path.display().to_string(), default_trust_domain)
}

/// Validates local config text; `file` is only used to name the source in errors.
pub fn parse_local_config(
    bytes: &[u8],
    file: &str,
    default_trust_domain: &str,
) -> Result<LocalConfig, LocalConfigError> {
    let invalid = |entry, field, reason: String, location| LocalConfigError::Invalid {
        file: file.to_string(),
        entry,
        field,
        reason,
        location,
    };
    // The YAML scanner's cost grows with the square of the nesting: refuse deep nesting first.
    check_flow_nesting(bytes, MAX_FLOW_NESTING).map_err(|at| {
        let reason = format!("collections ([ ] and {{ }}) nest deeper than {MAX_FLOW_NESTING} levels");
        invalid(None, None, reason, Some(at))
    })?;
    // A first, untyped pass finds syntax errors and gives names (uids) for the typed errors.
    let doc: serde_yaml::Value = serde_yaml::from_slice(bytes).map_err(|e| from_yaml_error(file, e, None))?;
    match &doc {
        serde_yaml::Value::Null => {
            return Err(LocalConfigError::Empty { file: file.to_string() });
        }
        serde_yaml::Value::Mapping(_) => {}
        serde_yaml::Value::Sequence(_) => {
            return Err(invalid(
                None,
                None,
                "the top level is a list, but it must be a mapping with `workloads`, `services`, \
                 `policies` and `namespaces` (the older list-of-workloads format is not supported)"
                    .to_string(),
                None,
            ));
        }
        _ => {
            return Err(invalid(
                None,
                None,
                "the top level must be a mapping with `workloads`, `services` and `policies`".to_string(),
                None,
            ));
        }
    }
    let parsed: LocalConfigFile = serde_yaml::from_slice(bytes).map_err(|e| from_yaml_error(file, e, Some(&doc)))?;
    let v = validate(parsed, default_trust_domain)
        .map_err(|Rejection { entry, field, reason }| invalid(entry, field, reason, None))?;
    Ok(LocalConfig {
        workloads: v.workloads,
        services: v.services,
        policies: v.policies,
        warnings: v.warnings,
        captures: v.captures,
        source: bytes.into(),
    })
}

/// Atomically replaces the shared state with `cfg`; returns the new generation. The config's
/// warnings are logged, and so is every workload of the current state that `cfg` drops.
pub fn apply(state: &SharedState, cfg: LocalConfig) -> u64 {
    for warning in &cfg.warnings {
        warn!(warning = %warning, "local config");
    }
    warn_removed_workloads(&state.read(), &cfg);
    let next = ProxyState::build(cfg, state.local_network());
    state.replace(next)
}

/// A workload that leaves the config leaves the mesh: connections to its addresses are then
/// routed as unknown destinations (plaintext passthrough, no mTLS, no policy), and a pod the
/// config enrolled is released from capture. That is never silent.
fn warn_removed_workloads(current: &ProxyState, next: &LocalConfig) {
    let kept: HashSet<&str> = next.workloads.iter().map(|w| &*w.uid).collect();
    for workload in current.workloads().filter(|w| !kept.contains(&*w.uid)) {
        // Its capture block went with it, so capture of a config-enrolled pod ends too.
        let captured = current.captures.iter().any(|c| c.uid == workload.uid);
        warn!(
            uid = %workload.uid,
            pod = %format_args!("{}/{}", workload.namespace, workload.name),
            addresses = ?workload.workload_ips,
            node = %workload.node,
            released_from_capture = captured,
            "workload removed from the local config: connections to its addresses now pass through \
             as plaintext, without mTLS or policy"
        );
    }
}

/// Turns a serde_yaml error into one naming the entry and field. serde_yaml reports the path
/// only inside its message (`workloads[1].workloadIps[0]: invalid … at line 5 column 7`), so
/// the path is split off the front and the location off the end.
fn from_yaml_error(file: &str, err: serde_yaml::Error, doc: Option<&serde_yaml::Value>) -> LocalConfigError {
    let location = err.location().map(|l| Location { line: l.line(), column: l.column() });
    let mut text = err.to_string();
    if let Some(at) = location {
        let suffix = format!(" at {at}");
        if let Some(pos) = text.find(&suffix) {
            text.replace_range(pos..pos + suffix.len(), "");
        }
    }
    let (entry, field, reason) = match text.split_once(": ") {
        Some((path, reason)) if is_path(path) => {
            let (entry, field) = split_path(path, doc);
            (entry, field, reason.to_string())
        }
        _ => (None, None, text.clone()),
    };
    LocalConfigError::Invalid { file: file.to_string(), entry, field, reason, location }
}

const TOP_LEVEL: [&str; 4] = ["workloads", "services", "policies", "namespaces"];

fn is_path(s: &str) -> bool {
    TOP_LEVEL.iter().any(|top| s.starts_with(top)) && !s.contains(' ')
}

/// `workloads[1].workloadIps[0]` -> (`workloads[1] (uid "a")`, `workloadIps[0]`).
fn split_path(path: &str, doc: Option<&serde_yaml::Value>) -> (Option<String>, Option<String>) {
    for top in TOP_LEVEL {
        let Some(rest) = path.strip_prefix(top) else {
            continue;
        };
        let Some((index, after)) = rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(i, after)| Some((i.parse::<usize>().ok()?, after)))
        else {
            return (None, Some(path.to_string()));
        };
        let item = doc.and_then(|d| d.get(top)).and_then(|l| l.get(index));
        let field = after.strip_prefix('.').filter(|f| !f.is_empty()).map(|f| render_field(f, item));
        let text = |key: &str| item.and_then(|i| i.get(key)).and_then(|v| v.as_str());
        let entry = match top {
            "workloads" => workload_label(index, text("uid"), text("name")),
            "services" => service_label(index, text("namespace"), text("hostname"), text("name")),
            "policies" => policy_label(index, text("namespace"), text("name")),
            "namespaces" => namespace_label(index, text("name")),
            _ => format!("{top}[{index}]"),
        };
        return (Some(entry), field);
    }
    (None, Some(path.to_string()))
}

/// Rewrites serde_yaml's dotted map paths in the style of validation errors, using the
/// document to tell map keys (which may contain dots) from nested fields:
/// `services.ns/h.example.80` -> `services["ns/h.example"][80]`, `ports.80` -> `ports[80]`.
fn render_field(field: &str, item: Option<&serde_yaml::Value>) -> String {
    let Some((name, rest)) = field.split_once('.') else {
        return field.to_string();
    };
    let Some(map) = item.and_then(|i| i.get(name)).and_then(|v| v.as_mapping()) else {
        return field.to_string();
    };
    let key_text = |k: &serde_yaml::Value| match k {
        serde_yaml::Value::String(s) => Some((s.clone(), true)),
        serde_yaml::Value::Number(n) => Some((n.to_string(), false)),
        _ => None,
    };
    let matched = map
        .iter()
        .filter_map(|(k, v)| key_text(k).map(|(text, quoted)| (text, quoted, v)))
        .filter(|(k, _, _)| rest == k || rest.starts_with(&format!("{k}.")))
        .max_by_key(|(k, _, _)| k.len());
    let Some((key, quoted, value)) = matched else {
        return field.to_string();
    };
    let head = if quoted { format!("{name}[{key:?}]") } else { format!("{name}[{key}]") };
    match rest[key.len()..].strip_prefix('.') {
        None => head,
        Some(sub) if sub.bytes().all(|b| b.is_ascii_digit()) => format!("{head}[{sub}]"),
        Some(sub) => format!("{head}.{}", render_field(sub, Some(value))),
    }
}
