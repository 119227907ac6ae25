//! Capture settings end to end, on namespaced nodes with the real binary: an application
//! dialling an IPv4 pod through an AF_INET6 socket (`::ffff:a.b.c.d`, Java's default) goes
//! through HBONE and sees the address it dialled; Istio's exclusion annotations in a pod's
//! capture block keep the named outbound ports and networks and inbound ports out of capture
//! (and `ambient.istio.io/bypass-inbound-capture` all inbound), per pod; and the mesh works
//! with a `--socket-mark` other than the default. Runs as root; skips otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ztunnel_tests::capture_mesh::{CaptureMesh, Membership, connect_from, serve_in};
use ztunnel_tests::mesh::metric_sum;
use ztunnel_tests::netns::require_root;
use ztunnel_tests::process::ztunnel_binary;

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

#[test]
fn a_dual_stack_socket_dialling_a_mapped_pod_address_goes_through_hbone() {
    if !require_root("a_dual_stack_socket_dialling_a_mapped_pod_address_goes_through_hbone") {
        return;
    }
    let mut mesh = CaptureMesh::new("capconf-mapped", &["node-a", "node-b"]);
    let client = mesh.pod("node-a", "client", "sleep", Membership::Captured);
    let far = mesh.pod("node-b", "far", "far", Membership::Captured);
    mesh.write_config();
    let _server = serve_in(&far, SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8080));
    let za = mesh.start_ztunnel("node-a");
    let zb = mesh.start_ztunnel("node-b");

    // `[::ffff:a.b.c.d]:port` makes the test app use an AF_INET6 socket.
    let dst = SocketAddr::new(IpAddr::V6(far.ip().to_ipv6_mapped()), 8080);
    let report = connect_from(&client, dst, 256 * 1024, 10);
    assert!(
        report.echoed_intact,
        "client -> {dst} through the mesh:\n{}\nnode-a:\n{}\nnode-b:\n{}",
        report.raw,
        za.stdout(),
        zb.stdout()
    );
    assert_eq!(report.peer, Some(dst), "getpeername must show the mapped address dialled:\n{}", report.raw);
    let hbone = [
        ("reporter", "destination"),
        ("source_workload", "client"),
        ("destination_workload", "far"),
        ("connection_security_policy", "mutual_tls"),
    ];
    mesh.wait_metric("node-b", "istio_tcp_connections_closed_total", &hbone, 1);
    let source = [("reporter", "source"), ("source_workload", "client"), ("destination_workload", "far")];
    mesh.wait_metric("node-a", "istio_tcp_connections_closed_total", &source, 1);
}

#[test]
fn exclusion_annotations_and_a_custom_socket_mark_work_end_to_end() {
    if !require_root("exclusion_annotations_and_a_custom_socket_mark_work_end_to_end") {
        return;
    }
    let mut mesh = CaptureMesh::new("capconf-exclude", &["node-a", "node-b"]);
    let client = mesh.pod("node-a", "client", "sleep", Membership::Captured);
    let peer = mesh.pod("node-a", "peer", "peer", Membership::Captured);
    let plain = mesh.pod("node-a", "plain", "plain", Membership::Outside);
    let server = mesh.pod("node-b", "server", "server", Membership::Captured);
    let ingress = mesh.pod("node-b", "ingress", "ingress", Membership::Captured);
    let outside = mesh.pod("node-b", "outside", "none", Membership::Outside);
    let excluded_host = mesh.pod("node-b", "excluded-host", "none", Membership::Outside);
    mesh.annotate("client", "traffic.sidecar.istio.io/excludeOutboundPorts", "9090, 9091");
    mesh.annotate("client", "traffic.sidecar.istio.io/excludeOutboundIPRanges", &format!("{}/32", excluded_host.ip()));
    mesh.annotate("server", "traffic.sidecar.istio.io/excludeInboundPorts", "9091");
    mesh.annotate("ingress", "ambient.istio.io/bypass-inbound-capture", "true");
    mesh.write_config();
    let any = |port| at(Ipv4Addr::UNSPECIFIED, port);
    let _servers = [
        serve_in(&outside, any(8080)),
        serve_in(&outside, any(9090)),
        serve_in(&excluded_host, any(8080)),
        serve_in(&server, any(8080)),
        serve_in(&server, any(9091)),
        serve_in(&ingress, any(8080)),
    ];
    let binary = ztunnel_binary();
    let _za = mesh.start_ztunnel_with_args("node-a", &binary, &["--socket-mark", "0x1f00"]);
    let _zb = mesh.start_ztunnel_with_args("node-b", &binary, &["--socket-mark", "0x1f00"]);
    let from_client = [("reporter", "source"), ("source_workload", "client")];
    let opened =
        |mesh: &CaptureMesh| metric_sum(&mesh.metrics("node-a"), "istio_tcp_connections_opened_total", &from_client);

    // Outbound: the excluded port and network go direct (node-a never sees them); the same
    // destination on another port is captured (passed through, and counted).
    for (what, dst) in [
        ("an excluded outbound port", at(outside.ip(), 9090)),
        ("an excluded outbound network", at(excluded_host.ip(), 8080)),
    ] {
        let report = connect_from(&client, dst, 4096, 10);
        assert!(report.echoed_intact, "{what}: client -> {dst}:\n{}", report.raw);
        assert_eq!(opened(&mesh), 0, "{what}: {dst} must not be captured:\n{}", mesh.metrics("node-a"));
    }
    let report = connect_from(&client, at(outside.ip(), 8080), 4096, 10);
    assert!(report.echoed_intact, "client -> outside:8080:\n{}", report.raw);
    mesh.wait_metric("node-a", "istio_tcp_connections_opened_total", &from_client, 1);
    // Another pod's exclusions are not this pod's: `peer` is captured on 9090.
    let report = connect_from(&peer, at(outside.ip(), 9090), 4096, 10);
    assert!(report.echoed_intact, "peer -> outside:9090:\n{}", report.raw);
    mesh.wait_metric("node-a", "istio_tcp_connections_opened_total", &[("source_workload", "peer")], 1);

    // Inbound from outside the mesh: the excluded port reaches the app without 15006 (node-b
    // records nothing), the pod's other port is captured; a bypassing pod is not captured.
    let inbound_plaintext = |workload: &str| {
        metric_sum(
            &mesh.metrics("node-b"),
            "istio_tcp_connections_opened_total",
            &[("reporter", "destination"), ("destination_workload", workload)],
        )
    };
    for (what, dst) in
        [("an excluded inbound port", at(server.ip(), 9091)), ("bypass-inbound-capture", at(ingress.ip(), 8080))]
    {
        let report = connect_from(&plain, dst, 4096, 10);
        assert!(report.echoed_intact, "{what}: plain -> {dst}:\n{}", report.raw);
    }
    assert_eq!(inbound_plaintext("server"), 0, "the excluded inbound port must bypass 15006");
    assert_eq!(inbound_plaintext("ingress"), 0, "a bypassing pod's inbound must not be captured");
    let report = connect_from(&plain, at(server.ip(), 8080), 4096, 10);
    assert!(report.echoed_intact, "plain -> server:8080:\n{}", report.raw);
    mesh.wait_metric(
        "node-b",
        "istio_tcp_connections_opened_total",
        &[("reporter", "destination"), ("destination_workload", "server")],
        1,
    );

    // With the custom socket mark, pods still reach each other through HBONE.
    let report = connect_from(&client, at(server.ip(), 8080), 64 * 1024, 10);
    assert!(report.echoed_intact, "client -> server through the mesh with --socket-mark 0x1f00:\n{}", report.raw);
    let hbone =
        [("reporter", "destination"), ("source_workload", "client"), ("connection_security_policy", "mutual_tls")];
    mesh.wait_metric("node-b", "istio_tcp_connections_closed_total", &hbone, 1);

    // A config change to the annotations applies to the enrolled pod: without its port
    // exclusion, the client's connections to 9090 are captured again.
    let client_entry = mesh.pods.iter_mut().find(|p| p.pod.name() == "client").expect("client pod");
    client_entry.annotations.retain(|(key, _)| key != "traffic.sidecar.istio.io/excludeOutboundPorts");
    mesh.write_config();
    let before = opened(&mesh);
    let captured_again = (0..25).any(|_| {
        let report = connect_from(&client, at(outside.ip(), 9090), 4096, 10);
        assert!(report.echoed_intact, "client -> outside:9090 after the reload:\n{}", report.raw);
        std::thread::sleep(std::time::Duration::from_millis(200));
        opened(&mesh) > before
    });
    assert!(captured_again, "removing the annotation must capture port 9090 again:\n{}", mesh.metrics("node-a"));
}

#[test]
fn a_malformed_exclusion_annotation_is_refused_naming_the_pod_and_annotation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "workloads:\n- uid: cluster1//v1/Pod/default/app\n  name: app\n  namespace: default\n  \
                  workloadIps: [\"10.0.0.1\"]\n  node: node-a\n  protocol: HBONE\n  capture:\n    netns: /proc/1/ns/net\n    \
                  cgroup: /sys/fs/cgroup\n    annotations:\n      traffic.sidecar.istio.io/excludeOutboundPorts: \"80,http\"\n";
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, config).expect("write config");
    let out = std::process::Command::new(ztunnel_binary())
        .args(["proxy", "--config", path.to_str().unwrap(), "--node", "node-a", "--state-dir"])
        .arg(dir.path().join("state"))
        .args(["--socks5-addr", "off", "--admin-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .args(["--readiness-addr", "127.0.0.1:0"])
        .output()
        .expect("run ztunnel");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a bad annotation must stop ztunnel from starting:\n{text}");
    for expected in
        ["capture.annotations", "pod default/app", "traffic.sidecar.istio.io/excludeOutboundPorts", "\"http\""]
    {
        assert!(text.contains(expected), "the error must name {expected:?}:\n{text}");
    }
}
