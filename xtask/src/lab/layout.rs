//! The demo mesh as plain data: two nodes, the pods on them, what each pod runs, the service,
//! and the identities the flows are expected to carry. Nothing here starts anything.
//!
//! ```text
//!  node-a: sleep   (client: curl, testapp)             enrolled
//!          cache   (testapp echo :6379)                enrolled
//!  node-b: web     (python3 http.server :8080)         enrolled, endpoint of svc web 10.96.0.10:80
//!          data    (testapp echo :9000, testapp sink :9001) enrolled
//!          outside (testapp echo :7000)                not in the mesh config at all
//! ```

use std::net::{IpAddr, Ipv4Addr};

pub(crate) const TRUST_DOMAIN: &str = "cluster.local";
pub(crate) const NAMESPACE: &str = "default";
pub(crate) const NODE_A: &str = "node-a";
pub(crate) const NODE_B: &str = "node-b";
pub(crate) const NODES: [&str; 2] = [NODE_A, NODE_B];

/// The app a pod runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum App {
    /// Nothing listens; clients are started in it on demand.
    Client,
    /// `python3 -m http.server` on this port.
    Http(u16),
    /// `testapp serve` (echo) on this port.
    Echo(u16),
    /// `testapp serve` (echo) on the first port and `testapp sink` on the second.
    EchoAndSink(u16, u16),
}

impl App {
    /// The port clients are sent to (the echo port where there is also a sink).
    pub(crate) fn port(self) -> Option<u16> {
        match self {
            App::Http(port) | App::Echo(port) | App::EchoAndSink(port, _) => Some(port),
            App::Client => None,
        }
    }
}

/// One pod of the demo.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PodSpec {
    pub(crate) name: &'static str,
    pub(crate) node: &'static str,
    /// `None`: not in the mesh config (an unmeshed destination).
    pub(crate) service_account: Option<&'static str>,
    pub(crate) app: App,
}

impl PodSpec {
    /// The SPIFFE identity of its certificate, for pods in the mesh.
    pub(crate) fn spiffe(&self) -> Option<String> {
        self.service_account.map(spiffe)
    }

    pub(crate) fn in_mesh(&self) -> bool {
        self.service_account.is_some()
    }

    /// What it runs, for the plan.
    pub(crate) fn describe_app(&self) -> String {
        match self.app {
            App::Client => "client (curl, testapp)".into(),
            App::Http(port) => format!("python3 -m http.server :{port}"),
            App::Echo(port) => format!("testapp echo :{port}"),
            App::EchoAndSink(echo, sink) => format!("testapp echo :{echo}, testapp sink :{sink}"),
        }
    }
}

/// `spiffe://cluster.local/ns/default/sa/<service account>`.
pub(crate) fn spiffe(service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{service_account}")
}

pub(crate) const SLEEP: PodSpec =
    PodSpec { name: "sleep", node: NODE_A, service_account: Some("sleep"), app: App::Client };
pub(crate) const CACHE: PodSpec =
    PodSpec { name: "cache", node: NODE_A, service_account: Some("cache"), app: App::Echo(6379) };
pub(crate) const WEB: PodSpec =
    PodSpec { name: "web", node: NODE_B, service_account: Some("web"), app: App::Http(8080) };
pub(crate) const DATA: PodSpec =
    PodSpec { name: "data", node: NODE_B, service_account: Some("data"), app: App::EchoAndSink(9000, 9001) };
pub(crate) const OUTSIDE: PodSpec =
    PodSpec { name: "outside", node: NODE_B, service_account: None, app: App::Echo(7000) };

/// Every pod, in creation order.
pub(crate) const PODS: [PodSpec; 5] = [SLEEP, CACHE, WEB, DATA, OUTSIDE];

/// The service in front of `web`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceSpec {
    pub(crate) name: &'static str,
    /// Never routed anywhere: capture hands connections to it to ztunnel, which picks an endpoint.
    pub(crate) vip: IpAddr,
    pub(crate) port: u16,
    pub(crate) target_port: u16,
    pub(crate) endpoints: &'static [&'static str],
}

impl ServiceSpec {
    pub(crate) fn hostname(&self) -> String {
        format!("{}.{NAMESPACE}.svc.cluster.local", self.name)
    }
}

pub(crate) const WEB_SERVICE: ServiceSpec = ServiceSpec {
    name: "web",
    vip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
    port: 80,
    target_port: 8080,
    endpoints: &["web"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nodes_with_two_mesh_pods_each_and_one_outsider() {
        for node in NODES {
            let meshed = PODS.iter().filter(|p| p.node == node && p.in_mesh()).count();
            assert_eq!(meshed, 2, "{node} should run two mesh pods");
        }
        let outsiders: Vec<&str> = PODS.iter().filter(|p| !p.in_mesh()).map(|p| p.name).collect();
        assert_eq!(outsiders, ["outside"]);
        assert_eq!(SLEEP.spiffe().as_deref(), Some("spiffe://cluster.local/ns/default/sa/sleep"));
        assert!(WEB_SERVICE.endpoints.iter().all(|e| PODS.iter().any(|p| p.name == *e && p.in_mesh())));
    }
}
