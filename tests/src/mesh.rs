//! A small mesh on loopback: a shared CA, a generated local config file (workloads, services,
//! authorization policies, mTLS modes), and in-process ztunnels acting as nodes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use tempfile::TempDir;
use ztunnel::app::{BoundAddrs, Running};
use ztunnel::config::{CaSource, ProxyConfig};
use ztunnel::policy::{Authorization, MtlsMode};
use ztunnel::state::SharedState;
use ztunnel::telemetry::{self, LogFormat, LogHandle};

use crate::local_config::{ConfigNamespace, ConfigService, ConfigWorkload, LocalConfigDoc};
use crate::net::{Subnet, http_get};

pub const TRUST_DOMAIN: &str = "cluster.local";

/// One workload entry of the generated config.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub ip: IpAddr,
    pub node: String,
    pub hbone: bool,
    pub healthy: bool,
    /// `("ns/hostname", service port, target port)`.
    pub services: Vec<(String, u16, u16)>,
    /// The workload's own mTLS mode (overrides its namespace's).
    pub mtls: Option<MtlsMode>,
}

/// One service entry of the generated config.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vip: IpAddr,
    pub ports: Vec<(u16, u16)>,
}

/// Test mesh: owns a temp directory with the CA and config file.
pub struct Mesh {
    pub dir: TempDir,
    pub subnet: Subnet,
    pub workloads: Vec<WorkloadSpec>,
    pub services: Vec<ServiceSpec>,
    pub policies: Vec<Authorization>,
    /// Namespaces with a default mTLS mode.
    pub namespaces: Vec<(String, MtlsMode)>,
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,access=off".into());
        let _ = telemetry::init(LogFormat::Text, &filter);
    });
}

impl Default for Mesh {
    fn default() -> Self {
        Mesh::new()
    }
}

impl Mesh {
    /// A new mesh with its own subnet and a CA generated into its directory.
    pub fn new() -> Mesh {
        init_logging();
        ztunnel::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        ztunnel::identity::LocalCa::load_or_generate(&dir.path().join("ca"), TRUST_DOMAIN).expect("test CA");
        Mesh {
            dir,
            subnet: Subnet::unique(),
            workloads: Vec::new(),
            services: Vec::new(),
            policies: Vec::new(),
            namespaces: Vec::new(),
        }
    }

    /// The two-node mesh most tests start from: `client` (`sleep`, 10) on node-a and `server`
    /// (`echo`, 20) on node-b, both HBONE, config written. Returns the mesh, the client's
    /// address and the server's port 8080 (no app started there).
    pub fn client_and_server() -> (Mesh, IpAddr, SocketAddr) {
        let mut mesh = Mesh::new();
        let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
        let server = mesh.workload("server", "default", "echo", 20, "node-b", true);
        mesh.write_config();
        (mesh, client, SocketAddr::new(server, 8080))
    }

    /// Adds a workload at `127.a.b.host` on `node`; returns its address.
    pub fn workload(
        &mut self,
        name: &str,
        namespace: &str,
        service_account: &str,
        host: u8,
        node: &str,
        hbone: bool,
    ) -> IpAddr {
        let ip = self.subnet.ip(host);
        self.workloads.push(WorkloadSpec {
            name: name.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
            ip,
            node: node.into(),
            hbone,
            healthy: true,
            services: Vec::new(),
            mtls: None,
        });
        ip
    }

    /// Adds an authorization policy (call [`Mesh::write_config`] to apply it).
    pub fn policy(&mut self, policy: Authorization) {
        self.policies.push(policy);
    }

    /// Sets the default mTLS mode of `namespace`.
    pub fn namespace_mtls(&mut self, namespace: &str, mode: MtlsMode) {
        self.namespaces.retain(|(ns, _)| ns != namespace);
        self.namespaces.push((namespace.into(), mode));
    }

    /// Sets workload `name`'s own mTLS mode.
    pub fn workload_mtls(&mut self, name: &str, mode: MtlsMode) {
        let w = self.workloads.iter_mut().find(|w| w.name == name).expect("workload exists");
        w.mtls = Some(mode);
    }

    /// Adds a service with a VIP at `127.a.b.host`; returns the VIP.
    pub fn service(&mut self, name: &str, namespace: &str, host: u8, ports: &[(u16, u16)]) -> IpAddr {
        let vip = self.subnet.ip(host);
        self.services.push(ServiceSpec {
            name: name.into(),
            namespace: namespace.into(),
            hostname: format!("{name}.{namespace}.svc.cluster.local"),
            vip,
            ports: ports.to_vec(),
        });
        vip
    }

    /// Makes workload `name` an endpoint of service `svc` with `port -> target`.
    pub fn endpoint(&mut self, workload: &str, svc: &str, port: u16, target: u16) {
        let s = self.services.iter().find(|s| s.name == svc).expect("service exists");
        let key = format!("{}/{}", s.namespace, s.hostname);
        let w = self.workloads.iter_mut().find(|w| w.name == workload).expect("workload exists");
        w.services.push((key, port, target));
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// The config file text, in Istio ztunnel's local config format.
    pub fn render(&self) -> String {
        let workloads = self
            .workloads
            .iter()
            .map(|w| {
                let mut c = ConfigWorkload::pod(&w.name, &w.namespace, &w.service_account, vec![w.ip], &w.node);
                c.protocol = if w.hbone { "HBONE" } else { "TCP" };
                c.status = if w.healthy { "Healthy" } else { "Unhealthy" };
                c.mtls = w.mtls;
                for (key, port, target) in &w.services {
                    c.services.entry(key.clone()).or_default().insert(*port, *target);
                }
                c
            })
            .collect();
        let services = self
            .services
            .iter()
            .map(|s| ConfigService {
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                hostname: s.hostname.clone(),
                vips: vec![s.vip],
                ports: s.ports.iter().copied().collect(),
            })
            .collect();
        let namespaces =
            self.namespaces.iter().map(|(name, mode)| ConfigNamespace { name: name.clone(), mtls: *mode }).collect();
        LocalConfigDoc { workloads, services, namespaces, policies: self.policies.clone() }.render()
    }

    /// Writes the config file atomically (write + rename), as a ConfigMap update would.
    pub fn write_config(&self) {
        write_atomically(&self.config_path(), &self.render());
    }

    /// Config for a ztunnel serving `node` (ephemeral loopback ports, SOCKS5 on as the
    /// traffic entry, fast config polling).
    pub fn node_config(&self, node: &str) -> ProxyConfig {
        let mut config = ProxyConfig::local(self.config_path(), node, self.ca_dir());
        config.socks5_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.ca = CaSource::StateDir(self.ca_dir());
        config.config_poll_interval = Duration::from_millis(100);
        config.drain_deadline = Duration::from_secs(2);
        config
    }

    /// Starts an in-process ztunnel for `node` and waits until it is ready.
    pub async fn start_node(&self, node: &str) -> MeshNode {
        self.start_with(self.node_config(node)).await
    }

    pub async fn start_with(&self, config: ProxyConfig) -> MeshNode {
        let log = LogHandle::detached("info").expect("log handle");
        let running = ztunnel::app::start(config, log).await.expect("ztunnel starts");
        let node = MeshNode { running: Some(running) };
        node.wait_ready().await;
        node
    }
}

/// Writes through a temp file and rename so watchers never see a half-written file.
pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, path).expect("rename config into place");
}

/// An in-process ztunnel.
pub struct MeshNode {
    pub running: Option<Running>,
}

impl MeshNode {
    fn running(&self) -> &Running {
        self.running.as_ref().expect("node is running")
    }

    /// The addresses its servers bound.
    pub fn addrs(&self) -> BoundAddrs {
        self.running().addrs
    }

    pub fn socks5(&self) -> SocketAddr {
        self.running().addrs.socks5.expect("socks5 enabled")
    }

    pub fn pool_stats(&self) -> ztunnel::hbone::PoolStats {
        self.running().pool_stats()
    }

    /// The node's live state (what its proxy decides with).
    pub fn state(&self) -> SharedState {
        self.running().state.clone()
    }

    /// Polls `/metrics` (bounded, 10 s) until the sum of `name` over series with `labels`
    /// equals `want`; returns the last sum seen.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: u64) -> u64 {
        let mut got = 0;
        for _ in 0..100 {
            got = metric_sum(&self.metrics().await, name, labels);
            if got == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        got
    }

    /// One echo round trip through this node's SOCKS5 entry from `client` to `dst`: the
    /// bytes sent come back and the connection ends cleanly.
    pub async fn echo(&self, client: IpAddr, dst: SocketAddr) -> anyhow::Result<()> {
        crate::net::socks5_echo(self.socks5(), client, dst).await
    }

    /// Waits (bounded) for `/healthz/ready` to answer 200.
    pub async fn wait_ready(&self) {
        let addr = self.running().addrs.readiness;
        for _ in 0..100 {
            if let Ok((200, _)) = http_get(addr, "/healthz/ready").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("ztunnel not ready after 5 s");
    }

    /// The Prometheus text from `/metrics`.
    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(self.running().addrs.metrics, "/metrics").await.expect("scrape metrics");
        assert_eq!(status, 200, "metrics answered {status}");
        body
    }

    /// `/config_dump` as JSON.
    pub async fn config_dump(&self) -> serde_json::Value {
        let (status, body) = http_get(self.running().addrs.admin, "/config_dump").await.expect("config_dump");
        assert_eq!(status, 200, "config_dump answered {status}");
        serde_json::from_str(&body).expect("config_dump is JSON")
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Sum of a metric's samples whose label set contains every `label="value"` given.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}
