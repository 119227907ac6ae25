//! A node: a network namespace with a bridge for its pods and a link into the fabric.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ztunnel::capture::netns::NetnsWorker;

use super::command::{ip_batch, sysctl_in};
use super::naming::{check_name, ifname};
use super::netns_path;
use super::pod::Pod;
use super::process::{Placement, ProcGuard, RUN_TIMEOUT};
use super::topology::Shared;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One node of a [`Topology`](super::Topology). Cheap to clone; valid until the topology drops.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
    name: String,
    index: u8,
    netns: String,
}

impl Node {
    pub(crate) fn new(shared: Arc<Shared>, name: &str, index: u8) -> Node {
        let netns = shared.id.node_netns(name);
        Node { shared, name: name.to_string(), index, netns }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// 1-based position in the topology; the third octet of its pod subnet.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// `zt<id>-<node>`.
    pub fn netns_name(&self) -> &str {
        &self.netns
    }

    /// `/var/run/netns/zt<id>-<node>`.
    pub fn netns_path(&self) -> PathBuf {
        netns_path(&self.netns)
    }

    /// The node's address on the fabric (what other nodes route its pods through).
    pub fn ip(&self) -> Ipv4Addr {
        self.shared.plan.fabric_v4(self.index)
    }

    pub fn ip6(&self) -> Ipv6Addr {
        self.shared.plan.fabric_v6(self.index)
    }

    /// The bridge address, its pods' default gateway: 10.x.n.1.
    pub fn gateway(&self) -> Ipv4Addr {
        self.shared.plan.gateway_v4(self.index)
    }

    pub fn gateway6(&self) -> Ipv6Addr {
        self.shared.plan.gateway_v6(self.index)
    }

    /// `10.x.n.0/24`.
    pub fn pod_subnet(&self) -> String {
        self.shared.plan.pod_subnet_v4(self.index)
    }

    /// `fd00:x:n::/64`.
    pub fn pod_subnet6(&self) -> String {
        self.shared.plan.pod_subnet_v6(self.index)
    }

    /// Adds pod `name`: namespace `zt<id>-<node>-<pod>` whose `eth0` is bridged on this node,
    /// addresses 10.x.n.k/24 and fd00:x:n::k/64 with default routes via the node, and the cgroup
    /// `<cgroup2>/ztunnel-test/<id>/<node>-<pod>`.
    pub fn add_pod(&self, name: &str) -> Pod {
        let shared = &self.shared;
        let _setup = shared.setup_lock();
        self.build_pod(name).unwrap_or_else(|e| {
            panic!("topology {} ({}): adding pod {name} to {}: {e:#}", shared.id, shared.test, self.name)
        })
    }

    fn build_pod(&self, name: &str) -> anyhow::Result<Pod> {
        check_name("pod", name).map_err(anyhow::Error::msg)?;
        let (shared, plan) = (&self.shared, self.shared.plan);
        let k = shared.claim_pod(&self.name, name)?;
        let pod_ns = shared.id.pod_netns(&self.name, name);
        shared.add_netns(&pod_ns)?;
        // Before eth0 arrives, so it takes these defaults: no duplicate address detection (an
        // address is usable at once), like the node side.
        sysctl_in(&netns_path(&pod_ns), &["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"])?;
        let cgroup = shared.cgroup_dir.join(format!("{}-{name}", self.name));
        super::cgroup::create_dir_all(&cgroup)?;
        let host_if = ifname('p', k, name);
        ip_batch(
            &self.netns,
            &[
                format!("link add {host_if} type veth peer name eth0 netns {pod_ns}"),
                format!("link set {host_if} master br0"),
                format!("link set {host_if} up"),
            ],
        )?;
        let (ip, ip6) = (plan.pod_v4(self.index, k), plan.pod_v6(self.index, k));
        ip_batch(
            &pod_ns,
            &[
                "link set lo up".into(),
                format!("addr add {ip}/24 dev eth0"),
                format!("addr add {ip6}/64 dev eth0 nodad"),
                "link set eth0 up".into(),
                format!("route add default via {}", plan.gateway_v4(self.index)),
                format!("route add ::/0 via {}", plan.gateway_v6(self.index)),
            ],
        )?;
        Ok(Pod::new(shared.clone(), &self.name, name, pod_ns, ip, ip6, cgroup))
    }

    fn placement(&self) -> Placement<'_> {
        Placement { label: format!("node {}", self.netns), netns: self.netns_path(), cgroup: None }
    }

    /// Runs `cmd` in the node's namespace inside the cgroup `cgroup` (one made with
    /// [`super::Topology::add_cgroup`], e.g. standing in for the kubelet's), to completion.
    pub fn run_in_cgroup(&self, cgroup: &std::path::Path, cmd: &[&str]) -> Output {
        let placement =
            Placement { label: format!("node {}", self.netns), netns: self.netns_path(), cgroup: Some(cgroup) };
        placement.run(&self.shared, cmd, RUN_TIMEOUT)
    }

    /// `GET http://<addr><path>` with curl from the node's namespace inside `cgroup`.
    pub fn http_get_in_cgroup(
        &self,
        cgroup: &std::path::Path,
        addr: SocketAddr,
        path: &str,
    ) -> anyhow::Result<(u16, String)> {
        let placement =
            Placement { label: format!("node {}", self.netns), netns: self.netns_path(), cgroup: Some(cgroup) };
        placement.http_get(&self.shared, addr, path)
    }

    /// Starts `cmd` in the node's namespace (in the test's own cgroup, not a pod's).
    pub fn spawn(&self, cmd: &[&str]) -> ProcGuard {
        self.placement().spawn(&self.shared, cmd)
    }

    /// Runs `cmd` in the node's namespace to completion (panics after 30 s).
    pub fn run(&self, cmd: &[&str]) -> Output {
        self.run_timeout(cmd, RUN_TIMEOUT)
    }

    /// Runs `cmd` in the node's namespace to completion (panics after `limit`).
    pub fn run_timeout(&self, cmd: &[&str], limit: Duration) -> Output {
        self.placement().run(&self.shared, cmd, limit)
    }

    /// Opens a TCP connection to `addr` from inside the node's namespace: a thread that entered
    /// the namespace creates the socket, which keeps that namespace when used from anywhere.
    /// Needs a tokio runtime.
    pub async fn connect(&self, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
        let path = self.netns_path();
        let worker = NetnsWorker::start(&path)?;
        let stream = worker
            .run(move || std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))
            .await?
            .with_context(|| format!("connecting to {addr} from {}", path.display()))?;
        stream.set_nonblocking(true)?;
        Ok(tokio::net::TcpStream::from_std(stream)?)
    }

    /// Binds a TCP listener at `addr` inside the node's namespace (a thread that entered the
    /// namespace creates it; it keeps the namespace when used from anywhere), e.g. for a
    /// server that programs run on the node must reach on its loopback.
    pub fn listen(&self, addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
        let path = self.netns_path();
        let worker = NetnsWorker::start(&path)?;
        worker
            .run_blocking(move || std::net::TcpListener::bind(addr))?
            .with_context(|| format!("binding {addr} in {}", path.display()))
    }

    /// Adds an empty network namespace `zt<id>-<node>-<name>`, as a container runtime creates
    /// a pod sandbox before it calls the CNI plugins: no interface but a down `lo`, no address,
    /// no cgroup. Removed with the topology; returns its path.
    pub fn add_sandbox(&self, name: &str) -> PathBuf {
        let shared = &self.shared;
        let _setup = shared.setup_lock();
        let created = check_name("pod", name)
            .map_err(anyhow::Error::msg)
            .and_then(|()| shared.claim_pod(&self.name, name))
            .and_then(|_| shared.add_netns(&shared.id.pod_netns(&self.name, name)));
        if let Err(e) = created {
            panic!("topology {} ({}): adding sandbox {name} to {}: {e:#}", shared.id, shared.test, self.name);
        }
        netns_path(&shared.id.pod_netns(&self.name, name))
    }

    /// `GET http://<addr><path>` from inside the node's namespace with curl; (status, body).
    /// Fails when curl cannot connect, so callers can poll until a server is up.
    pub fn http_get(&self, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
        self.placement().http_get(&self.shared, addr, path)
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("netns", &self.netns).field("ip", &self.ip()).finish()
    }
}
