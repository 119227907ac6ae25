//! Recovery without failing open: a ztunnel restarted while istiod is slow keeps its captured
//! pods captured and refusing until xDS has synced (no connection escapes capture meanwhile),
//! then serves them again and releases a pod whose namespace went away; a pod whose listener
//! port is taken is held, refusing, with readiness down, and is served once the port frees;
//! the same for a host-mode HBONE listener whose address is taken. The capture tests run as
//! root and skip otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ztunnel::capture::netns::NetnsWorker;
use ztunnel::pods::records::pod_key;
use ztunnel::telemetry::LogHandle;
use ztunnel::xds::testing::{FakeIstiod, FakeWorkload};
use ztunnel_tests::capture_mesh::{CaptureMesh, Membership, accepted_peers, connect_from, serve_in};
use ztunnel_tests::mesh::metric_sum;
use ztunnel_tests::netns::{Node, Pod, require_root};
use ztunnel_tests::process::ztunnel_binary;
use ztunnel_tests::wait::{eventually, eventually_blocking};
use ztunnel_tests::{Mesh, MeshNode, echo_server, http_get};

const NODE: &str = "node-a";

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn uid(pod: &Pod) -> String {
    format!("Kubernetes//Pod/default/{}", pod.name())
}

/// The pod as istiod describes it: an HBONE workload on its node.
fn workload(pod: &Pod) -> FakeWorkload {
    FakeWorkload {
        uid: uid(pod),
        name: pod.name().into(),
        namespace: "default".into(),
        service_account: pod.name().into(),
        ips: vec![IpAddr::V4(pod.ip()), IpAddr::V6(pod.ip6())],
        node: pod.node_name().into(),
        hbone: true,
        services: Vec::new(),
    }
}

/// A fake istiod listening on 127.0.0.1 inside `node`'s namespace, where its ztunnel runs.
fn istiod_in(node: &Node, dir: &Path, rt: &tokio::runtime::Runtime) -> FakeIstiod {
    let worker = NetnsWorker::start(&node.netns_path()).expect("enter the node's namespace");
    let _entered = rt.enter();
    let bind = || {
        let listener = rt
            .block_on(worker.run(|| std::net::TcpListener::bind("127.0.0.1:0")))
            .expect("node namespace worker")
            .expect("bind fake istiod in the node's namespace");
        listener.set_nonblocking(true).expect("non-blocking listener");
        tokio::net::TcpListener::from_std(listener).expect("tokio listener")
    };
    let (xds, ca) = (bind(), bind());
    rt.block_on(FakeIstiod::start_on(dir, xds, ca))
}

/// Arguments that make a ztunnel take config and certificates from `istiod`.
fn istiod_args(istiod: &FakeIstiod) -> Vec<String> {
    let (xds, ca, me) = (istiod.xds_settings(), istiod.ca_settings(), istiod.identity(&format!("ztunnel-{NODE}")));
    [
        ("--xds-address", xds.address),
        ("--xds-root-ca", xds.root_ca.display().to_string()),
        ("--ca-address", ca.address),
        ("--ca-root-ca", ca.root_ca.display().to_string()),
        ("--token-file", me.token_file.display().to_string()),
        ("--pod-name", me.pod_name),
        ("--pod-namespace", me.pod_namespace),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

fn enroll(mesh: &CaptureMesh, pod: &Pod) {
    let netns = pod.netns_path();
    let args = ["enroll", "--uid", &uid(pod), "--netns", netns.to_str().unwrap()];
    let out = mesh.ztunnel_cli(NODE, &args);
    assert!(out.status.success(), "enrolling {}: {}", pod.name(), String::from_utf8_lossy(&out.stderr));
}

/// Waits (bounded by `limit`) until `node`'s readiness endpoint answers at all; its status.
fn wait_readiness_answers(mesh: &CaptureMesh, limit: Duration) -> u16 {
    let mut status = None;
    eventually_blocking("the readiness endpoint answers", limit, || {
        status = mesh.readiness(NODE);
        status.is_some()
    });
    status.expect("checked above")
}

#[test]
fn restart_keeps_pods_captured_and_refusing_until_istiod_has_synced() {
    if !require_root("restart_keeps_pods_captured_and_refusing_until_istiod_has_synced") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut mesh = CaptureMesh::new("cap-restart", &[NODE]);
    // Membership only shapes the (unused) config file: enrollment goes through the control socket.
    let client = mesh.pod(NODE, "client", "client", Membership::Outside);
    let server = mesh.pod(NODE, "server", "server", Membership::Outside);
    let doomed = mesh.pod(NODE, "doomed", "doomed", Membership::Outside);
    let outside = mesh.pod(NODE, "outside", "outside", Membership::Outside);
    let istiod = istiod_in(mesh.node(NODE), mesh.dir.path(), &rt);
    istiod.push([&client, &server, &doomed].iter().map(|p| workload(p).resource()).collect());
    let app = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 8080));
    let unmeshed = serve_in(&outside, at(Ipv4Addr::UNSPECIFIED, 8080));
    let (to_server, to_outside) = (at(server.ip(), 8080), at(outside.ip(), 8080));

    let source = istiod_args(&istiod);
    let mut first = mesh.spawn_ztunnel(NODE, &ztunnel_binary(), &source);
    mesh.wait_ready(NODE, &mut first);
    for pod in [&client, &server, &doomed] {
        enroll(&mesh, pod);
    }
    let report = connect_from(&client, to_server, 4096, 10);
    assert!(report.echoed_intact, "baseline client -> server through the mesh:\n{}", report.raw);

    // Restart while istiod is slow to answer; meanwhile one pod's namespace goes away.
    first.kill();
    doomed.delete_netns();
    istiod.hold_responses(true);
    let mut second = mesh.spawn_ztunnel(NODE, &ztunnel_binary(), &source);
    rt.block_on(istiod.wait_request("the restarted ztunnel's first xDS request", |r| r.stream >= 2));
    let (app_seen, unmeshed_seen) = (accepted_peers(&app).len(), accepted_peers(&unmeshed).len());
    let mut escaped = Vec::new();
    for round in 0..4 {
        let status = wait_readiness_answers(&mesh, Duration::from_secs(10));
        assert_eq!(status, 503, "round {round}: not ready while xDS has not synced:\n{}", second.stdout());
        for (from, to) in [(&client, to_outside), (&client, to_server), (&outside, to_server)] {
            let report = connect_from(from, to, 1024, 2);
            if report.echoed_intact || report.error.is_none() {
                escaped.push(format!("{} -> {to}: {}", from.name(), report.raw));
            }
        }
    }
    let arrived = accepted_peers(&app).len() - app_seen + accepted_peers(&unmeshed).len() - unmeshed_seen;
    assert!(
        escaped.is_empty() && arrived == 0,
        "before sync every connection of a captured pod must be refused; {} succeeded, {arrived} reached an app:\n{}\n\
         ztunnel:\n{}",
        escaped.len(),
        escaped.join("\n"),
        second.stdout()
    );

    // Once istiod answers, the pods are served again: traffic flows through the mesh.
    istiod.hold_responses(false);
    mesh.wait_ready(NODE, &mut second);
    let report = connect_from(&client, to_server, 64 * 1024, 10);
    assert!(report.echoed_intact, "client -> server after sync:\n{}\n{}", report.raw, second.stdout());
    let report = connect_from(&client, to_outside, 4096, 10);
    assert!(report.echoed_intact, "client -> unmeshed after sync:\n{}", report.raw);
    let metrics = mesh.metrics(NODE);
    let meshed = [("reporter", "source"), ("source_workload", "client"), ("destination_workload", "server")];
    assert!(
        metric_sum(&metrics, "istio_tcp_connections_opened_total", &meshed) >= 1,
        "the restarted ztunnel proxied client -> server:\n{metrics}"
    );

    // The pod whose namespace is gone was released: no record, no pinned links.
    let pods = mesh.ztunnel_cli(NODE, &["pods"]);
    let listed = String::from_utf8_lossy(&pods.stdout);
    assert!(
        listed.contains(&uid(&client)) && listed.contains(&uid(&server)) && !listed.contains(&uid(&doomed)),
        "enrolled pods after the restart:\n{listed}"
    );
    let links = mesh.pin_dir(NODE).join("links").join(pod_key(&uid(&doomed)));
    assert!(!links.exists(), "the gone pod's links must be unpinned: {}", links.display());
}

#[test]
fn a_pod_whose_port_is_taken_is_held_until_the_port_frees() {
    if !require_root("a_pod_whose_port_is_taken_is_held_until_the_port_frees") {
        return;
    }
    let mut mesh = CaptureMesh::new("cap-busy", &[NODE]);
    let client = mesh.pod(NODE, "client", "sleep", Membership::Captured);
    let server = mesh.pod(NODE, "server", "echo", Membership::Captured);
    let plain = mesh.pod(NODE, "plain", "plain", Membership::Outside);
    mesh.write_config();
    let app = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 8080));
    // Before the server pod is enrolled, something in it takes ztunnel's HBONE port.
    let squatter = serve_in(&server, at(Ipv4Addr::UNSPECIFIED, 15008));
    let mut z = mesh.spawn_ztunnel(NODE, &ztunnel_binary(), &mesh.local_config_args());

    let to_server = at(server.ip(), 8080);
    // The positive sign: ztunnel has retried the pod's listeners (and failed) twice.
    eventually_blocking("ztunnel retried the held pod's listeners twice", Duration::from_secs(10), || {
        z.stdout().matches("cannot start a captured pod's listeners").count() >= 2
    });
    for round in 0..3 {
        let status = wait_readiness_answers(&mesh, Duration::from_secs(10));
        assert_eq!(status, 503, "round {round}: a pod's listener is missing, so not ready:\n{}", z.stdout());
        let report = connect_from(&plain, to_server, 1024, 2);
        assert!(!report.echoed_intact, "plaintext to the held pod must be refused:\n{}", report.raw);
    }
    assert!(accepted_peers(&app).is_empty(), "nothing may reach the held pod's app: {:?}", accepted_peers(&app));

    drop(squatter);
    mesh.wait_ready(NODE, &mut z);
    let report = connect_from(&client, to_server, 64 * 1024, 10);
    assert!(report.echoed_intact, "client -> server once the port is free:\n{}\n{}", report.raw, z.stdout());
    assert_eq!(accepted_peers(&app).len(), 1, "the app got exactly the meshed connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_hbone_address_is_retried_while_readiness_stays_down() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 1, "node-a", true);
    let server = mesh.workload("server", "default", "echo", 2, "node-b", true);
    let app = echo_server(SocketAddr::new(server, 8080)).await;
    mesh.write_config();
    let squatter = std::net::TcpListener::bind(SocketAddr::new(server, 15008)).expect("take the server's 15008");
    let a = mesh.start_node("node-a").await;
    let log = LogHandle::detached("info").expect("log handle");
    let b = ztunnel::app::start(mesh.node_config("node-b"), log).await.expect("node-b starts");
    let (readiness, admin) = (b.addrs.readiness, b.addrs.admin);
    // The positive sign: node-b has its config and the server's certificate, all it would
    // need to be ready if the listener were not missing.
    eventually("node-b issued the server's certificate", Duration::from_secs(10), || async {
        let Ok((200, body)) = http_get(admin, "/config_dump").await else { return false };
        body.contains("spiffe://cluster.local/ns/default/sa/echo")
    })
    .await;
    for round in 0..3 {
        let (status, body) = http_get(readiness, "/healthz/ready").await.expect("readiness answers");
        assert_eq!(status, 503, "round {round}: the server's hbone listener is missing, so not ready: {body}");
        // Spans at least one retry of the bind.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(squatter);
    let b = MeshNode { running: Some(b) };
    b.wait_ready().await;
    a.echo(client, app).await.expect("client -> server once its hbone address is free");
    b.shutdown().await;
    a.shutdown().await;
}
