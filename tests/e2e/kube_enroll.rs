//! Kubernetes enrollment end to end: namespaced nodes and pods, the real `ztunnel` binary with
//! `--kubernetes --kubeconfig` on each node, and the test API server holding the pods. A
//! namespace labelled `istio.io/dataplane-mode=ambient` gets its running pods captured (HBONE
//! between nodes, seen in both ztunnels' metrics) and annotated; opted-out, host-network and
//! sidecar pods are skipped; unlabelling releases them (direct again, annotation removed); a
//! deleted pod is cleaned up; an API-server outage changes nothing captured and a label change
//! made meanwhile applies once it is back. Runs as root; skips otherwise.
//!
//! The API server listens on the host's 127.0.0.1; each node reaches it on its own
//! 127.0.0.1 with the same port through `testapp relay` (TCP in the node's namespace to a unix
//! socket) and a relay in the test (unix socket to the server), so one kubeconfig serves all.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::net::{TcpStream, UnixListener};
use ztunnel_tests::capture_mesh::{CaptureMesh, Membership, connect_from, env_testapp, serve_in};
use ztunnel_tests::kube_api::{self, KubeApiServer};
use ztunnel_tests::netns::{ProcGuard, require_root};
use ztunnel_tests::wait::eventually_blocking;

const NS: &str = "shop";
const AMBIENT: &str = "istio.io/dataplane-mode";
const REDIRECTION: &str = "ambient.istio.io/redirection";

/// Relays connections on the unix socket `path` to `server` (stops with the runtime).
fn relay_to_server(runtime: &tokio::runtime::Runtime, path: &Path, server: SocketAddr) {
    let listener = {
        let _entered = runtime.enter();
        UnixListener::bind(path).expect("bind the relay socket")
    };
    runtime.spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut tcp) = TcpStream::connect(server).await {
                    let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
                }
            });
        }
    });
}

fn annotation(server: &KubeApiServer, name: &str) -> Option<String> {
    let pod = server.pod(NS, name)?;
    pod.metadata.annotations?.get(REDIRECTION).cloned()
}

fn enrolled(mesh: &CaptureMesh, node: &str) -> String {
    let out = mesh.ztunnel_cli(node, &["pods"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn api_pod(mesh: &CaptureMesh, name: &str, change: impl FnOnce(&mut Pod)) -> Pod {
    let p = mesh.pods.iter().find(|p| p.pod.name() == name).expect("pod in the mesh");
    let mut pod = kube_api::pod(NS, name, p.pod.node_name(), &p.pod.ip().to_string());
    pod.metadata.uid = Some(format!("uid-{name}"));
    if let Some(status) = pod.status.as_mut() {
        status
            .pod_ips
            .get_or_insert_with(Vec::new)
            .push(k8s_openapi::api::core::v1::PodIP { ip: p.pod.ip6().to_string() });
    }
    change(&mut pod);
    pod
}

#[test]
fn namespace_label_enrolls_running_pods_and_survives_an_api_outage() {
    if !require_root("namespace_label_enrolls_running_pods_and_survives_an_api_outage") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut mesh = CaptureMesh::new("kube-enroll", &["node-a", "node-b"]);
    let client = mesh.pod("node-a", "client", "sleep", Membership::Listed);
    let far = mesh.pod("node-b", "far", "far", Membership::Listed);
    let optout = mesh.pod("node-b", "optout", "optout", Membership::Listed);
    let sidecar = mesh.pod("node-b", "sidecar", "sidecar", Membership::Listed);
    let late = mesh.pod("node-a", "late", "late", Membership::Listed);
    for p in &mut mesh.pods {
        p.namespace = NS.into();
    }
    // Workload uids as istiod names pods (`<cluster>//Pod/<namespace>/<name>`).
    let config = mesh.render().replace("cluster1//v1/Pod/", "cluster1//Pod/");
    ztunnel_tests::mesh::write_atomically(&mesh.config_path(), &config);

    let server = runtime.block_on(KubeApiServer::start(mesh.dir.path()));
    let port = server.addr().port();
    server.create_namespace(kube_api::namespace(NS, &[])).unwrap();
    server.create_namespace(kube_api::namespace("istio-system", &[])).unwrap();
    server.create_pod(api_pod(&mesh, "client", |_| {})).unwrap();
    server.create_pod(api_pod(&mesh, "far", |_| {})).unwrap();
    server
        .create_pod(api_pod(&mesh, "optout", |p| {
            p.metadata.labels = Some([(AMBIENT.to_string(), "none".to_string())].into());
        }))
        .unwrap();
    server
        .create_pod(api_pod(&mesh, "sidecar", |p| {
            p.metadata.annotations = Some([("sidecar.istio.io/status".to_string(), "{}".to_string())].into());
        }))
        .unwrap();
    // A host-network pod of node-b whose address is node-b's own: never captured.
    let node_b_ip = mesh.node("node-b").ip().to_string();
    let mut host = kube_api::pod(NS, "hostnet", "node-b", &node_b_ip);
    host.spec.as_mut().unwrap().host_network = Some(true);
    server.create_pod(host).unwrap();

    let any = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let _client_server = serve_in(&client, any(8080));
    let _far_server = serve_in(&far, any(8080));
    let _optout_server = serve_in(&optout, any(8080));
    let _sidecar_server = serve_in(&sidecar, any(8080));
    let _late_server = serve_in(&late, any(8080));
    // `late` is being created: the API shows it pending, without an address yet.
    server
        .create_pod(api_pod(&mesh, "late", |p| {
            p.status =
                Some(k8s_openapi::api::core::v1::PodStatus { phase: Some("Pending".into()), ..Default::default() });
        }))
        .unwrap();

    let app = env_testapp();
    let mut relays: Vec<ProcGuard> = Vec::new();
    let mut ztunnels = Vec::new();
    for node in ["node-a", "node-b"] {
        let socket = mesh.dir.path().join(format!("kube-{node}.sock"));
        relay_to_server(&runtime, &socket, server.addr());
        let listen = format!("127.0.0.1:{port}");
        let mut relay = mesh.node(node).spawn(&[app.to_str().unwrap(), "relay", &listen, socket.to_str().unwrap()]);
        relay.wait_for_stdout("listening", Duration::from_secs(10)).expect("relay in the node listens");
        relays.push(relay);
        let plugin_socket = mesh.dir.path().join(format!("plugin-{node}/pluginevent.sock"));
        let extra = [
            "--kubernetes",
            "--kubeconfig",
            server.kubeconfig_path().to_str().unwrap(),
            "--plugin-event-socket",
            plugin_socket.to_str().unwrap(),
            "--cluster-id",
            "cluster1",
        ];
        ztunnels.push(mesh.start_ztunnel_with_args(node, &ztunnel_tests::process::ztunnel_binary(), &extra));
    }
    let logs =
        || ztunnels.iter().map(|z| format!("{}\n{}", z.stdout(), z.stderr())).collect::<Vec<_>>().join("\n----\n");

    // Nothing is ambient yet: nothing enrolled, traffic is direct.
    let report = connect_from(&client, SocketAddr::new(IpAddr::V4(far.ip()), 8080), 4096, 10);
    assert!(report.echoed_intact, "direct before the label:\n{}", report.raw);
    assert!(!enrolled(&mesh, "node-a").contains("client"), "{}", enrolled(&mesh, "node-a"));

    // Label the namespace: the running pods are captured and annotated.
    server.set_namespace_labels(NS, &[(AMBIENT, Some("ambient"))]).unwrap();
    let within = Duration::from_secs(15);
    eventually_blocking("client and far are enrolled", within, || {
        enrolled(&mesh, "node-a").contains("cluster1//Pod/shop/client")
            && enrolled(&mesh, "node-b").contains("cluster1//Pod/shop/far")
    });
    eventually_blocking("both pods are annotated enabled", within, || {
        annotation(&server, "client").as_deref() == Some("enabled")
            && annotation(&server, "far").as_deref() == Some("enabled")
    });
    let report = connect_from(&client, SocketAddr::new(IpAddr::V4(far.ip()), 8080), 64 * 1024, 10);
    assert!(report.echoed_intact, "client -> far through the mesh:\n{}\n{}", report.raw, logs());
    let out = [("reporter", "source"), ("source_workload", "client"), ("connection_security_policy", "mutual_tls")];
    mesh.wait_metric("node-a", "istio_tcp_connections_closed_total", &out, 1);
    let inbound = [("reporter", "destination"), ("source_workload", "client"), ("destination_workload", "far")];
    mesh.wait_metric("node-b", "istio_tcp_connections_closed_total", &inbound, 1);
    let node_b = enrolled(&mesh, "node-b");
    for skipped in ["optout", "sidecar", "hostnet"] {
        assert!(!node_b.contains(&format!("/{skipped}")), "{skipped} must not be enrolled: {node_b}");
        assert_eq!(annotation(&server, skipped), None, "{skipped} must not be annotated");
    }

    // The CNI plugin announces `late`: it is captured before the answer, and stays captured
    // while the API still shows it pending; once it runs, it is annotated.
    let added = ztunnel::kubernetes::cni_event::PodAdded {
        pod_uid: "uid-late".into(),
        pod_name: "late".into(),
        pod_namespace: NS.into(),
        netns: late.netns_path(),
        container_id: "sandbox-late".into(),
        ips: vec![IpAddr::V4(late.ip()), IpAddr::V6(late.ip6())],
    };
    let plugin_socket = mesh.dir.path().join("plugin-node-a/pluginevent.sock");
    let answer = runtime.block_on(ztunnel::kubernetes::plugin_events::send_event(&plugin_socket, &added)).unwrap();
    assert!(answer.ok, "plugin event for late: {answer:?}\n{}", logs());
    assert!(enrolled(&mesh, "node-a").contains("/late"), "captured before the plugin is answered");
    std::thread::sleep(Duration::from_secs(1));
    assert!(enrolled(&mesh, "node-a").contains("/late"), "a pending pod the plugin enrolled stays enrolled");
    assert_eq!(annotation(&server, "late"), None, "not annotated while pending");
    server.update_pod(api_pod(&mesh, "late", |_| {})).unwrap();
    eventually_blocking("late annotated once running", within, || {
        annotation(&server, "late").as_deref() == Some("enabled")
    });

    // API server down: nothing captured changes; a label removed meanwhile applies after.
    runtime.block_on(server.stop());
    std::thread::sleep(Duration::from_secs(2));
    assert!(enrolled(&mesh, "node-b").contains("/far"), "an outage must not release far");
    server.set_namespace_labels(NS, &[(AMBIENT, None)]).unwrap();
    server.set_pod_labels(NS, "far", &[(AMBIENT, Some("ambient"))]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(enrolled(&mesh, "node-a").contains("/client"), "the change is not seen while the API is down");
    runtime.block_on(server.restart());
    eventually_blocking("client released after the API server is back", Duration::from_secs(30), || {
        !enrolled(&mesh, "node-a").contains("/client")
    });
    eventually_blocking("client's annotation removed", within, || annotation(&server, "client").is_none());
    assert!(enrolled(&mesh, "node-b").contains("/far"), "far asks for ambient itself: still enrolled");

    // Released client: its traffic leaves directly (far sees client's own address, no HBONE).
    let before = ztunnel_tests::mesh::metric_sum(&mesh.metrics("node-a"), "istio_tcp_connections_opened_total", &out);
    let report = connect_from(&client, SocketAddr::new(IpAddr::V4(far.ip()), 8080), 4096, 10);
    assert!(report.echoed_intact, "client -> far after release:\n{}", report.raw);
    let after = ztunnel_tests::mesh::metric_sum(&mesh.metrics("node-a"), "istio_tcp_connections_opened_total", &out);
    assert_eq!(before, after, "a released pod's connection must not go through node-a's ztunnel");

    // Deleting far's pod cleans it up.
    server.delete_pod(NS, "far").unwrap();
    eventually_blocking("far cleaned up after deletion", within, || !enrolled(&mesh, "node-b").contains("/far"));
    drop(ztunnels);
    drop(relays);
}
