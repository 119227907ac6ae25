//! The `ztunnel` and `ztunnel-cni` binaries as child processes (for signal handling and CNI tests), killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Path of the `ztunnel` binary next to this test's target directory; built if missing.
pub fn ztunnel_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| workspace_binary("ztunnel", "ztunnel", &["../ztunnel"])).clone()
}

/// Path of the `ztunnel-cni` plugin binary (crate `cni/`, which links the daemon's library);
/// built if missing.
pub fn cni_plugin_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| workspace_binary("ztunnel-cni", "ztunnel-cni", &["../cni", "../ztunnel"])).clone()
}

/// `bin` of workspace package `package` in this test's target directory, rebuilt when missing
/// or older than any file under `sources` (relative to this crate).
fn workspace_binary(package: &str, bin: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<bin>
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target profile directory");
    let path = profile_dir.join(bin);
    // `cargo xtask test` builds the binaries first; rebuild only when one is missing or older
    // than its sources (a test build and a plain build differ in dev-dependency features, so
    // building from here would undo the test build).
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let edited = sources.iter().filter_map(|dir| newest_file(&crate_dir.join(dir))).max();
    if let (Some(built), Some(edited)) = (modified(&path), edited)
        && built >= edited
    {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", package, "--bin", bin]);
    if release {
        build.arg("--release");
    }
    let status = build.status().unwrap_or_else(|e| panic!("run cargo build for the {bin} binary: {e}"));
    assert!(status.success(), "building the {bin} binary failed");
    assert!(path.exists(), "{bin} binary not found at {}", path.display());
    path
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
    spawn_ready(node_command(mesh, node, ip, extra), std::net::SocketAddr::new(ip, 15021), node).await
}

/// Like [`spawn_ready_node`], with the binary's output (its log) written to `log`.
pub async fn spawn_ready_node_logged(
    mesh: &crate::Mesh,
    node: &str,
    ip: std::net::IpAddr,
    extra: &[&str],
    log: &std::path::Path,
) -> ChildGuard {
    let mut cmd = node_command(mesh, node, ip, extra);
    let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("create log file {}: {e}", log.display()));
    cmd.stdout(file);
    spawn_ready(cmd, std::net::SocketAddr::new(ip, 15021), node).await
}

/// The command [`spawn_ready_node`] runs, for callers that set more on it (such as where its
/// log goes).
pub fn node_command(mesh: &crate::Mesh, node: &str, ip: std::net::IpAddr, extra: &[&str]) -> Command {
    let addr = |port: u16| std::net::SocketAddr::new(ip, port).to_string();
    let mut cmd = Command::new(ztunnel_binary());
    cmd.args(["proxy", "--config"]).arg(mesh.config_path());
    cmd.args(["--node", node, "--state-dir"]).arg(mesh.ca_dir());
    cmd.args(["--admin-addr", &addr(15000), "--metrics-addr", &addr(15020), "--readiness-addr", &addr(15021)]);
    cmd.args(["--log-level", "warn"]).args(extra);
    cmd
}

/// Starts `cmd` and waits (bounded, 10 s) until `readiness` answers `/healthz/ready` with 200.
pub async fn spawn_ready(cmd: Command, readiness: std::net::SocketAddr, what: &str) -> ChildGuard {
    let child = ChildGuard::spawn(cmd);
    crate::wait::eventually(
        &format!("the ztunnel binary for {what} is ready"),
        std::time::Duration::from_secs(10),
        || async { matches!(crate::http_get(readiness, "/healthz/ready").await, Ok((200, _))) },
    )
    .await;
    child
}
