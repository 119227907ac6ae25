//! Lifecycle: live config reloads (good and bad files) and SIGTERM draining of the real binary
//! (the drain deadline cutting a connection is in `datapath.rs`).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ztunnel_tests::mesh::write_atomically;
use ztunnel_tests::process::{ChildGuard, ztunnel_binary};
use ztunnel_tests::wait::eventually;
use ztunnel_tests::{Mesh, echo_server, http_get, socks5_connect};

async fn round_trip(socks: SocketAddr, client: std::net::IpAddr, dst: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let mut s = socks5_connect(socks, client, dst).await?;
    s.write_all(b"ping").await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).await?;
    Ok(back)
}

/// Polls (bounded) until `cond` holds on the node's config dump.
async fn wait_dump(
    node: &ztunnel_tests::MeshNode,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..100 {
        let dump = node.config_dump().await;
        if cond(&dump) {
            return dump;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("config_dump never showed {what}: {}", node.config_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_applies_good_files_and_keeps_serving_through_bad_ones() {
    let (mut mesh, client, server) = Mesh::client_and_server();
    echo_server(server).await;
    let a = mesh.start_node("node-a").await;
    let _b = mesh.start_node("node-b").await;
    let vip = SocketAddr::new(mesh.subnet.ip(100), 80);

    // Before the reload the VIP is unknown: an address of this host that is no mesh workload,
    // which SOCKS5 refuses (reply 2, not allowed) instead of passing it through.
    let unserved = round_trip(a.socks5(), client, vip).await.expect_err("an unknown VIP must not be served");
    assert!(
        unserved.to_string().contains("socks5 reply code 2"),
        "expected a refused host-local destination, got: {unserved:#}"
    );

    // A good change adds the service; it applies without a restart.
    mesh.service("web", "default", 100, &[(80, 8080)]);
    mesh.endpoint("server", "web", 80, 8080);
    mesh.write_config();
    wait_dump(&a, "the new service", |d| d["services"].as_array().is_some_and(|s| !s.is_empty())).await;
    assert_eq!(round_trip(a.socks5(), client, vip).await.expect("VIP served after reload"), b"ping");

    // A bad change is rejected with the file, entry and field named; the old config keeps serving.
    let good = mesh.render();
    write_atomically(&mesh.config_path(), &good.replacen(&format!("- {client}\n"), "- 300.1.2.3\n", 1));
    let dump = wait_dump(&a, "the rejected reload", |d| d["localConfig"]["lastError"].is_string()).await;
    let error = dump["localConfig"]["lastError"].as_str().unwrap();
    let file = mesh.config_path().display().to_string();
    assert!(
        error.contains(&file) && error.contains("workloads[0]") && error.contains("workloadIps[0]"),
        "error must name file, entry and field: {error}"
    );
    assert_eq!(round_trip(a.socks5(), client, vip).await.expect("old config still serves"), b"ping");

    // Fixing the file recovers.
    write_atomically(&mesh.config_path(), &good);
    wait_dump(&a, "recovery", |d| d["localConfig"]["lastError"].is_null()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_live_transfer_finish_then_exits() {
    let (mesh, client, server) = Mesh::client_and_server();
    let server = echo_server(server).await;
    let _b = mesh.start_node("node-b").await;

    // Node A is the real binary, so SIGTERM is a real signal.
    let ip = mesh.subnet.ip(250);
    let addr = |port: u16| SocketAddr::new(ip, port).to_string();
    let mut cmd = Command::new(ztunnel_binary());
    cmd.args(["proxy", "--config"]).arg(mesh.config_path());
    cmd.args(["--node", "node-a", "--state-dir"]).arg(mesh.ca_dir());
    cmd.args(["--socks5-addr", &addr(15080), "--admin-addr", &addr(15000), "--metrics-addr", &addr(15020)]);
    cmd.args(["--readiness-addr", &addr(15021), "--drain-deadline", "20s", "--log-level", "warn"]);
    let mut node_a = ChildGuard::spawn(cmd);
    let readiness = SocketAddr::new(ip, 15021);
    eventually("the ztunnel binary is ready", Duration::from_secs(10), || async {
        matches!(http_get(readiness, "/healthz/ready").await, Ok((200, _)))
    })
    .await;
    let socks = SocketAddr::new(ip, 15080);

    let mut live = socks5_connect(socks, client, server).await.expect("live connection");
    live.write_all(b"before ").await.unwrap();
    node_a.terminate();
    // Draining: new connections are refused (the SOCKS5 listener is closed), the live one
    // keeps working.
    eventually("the draining ztunnel refuses new connections", Duration::from_secs(5), || async {
        socks5_connect(socks, client, server).await.is_err_and(|e| {
            e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
                    == Some(std::io::ErrorKind::ConnectionRefused)
            })
        })
    })
    .await;
    assert!(node_a.wait_timeout(Duration::from_millis(10)).is_none(), "ztunnel must wait for the live connection");
    live.write_all(b"and after SIGTERM").await.unwrap();
    live.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), live.read_to_end(&mut echoed))
        .await
        .expect("live transfer ends")
        .unwrap();
    assert_eq!(echoed, b"before and after SIGTERM", "the live transfer must finish intact");
    drop(live);
    let status = tokio::task::spawn_blocking(move || node_a.wait_timeout(Duration::from_secs(10))).await.unwrap();
    let status = status.expect("ztunnel exits once its last connection is done, well before the 20 s deadline");
    assert!(status.success(), "ztunnel exit status after drain: {status}");
}
