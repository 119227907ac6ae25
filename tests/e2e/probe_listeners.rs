//! Readiness (15021) and metrics (15020) answer over IPv4 and IPv6, as kubelet probes and
//! Prometheus scrapes reach them over either family, while admin (15000) stays on localhost.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ztunnel_tests::netns::{Node, Topology, require_root};
use ztunnel_tests::process::ztunnel_binary;
use ztunnel_tests::{Mesh, http_get};

const PROBES: [(u16, &str); 3] = [(15021, "/healthz/ready"), (15020, "/metrics"), (15020, "/stats/prometheus")];

/// In-process, on ephemeral ports: `[::]` listeners answer on 127.0.0.1 and on ::1.
#[tokio::test]
async fn wildcard_metrics_and_readiness_answer_over_ipv4_and_ipv6() {
    let mut mesh = Mesh::new();
    mesh.workload("web", "default", "web", 20, "node-a", true);
    mesh.write_config();
    let mut config = mesh.node_config("node-a");
    config.metrics_addr = "[::]:0".parse().unwrap();
    config.readiness_addr = "[::]:0".parse().unwrap();
    let node = mesh.start_with(config).await;
    let addrs = node.addrs();
    for loopback in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        for (port, path) in [
            (addrs.readiness.port(), "/healthz/ready"),
            (addrs.metrics.port(), "/metrics"),
            (addrs.metrics.port(), "/stats/prometheus"),
        ] {
            let addr = SocketAddr::new(loopback, port);
            match http_get(addr, path).await {
                Ok((200, _)) => {}
                other => panic!("GET {path} on {addr} must answer 200, got {other:?}"),
            }
        }
    }
    assert_eq!(addrs.admin.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "admin listens on localhost only");
    node.shutdown().await;
}

/// Waits (bounded, 10 s) until readiness answers on 127.0.0.1 inside the node.
async fn wait_ready(node: &Arc<Node>) -> bool {
    for _ in 0..100 {
        let n = node.clone();
        let probe = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15021);
        if let Ok(Ok((200, _))) = tokio::task::spawn_blocking(move || n.http_get(probe, "/healthz/ready")).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `GET path` on `addr` from inside the node with curl.
async fn get(node: &Arc<Node>, addr: SocketAddr, path: &'static str) -> anyhow::Result<(u16, String)> {
    let n = node.clone();
    tokio::task::spawn_blocking(move || n.http_get(addr, path)).await.unwrap()
}

/// The real binary with its default listen addresses inside a node's network namespace, so
/// the well-known ports are free and the node's own addresses can be probed; one node has IPv6
/// switched off (`disable_ipv6`), as some clusters do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_listeners_answer_probes_on_every_address_and_admin_stays_on_localhost() {
    let test = "default_listeners_answer_probes_on_every_address_and_admin_stays_on_localhost";
    if !require_root(test) {
        return;
    }
    let mut mesh = Mesh::new();
    mesh.workload("web", "default", "web", 20, "elsewhere", true);
    mesh.write_config();
    let topology = Topology::new(test);
    let dual = Arc::new(topology.add_node("dual"));
    let v4_only = Arc::new(topology.add_node("v4only"));
    let off =
        ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.lo.disable_ipv6=1"];
    let out = v4_only.run(&[&["sysctl", "-q", "-w"][..], &off[..]].concat());
    assert!(out.status.success(), "disabling IPv6: {}", String::from_utf8_lossy(&out.stderr));

    let binary = ztunnel_binary();
    let (config, ca) = (mesh.config_path(), mesh.ca_dir());
    let args = |node: &str| -> Vec<String> {
        [binary.to_str().unwrap(), "proxy", "--config", config.to_str().unwrap(), "--node", node]
            .into_iter()
            .chain(["--state-dir", ca.to_str().unwrap(), "--log-level", "warn"])
            .map(String::from)
            .collect()
    };
    let mut procs = Vec::new();
    for node in [&dual, &v4_only] {
        let argv = args(node.name());
        let proc = node.spawn(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        if !wait_ready(node).await {
            panic!("ztunnel in {} did not answer 127.0.0.1:15021 within 10 s: {}", node.netns_name(), proc.stderr());
        }
        procs.push(proc);
    }

    let mut addresses = vec![
        (dual.clone(), IpAddr::V4(Ipv4Addr::LOCALHOST)),
        (dual.clone(), IpAddr::V6(Ipv6Addr::LOCALHOST)),
        (dual.clone(), IpAddr::V4(dual.ip())),
        (dual.clone(), IpAddr::V6(dual.ip6())),
    ];
    addresses.extend([IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(v4_only.ip())].map(|ip| (v4_only.clone(), ip)));
    for (node, ip) in &addresses {
        for (port, path) in PROBES {
            let addr = SocketAddr::new(*ip, port);
            match get(node, addr, path).await {
                Ok((200, _)) => {}
                other => panic!("GET {path} on {addr} in {} must answer 200, got {other:?}", node.netns_name()),
            }
        }
    }

    // Admin answers on 127.0.0.1 only: not on the node's addresses, not on ::1.
    let admin = |ip: IpAddr| SocketAddr::new(ip, 15000);
    let local = get(&dual, admin(IpAddr::V4(Ipv4Addr::LOCALHOST)), "/config_dump").await;
    assert!(matches!(local, Ok((200, _))), "admin answers on 127.0.0.1: {local:?}");
    for ip in [IpAddr::V4(dual.ip()), IpAddr::V6(dual.ip6()), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        let reached = get(&dual, admin(ip), "/config_dump").await;
        let refused = reached.as_ref().is_err_and(|e| format!("{e:#}").contains("curl: (7)"));
        assert!(refused, "nothing may listen for admin on {}: {reached:?}", admin(ip));
    }
    drop(procs);
}
