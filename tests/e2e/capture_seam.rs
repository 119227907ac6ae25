//! The pod-lifecycle seam end to end: capture attached once at the root cgroup selects pods by
//! network namespace (a process in a pod's namespace is captured whatever its cgroup), pods
//! can be enrolled with their addresses before their workload is known, pod processes cannot
//! take ztunnel's ports while ztunnel's own listeners work, and two ztunnels whose programs
//! both sit at the root cgroup leave each other alone. Runs as root; skips otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ztunnel_tests::capture_mesh::{
    CaptureMesh, Membership, accepted_peers, connect_from, connect_from_outside_cgroup, serve_in,
};
use ztunnel_tests::netns::{Pod, require_root, testapp_binary};
use ztunnel_tests::wait::eventually_blocking;

const NODE: &str = "node-a";

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

#[test]
fn a_process_in_another_cgroup_inside_a_pod_namespace_is_captured() {
    if !require_root("a_process_in_another_cgroup_inside_a_pod_namespace_is_captured") {
        return;
    }
    let mut mesh = CaptureMesh::new("seam-cgroup", &[NODE]);
    let client = mesh.pod(NODE, "client", "sleep", Membership::Captured);
    let server = mesh.pod(NODE, "server", "echo", Membership::Captured);
    mesh.write_config();
    let app = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 8080));
    let zt = mesh.start_ztunnel(NODE);

    // The process runs in the client's namespace but in the test's own cgroup, which is no
    // pod's: per-pod cgroup attachment would not see it at all.
    let dst = at(server.ip(), 8080);
    let report = connect_from_outside_cgroup(&client, dst, 64 * 1024, 10);
    assert!(report.echoed_intact, "client (outside its cgroup) -> server:\n{}\n{}", report.raw, zt.stdout());
    assert_eq!(report.peer, Some(dst), "getpeername shows the original destination:\n{}", report.raw);
    assert_eq!(accepted_peers(&app).last().map(|p| p.ip()), Some(IpAddr::V4(client.ip())));
    // ztunnel proxied it as the client's outbound connection (mTLS), not as passthrough.
    let hbone_out =
        [("reporter", "source"), ("source_workload", "client"), ("connection_security_policy", "mutual_tls")];
    mesh.wait_metric(NODE, "istio_tcp_connections_opened_total", &hbone_out, 1);
}

#[test]
fn a_pod_enrolled_with_addresses_before_its_workload_refuses_then_is_served() {
    if !require_root("a_pod_enrolled_with_addresses_before_its_workload_refuses_then_is_served") {
        return;
    }
    let mut mesh = CaptureMesh::new("seam-early", &[NODE]);
    let client = mesh.pod(NODE, "client", "sleep", Membership::Captured);
    // Not in the config yet: the source knows the pod before the config does.
    let server = mesh.pod(NODE, "server", "echo", Membership::Outside);
    mesh.write_config();
    let app = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 8080));
    let zt = mesh.start_ztunnel(NODE);

    let uid = ztunnel_tests::local_config::pod_uid("default", server.name());
    let netns = server.netns_path();
    let ips = format!("{},{}", server.ip(), server.ip6());
    let out = mesh.ztunnel_cli(NODE, &["enroll", "--uid", &uid, "--netns", netns.to_str().unwrap(), "--ip", &ips]);
    assert!(
        out.status.success(),
        "enrolling with addresses: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        zt.stdout()
    );

    // Captured and held: inbound to it is refused, and so are its own connects.
    let seen = accepted_peers(&app).len();
    let inbound = connect_from(&client, at(server.ip(), 8080), 1024, 3);
    assert!(!inbound.echoed_intact && inbound.error.is_some(), "a held pod must refuse inbound:\n{}", inbound.raw);
    let outbound = connect_from(&server, at(client.ip(), 9), 1024, 3);
    assert!(outbound.error.is_some(), "a held pod's connects must be refused:\n{}", outbound.raw);
    assert_eq!(accepted_peers(&app).len(), seen, "nothing may reach the held pod's app");

    // Once the config has its workload, the pod is served.
    mesh.pods.iter_mut().find(|p| p.pod.name() == "server").expect("server pod").membership = Membership::Listed;
    mesh.write_config();
    eventually_blocking("the pod is served once its workload appears", Duration::from_secs(10), || {
        connect_from(&client, at(server.ip(), 8080), 4096, 3).echoed_intact
    });
    let inbound = [("reporter", "destination"), ("destination_workload", "server")];
    assert!(
        ztunnel_tests::mesh::metric_sum(&mesh.metrics(NODE), "istio_tcp_connections_opened_total", &inbound) >= 1,
        "the served pod's inbound went through ztunnel:\n{}",
        zt.stdout()
    );
}

#[test]
fn pod_processes_cannot_bind_ztunnel_ports_while_its_listeners_work() {
    if !require_root("pod_processes_cannot_bind_ztunnel_ports_while_its_listeners_work") {
        return;
    }
    let mut mesh = CaptureMesh::new("seam-bind", &[NODE]);
    let client = mesh.pod(NODE, "client", "sleep", Membership::Captured);
    let server = mesh.pod(NODE, "server", "echo", Membership::Captured);
    let outside = mesh.pod(NODE, "outside", "none", Membership::Outside);
    mesh.write_config();
    let _app = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 8080));
    let _zt = mesh.start_ztunnel(NODE);
    let app = testapp_binary();
    let app = app.to_str().unwrap();
    let limit = Duration::from_secs(10);

    // ztunnel listens on these ports in the pod's namespace, so a bind there would fail
    // anyway ("address in use"); the capture program refuses it first, with EPERM.
    let refused = |text: &str| text.contains("os error 1)") && !text.contains("bound");
    for port in ["15001", "15006", "15008"] {
        let addr = format!("0.0.0.0:{port}");
        let text = String::from_utf8_lossy(&client.run(&[app, "bind", &addr]).stdout).into_owned();
        assert!(refused(&text), "binding {port} in a captured pod must be refused (EPERM): {text}");
        let out = client.run_outside_cgroup_timeout(&[app, "bind", &addr], limit);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            refused(&text),
            "binding {port} in a captured pod's namespace from another cgroup must be refused: {text}"
        );
        let text = String::from_utf8_lossy(&outside.run(&[app, "bind", &addr]).stdout).into_owned();
        assert!(text.contains("bound"), "a pod that is not enrolled may bind {port}: {text}");
    }
    // ztunnel's own listeners on those ports still serve the pods.
    let report = connect_from(&client, at(server.ip(), 8080), 64 * 1024, 10);
    assert!(report.echoed_intact, "client -> server through ztunnel's listeners:\n{}", report.raw);
    let text = String::from_utf8_lossy(&client.run(&[app, "bind", "0.0.0.0:15009"]).stdout).into_owned();
    assert!(text.contains("bound"), "other ports stay free to bind: {text}");
}

#[test]
fn two_ztunnels_with_programs_at_the_root_cgroup_leave_each_other_alone() {
    if !require_root("two_ztunnels_with_programs_at_the_root_cgroup_leave_each_other_alone") {
        return;
    }
    let mut first = CaptureMesh::new("seam-two-a", &[NODE]);
    let mut second = CaptureMesh::new("seam-two-b", &[NODE]);
    let mut parts = Vec::new();
    for mesh in [&mut first, &mut second] {
        let client = mesh.pod(NODE, "client", "sleep", Membership::Captured);
        let server = mesh.pod(NODE, "server", "echo", Membership::Captured);
        mesh.write_config();
        let app = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 8080));
        parts.push((client, server, app));
    }
    let mut z1 = first.start_ztunnel(NODE);
    let z2 = second.start_ztunnel(NODE);
    let (second_client, second_server, _second_app) = parts.pop().expect("second mesh");
    let (first_client, first_server, first_app) = parts.pop().expect("first mesh");
    // Both at once: each mesh's traffic goes through its own ztunnel only.
    assert_eq!(through(&first, &first_client, &first_server), 1, "first ztunnel:\n{}", z1.stdout());
    assert_eq!(through(&second, &second_client, &second_server), 1, "second ztunnel:\n{}", z2.stdout());
    assert_eq!(through(&first, &first_client, &first_server), 2, "first ztunnel counts its own pods:\n{}", z1.stdout());

    // The first ztunnel gone: its pods fail closed, the second mesh is untouched.
    z1.kill();
    let report = connect_from(&first_client, at(first_server.ip(), 8080), 1024, 3);
    assert!(report.error.is_some(), "the first mesh's pods fail closed without their ztunnel:\n{}", report.raw);
    assert_eq!(through(&second, &second_client, &second_server), 2, "second ztunnel:\n{}", z2.stdout());
    // And once the first test's objects are gone (its pinned programs detach), still.
    drop((first_client, first_server, first_app, z1));
    drop(first);
    assert_eq!(through(&second, &second_client, &second_server), 3, "second ztunnel, alone:\n{}", z2.stdout());
}

/// One connection from `client` to `server`:8080 that must go through; then how many mTLS
/// outbound connections of `client` the mesh's ztunnel has opened.
fn through(mesh: &CaptureMesh, client: &Pod, server: &Pod) -> u64 {
    let report = connect_from(client, at(server.ip(), 8080), 64 * 1024, 10);
    assert!(report.echoed_intact, "client -> server:\n{}", report.raw);
    let out = [("reporter", "source"), ("source_workload", "client"), ("connection_security_policy", "mutual_tls")];
    ztunnel_tests::mesh::metric_sum(&mesh.metrics(NODE), "istio_tcp_connections_opened_total", &out)
}

/// A bind mount of a network namespace at a path of the test's own, unmounted on drop.
struct NetnsAlias(std::path::PathBuf);

impl NetnsAlias {
    fn new(netns: &std::path::Path, at: std::path::PathBuf) -> NetnsAlias {
        std::fs::write(&at, b"").expect("alias file");
        let out = std::process::Command::new("mount").arg("--bind").arg(netns).arg(&at).output().expect("mount");
        assert!(out.status.success(), "bind-mounting {}: {}", netns.display(), String::from_utf8_lossy(&out.stderr));
        NetnsAlias(at)
    }

    /// Unmounts the alias: its path no longer holds a namespace.
    fn unmount(&self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

impl Drop for NetnsAlias {
    fn drop(&mut self) {
        self.unmount();
    }
}

#[test]
fn a_pod_whose_recorded_path_moved_stays_held_until_enrolled_again() {
    if !require_root("a_pod_whose_recorded_path_moved_stays_held_until_enrolled_again") {
        return;
    }
    let mut mesh = CaptureMesh::new("seam-moved", &[NODE]);
    // In the config as workloads; enrolled through the control socket.
    let client = mesh.pod(NODE, "client", "sleep", Membership::Listed);
    let server = mesh.pod(NODE, "server", "echo", Membership::Listed);
    mesh.write_config();
    let _app = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 8080));
    let alias = NetnsAlias::new(&server.netns_path(), mesh.dir.path().join("server-netns"));
    let enroll = |mesh: &CaptureMesh, pod: &Pod, netns: &std::path::Path| {
        let uid = ztunnel_tests::local_config::pod_uid("default", pod.name());
        let out = mesh.ztunnel_cli(NODE, &["enroll", "--uid", &uid, "--netns", netns.to_str().unwrap()]);
        assert!(out.status.success(), "enrolling {}: {}", pod.name(), String::from_utf8_lossy(&out.stderr));
    };
    let mut first = mesh.start_ztunnel(NODE);
    enroll(&mesh, &client, &client.netns_path());
    enroll(&mesh, &server, &alias.0);
    let report = connect_from(&client, at(server.ip(), 8080), 4096, 10);
    assert!(report.echoed_intact, "baseline through the mesh:\n{}\n{}", report.raw, first.stdout());

    // While ztunnel is down the recorded path stops holding the namespace (the namespace
    // itself lives on): the restarted ztunnel keeps the pod captured and refusing.
    first.kill();
    alias.unmount();
    let second = mesh.start_ztunnel(NODE);
    let listed = String::from_utf8_lossy(&mesh.ztunnel_cli(NODE, &["pods"]).stdout).into_owned();
    assert!(listed.contains("/server") && listed.contains("/client"), "both pods stay enrolled:\n{listed}");
    for _ in 0..3 {
        let report = connect_from(&client, at(server.ip(), 8080), 1024, 3);
        assert!(report.error.is_some(), "the held pod must refuse:\n{}\n{}", report.raw, second.stdout());
    }

    // Enrolled again with a path that holds the same namespace: served again.
    enroll(&mesh, &server, &server.netns_path());
    eventually_blocking("the re-enrolled pod is served", Duration::from_secs(10), || {
        connect_from(&client, at(server.ip(), 8080), 4096, 3).echoed_intact
    });
    let listed = String::from_utf8_lossy(&mesh.ztunnel_cli(NODE, &["pods"]).stdout).into_owned();
    let server_line = listed.lines().find(|l| l.contains("/server")).unwrap_or_default().to_string();
    assert!(server_line.contains(server.netns_path().to_str().unwrap()), "the new path is recorded:\n{listed}");
}
