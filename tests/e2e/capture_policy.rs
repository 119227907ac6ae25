//! Authorization of captured plaintext (port 15006) with real traffic in network namespaces:
//! under STRICT mTLS a pod outside the mesh is reset before its bytes reach the app while a
//! captured pod's HBONE traffic passes; switching to PERMISSIVE lets the plaintext through.
//! Runs as root; skips otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ztunnel_tests::capture_mesh::{CaptureMesh, Membership, accepted_peers, connect_from, serve_in};
use ztunnel_tests::netns::require_root;

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

const STRICT_POLICY: &str = "istio-system/istio_converted_static_strict";

#[test]
fn strict_resets_plaintext_and_permissive_lets_it_through() {
    if !require_root("strict_resets_plaintext_and_permissive_lets_it_through") {
        return;
    }
    let mut mesh = CaptureMesh::new("policy-strict", &["node-a", "node-b"]);
    let client = mesh.pod("node-a", "client", "sleep", Membership::Captured);
    let outside = mesh.pod("node-a", "outside", "none", Membership::Outside);
    let server = mesh.pod("node-b", "server", "web", Membership::Captured);
    mesh.extra_config = "namespaces:\n- {name: default, mtls: STRICT}\n".into();
    mesh.write_config();
    let app = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 8080));
    let za = mesh.start_ztunnel("node-a");
    let zb = mesh.start_ztunnel("node-b");
    let logs = || format!("node-a:\n{}\nnode-b:\n{}", za.stdout(), zb.stdout());
    let dst = at(server.ip(), 8080);

    let meshed = connect_from(&client, dst, 64 * 1024, 10);
    assert!(meshed.echoed_intact, "HBONE satisfies STRICT:\n{}\n{}", meshed.raw, logs());
    let plain = connect_from(&outside, dst, 64 * 1024, 10);
    assert!(!plain.echoed_intact && plain.error.is_some(), "STRICT must refuse plaintext:\n{}\n{}", plain.raw, logs());
    assert_eq!(accepted_peers(&app).len(), 1, "only the mTLS connection reached the app");
    let denied = [("policy", STRICT_POLICY), ("reason", "explicitly_denied")];
    // The plaintext refusal is counted under the STRICT policy.
    mesh.wait_metric("node-b", "istio_authorization_denied_connections_total", &denied, 1);
    assert!(zb.stdout().contains("explicitly denied by: istio-system/istio_converted_static_strict"), "{}", logs());

    // PERMISSIVE applies live: the same plaintext client now gets through.
    mesh.extra_config = "namespaces:\n- {name: default, mtls: PERMISSIVE}\n".into();
    mesh.write_config();
    let mut report = None;
    for _ in 0..30 {
        let r = connect_from(&outside, dst, 64 * 1024, 5);
        if r.echoed_intact {
            report = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(report.is_some(), "PERMISSIVE must accept plaintext after the reload:\n{}", logs());
}

/// Starts `testapp http` on `addr` in `pod` and waits until it listens.
fn http_in(pod: &ztunnel_tests::netns::Pod, addr: SocketAddr) -> ztunnel_tests::netns::ProcGuard {
    let app = ztunnel_tests::netns::testapp_binary();
    let mut proc = pod.spawn(&[app.to_str().expect("utf-8 path"), "http", &addr.to_string()]);
    proc.wait_for_stdout("listening", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("http server in {} did not start: {e}", pod.name()));
    proc
}

#[test]
fn kubelet_probes_reach_a_strict_pod_and_nothing_else_from_outside_does() {
    if !require_root("kubelet_probes_reach_a_strict_pod_and_nothing_else_from_outside_does") {
        return;
    }
    let mut mesh = CaptureMesh::new("policy-probes", &["node-a", "node-b"]);
    let outside = mesh.pod("node-a", "outside", "none", Membership::Outside);
    let server = mesh.pod("node-b", "server", "web", Membership::Captured);
    mesh.extra_config = "namespaces:\n- {name: default, mtls: STRICT}\n".into();
    // A test cgroup stands in for the kubelet's (never the machine's root cgroup).
    let kubelet = mesh.topo.add_cgroup("kubelet");
    mesh.kubelet_cgroup = Some(kubelet.clone());
    mesh.write_config();
    let echo = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 8080));
    let web = http_in(&server, SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 8081));
    let za = mesh.start_ztunnel("node-a");
    let zb = mesh.start_ztunnel("node-b");
    let logs = || format!("node-a:\n{}\nnode-b:\n{}", za.stdout(), zb.stdout());
    let (node_a, node_b) = (mesh.node("node-a").clone(), mesh.node("node-b").clone());
    let app = ztunnel_tests::netns::testapp_binary();
    let app = app.to_str().expect("utf-8 path");

    // The kubelet's TCP probe (any port) and HTTP probes over IPv4 and IPv6 reach the app.
    let tcp = node_b.run_in_cgroup(
        &kubelet,
        &[app, "connect", &at(server.ip(), 8080).to_string(), "--bytes", "4096", "--timeout", "5"],
    );
    assert!(
        tcp.status.success(),
        "a TCP probe from the server's node must reach the app:\n{}{}\n{}",
        String::from_utf8_lossy(&tcp.stdout),
        String::from_utf8_lossy(&tcp.stderr),
        logs()
    );
    for addr in [at(server.ip(), 8081), SocketAddr::new(IpAddr::V6(server.ip6()), 8081)] {
        let got = node_b.http_get_in_cgroup(&kubelet, addr, "/healthz");
        let (status, body) =
            got.unwrap_or_else(|e| panic!("HTTP probe to {addr} from the node failed: {e:#}\n{}", logs()));
        assert_eq!(status, 200, "HTTP probe to {addr}: {body}");
        let node_source = if addr.is_ipv4() { IpAddr::V4(node_b.gateway()) } else { IpAddr::V6(node_b.gateway6()) };
        assert!(body.contains(&node_source.to_string()), "the app sees the node's address {node_source}: {body}");
    }
    assert_eq!(accepted_peers(&echo).len(), 1, "the TCP probe reached the echo app");
    assert_eq!(accepted_peers(&web).len(), 2, "both HTTP probes reached the web app");

    // Nothing else is exempt: the same node outside the kubelet's cgroup, another node's
    // kubelet, and another pod are still plaintext under STRICT, refused before the app.
    // Refused: the connection is reset or refused at once (curl's exit 56 or 7), never left to
    // time out; that it never reached the app is checked below.
    let reset = |got: &anyhow::Result<(u16, String)>| {
        got.as_ref().is_err_and(|e| ["curl: (56)", "curl: (7)"].iter().any(|code| format!("{e:#}").contains(code)))
    };
    let not_kubelet = node_b.http_get(at(server.ip(), 8081), "/healthz");
    assert!(reset(&not_kubelet), "a node process outside the kubelet cgroup must be reset: {not_kubelet:?}");
    let other_node = node_a.http_get_in_cgroup(&kubelet, at(server.ip(), 8081), "/healthz");
    assert!(reset(&other_node), "another node's kubelet must be reset: {other_node:?}");
    let plain = connect_from(&outside, at(server.ip(), 8080), 4096, 5);
    assert!(!plain.echoed_intact && plain.error.is_some(), "STRICT must refuse a pod's plaintext:\n{}", plain.raw);
    assert_eq!(accepted_peers(&echo).len(), 1, "no refused connection reached the echo app");
    assert_eq!(accepted_peers(&web).len(), 2, "no refused connection reached the web app");
}
