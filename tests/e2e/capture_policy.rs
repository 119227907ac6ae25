//! Authorization of captured plaintext (port 15006) with real traffic in network namespaces:
//! under STRICT mTLS a pod outside the mesh is reset before its bytes reach the app while a
//! captured pod's HBONE traffic passes; switching to PERMISSIVE lets the plaintext through.
//! Runs as root; skips otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ztunnel_tests::capture_mesh::{CaptureMesh, Membership, accepted_peers, connect_from, serve_in};
use ztunnel_tests::mesh::metric_sum;
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
    let mut got = 0;
    for _ in 0..50 {
        got = metric_sum(&mesh.metrics("node-b"), "istio_authorization_denied_connections_total", &denied);
        if got == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, 1, "the plaintext refusal is counted under the STRICT policy:\n{}", mesh.metrics("node-b"));
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
