//! The `ztunnel-cni` plugin chained after Debian's reference plugins (`bridge` + `host-local`),
//! installed by `ztunnel-cni install` and run through libcni exactly as a container runtime
//! runs a chain, against the test API server and a stand-in node agent on the plugin-event
//! socket.
//!
//! Everything runs inside a node network namespace the test creates: the runtime (so `bridge`
//! makes its bridge there), the API server's listener (on the node's loopback, where the
//! installed kubeconfig points), and each pod sandbox is an empty namespace, as a runtime
//! creates it. Needs root and the tools `cni_runtime::missing_tools` names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use ztunnel::kubernetes::cni_event::Answer;
use ztunnel_tests::cni_runtime::{ChainOutcome, CniHost, FakeAgent, NETWORK_NAME, Sandbox, missing_tools};
use ztunnel_tests::kube_api::{KubeApiServer, namespace, pod};
use ztunnel_tests::netns::{Node, Topology, require_root};
use ztunnel_tests::process::{ChildGuard, cni_plugin_binary};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");

/// A node with CNI directories, the plugin installed, and an API server that knows two pods:
/// `shop/web-0` (namespace labelled ambient) and `plain/app-0` (not labelled).
struct Fixture {
    _topology: Topology,
    node: Node,
    host: CniHost,
    api: KubeApiServer,
    _api_dir: tempfile::TempDir,
    /// Service-account files for the installer (the API server's token and CA).
    service_account: PathBuf,
    /// Where the plugin looks for the node agent.
    socket: PathBuf,
    original_conflist: Value,
}

/// Skips (visibly) unless root and the CNI tools are here.
fn can_run(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if let Some(missing) = missing_tools() {
        ztunnel::test_skip::skip(test, &format!("missing {missing}"));
        return false;
    }
    true
}

impl Fixture {
    async fn new(test: &str) -> Fixture {
        let topology = Topology::new(test);
        let node = topology.add_node("node-a");
        let api_dir = tempfile::tempdir().expect("temp dir");
        // On the node's loopback: the plugin runs in the node's namespace, like the kubelet's.
        let listener = node.listen("127.0.0.1:0".parse().expect("literal")).expect("listen in the node");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let api = KubeApiServer::start_on(api_dir.path(), tokio::net::TcpListener::from_std(listener).expect("tokio"));
        api.create_namespace(namespace("shop", &[AMBIENT])).expect("namespace shop");
        api.create_namespace(namespace("plain", &[])).expect("namespace plain");
        api.create_pod(pod("shop", "web-0", "node-a", "")).expect("pod shop/web-0");
        api.create_pod(pod("plain", "app-0", "node-a", "")).expect("pod plain/app-0");

        let service_account = api_dir.path().join("serviceaccount");
        std::fs::create_dir(&service_account).expect("service account dir");
        std::fs::copy(api_dir.path().join("kube-ca.crt"), service_account.join("ca.crt")).expect("copy the CA");
        std::fs::write(service_account.join("token"), token(api.kubeconfig_path())).expect("write the token");

        let subnet = format!("10.{}.201.0/24", topology.plan().x());
        let host = CniHost::new("cni0", &subnet);
        let original_conflist = read_json(&host.primary_config_path());
        let socket = api_dir.path().join("pluginevent.sock");
        Fixture { _topology: topology, node, host, api, _api_dir: api_dir, service_account, socket, original_conflist }
    }

    /// `ztunnel-cni install` (or `uninstall`) with this fixture's directories; its output.
    fn installer(&self, command: &str) -> std::process::Output {
        let mut cmd = Command::new(cni_plugin_binary());
        cmd.arg(command);
        cmd.arg("--mounted-cni-net-dir").arg(&self.host.net_dir);
        cmd.arg("--mounted-cni-bin-dir").arg(&self.host.bin_dir);
        if command == "install" {
            cmd.arg("--cni-net-dir").arg(&self.host.net_dir);
            cmd.arg("--cni-bin-dir").arg(&self.host.bin_dir);
            cmd.arg("--service-account-dir").arg(&self.service_account);
            cmd.args(["--kubernetes-service-host", "127.0.0.1"]);
            cmd.args(["--kubernetes-service-port", &self.api.addr().port().to_string()]);
            cmd.arg("--plugin-event-socket").arg(&self.socket);
            cmd.args(["--plugin-log-level", "debug"]);
        }
        let out = cmd.env_remove("KUBERNETES_SERVICE_HOST").output().expect("run ztunnel-cni");
        assert!(out.status.success(), "ztunnel-cni {command}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn install(&self) {
        self.installer("install");
    }

    /// A fresh sandbox for pod `namespace/name` (uid from the API server).
    fn sandbox(&self, sandbox_name: &str, namespace: &str, name: &str) -> Sandbox {
        let uid = self.api.pod(namespace, name).and_then(|p| p.metadata.uid).expect("the pod has a uid");
        Sandbox {
            netns: self.node.add_sandbox(sandbox_name),
            container_id: format!("sandbox-{sandbox_name}"),
            namespace: namespace.into(),
            name: name.into(),
            uid,
        }
    }

    /// Runs the chain from the node (blocking, off the runtime's async workers).
    fn chain(&self, command: &str, sandbox: &Sandbox) -> ChainOutcome {
        tokio::task::block_in_place(|| self.host.run(&self.node, command, sandbox))
    }
}

fn token(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("read the kubeconfig");
    let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    config["users"][0]["user"]["token"].as_str().expect("a token in the kubeconfig").to_string()
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The IPv4 address (with prefix) on `eth0` in `sandbox`, if any.
fn eth0_address(sandbox: &Sandbox) -> Option<String> {
    let name = sandbox.netns.file_name().and_then(|n| n.to_str()).expect("netns name");
    let out = Command::new("ip").args(["-n", name, "-o", "-4", "addr", "show", "dev", "eth0"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().skip_while(|w| *w != "inet").nth(1).map(str::to_string)
}

/// Checks that `result` is the bridge plugin's: eth0 in the sandbox, with the address that is
/// on eth0 now; returns that address.
fn assert_bridge_result(result: &Value, sandbox: &Sandbox) -> String {
    let eth0 = result["interfaces"].as_array().and_then(|ifs| ifs.iter().find(|i| i["name"] == "eth0"));
    let netns = sandbox.netns.display().to_string();
    assert_eq!(eth0.map(|i| &i["sandbox"]), Some(&Value::from(netns)), "eth0 in the sandbox: {result}");
    let address = result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("an address: {result}")).to_string();
    assert_eq!(eth0_address(sandbox).as_deref(), Some(address.as_str()), "the result's address is on eth0");
    address
}

/// DEL of the chain succeeds, removes eth0 and releases the address in host-local's store.
fn assert_del_cleans_up(fixture: &Fixture, sandbox: &Sandbox, address: Option<&str>) {
    let out = fixture.chain("del", sandbox);
    assert!(out.success(), "DEL of the chain: {out:?}");
    assert_eq!(eth0_address(sandbox), None, "eth0 is gone after DEL");
    if let Some(address) = address {
        let ip = address.split('/').next().expect("address");
        let lease = fixture.host.ipam_dir.join(NETWORK_NAME).join(ip);
        assert!(!lease.exists(), "host-local released {ip} ({} still exists)", lease.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ambient_pod_needs_no_agent() {
    if !can_run("non_ambient_pod_needs_no_agent") {
        return;
    }
    let fixture = Fixture::new("non_ambient_pod_needs_no_agent").await;
    fixture.install();
    let sandbox = fixture.sandbox("app-0", "plain", "app-0");
    let out = fixture.chain("add", &sandbox);
    assert!(out.success(), "ADD of a pod outside the mesh succeeds with no agent: {out:?}");
    let address = assert_bridge_result(&out.json(), &sandbox);
    assert!(!fixture.socket.exists(), "no agent socket was ever there");
    let check = fixture.chain("check", &sandbox);
    assert!(check.success(), "CHECK of the chain: {check:?}");
    assert_del_cleans_up(&fixture, &sandbox, Some(&address));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambient_pod_without_agent_fails_naming_the_socket() {
    if !can_run("ambient_pod_without_agent_fails_naming_the_socket") {
        return;
    }
    let fixture = Fixture::new("ambient_pod_without_agent_fails_naming_the_socket").await;
    fixture.install();
    let sandbox = fixture.sandbox("web-0", "shop", "web-0");
    let out = fixture.chain("add", &sandbox);
    assert_eq!(out.code, Some(2), "ADD fails with the plugin's CNI error: {out:?}");
    let error = out.json();
    assert_eq!(error["code"], 999, "{error}");
    let msg = error["msg"].as_str().expect("msg");
    assert!(msg.contains("pod shop/web-0"), "names the pod: {msg}");
    assert!(msg.contains(&fixture.socket.display().to_string()), "names the socket: {msg}");
    // The runtime cleans up a failed ADD with DEL, which must work.
    assert_del_cleans_up(&fixture, &sandbox, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambient_pod_is_handed_to_the_agent() {
    if !can_run("ambient_pod_is_handed_to_the_agent") {
        return;
    }
    let fixture = Fixture::new("ambient_pod_is_handed_to_the_agent").await;
    fixture.install();
    let agent = FakeAgent::start(&fixture.socket, Answer::captured());
    let sandbox = fixture.sandbox("web-0", "shop", "web-0");
    let out = fixture.chain("add", &sandbox);
    assert!(out.success(), "ADD with the agent confirming: {out:?}");
    let address = assert_bridge_result(&out.json(), &sandbox);

    let received = agent.received();
    assert_eq!(received.len(), 1, "one event for one pod: {received:?}");
    let event = &received[0];
    assert_eq!((event.pod_namespace.as_str(), event.pod_name.as_str()), ("shop", "web-0"));
    assert_eq!(event.pod_uid, sandbox.uid);
    assert_eq!(event.netns, sandbox.netns);
    assert_eq!(event.container_id, sandbox.container_id);
    let ip: std::net::IpAddr = address.split('/').next().expect("address").parse().expect("an IP");
    assert_eq!(event.ips, vec![ip], "the address host-local assigned");

    let check = fixture.chain("check", &sandbox);
    assert!(check.success(), "CHECK of the chain: {check:?}");
    assert_del_cleans_up(&fixture, &sandbox, Some(&address));
    assert_eq!(agent.received().len(), 1, "CHECK and DEL do not call the agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refusal_fails_add() {
    if !can_run("agent_refusal_fails_add") {
        return;
    }
    let fixture = Fixture::new("agent_refusal_fails_add").await;
    fixture.install();
    let _agent = FakeAgent::start(&fixture.socket, Answer::failed("pod shop/web-0: listeners did not start"));
    let sandbox = fixture.sandbox("web-0", "shop", "web-0");
    let out = fixture.chain("add", &sandbox);
    assert_eq!(out.code, Some(2), "{out:?}");
    let error = out.json();
    assert_eq!(error["code"], 1000, "{error}");
    assert!(error["msg"].as_str().is_some_and(|m| m.contains("listeners did not start")), "{error}");
    assert_del_cleans_up(&fixture, &sandbox, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_twice_then_uninstall() {
    if !can_run("install_twice_then_uninstall") {
        return;
    }
    let fixture = Fixture::new("install_twice_then_uninstall").await;
    fixture.install();
    let conflist = fixture.host.primary_config_path();
    let first = std::fs::read(&conflist).expect("read the conflist");
    let second = fixture.installer("install");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("nothing to change"),
        "the second install finds everything in place: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(std::fs::read(&conflist).expect("read the conflist"), first, "the second install rewrote nothing");
    let installed = read_json(&conflist);
    let types: Vec<&str> =
        installed["plugins"].as_array().expect("plugins").iter().filter_map(|p| p["type"].as_str()).collect();
    assert_eq!(types, ["bridge", "ztunnel-cni"], "ours once, last");

    // The runtime runs the installed chain with ours last: an ambient pod now needs the agent.
    let sandbox = fixture.sandbox("web-0", "shop", "web-0");
    let out = fixture.chain("add", &sandbox);
    assert_eq!((out.code, out.json()["code"].clone()), (Some(2), Value::from(999)), "{out:?}");
    assert_del_cleans_up(&fixture, &sandbox, None);

    fixture.installer("uninstall");
    assert_eq!(read_json(&conflist), fixture.original_conflist, "the original config (semantically)");
    let left: Vec<String> = std::fs::read_dir(&fixture.host.net_dir)
        .expect("list net dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [format!("10-{NETWORK_NAME}.conflist")], "the kubeconfig is gone too");
    assert!(!fixture.host.bin_dir.join("ztunnel-cni").exists(), "the binary is gone");
    let again = fixture.sandbox("web-1", "shop", "web-0");
    let out = fixture.chain("add", &again);
    assert!(out.success(), "without our plugin the chain is bridge alone: {out:?}");
    assert_del_cleans_up(&fixture, &again, None);
}

#[test]
fn watch_reinstalls_when_the_conflist_is_rewritten() {
    // Files only: no root, namespaces or API server needed.
    let host = CniHost::new("cni0", "10.250.201.0/24");
    let original = read_json(&host.primary_config_path());
    let sa = tempfile::tempdir().expect("temp dir");
    std::fs::write(sa.path().join("token"), "token").expect("token");
    std::fs::write(sa.path().join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").expect("ca");
    let mut cmd = Command::new(cni_plugin_binary());
    cmd.args(["install", "--watch", "--watch-interval-ms", "100"]);
    cmd.arg("--mounted-cni-net-dir").arg(&host.net_dir).arg("--mounted-cni-bin-dir").arg(&host.bin_dir);
    cmd.arg("--service-account-dir").arg(sa.path());
    cmd.args(["--kubernetes-service-host", "127.0.0.1", "--kubernetes-service-port", "6443"]);
    cmd.stderr(std::process::Stdio::null());
    let _watcher = ChildGuard::spawn(cmd);
    let conflist = host.primary_config_path();
    let chained = || {
        let Ok(bytes) = std::fs::read(&conflist) else { return false };
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        value["plugins"].as_array().is_some_and(|p| p.len() == 2 && p[1]["type"] == "ztunnel-cni")
    };
    wait_until("the watcher installs the plugin", chained);
    // The primary CNI rewrites its config without our entry, and someone deletes our binary.
    std::fs::write(&conflist, serde_json::to_vec_pretty(&original).expect("JSON")).expect("rewrite the conflist");
    std::fs::remove_file(host.bin_dir.join("ztunnel-cni")).expect("remove the binary");
    wait_until("the watcher chains the plugin again", chained);
    wait_until("the watcher copies the binary again", || host.bin_dir.join("ztunnel-cni").exists());
}

/// Polls `condition` every 50 ms for at most 10 s.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out after 10 s waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
