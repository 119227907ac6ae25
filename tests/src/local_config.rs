//! The tests' one writer of Istio ztunnel's local config file (`LOCAL_XDS_PATH` format, plus
//! this project's `mtls`, `namespaces` and `capture` extensions): plain values in, YAML out
//! through serde, so the loopback mesh ([`crate::mesh`]) and the namespaced capture mesh
//! ([`crate::capture_mesh`]) describe their workloads the same way and never drift from the
//! format the daemon parses.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;
use ztunnel::policy::{Authorization, MtlsMode};

/// A whole config file.
#[derive(Debug, Default, Serialize)]
pub struct LocalConfigDoc {
    pub workloads: Vec<ConfigWorkload>,
    pub services: Vec<ConfigService>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<ConfigNamespace>,
    /// Serialized as Istio's ztunnel writes its local config.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Authorization>,
}

/// One workload (a pod).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigWorkload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    #[serde(serialize_with = "ip_texts")]
    pub workload_ips: Vec<IpAddr>,
    pub node: String,
    /// `HBONE` or `TCP`.
    pub protocol: &'static str,
    /// `Healthy` or `Unhealthy`.
    pub status: &'static str,
    pub canonical_name: String,
    pub canonical_revision: String,
    pub workload_name: String,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "mtls_text")]
    pub mtls: Option<MtlsMode>,
    /// `"namespace/hostname"` -> service port -> target port.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, BTreeMap<u16, u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<ConfigCapture>,
}

impl ConfigWorkload {
    /// A healthy HBONE workload with Istio's uid and canonical labels for `name` (revision v1).
    pub fn pod(name: &str, namespace: &str, service_account: &str, ips: Vec<IpAddr>, node: &str) -> ConfigWorkload {
        ConfigWorkload {
            uid: pod_uid(namespace, name),
            name: name.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
            workload_ips: ips,
            node: node.into(),
            protocol: "HBONE",
            status: "Healthy",
            canonical_name: name.into(),
            canonical_revision: "v1".into(),
            workload_name: name.into(),
            mtls: None,
            services: BTreeMap::new(),
            capture: None,
        }
    }
}

/// The uid istiod gives a pod (`cluster1` is the tests' cluster).
pub fn pod_uid(namespace: &str, name: &str) -> String {
    format!("cluster1//v1/Pod/{namespace}/{name}")
}

/// A workload's `capture` block: enroll the pod in eBPF capture.
#[derive(Debug, Serialize)]
pub struct ConfigCapture {
    pub netns: PathBuf,
    /// Pod annotations (capture exclusions).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One service.
#[derive(Debug, Serialize)]
pub struct ConfigService {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    /// VIPs on the default network (`"/ip"`).
    #[serde(serialize_with = "network_addresses")]
    pub vips: Vec<IpAddr>,
    pub ports: BTreeMap<u16, u16>,
}

impl ConfigService {
    /// Service `name` in `namespace` at `vip`, with Kubernetes' hostname.
    pub fn new(name: &str, namespace: &str, vip: IpAddr, ports: &[(u16, u16)]) -> ConfigService {
        ConfigService {
            name: name.into(),
            namespace: namespace.into(),
            hostname: format!("{name}.{namespace}.svc.cluster.local"),
            vips: vec![vip],
            ports: ports.iter().copied().collect(),
        }
    }

    /// The key workloads use to name this service (`namespace/hostname`).
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.hostname)
    }
}

/// A namespace's default mTLS mode.
#[derive(Debug, Serialize)]
pub struct ConfigNamespace {
    pub name: String,
    #[serde(serialize_with = "mtls_text")]
    pub mtls: MtlsMode,
}

impl LocalConfigDoc {
    /// The file's text.
    pub fn render(&self) -> String {
        serde_yaml::to_string(self).expect("the local config serializes")
    }
}

fn ip_texts<S: serde::Serializer>(ips: &[IpAddr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ips.iter().map(ToString::to_string))
}

fn network_addresses<S: serde::Serializer>(ips: &[IpAddr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ips.iter().map(|ip| format!("/{ip}")))
}

/// `STRICT` / `PERMISSIVE`, as the file spells them.
fn mtls_text<S: serde::Serializer, M: MtlsField>(mode: &M, s: S) -> Result<S::Ok, S::Error> {
    match mode.mode() {
        Some(MtlsMode::Strict) => s.serialize_str("STRICT"),
        Some(MtlsMode::Permissive) => s.serialize_str("PERMISSIVE"),
        None => s.serialize_none(),
    }
}

/// `mtls` fields are optional on workloads and required on namespaces.
trait MtlsField {
    fn mode(&self) -> Option<MtlsMode>;
}

impl MtlsField for MtlsMode {
    fn mode(&self) -> Option<MtlsMode> {
        Some(*self)
    }
}

impl MtlsField for Option<MtlsMode> {
    fn mode(&self) -> Option<MtlsMode> {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_files_parse_as_the_daemon_parses_them() {
        let ip: IpAddr = "127.9.0.10".parse().unwrap();
        let vip: IpAddr = "127.9.0.100".parse().unwrap();
        let web = ConfigService::new("web", "default", vip, &[(80, 8080)]);
        let mut pod = ConfigWorkload::pod("server", "default", "echo", vec![ip, "fd00::a".parse().unwrap()], "node-b");
        pod.mtls = Some(MtlsMode::Strict);
        pod.services.insert(web.key(), [(80, 8080)].into_iter().collect());
        pod.capture = Some(ConfigCapture {
            netns: "/var/run/netns/server".into(),
            annotations: [("traffic.sidecar.istio.io/excludeOutboundPorts".to_string(), "5432".to_string())]
                .into_iter()
                .collect(),
        });
        let doc = LocalConfigDoc {
            workloads: vec![pod],
            services: vec![web],
            namespaces: vec![ConfigNamespace { name: "default".into(), mtls: MtlsMode::Permissive }],
            policies: Vec::new(),
        };
        let text = doc.render();
        let parsed = ztunnel::state::parse_local_config(text.as_bytes(), "rendered.yaml", "cluster.local")
            .unwrap_or_else(|e| panic!("the rendered config must parse: {e}\n{text}"));
        let state = ztunnel::state::SharedState::new("");
        ztunnel::state::apply(&state, parsed);
        let snapshot = state.read();
        let w = snapshot
            .workload_by_uid(&ztunnel::types::WorkloadUid::from(pod_uid("default", "server")))
            .expect("the workload is in state");
        assert_eq!(w.workload_ips.len(), 2, "{text}");
        assert!(snapshot.service_by_vip(vip).is_some(), "the service is in state: {text}");
    }
}
