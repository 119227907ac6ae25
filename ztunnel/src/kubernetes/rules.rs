//! Which pods are enrolled in the mesh: Istio's ambient enrollment rules, as a pure function
//! of the pod and its namespace.
//!
//! A pod is enrolled when its namespace carries `istio.io/dataplane-mode=ambient` or the pod
//! itself does, unless one of these holds (checked in this order, the first one names the
//! reason):
//! - it uses the host's network namespace (capturing it would capture the node);
//! - it is one of ztunnel's own pods (label `app=ztunnel` in the Istio system namespace);
//! - its namespace is excluded (by default `kube-system` and the Istio system namespace);
//! - it already has an Istio sidecar (annotation `sidecar.istio.io/status`);
//! - the pod carries `istio.io/dataplane-mode` with any value other than `ambient` (`none` is
//!   the documented opt-out);
//! - the pod carries the older opt-out annotation `ambient.istio.io/redirection: disabled`.
//!
//! Labels and annotations are the `BTreeMap`s of Kubernetes object metadata, so callers pass
//! `k8s-openapi` fields as they are.

use std::collections::BTreeMap;
use std::fmt;

/// The label that puts a namespace or a pod in ambient mode (or, on a pod, opts it out).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// [`DATAPLANE_MODE_LABEL`]'s value for ambient mode.
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";
/// The annotation set on a pod once its traffic is captured (value [`REDIRECTION_ENABLED`]);
/// istiod treats a workload as HBONE-capable only when it sees it. A pod that carries it with
/// [`REDIRECTION_DISABLED`] opts out (the older opt-out).
pub const REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";
/// [`REDIRECTION_ANNOTATION`]'s value once the pod is captured.
pub const REDIRECTION_ENABLED: &str = "enabled";
/// [`REDIRECTION_ANNOTATION`]'s opt-out value.
pub const REDIRECTION_DISABLED: &str = "disabled";
/// Present on pods that have an Istio sidecar.
pub const SIDECAR_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// Istio's default system namespace.
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "istio-system";

type Map = BTreeMap<String, String>;

/// What the rules look at in a pod.
#[derive(Clone, Copy, Debug)]
pub struct PodFacts<'a> {
    pub namespace: &'a str,
    pub labels: Option<&'a Map>,
    pub annotations: Option<&'a Map>,
    pub host_network: bool,
}

/// Namespaces the rules treat specially.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentScope {
    /// Istio's system namespace (where ztunnel itself runs).
    pub system_namespace: String,
    /// Namespaces whose pods are never enrolled.
    pub excluded_namespaces: Vec<String>,
}

impl Default for EnrollmentScope {
    fn default() -> Self {
        EnrollmentScope {
            system_namespace: DEFAULT_SYSTEM_NAMESPACE.to_string(),
            excluded_namespaces: vec!["kube-system".to_string(), DEFAULT_SYSTEM_NAMESPACE.to_string()],
        }
    }
}

/// The outcome for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Enroll,
    Skip(SkipReason),
}

/// Why a pod is not enrolled; `Display` says it in a log line's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Neither the namespace nor the pod asks for ambient mode.
    NotAmbient,
    HostNetwork,
    Ztunnel,
    ExcludedNamespace,
    Sidecar,
    /// The pod's `istio.io/dataplane-mode` label has this (non-ambient) value.
    PodOptOut(String),
    /// `ambient.istio.io/redirection: disabled`.
    RedirectionDisabled,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotAmbient => {
                write!(f, "neither the pod nor its namespace has {DATAPLANE_MODE_LABEL}={DATAPLANE_MODE_AMBIENT}")
            }
            SkipReason::HostNetwork => f.write_str("the pod uses the host network"),
            SkipReason::Ztunnel => f.write_str("the pod is ztunnel"),
            SkipReason::ExcludedNamespace => f.write_str("the pod's namespace is excluded from enrollment"),
            SkipReason::Sidecar => write!(f, "the pod has an Istio sidecar ({SIDECAR_STATUS_ANNOTATION})"),
            SkipReason::PodOptOut(value) => write!(f, "the pod is labelled {DATAPLANE_MODE_LABEL}={value}"),
            SkipReason::RedirectionDisabled => {
                write!(f, "the pod is annotated {REDIRECTION_ANNOTATION}={REDIRECTION_DISABLED}")
            }
        }
    }
}

fn value<'a>(map: Option<&'a Map>, key: &str) -> Option<&'a str> {
    map.and_then(|m| m.get(key)).map(String::as_str)
}

/// Decides whether `pod`, in a namespace labelled `namespace_labels`, is enrolled.
pub fn decide(pod: &PodFacts<'_>, namespace_labels: Option<&Map>, scope: &EnrollmentScope) -> Decision {
    let pod_mode = value(pod.labels, DATAPLANE_MODE_LABEL);
    let namespace_ambient = value(namespace_labels, DATAPLANE_MODE_LABEL) == Some(DATAPLANE_MODE_AMBIENT);
    if !namespace_ambient && pod_mode != Some(DATAPLANE_MODE_AMBIENT) {
        return Decision::Skip(SkipReason::NotAmbient);
    }
    let skip = if pod.host_network {
        SkipReason::HostNetwork
    } else if pod.namespace == scope.system_namespace && value(pod.labels, "app") == Some("ztunnel") {
        SkipReason::Ztunnel
    } else if scope.excluded_namespaces.iter().any(|n| n == pod.namespace) {
        SkipReason::ExcludedNamespace
    } else if pod.annotations.is_some_and(|a| a.contains_key(SIDECAR_STATUS_ANNOTATION)) {
        SkipReason::Sidecar
    } else if let Some(mode) = pod_mode.filter(|m| *m != DATAPLANE_MODE_AMBIENT) {
        SkipReason::PodOptOut(mode.to_string())
    } else if value(pod.annotations, REDIRECTION_ANNOTATION) == Some(REDIRECTION_DISABLED) {
        SkipReason::RedirectionDisabled
    } else {
        return Decision::Enroll;
    };
    Decision::Skip(skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Map {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    struct Case {
        name: &'static str,
        namespace: &'static str,
        namespace_labels: Map,
        pod_labels: Map,
        pod_annotations: Map,
        host_network: bool,
        want: Decision,
    }

    fn case(name: &'static str, want: Decision) -> Case {
        Case {
            name,
            namespace: "shop",
            namespace_labels: map(&[(DATAPLANE_MODE_LABEL, "ambient")]),
            pod_labels: map(&[("app", "web")]),
            pod_annotations: Map::new(),
            host_network: false,
            want,
        }
    }

    #[test]
    fn istio_enrollment_rules() {
        let skip = Decision::Skip;
        let cases = [
            case("namespace labelled ambient", Decision::Enroll),
            Case { namespace_labels: Map::new(), ..case("nothing labelled", skip(SkipReason::NotAmbient)) },
            Case {
                namespace_labels: map(&[(DATAPLANE_MODE_LABEL, "none")]),
                ..case("namespace labelled none", skip(SkipReason::NotAmbient))
            },
            Case {
                namespace_labels: Map::new(),
                pod_labels: map(&[(DATAPLANE_MODE_LABEL, "ambient")]),
                ..case("only the pod labelled ambient", Decision::Enroll)
            },
            Case {
                pod_labels: map(&[(DATAPLANE_MODE_LABEL, "none")]),
                ..case("pod opts out with none", skip(SkipReason::PodOptOut("none".into())))
            },
            Case {
                pod_labels: map(&[(DATAPLANE_MODE_LABEL, "sidecar")]),
                ..case("pod labelled another mode", skip(SkipReason::PodOptOut("sidecar".into())))
            },
            Case {
                pod_annotations: map(&[(REDIRECTION_ANNOTATION, "disabled")]),
                ..case("older opt-out annotation", skip(SkipReason::RedirectionDisabled))
            },
            Case {
                pod_annotations: map(&[(REDIRECTION_ANNOTATION, "enabled")]),
                ..case("already annotated enabled", Decision::Enroll)
            },
            Case { host_network: true, ..case("host network", skip(SkipReason::HostNetwork)) },
            Case {
                pod_labels: map(&[(DATAPLANE_MODE_LABEL, "ambient")]),
                host_network: true,
                ..case("host network even when the pod asks", skip(SkipReason::HostNetwork))
            },
            Case {
                pod_annotations: map(&[(SIDECAR_STATUS_ANNOTATION, "{}")]),
                ..case("sidecar", skip(SkipReason::Sidecar))
            },
            Case {
                namespace: "istio-system",
                pod_labels: map(&[("app", "ztunnel")]),
                ..case("ztunnel itself", skip(SkipReason::Ztunnel))
            },
            Case { namespace: "istio-system", ..case("Istio's namespace", skip(SkipReason::ExcludedNamespace)) },
            Case {
                namespace: "kube-system",
                pod_labels: map(&[(DATAPLANE_MODE_LABEL, "ambient")]),
                ..case("kube-system even when the pod asks", skip(SkipReason::ExcludedNamespace))
            },
            Case {
                pod_labels: map(&[("app", "ztunnel")]),
                ..case("app=ztunnel outside Istio's namespace is an app", Decision::Enroll)
            },
        ];
        let scope = EnrollmentScope::default();
        for c in &cases {
            let pod = PodFacts {
                namespace: c.namespace,
                labels: Some(&c.pod_labels),
                annotations: Some(&c.pod_annotations),
                host_network: c.host_network,
            };
            assert_eq!(decide(&pod, Some(&c.namespace_labels), &scope), c.want, "{}", c.name);
        }
    }

    #[test]
    fn missing_metadata_is_not_ambient() {
        let pod = PodFacts { namespace: "shop", labels: None, annotations: None, host_network: false };
        assert_eq!(decide(&pod, None, &EnrollmentScope::default()), Decision::Skip(SkipReason::NotAmbient));
    }

    #[test]
    fn excluded_namespaces_are_configurable() {
        let scope = EnrollmentScope { system_namespace: "mesh".into(), excluded_namespaces: vec!["batch".into()] };
        let labels = map(&[(DATAPLANE_MODE_LABEL, "ambient")]);
        let pod = |namespace| PodFacts { namespace, labels: None, annotations: None, host_network: false };
        assert_eq!(decide(&pod("batch"), Some(&labels), &scope), Decision::Skip(SkipReason::ExcludedNamespace));
        assert_eq!(decide(&pod("kube-system"), Some(&labels), &scope), Decision::Enroll);
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(
            SkipReason::PodOptOut("none".into()).to_string(),
            "the pod is labelled istio.io/dataplane-mode=none"
        );
        assert!(SkipReason::NotAmbient.to_string().contains("istio.io/dataplane-mode=ambient"));
    }
}
