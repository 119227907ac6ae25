//! The plugin-event socket's protocol: on CNI ADD the chained plugin (`ztunnel-cni`) sends
//! one JSON line describing the new pod to ztunnel's node agent and waits for one JSON line
//! back; the agent answers only once the pod's traffic is captured (or it cannot be), so the
//! pod's first `connect()` is already captured.
//!
//! ```text
//! -> {"podUid":"…","podName":"web-0","podNamespace":"shop","netns":"/var/run/netns/cni-…",
//!     "containerId":"…","ips":["10.244.1.5"]}
//! <- {"ok":true}            or            {"ok":false,"error":"pod shop/web-0: …"}
//! ```
//!
//! One request per connection. The socket lives in the node agent's run directory
//! ([`DEFAULT_SOCKET_PATH`]), mode 0600: only root on the node talks to it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the node agent listens for plugin events, unless configured otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/ztunnel/pluginevent.sock";
/// Longest request line the agent reads.
pub const MAX_REQUEST_LINE: usize = 16 * 1024;
/// How long the plugin waits for the agent's answer (enrolling a pod takes milliseconds;
/// this bounds a wedged agent, not a slow one).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A pod the container runtime just created (CNI ADD), as the plugin saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodAdded {
    /// `K8S_POD_UID` from `CNI_ARGS`.
    pub pod_uid: String,
    /// `K8S_POD_NAME`.
    pub pod_name: String,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: String,
    /// `CNI_NETNS`: the pod's network namespace as a path on the node.
    pub netns: PathBuf,
    /// `CNI_CONTAINERID`: the sandbox.
    pub container_id: String,
    /// The pod's addresses from the previous plugins' result (`prevResult.ips`).
    pub ips: Vec<IpAddr>,
}

/// The agent's answer to [`PodAdded`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    pub fn captured() -> Answer {
        Answer { ok: true, error: None }
    }

    pub fn failed(error: impl Into<String>) -> Answer {
        Answer { ok: false, error: Some(error.into()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_uses_camel_case_names_and_refuses_unknown_fields() {
        let added = PodAdded {
            pod_uid: "0d9b…".into(),
            pod_name: "web-0".into(),
            pod_namespace: "shop".into(),
            netns: "/var/run/netns/cni-1".into(),
            container_id: "abc".into(),
            ips: vec!["10.244.1.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        };
        let line = serde_json::to_string(&added).unwrap();
        assert!(line.contains(r#""podUid":"0d9b…""#) && line.contains(r#""ips":["10.244.1.5","fd00::5"]"#), "{line}");
        assert_eq!(serde_json::from_str::<PodAdded>(&line).unwrap(), added);
        let extra = line.replacen('{', r#"{"surprise":1,"#, 1);
        assert!(serde_json::from_str::<PodAdded>(&extra).unwrap_err().to_string().contains("surprise"));
    }

    #[test]
    fn answers() {
        assert_eq!(serde_json::to_string(&Answer::captured()).unwrap(), r#"{"ok":true}"#);
        assert_eq!(
            serde_json::to_string(&Answer::failed("pod shop/web-0: no netns")).unwrap(),
            r#"{"ok":false,"error":"pod shop/web-0: no netns"}"#
        );
    }
}
