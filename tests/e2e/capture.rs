//! eBPF capture on namespaced nodes and pods: captured pods talk through HBONE (same node and
//! across nodes, by pod IPv4 and IPv6 address and by service VIP), unmeshed destinations pass through, unenrolled
//! pods are untouched, capture fails closed without ztunnel and is re-adopted after a restart,
//! and unenrolling restores direct traffic. Runs as root; skips otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ztunnel_tests::capture_mesh::{CaptureMesh, Membership, accepted_peers, connect_from, serve_in};
use ztunnel_tests::mesh::metric_sum;
use ztunnel_tests::netns::require_root;

const MIB: usize = 1024 * 1024;

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

#[test]
fn captured_pods_reach_each_other_through_hbone() {
    if !require_root("captured_pods_reach_each_other_through_hbone") {
        return;
    }
    let mut mesh = CaptureMesh::new("capture-hbone", &["node-a", "node-b"]);
    let client = mesh.pod("node-a", "client", "sleep", Membership::Captured);
    let near = mesh.pod("node-a", "near", "near", Membership::Captured);
    let far = mesh.pod("node-b", "far", "far", Membership::Captured);
    let outside = mesh.pod("node-b", "outside", "none", Membership::Outside);
    let vip = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10));
    mesh.service("web", vip, 80, 8080, &["far"]);
    mesh.write_config();
    let near_server = serve_in(&near, at(Ipv4Addr::UNSPECIFIED, 8080));
    let far_server = serve_in(&far, SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 8080));
    let outside_server = serve_in(&outside, at(Ipv4Addr::UNSPECIFIED, 8080));
    let za = mesh.start_ztunnel("node-a");
    let zb = mesh.start_ztunnel("node-b");
    let logs = || format!("node-a ztunnel:\n{}\nnode-b ztunnel:\n{}", za.stdout(), zb.stdout());

    // Same node and across nodes, by pod IP: bytes intact, the client sees its original peer
    // and the app sees the client's own address.
    for (server, dst) in [(&near_server, at(near.ip(), 8080)), (&far_server, at(far.ip(), 8080))] {
        let report = connect_from(&client, dst, MIB, 10);
        assert!(report.echoed_intact, "client -> {dst} through the mesh:\n{}", report.raw);
        assert_eq!(
            report.peer,
            Some(dst),
            "getpeername in the client must show the original destination:\n{}",
            report.raw
        );
        let peers = accepted_peers(server);
        assert_eq!(
            peers.last().map(|p| p.ip()),
            Some(IpAddr::V4(client.ip())),
            "the app sees the client's address: {peers:?}"
        );
    }
    // IPv6 pod addresses are captured the same way.
    let far6 = SocketAddr::new(IpAddr::V6(far.ip6()), 8080);
    let report = connect_from(&client, far6, MIB, 10);
    assert!(report.echoed_intact, "client -> {far6} through the mesh:\n{}\n{}", report.raw, logs());
    assert_eq!(report.peer, Some(far6), "getpeername over IPv6:\n{}", report.raw);
    assert_eq!(accepted_peers(&far_server).last().map(|p| p.ip()), Some(IpAddr::V6(client.ip6())));
    let hbone_out =
        [("reporter", "source"), ("source_workload", "client"), ("connection_security_policy", "mutual_tls")];
    mesh.wait_metric("node-a", "istio_tcp_connections_closed_total", &hbone_out, 3);
    let far_in = [("reporter", "destination"), ("source_workload", "client"), ("destination_workload", "far")];
    mesh.wait_metric("node-b", "istio_tcp_connections_closed_total", &far_in, 2);
    mesh.wait_metric("node-b", "istio_tcp_received_bytes_total", &far_in, 2 * MIB as u64);
    let near_in = [("reporter", "destination"), ("source_workload", "client"), ("destination_workload", "near")];
    mesh.wait_metric("node-a", "istio_tcp_connections_closed_total", &near_in, 1);

    // By service VIP: the VIP is never routed; capture hands it to ztunnel, which picks `far`.
    let report = connect_from(&client, SocketAddr::new(vip, 80), 64 * 1024, 10);
    assert!(report.echoed_intact, "client -> VIP:\n{}", report.raw);
    assert_eq!(report.peer, Some(SocketAddr::new(vip, 80)), "the client sees the VIP as its peer:\n{}", report.raw);
    // The source names the service it addressed; the destination infers it for both
    // connections to `far` (the by-IP one too: `far` serves `web` on that target port).
    let by_vip = [("reporter", "source"), ("destination_service", "web.default.svc.cluster.local")];
    mesh.wait_metric("node-a", "istio_tcp_connections_closed_total", &by_vip, 1);
    let by_service = [("reporter", "destination"), ("destination_service", "web.default.svc.cluster.local")];
    mesh.wait_metric("node-b", "istio_tcp_connections_closed_total", &by_service, 3);

    // Unmeshed destination: passed through from the client's own namespace (its IP is seen).
    let report = connect_from(&client, at(outside.ip(), 8080), 64 * 1024, 10);
    assert!(report.echoed_intact, "client -> outside:\n{}", report.raw);
    assert_eq!(accepted_peers(&outside_server).last().map(|p| p.ip()), Some(IpAddr::V4(client.ip())));
    let passthrough =
        [("reporter", "source"), ("destination_workload", "unknown"), ("connection_security_policy", "unknown")];
    mesh.wait_metric("node-a", "istio_tcp_connections_closed_total", &passthrough, 1);
    // ztunnel's own connections were not captured again: exactly one outbound record each.
    mesh.wait_metric("node-a", "istio_tcp_connections_opened_total", &[("reporter", "source")], 5);

    // Apps in captured pods cannot take ztunnel's ports.
    let app = ztunnel_tests::netns::testapp_binary();
    let out = client.run(&[app.to_str().unwrap(), "bind", "0.0.0.0:15008"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let error = ztunnel_tests::traffic::error(&text);
    assert!(
        error.as_deref().is_some_and(|e| e.contains("Operation not permitted")) && !out.status.success(),
        "binding 15008 in a captured pod must fail with EPERM: {text}"
    );
}

#[test]
fn capture_fails_closed_is_readopted_and_unenroll_restores_direct_traffic() {
    if !require_root("capture_fails_closed_is_readopted_and_unenroll_restores_direct_traffic") {
        return;
    }
    let mut mesh = CaptureMesh::new("capture-life", &["node-a", "node-b"]);
    let client = mesh.pod("node-a", "client", "sleep", Membership::Captured);
    let server = mesh.pod("node-b", "server", "echo", Membership::Captured);
    let plain = mesh.pod("node-a", "plain", "plain", Membership::Listed);
    mesh.write_config();
    let app = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 8080));
    let dst = at(server.ip(), 8080);
    let mut za = mesh.start_ztunnel("node-a");
    let mut zb = mesh.start_ztunnel("node-b");
    assert!(connect_from(&client, dst, 4096, 10).echoed_intact, "baseline through the mesh");

    // An unenrolled pod is untouched: it reaches the captured server's port directly, and the
    // server's ztunnel takes it in as plaintext (inbound capture).
    let report = connect_from(&plain, dst, 4096, 10);
    assert!(report.echoed_intact, "plain pod -> captured server:\n{}", report.raw);
    assert_eq!(report.peer, Some(dst));
    assert_eq!(
        accepted_peers(&app).last().map(|p| p.ip()),
        Some(IpAddr::V4(plain.ip())),
        "captured plaintext keeps its source"
    );
    let plaintext_in =
        [("reporter", "destination"), ("connection_security_policy", "unknown"), ("destination_workload", "server")];
    mesh.wait_metric("node-b", "istio_tcp_connections_closed_total", &plaintext_in, 1);
    assert_eq!(
        metric_sum(&mesh.metrics("node-a"), "istio_tcp_connections_opened_total", &[("source_workload", "plain")]),
        0,
        "node-a must not proxy the unenrolled pod"
    );

    // Without ztunnel, capture fails closed both ways. (sk_lookup's drop means "no socket":
    // TCP answers the SYN with a reset, so the client sees a refusal, and the app nothing.)
    let seen_before_outage = accepted_peers(&app).len();
    za.kill();
    zb.kill();
    let out = connect_from(&client, dst, 4096, 3);
    assert!(
        !out.echoed_intact && out.error.is_some(),
        "a captured client must not get out without ztunnel:\n{}",
        out.raw
    );
    let inbound = connect_from(&plain, dst, 4096, 2);
    assert!(!inbound.echoed_intact, "a captured server must receive nothing without ztunnel:\n{}", inbound.raw);
    let before = accepted_peers(&app).len();
    assert_eq!(before, seen_before_outage, "nothing may reach the app while ztunnel is down");

    // A restarted ztunnel re-adopts the pinned capture; new connections work again.
    let _za = mesh.start_ztunnel("node-a");
    let _zb = mesh.start_ztunnel("node-b");
    let report = connect_from(&client, dst, 64 * 1024, 10);
    assert!(report.echoed_intact, "after restart:\n{}", report.raw);
    assert_eq!(accepted_peers(&app).len(), before + 1);

    // Unenrolling restores direct traffic: the server sees the client's own address.
    let uid = "cluster1//v1/Pod/default/client";
    let out = mesh.ztunnel_cli("node-a", &["unenroll", "--uid", uid]);
    assert!(out.status.success(), "unenroll: {}", String::from_utf8_lossy(&out.stderr));
    let out = mesh.ztunnel_cli("node-b", &["unenroll", "--uid", "cluster1//v1/Pod/default/server"]);
    assert!(out.status.success(), "unenroll server: {}", String::from_utf8_lossy(&out.stderr));
    for family in ["-4", "-6"] {
        let rules = server.run(&["ip", family, "rule"]);
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(!rules.contains("0x111"), "unenroll removes the pod's reply rule ({family}):\n{rules}");
    }
    let report = connect_from(&client, dst, 4096, 10);
    assert!(report.echoed_intact, "direct after unenroll:\n{}", report.raw);
    assert_eq!(
        accepted_peers(&app).last().map(|p| p.ip()),
        Some(IpAddr::V4(client.ip())),
        "direct traffic keeps the client's address"
    );
    let pods = mesh.ztunnel_cli("node-a", &["pods"]);
    assert!(
        String::from_utf8_lossy(&pods.stdout).contains("no pods enrolled"),
        "{}",
        String::from_utf8_lossy(&pods.stdout)
    );
    let _ = &mut za;
}

#[test]
fn apps_see_the_real_client_address_over_hbone_and_captured_plaintext() {
    if !require_root("apps_see_the_real_client_address_over_hbone_and_captured_plaintext") {
        return;
    }
    let mut mesh = CaptureMesh::new("capture-source", &["node-a", "node-b"]);
    let client = mesh.pod("node-a", "client", "sleep", Membership::Captured);
    let outside = mesh.pod("node-a", "outside", "none", Membership::Outside);
    let server = mesh.pod("node-b", "server", "echo", Membership::Captured);
    mesh.write_config();
    // Dual-stack, so IPv4 and IPv6 clients reach the same app (IPv4 ones as mapped addresses).
    let app = serve_in(&server, SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 8080));
    let za = mesh.start_ztunnel("node-a");
    let zb = mesh.start_ztunnel("node-b");
    let logs = || format!("node-a ztunnel:\n{}\nnode-b ztunnel:\n{}", za.stdout(), zb.stdout());

    let cases = [
        ("HBONE over IPv4", &client, SocketAddr::new(IpAddr::V4(server.ip()), 8080), IpAddr::V4(client.ip())),
        ("HBONE over IPv6", &client, SocketAddr::new(IpAddr::V6(server.ip6()), 8080), IpAddr::V6(client.ip6())),
        ("plaintext over IPv4", &outside, SocketAddr::new(IpAddr::V4(server.ip()), 8080), IpAddr::V4(outside.ip())),
        ("plaintext over IPv6", &outside, SocketAddr::new(IpAddr::V6(server.ip6()), 8080), IpAddr::V6(outside.ip6())),
    ];
    for (what, from, dst, want) in cases {
        // A megabyte both ways: the app's answers find their way back to ztunnel.
        let report = connect_from(from, dst, MIB, 10);
        assert!(report.echoed_intact, "{what}: {} -> {dst}:\n{}\n{}", from.name(), report.raw, logs());
        let peers = accepted_peers(&app);
        assert_eq!(
            peers.last().map(|p| p.ip()),
            Some(want),
            "{what}: the app must see the client's address: {peers:?}"
        );
    }
    let hbone_in = [("reporter", "destination"), ("source_workload", "client"), ("destination_workload", "server")];
    mesh.wait_metric("node-b", "istio_tcp_connections_closed_total", &hbone_in, 2);
    let plain_in = [("reporter", "destination"), ("connection_security_policy", "unknown")];
    mesh.wait_metric("node-b", "istio_tcp_connections_closed_total", &plain_in, 2);

    // A connection the app refuses still fails at once (the reset comes back to ztunnel too).
    for dst in [SocketAddr::new(IpAddr::V4(server.ip()), 8099), SocketAddr::new(IpAddr::V6(server.ip6()), 8099)] {
        let started = std::time::Instant::now();
        let report = connect_from(&outside, dst, 1024, 10);
        assert!(!report.echoed_intact, "nothing listens on {dst}:\n{}", report.raw);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "refusal to {dst} took {:?}", started.elapsed());
    }
}
