//! Running CNI plugin chains the way a container runtime does, for the `cni_chain` suite.
//!
//! - [`runtime_binary`]: `tests/cni-runtime`, a small Go program over libcni (the library
//!   containerd, CRI-O and the kubelet use), built offline from Debian's
//!   `golang-github-appc-cni-dev`. It picks the network config from a directory as runtimes do,
//!   runs each plugin with the `CNI_*` environment, injects `prevResult`, and caches results.
//! - [`CniHost`]: a node's CNI directories in a temporary dir (network config, our bin dir,
//!   result cache, host-local's address store), with a primary network of Debian's reference
//!   plugins (`bridge` + `host-local`), and a way to run ADD/CHECK/DEL inside a node's network
//!   namespace (where `bridge` creates its bridge).
//! - [`FakeAgent`]: a stand-in for ztunnel's node agent on the plugin-event socket, recording
//!   what the plugin sends and answering as told.
//!
//! [`missing_tools`] says what is not installed (`.ci/run` and `cargo xtask test` install it).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use ztunnel::kubernetes::cni_event::{Answer, PodAdded};

use crate::netns::Node;

/// Where Debian's `containernetworking-plugins` puts the reference plugins.
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";
/// Debian's `golang-github-appc-cni-dev` source tree (a GOPATH).
const GOPATH: &str = "/usr/share/gocode";
/// The network name of [`CniHost`]'s primary config.
pub const NETWORK_NAME: &str = "podnet";

/// What this machine lacks to run CNI chains, if anything.
pub fn missing_tools() -> Option<String> {
    let mut missing = Vec::new();
    for plugin in ["bridge", "host-local"] {
        if !Path::new(REFERENCE_PLUGIN_DIR).join(plugin).exists() {
            missing.push(format!("{REFERENCE_PLUGIN_DIR}/{plugin} (Debian package containernetworking-plugins)"));
        }
    }
    if Command::new("go").arg("version").output().map(|o| !o.status.success()).unwrap_or(true) {
        missing.push("go (Debian package golang-go)".to_string());
    }
    if !Path::new(GOPATH).join("src/github.com/containernetworking/cni/libcni").exists() {
        missing.push(format!("libcni under {GOPATH} (Debian package golang-github-appc-cni-dev)"));
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The `cni-runtime` binary in this test's target directory, built once per test process.
pub fn runtime_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target profile directory");
            let target = profile_dir.join("cni-runtime");
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("cni-runtime/main.go");
            // Concurrent test processes each build into their own file, then rename.
            let partial = profile_dir.join(format!(".cni-runtime.{}", std::process::id()));
            let out = Command::new("go")
                .arg("build")
                .arg("-o")
                .arg(&partial)
                .arg(&source)
                .env("GO111MODULE", "off")
                .env("GOPATH", GOPATH)
                .env("GOCACHE", profile_dir.join("go-cache"))
                .env("GOFLAGS", "")
                .output()
                .expect("run go build");
            assert!(out.status.success(), "go build {}: {}", source.display(), String::from_utf8_lossy(&out.stderr));
            std::fs::rename(&partial, &target).expect("move the built cni-runtime into place");
            target
        })
        .clone()
}

/// One node's CNI directories.
pub struct CniHost {
    _dir: tempfile::TempDir,
    pub net_dir: PathBuf,
    /// Where our plugin is installed (searched before the reference plugins).
    pub bin_dir: PathBuf,
    cache_dir: PathBuf,
    pub ipam_dir: PathBuf,
}

/// What one runtime call printed and how it ended.
#[derive(Debug)]
pub struct ChainOutcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ChainOutcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout as JSON (the result, or the failing plugin's CNI error).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("runtime output is not JSON ({e}): {self:?}"))
    }
}

impl CniHost {
    /// Directories with `10-podnet.conflist`: `bridge` (`bridge_name`, gateway on the bridge,
    /// no masquerading) with `host-local` addresses from `subnet`.
    pub fn new(bridge_name: &str, subnet: &str) -> CniHost {
        let dir = tempfile::Builder::new().prefix("zt-cni-").tempdir().expect("temporary CNI dir");
        let [net_dir, bin_dir, cache_dir, ipam_dir] = ["net.d", "bin", "cache", "ipam"].map(|d| dir.path().join(d));
        for d in [&net_dir, &bin_dir, &cache_dir, &ipam_dir] {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        let host = CniHost { _dir: dir, net_dir, bin_dir, cache_dir, ipam_dir };
        let conflist = host.primary_config_path();
        let text = serde_json::to_vec_pretty(&host.bridge_conflist(bridge_name, subnet)).expect("JSON");
        std::fs::write(&conflist, text).unwrap_or_else(|e| panic!("write {}: {e}", conflist.display()));
        host
    }

    /// The primary network config as written by [`CniHost::new`].
    pub fn bridge_conflist(&self, bridge_name: &str, subnet: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "plugins": [{
                "type": "bridge",
                "bridge": bridge_name,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": self.ipam_dir,
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            }]
        })
    }

    pub fn primary_config_path(&self) -> PathBuf {
        self.net_dir.join(format!("10-{NETWORK_NAME}.conflist"))
    }

    /// Runs `command` (`add`, `check`, `del`) of the network config in `net_dir` for the
    /// sandbox `netns`, from inside `node`'s namespace, with `CNI_ARGS` as containerd sends them
    /// for a pod.
    pub fn run(&self, node: &Node, command: &str, sandbox: &Sandbox) -> ChainOutcome {
        let runtime = runtime_binary();
        let bin_dirs = format!("{}:{REFERENCE_PLUGIN_DIR}", self.bin_dir.display());
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            sandbox.namespace, sandbox.name, sandbox.container_id, sandbox.uid
        );
        let netns = sandbox.netns.display().to_string();
        let cmd = [
            runtime.to_str().expect("UTF-8 path"),
            command,
            "-conf-dir",
            self.net_dir.to_str().expect("UTF-8 path"),
            "-bin-dirs",
            &bin_dirs,
            "-cache-dir",
            self.cache_dir.to_str().expect("UTF-8 path"),
            "-netns",
            &netns,
            "-container-id",
            &sandbox.container_id,
            "-args",
            &args,
        ];
        let Output { status, stdout, stderr } = node.run_timeout(&cmd, Duration::from_secs(60));
        ChainOutcome {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

/// A pod sandbox as the runtime describes it to CNI.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub netns: PathBuf,
    pub container_id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A stand-in node agent on a unix socket: records each [`PodAdded`] and answers `answer`.
/// Stops when dropped.
pub struct FakeAgent {
    pub socket: PathBuf,
    received: Arc<Mutex<Vec<PodAdded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    pub fn start(socket: &Path, answer: Answer) -> FakeAgent {
        let listener = UnixListener::bind(socket).unwrap_or_else(|e| panic!("bind {}: {e}", socket.display()));
        listener.set_nonblocking(true).expect("non-blocking listener");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve_one(stream, &answer, &seen),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("fake agent accept: {e}"),
                }
            }
        });
        FakeAgent { socket: socket.to_path_buf(), received, stop, thread: Some(thread) }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<PodAdded> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn serve_one(stream: std::os::unix::net::UnixStream, answer: &Answer, seen: &Mutex<Vec<PodAdded>>) {
    stream.set_nonblocking(false).expect("blocking stream");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let added: PodAdded = serde_json::from_str(&line).unwrap_or_else(|e| panic!("plugin sent {line:?}: {e}"));
    seen.lock().unwrap_or_else(|e| e.into_inner()).push(added);
    let mut reply = serde_json::to_vec(answer).expect("JSON");
    reply.push(b'\n');
    let _ = reader.get_mut().write_all(&reply);
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
