//! The CNI environment of one plugin call: the command, the container, its network namespace,
//! and `CNI_ARGS`, where Kubernetes runtimes put the pod's name, namespace and uid
//! (`K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=shop;...`).
//!
//! Read through [`EnvSource`] so tests pass a map instead of changing the process environment.
//! Only what this plugin uses is required: `CNI_PATH` is not, because it runs no other plugin.

use std::collections::BTreeMap;

/// Set by the runtime on every plugin call; its presence is what makes the binary a plugin.
pub(crate) const COMMAND_VAR: &str = "CNI_COMMAND";

/// Where environment variables come from.
pub(crate) trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub(crate) struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for BTreeMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.to_string())
    }
}

/// The CNI operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
    Check,
    Version,
}

/// A container operation's parameters (everything but `VERSION`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invocation {
    pub(crate) container_id: String,
    /// `CNI_NETNS`; DEL may come without it (the namespace may already be gone).
    pub(crate) netns: Option<String>,
    pub(crate) ifname: String,
    pub(crate) pod: PodArgs,
}

/// The Kubernetes keys of `CNI_ARGS` (others are ignored); empty values count as absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PodArgs {
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) uid: Option<String>,
    pub(crate) infra_container_id: Option<String>,
}

impl PodArgs {
    /// `namespace/name` when both are known: the call is for a Kubernetes pod.
    pub(crate) fn pod_ref(&self) -> Option<PodRef> {
        Some(PodRef { namespace: self.namespace.clone()?, name: self.name.clone()? })
    }
}

/// A pod by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodRef {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What is wrong with the environment; the message names the variable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvError {
    #[error("{0} missing")]
    Missing(&'static str),
    #[error("CNI_COMMAND: unknown command {0:?} (expected ADD, DEL, CHECK or VERSION)")]
    UnknownCommand(String),
    #[error("CNI_ARGS: entry {0:?} is not KEY=VALUE")]
    MalformedArg(String),
}

/// Reads `CNI_COMMAND`.
pub(crate) fn command(env: &impl EnvSource) -> Result<Command, EnvError> {
    let value = env.var(COMMAND_VAR).filter(|v| !v.is_empty()).ok_or(EnvError::Missing(COMMAND_VAR))?;
    match value.as_str() {
        "ADD" => Ok(Command::Add),
        "DEL" => Ok(Command::Del),
        "CHECK" => Ok(Command::Check),
        "VERSION" => Ok(Command::Version),
        _ => Err(EnvError::UnknownCommand(value)),
    }
}

/// Reads the parameters of a container operation.
pub(crate) fn invocation(env: &impl EnvSource, command: Command) -> Result<Invocation, EnvError> {
    let required = |name: &'static str| env.var(name).filter(|v| !v.is_empty()).ok_or(EnvError::Missing(name));
    let netns = match command {
        Command::Del => env.var("CNI_NETNS").filter(|v| !v.is_empty()),
        _ => Some(required("CNI_NETNS")?),
    };
    Ok(Invocation {
        container_id: required("CNI_CONTAINERID")?,
        netns,
        ifname: required("CNI_IFNAME")?,
        pod: parse_args(&env.var("CNI_ARGS").unwrap_or_default())?,
    })
}

/// Parses `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
pub(crate) fn parse_args(raw: &str) -> Result<PodArgs, EnvError> {
    let mut pod = PodArgs::default();
    for entry in raw.split(';').filter(|e| !e.is_empty()) {
        let (key, value) = entry.split_once('=').ok_or_else(|| EnvError::MalformedArg(entry.to_string()))?;
        if key.is_empty() {
            return Err(EnvError::MalformedArg(entry.to_string()));
        }
        let slot = match key {
            "K8S_POD_NAME" => &mut pod.name,
            "K8S_POD_NAMESPACE" => &mut pod.namespace,
            "K8S_POD_UID" => &mut pod.uid,
            "K8S_POD_INFRA_CONTAINER_ID" => &mut pod.infra_container_id,
            _ => continue,
        };
        *slot = Some(value.to_string()).filter(|v| !v.is_empty());
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_as_containerd_and_cri_o_send_them() {
        let raw = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;\
                   K8S_POD_INFRA_CONTAINER_ID=4f2e;K8S_POD_UID=0d9b-11";
        let pod = parse_args(raw).unwrap();
        assert_eq!(
            pod,
            PodArgs {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                uid: Some("0d9b-11".into()),
                infra_container_id: Some("4f2e".into()),
            }
        );
        assert_eq!(pod.pod_ref().unwrap().to_string(), "shop/web-0");
    }

    #[test]
    fn cni_args_edge_cases() {
        assert_eq!(parse_args("").unwrap(), PodArgs::default());
        assert_eq!(parse_args(";;").unwrap(), PodArgs::default());
        // Values may contain '='; empty values are absent; unknown keys are ignored.
        let pod = parse_args("K8S_POD_NAME=a=b;K8S_POD_NAMESPACE=;FOO=bar").unwrap();
        assert_eq!(pod.name.as_deref(), Some("a=b"));
        assert_eq!(pod.namespace, None);
        assert_eq!(pod.pod_ref(), None, "no namespace: not a Kubernetes pod");
        for bad in ["K8S_POD_NAME", "K8S_POD_NAME=a;junk", "=x"] {
            let err = parse_args(bad).unwrap_err();
            assert!(matches!(err, EnvError::MalformedArg(_)), "{bad:?} gave {err:?}");
            assert!(err.to_string().starts_with("CNI_ARGS: entry"), "{err}");
        }
    }

    #[test]
    fn required_variables_per_command() {
        let mut env = BTreeMap::from([
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME=p;K8S_POD_NAMESPACE=n"),
        ]);
        assert_eq!(invocation(&env, Command::Add).unwrap_err().to_string(), "CNI_NETNS missing");
        let del = invocation(&env, Command::Del).unwrap();
        assert_eq!((del.netns, del.container_id.as_str()), (None, "c1"));
        env.insert("CNI_NETNS", "/var/run/netns/p");
        let add = invocation(&env, Command::Add).unwrap();
        assert_eq!(add.netns.as_deref(), Some("/var/run/netns/p"));
        assert_eq!(add.pod.pod_ref().unwrap().to_string(), "n/p");
        env.remove("CNI_CONTAINERID");
        assert_eq!(invocation(&env, Command::Check).unwrap_err(), EnvError::Missing("CNI_CONTAINERID"));
    }

    #[test]
    fn commands() {
        let env = |c| BTreeMap::from([(COMMAND_VAR, c)]);
        assert_eq!(command(&env("ADD")), Ok(Command::Add));
        assert_eq!(command(&env("VERSION")), Ok(Command::Version));
        assert_eq!(command(&env("")), Err(EnvError::Missing(COMMAND_VAR)));
        assert!(command(&env("add")).unwrap_err().to_string().contains("unknown command \"add\""));
    }
}
