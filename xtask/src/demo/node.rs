//! One demo "node": building the `ztunnel` binary, starting it for a node of the topology,
//! and waiting (bounded) until its readiness endpoint answers 200.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::http;
use super::topology::Node;
use crate::processes::Processes;
use crate::workspace;

/// Bound on a node becoming ready (certificates issued, listeners bound).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const READY_POLL: Duration = Duration::from_millis(50);

/// Runs `cargo build --release -p ztunnel` (progress on the terminal) and returns the path of
/// the binary cargo reports.
pub(crate) fn build_release() -> anyhow::Result<PathBuf> {
    let output = workspace::cargo()
        .args(["build", "--release", "-p", "ztunnel", "--message-format=json-render-diagnostics"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo build")?;
    if !output.status.success() {
        bail!("cargo build --release -p ztunnel failed ({})", output.status);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "ztunnel")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .context("cargo build did not report a ztunnel executable")
}

/// Paths shared by both nodes.
pub(crate) struct NodeFiles<'a> {
    pub(crate) binary: &'a Path,
    pub(crate) config: &'a Path,
    /// Shared state directory: the first node generates the CA root there, the second reuses it.
    pub(crate) state_dir: &'a Path,
    pub(crate) log_dir: &'a Path,
}

/// Starts ztunnel for `node` and waits until it is ready. Returns (pid, time to ready).
pub(crate) async fn start(
    procs: &mut Processes,
    node: &Node,
    files: &NodeFiles<'_>,
) -> anyhow::Result<(u32, Duration)> {
    let mut cmd = Command::new(files.binary);
    cmd.arg("proxy")
        .arg("--config")
        .arg(files.config)
        .args(["--node", node.name])
        .arg("--state-dir")
        .arg(files.state_dir)
        .args(["--socks5-addr", &node.socks5.to_string()])
        .args(["--admin-addr", &node.admin.to_string()])
        .args(["--metrics-addr", &node.metrics.to_string()])
        .args(["--readiness-addr", &node.readiness.to_string()])
        .args(["--drain-deadline", "2s"])
        .args(["--log-level", "info"])
        .env_remove("RUST_LOG");
    let log = files.log_dir.join(format!("{}.log", node.name));
    let started = Instant::now();
    let pid = procs.spawn(node.name, cmd, &log)?;
    loop {
        procs.ensure_running(node.name)?;
        if let Ok(response) = http::get_local(node.readiness, "/healthz/ready").await
            && response.status == 200
        {
            return Ok((pid, started.elapsed()));
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("{} not ready after {READY_TIMEOUT:?} (GET http://{}/healthz/ready)", node.name, node.readiness);
        }
        tokio::time::sleep(READY_POLL).await;
    }
}
