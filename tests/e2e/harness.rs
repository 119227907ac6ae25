//! The namespaced harness itself (root only): pods reach each other by plain routing on one
//! node and across nodes, processes land in their pod's cgroup and namespace, nothing remains
//! after a topology drops (also when the test panics), topologies side by side do not collide,
//! and the sweeper removes what a dead owner left while keeping what live owners own.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use ztunnel_tests::netns::{Node, Pod, Topology, TopologyId, cgroup2_mount, leftovers, require_root, sweep_stale};
use ztunnel_tests::traffic;

const TESTAPP: &str = env!("CARGO_BIN_EXE_testapp");
const WAIT: Duration = Duration::from_secs(10);

/// Two nodes with pods `client` and `web` each.
fn two_by_two(test: &str) -> (Topology, [Node; 2], [Pod; 4]) {
    let topo = Topology::new(test);
    let (a, b) = (topo.add_node("node-a"), topo.add_node("node-b"));
    let pods = [a.add_pod("client"), a.add_pod("web"), b.add_pod("client"), b.add_pod("web")];
    (topo, [a, b], pods)
}

/// Serves an echo in `server` on `ip`, connects from `client`, and checks the bytes came back
/// intact and the server saw the client's own address (plain routing, nothing in between).
fn assert_echo(client: &Pod, server: &Pod, ip: IpAddr, client_ip: IpAddr, bytes: u64) {
    let addr = SocketAddr::new(ip, 8080).to_string();
    let mut serve = server.spawn(&[TESTAPP, "serve", &addr]);
    serve.wait_for_stdout("listening", WAIT).unwrap();
    let out = client.run(&[TESTAPP, "connect", &addr, "--bytes", &bytes.to_string(), "--timeout", "10"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} -> {addr}: expected a clean echo, got {}: {stdout} {}",
        client.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let connected = traffic::first(&stdout, "connected").expect("a connected line");
    assert_eq!(traffic::addr(&connected, "local").map(|a| a.ip()), Some(client_ip), "client address: {stdout}");
    assert_eq!(connected["peer"], addr.as_str(), "client should see the server as its peer: {stdout}");
    let echo = traffic::first(&stdout, "echo").expect("an echo line");
    assert_eq!(traffic::number(&echo, "bytes"), Some(bytes), "expected {bytes} bytes echoed: {stdout}");
    let line = serve.wait_for_stdout("\"accepted\"", WAIT).unwrap();
    let accepted = traffic::first(&line, "accepted").expect("an accepted line");
    let peer = traffic::addr(&accepted, "peer").map(|p| p.ip().to_canonical());
    assert_eq!(peer, Some(client_ip), "server should see the client pod's address: {line}");
}

#[test]
fn pods_reach_each_other_on_one_node_and_across_nodes() {
    if !require_root("pods_reach_each_other_on_one_node_and_across_nodes") {
        return;
    }
    let (_topo, _nodes, [a_client, a_web, b_client, b_web]) = two_by_two("harness-routing");
    assert_echo(&a_client, &a_web, a_web.ip().into(), a_client.ip().into(), 1 << 20);
    assert_echo(&a_client, &b_web, b_web.ip().into(), a_client.ip().into(), 1 << 20);
    assert_echo(&b_client, &a_web, a_web.ip().into(), b_client.ip().into(), 100_000);
    assert_echo(&a_client, &b_web, b_web.ip6().into(), a_client.ip6().into(), 100_000);
    assert_echo(&b_client, &b_web, b_web.ip6().into(), b_client.ip6().into(), 100_000);
}

#[test]
fn nodes_fetch_http_from_pods_and_pods_reach_their_node() {
    if !require_root("nodes_fetch_http_from_pods_and_pods_reach_their_node") {
        return;
    }
    let (_topo, [a, b], [a_client, a_web, ..]) = two_by_two("harness-http");
    let web_ip = a_web.ip().to_string();
    let mut server = a_web.spawn(&["python3", "-m", "http.server", "--bind", &web_ip, "8000"]);
    let addr = SocketAddr::new(a_web.ip().into(), 8000);
    let deadline = Instant::now() + WAIT;
    let (status, body) = loop {
        match b.http_get(addr, "/") {
            Ok(got) => break got,
            Err(e) if Instant::now() > deadline => {
                panic!("node-b never got http://{addr}/: {e:#}; {}", server.stderr())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(status, 200, "expected 200 from the pod's server, got {status}: {body}");
    assert!(body.contains("Directory listing"), "unexpected body: {body}");
    assert!(server.is_running());
    // A pod reaches its own node (the bridge address) and the other node (its fabric address).
    let mut node_server = a.spawn(&[TESTAPP, "serve", "[::]:7000"]);
    node_server.wait_for_stdout("listening", WAIT).unwrap();
    let mut other_server = b.spawn(&[TESTAPP, "serve", "0.0.0.0:7000"]);
    other_server.wait_for_stdout("listening", WAIT).unwrap();
    for target in [format!("{}:7000", a.gateway()), format!("[{}]:7000", a.gateway6()), format!("{}:7000", b.ip())] {
        let out = a_client.run(&[TESTAPP, "connect", &target, "--bytes", "1000", "--timeout", "10"]);
        assert!(out.status.success(), "{target} from a pod: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[tokio::test]
async fn the_test_process_connects_into_a_node() {
    if !require_root("the_test_process_connects_into_a_node") {
        return;
    }
    let (_topo, [a, b], [_, a_web, ..]) = two_by_two("harness-connect");
    let addr = SocketAddr::new(a_web.ip().into(), 8080);
    let mut server = a_web.spawn(&[TESTAPP, "serve", &addr.to_string()]);
    let server = tokio::task::spawn_blocking(move || server.wait_for_stdout("listening", WAIT).map(|_| server))
        .await
        .unwrap()
        .unwrap();
    // From the other node (routed over the fabric) and from the pod's own node (its bridge).
    for (node, source) in [(&b, IpAddr::from(b.ip())), (&a, IpAddr::from(a.gateway()))] {
        let mut stream =
            node.connect(addr).await.unwrap_or_else(|e| panic!("connect from {} to {addr}: {e:#}", node.name()));
        stream.write_all(b"hello from the host").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut back)).await.expect("echo within 10 s").unwrap();
        assert_eq!(back, b"hello from the host");
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip(), source, "the socket should live in {}'s namespace", node.name());
    }
    drop(server);
}

/// `net:[<inode>]` of a named namespace, as /proc/<pid>/ns/net shows it.
fn netns_link(path: &Path) -> String {
    format!("net:[{}]", std::fs::metadata(path).unwrap().ino())
}

fn proc_netns(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap().display().to_string()
}

fn proc_cgroup2(pid: u32) -> String {
    let all = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    all.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or_default().to_string()
}

#[test]
fn spawned_processes_are_in_their_pod_cgroup_and_netns() {
    if !require_root("spawned_processes_are_in_their_pod_cgroup_and_netns") {
        return;
    }
    let topo = Topology::new("harness-placement");
    let node = topo.add_node("node-a");
    let pod = node.add_pod("web");
    let app = pod.spawn(&["sleep", "60"]);
    let mount = cgroup2_mount().unwrap();
    let want_cgroup = format!("/{}", pod.cgroup_path().strip_prefix(&mount).unwrap().display());
    assert_eq!(want_cgroup, format!("/ztunnel-test/{}/node-a-web", topo.id()));
    assert_eq!(proc_cgroup2(app.pid()), want_cgroup, "pod process should be in the pod's cgroup");
    assert_eq!(proc_netns(app.pid()), netns_link(&pod.netns_path()), "pod process should be in the pod's netns");
    let procs = std::fs::read_to_string(pod.cgroup_path().join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|p| p == app.pid().to_string()), "cgroup.procs should list {}: {procs}", app.pid());
    // The pod sees only its own interfaces, addressed as planned.
    let out = pod.run(&["ip", "-o", "addr", "show", "dev", "eth0"]);
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(addrs.contains(&format!("{}/24", pod.ip())) && addrs.contains(&format!("{}/64", pod.ip6())), "{addrs}");

    let daemon = node.spawn(&["sleep", "60"]);
    assert_eq!(proc_netns(daemon.pid()), netns_link(&node.netns_path()), "node process should be in the node's netns");
    assert_eq!(proc_cgroup2(daemon.pid()), proc_cgroup2(std::process::id()), "node process keeps the test's cgroup");
}

/// True when `pid` no longer runs (gone, or a zombie nobody has reaped yet).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn wait_dead(pid: u32) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn ip_netns_list() -> String {
    String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned()
}

fn assert_nothing_left(id: TopologyId) {
    let left = leftovers(id);
    assert!(left.is_empty(), "topology {id} left behind: {left:?}");
    let prefix = id.netns_prefix();
    let listed = ip_netns_list();
    assert!(!listed.lines().any(|l| l.starts_with(&prefix)), "`ip netns list` still shows {prefix}*: {listed}");
    let cgroup = cgroup2_mount().unwrap().join("ztunnel-test").join(id.to_string());
    assert!(!cgroup.exists(), "{} should be removed", cgroup.display());
}

/// The pid printed by a shell that started a daemon (which left the process group with setsid).
fn escaped_daemon(out: std::process::Output) -> u32 {
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| panic!("expected a pid, got {text:?}"))
}

#[test]
fn nothing_remains_after_a_topology_drops_even_when_the_test_panics() {
    if !require_root("nothing_remains_after_a_topology_drops_even_when_the_test_panics") {
        return;
    }
    let daemon = "setsid sleep 60 >/dev/null 2>&1 </dev/null & echo $!";
    let registered = std::env::temp_dir().join(format!("zt-harness-pins-{}", std::process::id()));
    // Normal drop, with running processes (some escaped from their process group).
    let (id, pids) = {
        let (topo, [a, _], [a_client, .., b_web]) = two_by_two("harness-drop");
        let pids = vec![
            b_web.spawn(&["sleep", "60"]).pid(),
            escaped_daemon(a_client.run(&["sh", "-c", daemon])),
            escaped_daemon(a.run(&["sh", "-c", daemon])),
        ];
        let _kept = (b_web.spawn(&[TESTAPP, "serve", "0.0.0.0:9000"]), a.spawn(&["sleep", "60"]));
        // Stands in for a pin directory (bpffs may not be mounted here); removed the same way.
        std::fs::create_dir_all(registered.join("node-a/maps")).unwrap();
        std::fs::write(registered.join("node-a/maps/pinned"), b"x").unwrap();
        topo.register_bpf_dir(&registered);
        (topo.id(), pids)
    };
    assert_nothing_left(id);
    assert!(!registered.exists(), "registered directory {} should be removed", registered.display());
    for pid in pids {
        assert!(wait_dead(pid), "process {pid} should have been killed with its topology");
    }

    // Guards that outlive their topology: the processes die with the topology, the guards
    // only reap them.
    let (id, mut guards) = {
        let topo = Topology::new("harness-drop-order");
        let node = topo.add_node("node-a");
        let pod = node.add_pod("web");
        (topo.id(), vec![pod.spawn(&["sleep", "60"]), node.spawn(&["sleep", "60"])])
    };
    assert_nothing_left(id);
    for guard in &mut guards {
        let exited = guard.wait_timeout(WAIT).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(exited.status.signal(), Some(9), "process {} should have been killed", guard.pid());
    }
    drop(guards);

    // A panicking test.
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (topo, _, [a_client, ..]) = two_by_two("harness-panic");
        let _app = a_client.spawn(&["sleep", "60"]);
        let daemon = escaped_daemon(a_client.run(&["sh", "-c", daemon]));
        *seen.lock().unwrap() = Some((topo.id(), daemon));
        panic!("deliberate panic with a live topology");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    let (id, daemon) = seen.lock().unwrap().take().expect("topology id recorded before the panic");
    assert_nothing_left(id);
    assert!(wait_dead(daemon), "process {daemon} should have been killed while unwinding");
}

#[test]
fn two_topologies_in_parallel_do_not_collide() {
    if !require_root("two_topologies_in_parallel_do_not_collide") {
        return;
    }
    let barrier = std::sync::Barrier::new(2);
    let run = |name: &str| {
        let (topo, _, [a_client, _, _, b_web]) = two_by_two(name);
        // Both exist at once, with the same node and pod names.
        barrier.wait();
        assert_echo(&a_client, &b_web, b_web.ip().into(), a_client.ip().into(), 200_000);
        barrier.wait();
        (topo.id(), a_client.netns_name().to_string(), b_web.cgroup_path().to_path_buf())
    };
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| run("harness-parallel-1"));
        let second = s.spawn(|| run("harness-parallel-2"));
        (first.join().expect("first topology"), second.join().expect("second topology"))
    });
    assert_ne!(first.0, second.0, "ids must differ");
    assert_ne!(first.1, second.1, "namespace names must differ");
    assert_ne!(first.2, second.2, "cgroups must differ");
    assert_nothing_left(first.0);
    assert_nothing_left(second.0);
}

/// Waits (bounded) for a child to end; returns the signal that ended it, if any.
fn wait_child(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.signal();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("process {} still running after {WAIT:?}", child.id());
}

/// A process in a network namespace of its own, named `name` afterwards (so the name only
/// appears once the process is inside, and a concurrent sweeper sees a complete object).
fn process_in_new_netns(name: &str) -> Child {
    let mut child = Command::new("unshare").args(["--net", "--", "sleep", "60"]).stdout(Stdio::null()).spawn().unwrap();
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + WAIT;
    while std::fs::read_link(format!("/proc/{}/ns/net", child.id())).is_ok_and(|l| l == own) {
        assert!(Instant::now() < deadline, "unshare never entered a new netns");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("ip").args(["netns", "attach", name, &child.id().to_string()]).status().unwrap();
    if !status.success() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("ip netns attach {name} failed");
    }
    child
}

/// A process moved into cgroup `dir` (created, and created again if a concurrent sweeper
/// removes it while still empty).
fn process_in_cgroup(dir: &Path) -> Child {
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    for _ in 0..50 {
        let _ = std::fs::create_dir_all(dir);
        if std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).is_ok() {
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("could not move {} into {}", child.id(), dir.display());
}

/// Removes objects of the fake live owner even if the test fails.
struct LiveFakes {
    netns: String,
    cgroup: std::path::PathBuf,
}

impl Drop for LiveFakes {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
        let _ = std::fs::remove_dir(self.cgroup.join("node-a-web"));
        let _ = std::fs::remove_dir(&self.cgroup);
        // The shared parent goes once empty (a concurrent topology may still use it).
        let _ = self.cgroup.parent().map(std::fs::remove_dir);
    }
}

#[test]
fn sweeper_removes_what_a_dead_owner_left_and_keeps_live_owners_objects() {
    if !require_root("sweeper_removes_what_a_dead_owner_left_and_keeps_live_owners_objects") {
        return;
    }
    let cgroot = cgroup2_mount().unwrap().join("ztunnel-test");
    // No process can have a pid above pid_max: a certainly dead owner. The sequence number is
    // our own pid, so concurrent runs of this test use different names.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    let dead = TopologyId::new(pid_max + 1, std::process::id());
    let dead_netns = dead.node_netns("node-a");
    let mut in_netns = process_in_new_netns(&dead_netns);
    let dead_cgroup = cgroot.join(dead.to_string());
    let mut in_cgroup = process_in_cgroup(&dead_cgroup.join("node-a-web"));
    let dead_bpf = ztunnel_tests::netns::bpffs_mount().map(|m| m.join("ztunnel-test").join(dead.to_string()));
    if let Some(dir) = &dead_bpf {
        std::fs::create_dir_all(dir.join("node-a")).unwrap();
    } else {
        eprintln!("bpffs is not mounted: the bpffs part of the sweeper is covered by unit tests only");
    }

    // Our own pid is alive: the sweeper must leave these alone.
    let live = TopologyId::new(std::process::id(), 4_000_000_000);
    let live_fakes = LiveFakes { netns: live.node_netns("node-a"), cgroup: cgroot.join(live.to_string()) };
    assert!(Command::new("ip").args(["netns", "add", &live_fakes.netns]).status().unwrap().success());
    std::fs::create_dir_all(live_fakes.cgroup.join("node-a-web")).unwrap();

    let removed = sweep_stale();
    eprintln!("sweeper removed: {removed:?}");
    assert_eq!(wait_child(&mut in_netns), Some(9), "the process in the stale netns should be SIGKILLed");
    assert_eq!(wait_child(&mut in_cgroup), Some(9), "the process in the stale cgroup should be SIGKILLed");
    assert!(!ip_netns_list().lines().any(|l| l.starts_with(&dead_netns)), "stale netns {dead_netns} should be gone");
    assert!(!dead_cgroup.exists(), "stale cgroup {} should be gone", dead_cgroup.display());
    if let Some(dir) = &dead_bpf {
        assert!(!dir.exists(), "stale bpffs dir {} should be gone", dir.display());
    }
    assert!(
        ip_netns_list().lines().any(|l| l.starts_with(&live_fakes.netns)),
        "a live owner's netns {} must be kept",
        live_fakes.netns
    );
    assert!(live_fakes.cgroup.join("node-a-web").exists(), "a live owner's cgroup must be kept");
    drop(live_fakes);
    assert!(leftovers(live).is_empty(), "test cleanup left {:?}", leftovers(live));
}
