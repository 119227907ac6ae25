//! The running demo mesh: the namespaced nodes and pods of [`layout`](super::layout) built
//! with the tests' harness ([`CaptureMesh`]), the apps in the pods, one ztunnel per node
//! (release binary, `--capture`, inside the node's namespace, output to a log file), and the
//! `ztunnel` control commands (`enroll`, `unenroll`, `pods`).
//!
//! Dropping a [`Cluster`] kills every process it started and removes the namespaces, cgroups
//! and bpffs pins (the harness's `Topology` guard), on success, failure, panic or Ctrl-C alike.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ztunnel_tests::capture_mesh::{CaptureMesh, Membership};
use ztunnel_tests::netns::{Node, Pod, ProcGuard, TopologyId};

use super::binaries::Binaries;
use super::blocking::blocking;
use super::http;
use super::layout::{App, NODES, PodSpec, ServiceSpec};

/// ztunnel's local servers inside each node's namespace (as the harness configures them).
pub(crate) const ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);
pub(crate) const METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15020);
pub(crate) const READINESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15021);

/// Bound on a ztunnel becoming ready (capture loaded, certificates issued, listeners bound).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on an app printing that it listens.
const APP_START_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on one `ztunnel enroll|unenroll|pods` command.
const CLI_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

/// A demo pod: its spec and the harness's pod (namespace, cgroup, address).
#[derive(Clone, Debug)]
pub(crate) struct DemoPod {
    pub(crate) spec: PodSpec,
    pub(crate) pod: Pod,
    /// The workload uid in the mesh config.
    pub(crate) uid: String,
}

impl DemoPod {
    pub(crate) fn ip(&self) -> IpAddr {
        IpAddr::V4(self.pod.ip())
    }

    pub(crate) fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(), port)
    }
}

/// A process the demo started, by name.
struct Running {
    name: String,
    proc: ProcGuard,
}

/// The mesh, its processes and where their logs go. Fields drop in order: processes first,
/// then the topology.
pub(crate) struct Cluster {
    ztunnels: Vec<Running>,
    apps: Vec<Running>,
    pub(crate) pods: Vec<DemoPod>,
    mesh: CaptureMesh,
    binaries: Binaries,
    log_dir: PathBuf,
}

impl Cluster {
    /// Builds the nodes and pods and writes the mesh config (blocking; run it off the runtime).
    /// Mesh pods are listed as HBONE workloads without `capture` blocks: they are enrolled
    /// later with `ztunnel enroll`, as a node agent would.
    /// `name` names the topology (`demo`, `bench`).
    pub(crate) fn create(
        name: &str,
        binaries: Binaries,
        log_dir: &Path,
        specs: &[PodSpec],
        services: &[ServiceSpec],
    ) -> anyhow::Result<Cluster> {
        let mut mesh = CaptureMesh::new(name, &NODES);
        let mut pods = Vec::new();
        for &spec in specs {
            let membership = if spec.in_mesh() { Membership::Listed } else { Membership::Outside };
            let pod = mesh.pod(spec.node, spec.name, spec.service_account.unwrap_or("none"), membership);
            let uid = mesh.pods.last().map(|p| p.uid()).context("the harness recorded no pod")?;
            pods.push(DemoPod { spec, pod, uid });
        }
        for s in services {
            mesh.service(s.name, s.vip, s.port, s.target_port, s.endpoints);
        }
        mesh.write_config();
        std::fs::copy(mesh.config_path(), log_dir.join("mesh.yaml")).context("cannot copy the mesh config")?;
        Ok(Cluster { ztunnels: Vec::new(), apps: Vec::new(), pods, mesh, binaries, log_dir: log_dir.to_path_buf() })
    }

    pub(crate) fn id(&self) -> TopologyId {
        self.mesh.topo.id()
    }

    pub(crate) fn node(&self, name: &str) -> &Node {
        self.mesh.node(name)
    }

    pub(crate) fn pod(&self, name: &str) -> &DemoPod {
        self.pods.iter().find(|p| p.spec.name == name).unwrap_or_else(|| panic!("no demo pod {name}"))
    }

    pub(crate) fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    fn ztunnel_log(&self, node: &str) -> PathBuf {
        ztunnel_log(&self.log_dir, node)
    }

    /// Starts every pod's app and waits until each listens. Apps are named `<pod> <role>`
    /// (see [`app_name`]).
    pub(crate) async fn start_apps(&mut self, www: &Path) -> anyhow::Result<()> {
        for p in self.pods.clone() {
            let b = &self.binaries;
            let testapp = path_str(&b.testapp)?;
            let any = |port: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).to_string();
            let commands: Vec<(Role, Vec<String>, &str)> = match p.spec.app {
                App::Client => Vec::new(),
                App::Http(port) => {
                    let port = port.to_string();
                    let www = path_str(www)?;
                    let argv = ["python3", "-u", "-m", "http.server", &port, "--bind", "0.0.0.0", "--directory", &www];
                    vec![(Role::Http, strings(&argv), "Serving HTTP")]
                }
                App::Echo(port) => vec![(Role::Echo, strings(&[&testapp, "serve", &any(port)]), "listening")],
                App::EchoAndSink(echo, sink) => vec![
                    (Role::Echo, strings(&[&testapp, "serve", &any(echo)]), "listening"),
                    (Role::Sink, strings(&[&testapp, "sink", &any(sink)]), "listening"),
                ],
            };
            for (role, argv, ready_line) in commands {
                self.start_app(&p, app_name(p.spec.name, role), argv, ready_line).await?;
            }
        }
        Ok(())
    }

    /// Starts `argv` in `pod` as the app `name` and waits until it prints `ready_line`.
    pub(crate) async fn start_app(
        &mut self,
        pod: &DemoPod,
        name: String,
        argv: Vec<String>,
        ready_line: &'static str,
    ) -> anyhow::Result<()> {
        let pod = pod.pod.clone();
        let proc = blocking(move || {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let mut proc = pod.spawn(&argv);
            proc.wait_for_stdout(ready_line, APP_START_TIMEOUT)?;
            Ok(proc)
        })
        .await
        .with_context(|| format!("starting {name}"))?;
        self.apps.push(Running { name, proc });
        Ok(())
    }

    /// The pid of `node`'s running ztunnel.
    pub(crate) fn ztunnel_pid(&self, node: &str) -> anyhow::Result<u32> {
        let z = self.ztunnels.iter().find(|z| z.name == node).with_context(|| format!("no ztunnel on {node}"))?;
        Ok(z.proc.pid())
    }

    /// Stops `node`'s ztunnel with SIGTERM (bounded by `within`) and starts a new one, which
    /// re-adopts the pods enrolled before. Returns the new pid.
    pub(crate) async fn restart_ztunnel(&mut self, node: &str, within: Duration) -> anyhow::Result<u32> {
        let (status, _) = self.terminate(node, within).await?;
        if !status.success() {
            bail!("ztunnel on {node} did not exit cleanly after SIGTERM: {status}");
        }
        self.ztunnels.retain(|z| z.name != node);
        let (pid, _) = self.start_ztunnel(node).await?;
        Ok(pid)
    }

    /// `(name, pid)` of every ztunnel and app started.
    pub(crate) fn processes(&self) -> Vec<(String, u32)> {
        let ztunnels = self.ztunnels.iter().map(|z| (format!("ztunnel on {}", z.name), z.proc.pid()));
        ztunnels.chain(self.apps.iter().map(|a| (a.name.clone(), a.proc.pid()))).collect()
    }

    /// The names of the apps started, e.g. `web http`.
    pub(crate) fn app_names(&self) -> Vec<&str> {
        self.apps.iter().map(|a| a.name.as_str()).collect()
    }

    /// What the app `name` (see [`app_name`]) has printed so far: stdout, then stderr.
    pub(crate) fn app_output(&self, name: &str) -> String {
        self.apps.iter().filter(|a| a.name == name).map(|a| format!("{}{}", a.proc.stdout(), a.proc.stderr())).collect()
    }

    /// Starts `node`'s ztunnel inside the node's namespace and waits until it is ready.
    /// Returns its pid and how long it took.
    pub(crate) async fn start_ztunnel(&mut self, node: &str) -> anyhow::Result<(u32, Duration)> {
        let argv = self.ztunnel_argv(node)?;
        self.mesh.topo.register_bpf_dir(self.mesh.pin_dir(node));
        let n = self.node(node).clone();
        let started = Instant::now();
        let proc = blocking(move || {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            Ok(n.spawn(&argv))
        })
        .await?;
        let pid = proc.pid();
        self.ztunnels.push(Running { name: node.to_string(), proc });
        let n = self.node(node).clone();
        loop {
            self.ensure_running(node)?;
            if let Ok(response) = http::get_in(&n, READINESS, "/healthz/ready").await
                && response.status == 200
            {
                return Ok((pid, started.elapsed()));
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("ztunnel on {node} not ready after {READY_TIMEOUT:?} (GET http://{READINESS}/healthz/ready)");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `sh -c 'exec ztunnel proxy ... >log 2>&1'`: the same arguments as the harness's
    /// `CaptureMesh::start_ztunnel`, with the release binary, output kept in the demo's log.
    fn ztunnel_argv(&self, node: &str) -> anyhow::Result<Vec<String>> {
        let dir = self.mesh.dir.path();
        let ca = dir.join("ca");
        let mut argv = strings(&["sh", "-c", r#"log=$1; shift; exec "$@" >>"$log" 2>&1"#, "sh"]);
        argv.push(path_str(&self.ztunnel_log(node))?);
        argv.push(path_str(&self.binaries.ztunnel)?);
        argv.extend(strings(&["proxy", "--config", &path_str(&self.mesh.config_path())?, "--node", node]));
        argv.extend(strings(&["--capture", "--bpf-pin-dir", &path_str(&self.mesh.pin_dir(node))?]));
        argv.extend(strings(&["--control-socket", &path_str(&self.mesh.control_socket(node))?]));
        argv.extend(strings(&["--state-dir", &path_str(&dir.join(format!("state-{node}")))?]));
        argv.extend(strings(&["--ca-cert", &path_str(&ca.join("root-cert.pem"))?]));
        argv.extend(strings(&["--ca-key", &path_str(&ca.join("root-key.pem"))?]));
        argv.extend(strings(&["--socks5-addr", "off", "--admin-addr", &ADMIN.to_string()]));
        argv.extend(strings(&["--metrics-addr", &METRICS.to_string(), "--readiness-addr", &READINESS.to_string()]));
        argv.extend(strings(&["--config-poll-interval", "200ms", "--drain-deadline", "2s", "--log-level", "info"]));
        Ok(argv)
    }

    /// Fails if `node`'s ztunnel has exited.
    pub(crate) fn ensure_running(&mut self, node: &str) -> anyhow::Result<()> {
        let log = self.ztunnel_log(node);
        let z = self.ztunnel_mut(node)?;
        if !z.proc.is_running() {
            bail!("ztunnel on {node} exited unexpectedly; see {}", log.display());
        }
        Ok(())
    }

    /// Sends SIGTERM to `node`'s ztunnel and waits up to `within` for its exit status.
    pub(crate) async fn terminate(&mut self, node: &str, within: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let z = self.ztunnel_mut(node)?;
        let started = Instant::now();
        z.proc.terminate().with_context(|| format!("cannot send SIGTERM to ztunnel on {node}"))?;
        loop {
            if let Ok(output) = z.proc.wait_timeout(Duration::ZERO) {
                return Ok((output.status, started.elapsed()));
            }
            if started.elapsed() > within {
                z.proc.kill();
                bail!("ztunnel on {node} did not exit within {within:?} of SIGTERM; killed it");
            }
            tokio::time::sleep(POLL / 2).await;
        }
    }

    fn ztunnel_mut(&mut self, node: &str) -> anyhow::Result<&mut Running> {
        self.ztunnels.iter_mut().find(|z| z.name == node).with_context(|| format!("no ztunnel started on {node}"))
    }

    /// `ztunnel enroll` for `pod` against its node's daemon; returns the command line run.
    pub(crate) async fn enroll(&self, pod: &DemoPod) -> anyhow::Result<String> {
        let netns = path_str(&pod.pod.netns_path())?;
        self.cli(pod.spec.node, &["enroll", "--uid", &pod.uid, "--netns", &netns]).await
    }

    /// `ztunnel unenroll` for `pod`; returns the command line run.
    pub(crate) async fn unenroll(&self, pod: &DemoPod) -> anyhow::Result<String> {
        self.cli(pod.spec.node, &["unenroll", "--uid", &pod.uid]).await
    }

    /// `ztunnel pods` on `node`: what it captures now.
    pub(crate) async fn enrolled(&self, node: &str) -> anyhow::Result<String> {
        self.cli(node, &["pods"]).await
    }

    /// Runs `ztunnel <args> --control-socket <node's>`; returns `$ <command>\n<stdout>`.
    async fn cli(&self, node: &str, args: &[&str]) -> anyhow::Result<String> {
        let socket = self.mesh.control_socket(node);
        let shown = format!("ztunnel {} --control-socket {}", args.join(" "), socket.display());
        let run = tokio::process::Command::new(&self.binaries.ztunnel)
            .args(args)
            .arg("--control-socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(CLI_TIMEOUT, run)
            .await
            .with_context(|| format!("`{shown}` did not finish within {CLI_TIMEOUT:?}"))?
            .with_context(|| format!("cannot run `{shown}`"))?;
        if !out.status.success() {
            bail!("`{shown}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(format!("$ {shown}\n{}", String::from_utf8_lossy(&out.stdout).trim_end()))
    }

    /// `node`'s Prometheus text.
    pub(crate) async fn metrics_text(&self, node: &str) -> anyhow::Result<String> {
        http::get_ok_in(self.node(node), METRICS, "/metrics").await
    }

    /// `node`'s `/config_dump`, parsed.
    pub(crate) async fn config_dump(&self, node: &str) -> anyhow::Result<serde_json::Value> {
        let body = http::get_ok_in(self.node(node), ADMIN, "/config_dump").await?;
        serde_json::from_str(&body).with_context(|| format!("config_dump of {node} is not JSON"))
    }
}

/// What an app does in its pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// python3's http.server.
    Http,
    /// `testapp serve`.
    Echo,
    /// `testapp sink`.
    Sink,
}

/// `<pod> <role>`, e.g. `data sink`.
pub(crate) fn app_name(pod: &str, role: Role) -> String {
    let role = match role {
        Role::Http => "http",
        Role::Echo => "echo",
        Role::Sink => "sink",
    };
    format!("{pod} {role}")
}

/// Where the demo keeps `node`'s ztunnel output.
pub(crate) fn ztunnel_log(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("ztunnel-{node}.log"))
}

pub(crate) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn path_str(path: &Path) -> anyhow::Result<String> {
    path.to_str().map(str::to_string).with_context(|| format!("path {} is not UTF-8", path.display()))
}
