//! Every way a plugin call fails, and how each is reported: CNI error JSON on stdout
//! (`{"cniVersion", "code", "msg", "details"}`) with a non-zero exit status.
//!
//! Codes 1 to 11 are the spec's well-known ones; ours start at 999:
//!
//! | code | meaning |
//! |---|---|
//! | 999 | the pod belongs in the mesh but the node agent's socket cannot be reached |
//! | 1000 | the node agent was reached but did not confirm the capture (refused, timed out, garbled) |
//! | 1001 | no usable Kubernetes client config (kubeconfig unreadable or invalid) |
//! | 1002 | the API server did not give the pod and its namespace before the deadline |

use serde_json::{Value, json};

use super::agent::AgentError;
use super::config::ConfigError;
use super::env::{EnvError, PodRef};
use super::pod_lookup::LookupError;
use super::prev_result::PrevResultError;

/// Spec: incompatible CNI version.
pub(crate) const CODE_INCOMPATIBLE_VERSION: u32 = 1;
/// Spec: invalid necessary environment variables.
pub(crate) const CODE_INVALID_ENV: u32 = 4;
/// Spec: I/O failure.
pub(crate) const CODE_IO: u32 = 5;
/// Spec: failed to decode content.
pub(crate) const CODE_DECODE: u32 = 6;
/// Spec: invalid network config.
pub(crate) const CODE_INVALID_CONFIG: u32 = 7;
pub(crate) const CODE_AGENT_UNREACHABLE: u32 = 999;
pub(crate) const CODE_AGENT_FAILED: u32 = 1000;
pub(crate) const CODE_KUBE_CONFIG: u32 = 1001;
pub(crate) const CODE_API_UNREACHABLE: u32 = 1002;

/// A failed plugin call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PluginError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the network config from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("CHECK is not defined for cniVersion {0} (it needs 0.4.0 or later)")]
    CheckUnsupported(String),
    #[error("pod {pod}: {source}")]
    PrevResult { pod: PodRef, source: PrevResultError },
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("pod {pod} belongs in the ambient mesh, but {source}")]
    Agent { pod: PodRef, source: AgentError },
}

impl PluginError {
    /// The CNI error code.
    pub(crate) fn code(&self) -> u32 {
        match self {
            PluginError::Env(_) => CODE_INVALID_ENV,
            PluginError::Config(ConfigError::NotJson(_)) => CODE_DECODE,
            PluginError::Config(ConfigError::Invalid { .. }) | PluginError::PrevResult { .. } => CODE_INVALID_CONFIG,
            PluginError::Config(ConfigError::UnsupportedVersion(_)) | PluginError::CheckUnsupported(_) => {
                CODE_INCOMPATIBLE_VERSION
            }
            PluginError::Stdin(_) => CODE_IO,
            PluginError::Lookup(LookupError::Unreachable { .. }) => CODE_API_UNREACHABLE,
            PluginError::Lookup(_) => CODE_KUBE_CONFIG,
            PluginError::Agent { source, .. } if source.is_unreachable() => CODE_AGENT_UNREACHABLE,
            PluginError::Agent { .. } => CODE_AGENT_FAILED,
        }
    }

    /// What an operator should know beyond the message, if anything.
    fn details(&self) -> Option<&'static str> {
        match self {
            PluginError::Agent { .. } => Some(
                "ztunnel's node agent must capture an ambient pod before its containers start, so the pod's \
                 sandbox is refused until the agent answers (fail closed); check the ztunnel pod on this node",
            ),
            PluginError::Lookup(LookupError::Unreachable { .. }) => Some(
                "without the pod and its namespace the plugin cannot tell whether the pod belongs in the \
                 mesh, so the sandbox is refused and the runtime retries (fail closed)",
            ),
            _ => None,
        }
    }

    /// The CNI error object, in `cni_version`'s terms (the config's version when known).
    pub(crate) fn to_json(&self, cni_version: &str) -> Value {
        let mut error = json!({ "cniVersion": cni_version, "code": self.code(), "msg": self.to_string() });
        if let Some(details) = self.details() {
            error["details"] = Value::from(details);
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn pod() -> PodRef {
        PodRef { namespace: "shop".into(), name: "web-0".into() }
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let err = PluginError::Env(EnvError::Missing("CNI_NETNS"));
        assert_eq!(err.to_json("1.0.0"), json!({"cniVersion":"1.0.0","code":4,"msg":"CNI_NETNS missing"}));
    }

    #[test]
    fn agent_errors_name_the_pod_and_the_socket() {
        let err = PluginError::Agent {
            pod: pod(),
            source: AgentError::Connect {
                socket: PathBuf::from("/var/run/ztunnel/pluginevent.sock"),
                source: std::io::ErrorKind::NotFound.into(),
            },
        };
        let json = err.to_json("0.4.0");
        assert_eq!(json["code"], 999);
        assert_eq!(json["cniVersion"], "0.4.0");
        let msg = json["msg"].as_str().unwrap();
        assert!(msg.starts_with("pod shop/web-0 belongs in the ambient mesh, but cannot connect to the node agent at /var/run/ztunnel/pluginevent.sock"), "{msg}");
        assert!(json["details"].as_str().unwrap().contains("fail closed"));
        let refused = PluginError::Agent {
            pod: pod(),
            source: AgentError::Timeout { socket: "/s".into(), timeout: Duration::from_secs(30) },
        };
        assert_eq!(refused.code(), CODE_AGENT_FAILED);
    }

    #[test]
    fn codes_follow_the_spec() {
        let cases: [(PluginError, u32); 6] = [
            (ConfigError::NotJson("eof".into()).into(), 6),
            (ConfigError::UnsupportedVersion("0.2.0".into()).into(), 1),
            (PluginError::CheckUnsupported("0.3.1".into()), 1),
            (PluginError::Stdin(std::io::ErrorKind::BrokenPipe.into()), 5),
            (LookupError::Kubeconfig { path: "/k".into(), detail: "no such file".into() }.into(), 1001),
            (
                LookupError::Unreachable {
                    pod: pod(),
                    server: "https://127.0.0.1:1/".into(),
                    deadline: Duration::from_secs(2),
                    last: "refused".into(),
                }
                .into(),
                1002,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }
}
