//! The `ztunnel` binary as a child process (for signal handling tests), killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Path of the `ztunnel` binary next to this test's target directory; built if missing.
pub fn ztunnel_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> -> target/<profile>/ztunnel
            let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target profile directory");
            let bin = profile_dir.join("ztunnel");
            // `cargo xtask test` builds the binary first; rebuild only when it is missing or
            // older than the daemon's sources (a test build and a plain build differ in
            // dev-dependency features, so building from here would undo the test build).
            let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ztunnel");
            if let (Some(built), Some(edited)) = (modified(&bin), newest_file(&sources))
                && built >= edited
            {
                return bin;
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let mut build = Command::new(cargo);
            build.args(["build", "--quiet", "-p", "ztunnel", "--bin", "ztunnel"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build for the ztunnel binary");
            assert!(status.success(), "building the ztunnel binary failed");
            assert!(bin.exists(), "ztunnel binary not found at {}", bin.display());
            bin
        })
        .clone()
}

fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of any file under `dir`.
fn newest_file(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = modified(dir)?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(t) = modified(&path) {
                newest = newest.max(t);
            }
        }
    }
    Some(newest)
}

/// A running child process, killed (and reaped) when dropped.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn spawn(mut cmd: Command) -> ChildGuard {
        cmd.stdin(Stdio::null());
        ChildGuard(Some(cmd.spawn().expect("spawn child process")))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (bounded) for the exit status.
    pub fn wait_timeout(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        let child = self.0.as_mut()?;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("poll child") {
                self.0 = None;
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the real binary serving `node` of `mesh`, with its admin (15000), metrics (15020)
/// and readiness (15021) listeners on `ip` and `extra` arguments, and waits (bounded, 10 s)
/// until it answers readiness.
pub async fn spawn_ready_node(mesh: &crate::Mesh, node: &str, ip: std::net::IpAddr, extra: &[&str]) -> ChildGuard {
    spawn_node(mesh, node, ip, extra, None).await
}

/// Like [`spawn_ready_node`], with the binary's output (its log) written to `log`.
pub async fn spawn_ready_node_logged(
    mesh: &crate::Mesh,
    node: &str,
    ip: std::net::IpAddr,
    extra: &[&str],
    log: &std::path::Path,
) -> ChildGuard {
    spawn_node(mesh, node, ip, extra, Some(log)).await
}

async fn spawn_node(
    mesh: &crate::Mesh,
    node: &str,
    ip: std::net::IpAddr,
    extra: &[&str],
    log: Option<&std::path::Path>,
) -> ChildGuard {
    let addr = |port: u16| std::net::SocketAddr::new(ip, port).to_string();
    let mut cmd = Command::new(ztunnel_binary());
    cmd.args(["proxy", "--config"]).arg(mesh.config_path());
    cmd.args(["--node", node, "--state-dir"]).arg(mesh.ca_dir());
    cmd.args(["--admin-addr", &addr(15000), "--metrics-addr", &addr(15020), "--readiness-addr", &addr(15021)]);
    cmd.args(["--log-level", "warn"]).args(extra);
    if let Some(log) = log {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("create log file {}: {e}", log.display()));
        cmd.stdout(file);
    }
    let child = ChildGuard::spawn(cmd);
    let readiness = std::net::SocketAddr::new(ip, 15021);
    for _ in 0..200 {
        if let Ok((200, _)) = crate::http_get(readiness, "/healthz/ready").await {
            return child;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("ztunnel binary for {node} did not become ready within 10 s");
}
