//! A captured mesh in network namespaces: nodes with a ztunnel each (eBPF capture on), pods
//! enrolled through the local config's `capture` blocks, and helpers to run apps in pods.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::local_config::{ConfigCapture, ConfigService, ConfigWorkload, LocalConfigDoc};
use crate::netns::{Node, Pod, ProcGuard, Topology};
use crate::process::ztunnel_binary;

/// How a pod takes part in the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// In the config as an HBONE workload with a capture block.
    Captured,
    /// In the config as an HBONE workload, but not enrolled in capture.
    Listed,
    /// Not in the config at all.
    Outside,
}

/// A pod's entry in the mesh.
#[derive(Clone, Debug)]
pub struct MeshPod {
    pub pod: Pod,
    pub namespace: String,
    pub service_account: String,
    pub membership: Membership,
    /// `("ns/hostname", port, target)` services this pod serves.
    pub services: Vec<(String, u16, u16)>,
    /// Pod annotations given in its capture block (capture exclusions).
    pub annotations: Vec<(String, String)>,
}

impl MeshPod {
    pub fn uid(&self) -> String {
        crate::local_config::pod_uid(&self.namespace, self.pod.name())
    }
}

/// A captured mesh over a [`Topology`].
pub struct CaptureMesh {
    pub topo: Topology,
    pub dir: TempDir,
    pub nodes: Vec<Node>,
    pub pods: Vec<MeshPod>,
    pub services: Vec<MeshService>,
    /// YAML appended to the rendered config as is (top-level `policies`, `namespaces`).
    pub extra_config: String,
    /// Passed as `--kubelet-cgroup` to every ztunnel (a cgroup of this topology, never the
    /// machine's root); `None` passes nothing, so no host connection is exempt.
    pub kubelet_cgroup: Option<PathBuf>,
}

/// A service of the mesh: a VIP with port -> target port.
#[derive(Clone, Debug)]
pub struct MeshService {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub target: u16,
}

impl CaptureMesh {
    /// A topology with `nodes` and a CA.
    pub fn new(test: &str, nodes: &[&str]) -> CaptureMesh {
        let topo = Topology::new(test);
        let nodes: Vec<Node> = nodes.iter().map(|n| topo.add_node(n)).collect();
        let dir = tempfile::tempdir().expect("temp dir");
        ztunnel::tls::install_crypto_provider();
        ztunnel::identity::LocalCa::load_or_generate(&dir.path().join("ca"), "cluster.local").expect("test CA");
        CaptureMesh {
            topo,
            dir,
            nodes,
            pods: Vec::new(),
            services: Vec::new(),
            extra_config: String::new(),
            kubelet_cgroup: None,
        }
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name() == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Adds a pod on `node`.
    pub fn pod(&mut self, node: &str, name: &str, service_account: &str, membership: Membership) -> Pod {
        let pod = self.node(node).add_pod(name);
        self.pods.push(MeshPod {
            pod: pod.clone(),
            namespace: "default".into(),
            service_account: service_account.into(),
            membership,
            services: Vec::new(),
            annotations: Vec::new(),
        });
        pod
    }

    /// Gives the pod named `pod` the annotation `key: value` in its capture block.
    pub fn annotate(&mut self, pod: &str, key: &str, value: &str) {
        let p = self.pods.iter_mut().find(|p| p.pod.name() == pod).unwrap_or_else(|| panic!("no pod {pod}"));
        p.annotations.push((key.into(), value.into()));
    }

    /// Adds a service with `vip` served by the named pods.
    pub fn service(&mut self, name: &str, vip: IpAddr, port: u16, target: u16, endpoints: &[&str]) {
        let key = format!("default/{name}.default.svc.cluster.local");
        for p in self.pods.iter_mut().filter(|p| endpoints.contains(&p.pod.name())) {
            p.services.push((key.clone(), port, target));
        }
        self.services.push(MeshService { name: name.into(), vip, port, target });
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mesh.yaml")
    }

    /// The local config in Istio's format plus `capture` blocks, then [`Self::extra_config`].
    pub fn render(&self) -> String {
        let workloads = self
            .pods
            .iter()
            .filter(|p| p.membership != Membership::Outside)
            .map(|p| {
                let ips = vec![p.pod.ip().into(), p.pod.ip6().into()];
                let mut c = ConfigWorkload::pod(p.pod.name(), &p.namespace, &p.service_account, ips, p.pod.node_name());
                if p.membership == Membership::Captured {
                    c.capture = Some(ConfigCapture {
                        netns: p.pod.netns_path(),
                        annotations: p.annotations.iter().cloned().collect(),
                    });
                }
                for (key, port, target) in &p.services {
                    c.services.entry(key.clone()).or_default().insert(*port, *target);
                }
                c
            })
            .collect();
        let services = self
            .services
            .iter()
            .map(|s| ConfigService::new(&s.name, "default", s.vip, &[(s.port, s.target)]))
            .collect();
        let mut y = LocalConfigDoc { workloads, services, ..LocalConfigDoc::default() }.render();
        y.push_str(&self.extra_config);
        y
    }

    pub fn write_config(&self) {
        crate::mesh::write_atomically(&self.config_path(), &self.render());
    }

    /// bpffs directory of `node`'s ztunnel (each node has its own, as real nodes do).
    pub fn pin_dir(&self, node: &str) -> PathBuf {
        self.topo.bpf_dir().join(node)
    }

    pub fn control_socket(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.sock"))
    }

    /// Starts `node`'s ztunnel in the node's namespace and waits until it is ready.
    pub fn start_ztunnel(&self, node: &str) -> ProcGuard {
        self.start_ztunnel_with(node, &ztunnel_binary())
    }

    /// Like [`CaptureMesh::start_ztunnel`], running the given `ztunnel` binary.
    pub fn start_ztunnel_with(&self, node: &str, binary: &std::path::Path) -> ProcGuard {
        self.start_ztunnel_with_args(node, binary, &[])
    }

    /// Like [`CaptureMesh::start_ztunnel_with`], adding `extra` to the command line.
    pub fn start_ztunnel_with_args(&self, node: &str, binary: &std::path::Path, extra: &[&str]) -> ProcGuard {
        let mut args = self.local_config_args();
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut proc = self.spawn_ztunnel(node, binary, &args);
        self.wait_ready(node, &mut proc);
        proc
    }

    /// The arguments that make a ztunnel read this mesh's config file and use its CA.
    pub fn local_config_args(&self) -> Vec<String> {
        let ca = self.dir.path().join("ca");
        vec![
            "--config".into(),
            self.config_path().display().to_string(),
            "--ca-cert".into(),
            ca.join("root-cert.pem").display().to_string(),
            "--ca-key".into(),
            ca.join("root-key.pem").display().to_string(),
        ]
    }

    /// Starts `node`'s ztunnel (`binary`) with capture on and its config from `source_args`
    /// (e.g. [`CaptureMesh::local_config_args`]), without waiting for readiness.
    pub fn spawn_ztunnel(&self, node: &str, binary: &std::path::Path, source_args: &[String]) -> ProcGuard {
        let n = self.node(node);
        let state_dir = self.dir.path().join(format!("state-{node}"));
        let mut args: Vec<String> = vec![binary.display().to_string(), "proxy".into()];
        args.extend(source_args.iter().cloned());
        args.extend([
            "--node".into(),
            node.into(),
            "--capture".into(),
            "--bpf-pin-dir".into(),
            self.pin_dir(node).display().to_string(),
            "--control-socket".into(),
            self.control_socket(node).display().to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--socks5-addr".into(),
            "off".into(),
            "--admin-addr".into(),
            "127.0.0.1:15000".into(),
            "--metrics-addr".into(),
            "127.0.0.1:15020".into(),
            "--readiness-addr".into(),
            "127.0.0.1:15021".into(),
            "--config-poll-interval".into(),
            "200ms".into(),
            "--drain-deadline".into(),
            "2s".into(),
            "--log-level".into(),
            std::env::var("ZTUNNEL_TEST_LOG").unwrap_or_else(|_| "info".into()),
        ]);
        if let Some(cgroup) = &self.kubelet_cgroup {
            args.extend(["--kubelet-cgroup".into(), cgroup.display().to_string()]);
        }
        self.topo.register_bpf_dir(self.pin_dir(node));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        n.spawn(&argv)
    }

    /// The status `node`'s `/healthz/ready` answers, or `None` when nothing answers.
    pub fn readiness(&self, node: &str) -> Option<u16> {
        let ready = SocketAddr::from(([127, 0, 0, 1], 15021));
        self.node(node).http_get(ready, "/healthz/ready").ok().map(|(status, _)| status)
    }

    /// Waits (bounded, 10 s) until `node`'s ztunnel answers ready; panics with its output.
    pub fn wait_ready(&self, node: &str, proc: &mut ProcGuard) {
        for _ in 0..200 {
            if self.readiness(node) == Some(200) {
                return;
            }
            if !proc.is_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ztunnel on {node} did not become ready:\nstdout:\n{}\nstderr:\n{}", proc.stdout(), proc.stderr());
    }

    /// `node`'s Prometheus text.
    pub fn metrics(&self, node: &str) -> String {
        let (status, body) =
            self.node(node).http_get(SocketAddr::from(([127, 0, 0, 1], 15020)), "/metrics").expect("scrape metrics");
        assert_eq!(status, 200, "metrics of {node} answered {status}");
        body
    }

    /// Waits (bounded, 5 s) until the sum of `name{labels}` on `node` is `want`.
    pub fn wait_metric(&self, node: &str, name: &str, labels: &[(&str, &str)], want: u64) {
        let what = format!("{node}'s {name}{labels:?} is {want}");
        crate::wait::eventually_blocking(&what, Duration::from_secs(5), || {
            crate::mesh::metric_sum(&self.metrics(node), name, labels) == want
        });
    }

    /// Runs `ztunnel <args>` (a control command) against `node`'s daemon.
    pub fn ztunnel_cli(&self, node: &str, args: &[&str]) -> std::process::Output {
        let mut cmd = std::process::Command::new(ztunnel_binary());
        cmd.args(args).arg("--control-socket").arg(self.control_socket(node));
        cmd.output().expect("run ztunnel cli")
    }
}

/// Output of `testapp connect`, parsed.
#[derive(Clone, Debug, Default)]
pub struct ConnectReport {
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub echoed_intact: bool,
    pub error: Option<String>,
    pub raw: String,
}

/// Runs `testapp connect dst --bytes n` in `pod` and parses its report.
pub fn connect_from(pod: &Pod, dst: SocketAddr, bytes: usize, timeout_secs: u32) -> ConnectReport {
    connect_with(dst, bytes, timeout_secs, |cmd, limit| pod.run_timeout(cmd, limit))
}

/// Like [`connect_from`], from a process in `pod`'s network namespace that stays in the test's
/// own cgroup (not the pod's).
pub fn connect_from_outside_cgroup(pod: &Pod, dst: SocketAddr, bytes: usize, timeout_secs: u32) -> ConnectReport {
    connect_with(dst, bytes, timeout_secs, |cmd, limit| pod.run_outside_cgroup_timeout(cmd, limit))
}

fn connect_with(
    dst: SocketAddr,
    bytes: usize,
    timeout_secs: u32,
    run: impl FnOnce(&[&str], Duration) -> std::process::Output,
) -> ConnectReport {
    let app = env_testapp();
    let out = run(
        &[
            app.to_str().expect("utf-8 path"),
            "connect",
            &dst.to_string(),
            "--bytes",
            &bytes.to_string(),
            "--timeout",
            &timeout_secs.to_string(),
        ],
        Duration::from_secs(u64::from(timeout_secs) + 10),
    );
    let raw = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let connected = crate::traffic::first(&raw, "connected");
    let echo = crate::traffic::first(&raw, "echo");
    ConnectReport {
        local: connected.as_ref().and_then(|c| crate::traffic::addr(c, "local")),
        peer: connected.as_ref().and_then(|c| crate::traffic::addr(c, "peer")),
        echoed_intact: echo.is_some_and(|e| e["sha256"].is_string() && e["sha256"] == e["sent_sha256"]),
        error: crate::traffic::error(&raw),
        raw,
    }
}

/// The testapp binary (built with this crate).
pub fn env_testapp() -> PathBuf {
    crate::netns::testapp_binary()
}

/// Starts `testapp serve` on `addr` in `pod` and waits until it listens.
pub fn serve_in(pod: &Pod, addr: SocketAddr) -> ProcGuard {
    let app = env_testapp();
    let mut proc = pod.spawn(&[app.to_str().expect("utf-8 path"), "serve", &addr.to_string()]);
    proc.wait_for_stdout("listening", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("server in {} did not start: {e}", pod.name()));
    proc
}

/// Peers the server reported (its `accepted` lines), in order.
pub fn accepted_peers(server: &ProcGuard) -> Vec<SocketAddr> {
    crate::traffic::events(&server.stdout(), "accepted")
        .iter()
        .filter_map(|v| crate::traffic::addr(v, "peer"))
        // A dual-stack server reports IPv4 peers as v4-mapped addresses.
        .map(|p| SocketAddr::new(p.ip().to_canonical(), p.port()))
        .collect()
}
