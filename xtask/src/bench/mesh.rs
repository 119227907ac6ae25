//! The benchmark's namespaced mesh, built with the demo's [`Cluster`]: `client` on node-a and
//! `server` on node-b (iperf3 server on 5201, echo on 9000), plus `cold` client pods on
//! node-a and as many cold server pods (echo on 9000) on node-b for the cold-tunnel scenario.
//! Every pod is listed in the mesh config with its own service account, so each has its own
//! identity; a pod is captured only while enrolled, so the same pods serve the direct
//! baseline (unenrolled) and the mesh (enrolled).
//!
//! Each pod's network namespace gets `tcp_tw_reuse=1` and a wide ephemeral port range
//! (20000-65535), so tens of thousands of short connections per run do not run out of source
//! ports on either path. The range stays above ztunnel's ports (15001, 15006, 15008): a client
//! socket left in TIME_WAIT on one of them would keep ztunnel from binding its listener when
//! the pod is enrolled again.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use ztunnel_tests::netns::ProcGuard;

use crate::lab::binaries::Binaries;
use crate::lab::blocking::blocking;
use crate::lab::cluster::{Cluster, DemoPod, path_str, strings};
use crate::lab::layout::{App, NODE_A, NODE_B, NODES, PodSpec};

pub(crate) const IPERF_PORT: u16 = 5201;
pub(crate) const ECHO_PORT: u16 = 9000;
/// How long a ztunnel may take to exit after SIGTERM when restarted.
const EXIT_BOUND: Duration = Duration::from_secs(10);

const SYSCTLS: [&str; 3] =
    ["net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=20000 65535", "net.core.somaxconn=4096"];

/// Whether the benchmark pods are captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    Direct,
    Mesh,
}

impl Path {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Mesh => "mesh",
        }
    }
}

pub(crate) struct BenchMesh {
    pub(crate) cluster: Cluster,
    pub(crate) client: DemoPod,
    pub(crate) server: DemoPod,
    pub(crate) cold_clients: Vec<DemoPod>,
    pub(crate) cold_servers: Vec<DemoPod>,
    /// Pods enrolled now.
    enrolled: Vec<String>,
}

/// A pod name that lives as long as the program (pod specs hold `&'static str`; the bench
/// makes a few dozen of them once per run).
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

fn spec(name: &'static str, node: &'static str, app: App) -> PodSpec {
    PodSpec { name, node, service_account: Some(name), app }
}

impl BenchMesh {
    /// Builds the topology (blocking) with `cold` pods per side, and starts the servers.
    pub(crate) async fn create(binaries: Binaries, dir: &std::path::Path, cold: usize) -> anyhow::Result<BenchMesh> {
        let mut specs = vec![spec("client", NODE_A, App::Client), spec("server", NODE_B, App::Echo(ECHO_PORT))];
        for i in 0..cold {
            specs.push(spec(leak(format!("cold-c{i:02}")), NODE_A, App::Client));
            specs.push(spec(leak(format!("cold-s{i:02}")), NODE_B, App::Echo(ECHO_PORT)));
        }
        let dir = dir.to_path_buf();
        let cluster = blocking(move || Cluster::create("bench", binaries, &dir, &specs, &[])).await?;
        let pod = |name: &str| cluster.pod(name).clone();
        let (client, server) = (pod("client"), pod("server"));
        let cold_clients = (0..cold).map(|i| pod(&format!("cold-c{i:02}"))).collect();
        let cold_servers = (0..cold).map(|i| pod(&format!("cold-s{i:02}"))).collect();
        let mut mesh = BenchMesh { cluster, client, server, cold_clients, cold_servers, enrolled: Vec::new() };
        for p in mesh.all_pods() {
            tune(&p)?;
        }
        mesh.start_servers().await?;
        Ok(mesh)
    }

    fn all_pods(&self) -> Vec<DemoPod> {
        let mut pods = vec![self.client.clone(), self.server.clone()];
        pods.extend(self.cold_clients.iter().cloned());
        pods.extend(self.cold_servers.iter().cloned());
        pods
    }

    async fn start_servers(&mut self) -> anyhow::Result<()> {
        let testapp = path_str(&self.cluster.binaries().testapp)?;
        let echo = || strings(&[&testapp, "serve", "--quiet", &format!("0.0.0.0:{ECHO_PORT}")]);
        let server = self.server.clone();
        let iperf = strings(&["iperf3", "--server", "--port", &IPERF_PORT.to_string(), "--forceflush"]);
        self.cluster.start_app(&server, "server iperf3".into(), iperf, "Server listening").await?;
        self.cluster.start_app(&server, "server echo".into(), echo(), "listening").await?;
        for p in self.cold_servers.clone() {
            let name = format!("{} echo", p.spec.name);
            self.cluster.start_app(&p, name, echo(), "listening").await?;
        }
        Ok(())
    }

    /// Starts both ztunnels and waits until they are ready.
    pub(crate) async fn start_ztunnels(&mut self) -> anyhow::Result<()> {
        for node in NODES {
            self.cluster.start_ztunnel(node).await.with_context(|| format!("starting ztunnel on {node}"))?;
        }
        Ok(())
    }

    /// Restarts both ztunnels (SIGTERM, then a fresh process that re-adopts the enrolled pods):
    /// empty connection pools, and memory as after a start.
    pub(crate) async fn restart_ztunnels(&mut self) -> anyhow::Result<()> {
        for node in NODES {
            self.cluster
                .restart_ztunnel(node, EXIT_BOUND)
                .await
                .with_context(|| format!("restarting ztunnel on {node}"))?;
        }
        Ok(())
    }

    /// Pids of ztunnel A (client side) and B (server side).
    pub(crate) fn ztunnel_pids(&self) -> anyhow::Result<[u32; 2]> {
        Ok([self.cluster.ztunnel_pid(NODE_A)?, self.cluster.ztunnel_pid(NODE_B)?])
    }

    /// Enrolls (mesh) or unenrolls (direct) `pods`, skipping those already so.
    pub(crate) async fn set_path(&mut self, pods: &[DemoPod], path: Path) -> anyhow::Result<()> {
        for p in pods {
            let is = self.enrolled.contains(&p.uid);
            match path {
                Path::Mesh if !is => {
                    self.cluster.enroll(p).await?;
                    self.enrolled.push(p.uid.clone());
                }
                Path::Direct if is => {
                    self.cluster.unenroll(p).await?;
                    self.enrolled.retain(|u| u != &p.uid);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The pair of the main scenarios.
    pub(crate) fn pair(&self) -> [DemoPod; 2] {
        [self.client.clone(), self.server.clone()]
    }

    pub(crate) fn echo_addr(&self) -> SocketAddr {
        self.server.addr(ECHO_PORT)
    }

    /// Runs `testapp <args>` in `pod` to its end (bounded) and returns its last line.
    pub(crate) async fn load(&self, pod: &DemoPod, args: &[String], limit: Duration) -> anyhow::Result<Value> {
        let mut argv = vec![path_str(&self.cluster.binaries().testapp)?];
        argv.extend(args.iter().cloned());
        let proc = self.spawn(pod, argv).await?;
        finish(proc, limit).await
    }

    /// Starts `argv` in `pod` and returns it running.
    pub(crate) async fn spawn(&self, pod: &DemoPod, argv: Vec<String>) -> anyhow::Result<ProcGuard> {
        let pod = pod.pod.clone();
        blocking(move || {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            Ok(pod.spawn(&argv))
        })
        .await
    }

    /// Fails if a ztunnel died.
    pub(crate) fn ensure_running(&mut self) -> anyhow::Result<()> {
        for node in NODES {
            self.cluster.ensure_running(node)?;
        }
        Ok(())
    }
}

/// Waits (bounded) for a load process and returns the last JSON object it printed.
pub(crate) async fn finish(proc: ProcGuard, limit: Duration) -> anyhow::Result<Value> {
    // A failed load tool exits 1 after printing `error: ...`, which `finish_raw` reports.
    let stdout = finish_raw(proc, limit).await?;
    last_json(&stdout).with_context(|| format!("the load tool printed no result: {stdout}"))
}

/// Waits (bounded) for a process; its stdout if it exited 0, else an error with its output.
pub(crate) async fn finish_raw(mut proc: ProcGuard, limit: Duration) -> anyhow::Result<String> {
    let output = blocking(move || proc.wait_timeout(limit)).await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("exited with {}: {}{}", output.status, stdout.trim(), stderr.trim());
    }
    Ok(stdout)
}

/// The last line of `text` that parses as a JSON object.
pub(crate) fn last_json(text: &str) -> Option<Value> {
    text.lines().rev().filter(|l| l.starts_with('{')).find_map(|l| serde_json::from_str(l).ok())
}

/// Applies [`SYSCTLS`] in the pod's network namespace.
fn tune(pod: &DemoPod) -> anyhow::Result<()> {
    let netns = pod.pod.netns_name();
    for setting in SYSCTLS {
        let out = Command::new("ip")
            .args(["netns", "exec", netns, "sysctl", "-q", "-w", setting])
            .output()
            .context("cannot run ip netns exec sysctl")?;
        if !out.status.success() {
            bail!("sysctl {setting} in {netns} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_json_object_line_is_the_result() {
        let text = "listening\n{\"event\":\"held\",\"open\":3}\nnoise\n{\"event\":\"released\"}\n";
        assert_eq!(last_json(text).unwrap()["event"], "released");
        assert!(last_json("no json here").is_none());
    }
}
