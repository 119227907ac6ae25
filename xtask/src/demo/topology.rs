//! The demo mesh as plain data: two nodes, three workloads, one service and an outside
//! server, all on fixed loopback addresses in 127.77.0.0/16; the local config file rendered
//! from it; and the check that its addresses are free. Nothing here starts anything.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::bail;

pub(crate) const TRUST_DOMAIN: &str = "cluster.local";
pub(crate) const NAMESPACE: &str = "default";
/// Where every HBONE workload is served by its node's ztunnel.
pub(crate) const HBONE_PORT: u16 = 15008;

const fn ip(c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 77, c, d))
}

/// One ztunnel and the addresses of its local servers.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) name: &'static str,
    pub(crate) socks5: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) metrics: SocketAddr,
    pub(crate) readiness: SocketAddr,
}

impl Node {
    fn on(name: &'static str, host: IpAddr) -> Node {
        Node {
            name,
            socks5: SocketAddr::new(host, 15080),
            admin: SocketAddr::new(host, 15000),
            metrics: SocketAddr::new(host, 15020),
            readiness: SocketAddr::new(host, 15021),
        }
    }
}

/// A meshed workload (protocol HBONE).
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    pub(crate) name: &'static str,
    pub(crate) service_account: &'static str,
    pub(crate) ip: IpAddr,
    pub(crate) node: &'static str,
    /// The port its app listens on (0: no server, a client only).
    pub(crate) app_port: u16,
    /// `(service, service port, target port)` this workload is an endpoint of.
    pub(crate) endpoint_of: Option<(&'static str, u16, u16)>,
}

impl Workload {
    /// The SPIFFE identity its certificate carries.
    pub(crate) fn spiffe(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{}", self.service_account)
    }

    pub(crate) fn app_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.app_port)
    }
}

/// A service with one VIP.
#[derive(Clone, Debug)]
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) vip: IpAddr,
    pub(crate) port: u16,
    pub(crate) target_port: u16,
}

impl Service {
    pub(crate) fn hostname(&self) -> String {
        format!("{}.{NAMESPACE}.svc.cluster.local", self.name)
    }

    pub(crate) fn vip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.vip, self.port)
    }
}

/// Everything the demo runs, and where.
#[derive(Clone, Debug)]
pub(crate) struct Topology {
    pub(crate) node_a: Node,
    pub(crate) node_b: Node,
    /// Client on node A.
    pub(crate) sleep: Workload,
    /// HTTP server on node B, endpoint of `web_service`.
    pub(crate) web: Workload,
    /// Bulk sink on node B.
    pub(crate) data: Workload,
    pub(crate) web_service: Service,
    /// A plain TCP echo server that is not in the config (reached by passthrough).
    pub(crate) outside: SocketAddr,
}

impl Topology {
    pub(crate) fn standard() -> Topology {
        Topology {
            node_a: Node::on("node-a", ip(0, 1)),
            node_b: Node::on("node-b", ip(0, 2)),
            sleep: Workload {
                name: "sleep",
                service_account: "sleep",
                ip: ip(1, 10),
                node: "node-a",
                app_port: 0,
                endpoint_of: None,
            },
            web: Workload {
                name: "web",
                service_account: "web",
                ip: ip(2, 10),
                node: "node-b",
                app_port: 8080,
                endpoint_of: Some(("web", 80, 8080)),
            },
            data: Workload {
                name: "data",
                service_account: "data",
                ip: ip(2, 20),
                node: "node-b",
                app_port: 9000,
                endpoint_of: None,
            },
            web_service: Service { name: "web", vip: ip(3, 1), port: 80, target_port: 8080 },
            outside: SocketAddr::new(ip(4, 10), 7000),
        }
    }

    pub(crate) fn workloads(&self) -> [&Workload; 3] {
        [&self.sleep, &self.web, &self.data]
    }

    /// The local config file (Istio ztunnel's local config format).
    pub(crate) fn render_config(&self) -> String {
        let mut y = String::from("workloads:\n");
        for w in self.workloads() {
            let _ = write!(
                y,
                "- uid: demo//v1/Pod/{NAMESPACE}/{name}\n  name: {name}\n  namespace: {NAMESPACE}\n  \
                 serviceAccount: {sa}\n  workloadIps: [\"{ip}\"]\n  node: {node}\n  protocol: HBONE\n  \
                 canonicalName: {name}\n  canonicalRevision: v1\n  workloadName: {name}\n",
                name = w.name,
                sa = w.service_account,
                ip = w.ip,
                node = w.node,
            );
            match w.endpoint_of {
                Some((svc, port, target)) => {
                    let _ = writeln!(
                        y,
                        "  services:\n    \"{NAMESPACE}/{svc}.{NAMESPACE}.svc.cluster.local\": {{{port}: {target}}}"
                    );
                }
                None => y.push_str("  services: {}\n"),
            }
        }
        let s = &self.web_service;
        let _ = write!(
            y,
            "services:\n- name: {}\n  namespace: {NAMESPACE}\n  hostname: {}\n  vips: [\"/{}\"]\n  ports: {{{}: {}}}\n",
            s.name,
            s.hostname(),
            s.vip,
            s.port,
            s.target_port
        );
        y
    }

    /// Every address something will listen on, with who will.
    pub(crate) fn listen_addrs(&self) -> Vec<(SocketAddr, String)> {
        let mut out = Vec::new();
        for n in [&self.node_a, &self.node_b] {
            for (addr, what) in
                [(n.socks5, "socks5"), (n.admin, "admin"), (n.metrics, "metrics"), (n.readiness, "readiness")]
            {
                out.push((addr, format!("{} {what}", n.name)));
            }
        }
        for w in self.workloads() {
            out.push((SocketAddr::new(w.ip, HBONE_PORT), format!("{} hbone ({})", w.name, w.node)));
            if w.app_port != 0 {
                out.push((w.app_addr(), format!("{} app", w.name)));
            }
        }
        out.push((self.outside, "outside echo server".into()));
        out
    }

    /// Fails, listing every taken address, unless all of [`Topology::listen_addrs`] bind.
    pub(crate) fn check_free(&self) -> anyhow::Result<()> {
        let taken: Vec<String> = self
            .listen_addrs()
            .into_iter()
            .filter_map(|(addr, what)| match std::net::TcpListener::bind(addr) {
                Ok(_) => None,
                Err(e) => Some(format!("{addr} ({what}): {e}")),
            })
            .collect();
        if !taken.is_empty() {
            bail!(
                "demo addresses in 127.77.0.0/16 are in use (another demo still running?):\n      {}",
                taken.join("\n      ")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_every_workload_and_the_service_endpoint() {
        let t = Topology::standard();
        let yaml = t.render_config();
        for w in t.workloads() {
            assert!(yaml.contains(&format!("workloadIps: [\"{}\"]", w.ip)), "missing {} in:\n{yaml}", w.name);
        }
        assert!(
            yaml.contains("\"default/web.default.svc.cluster.local\": {80: 8080}"),
            "web endpoint missing:\n{yaml}"
        );
        assert!(yaml.contains("vips: [\"/127.77.3.1\"]"), "VIP missing:\n{yaml}");
    }

    #[test]
    fn listen_addresses_are_distinct() {
        let addrs = Topology::standard().listen_addrs();
        let mut unique: Vec<_> = addrs.iter().map(|(a, _)| *a).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), addrs.len(), "duplicate listen address in {addrs:?}");
    }
}
