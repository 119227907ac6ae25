//! The real binary's admin endpoint: a local user other than root or ztunnel's own may not
//! shut ztunnel down; root may.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ztunnel_tests::netns::require_root;
use ztunnel_tests::process::spawn_ready_node;
use ztunnel_tests::{Mesh, http_get};

/// `curl -X POST <url>` run as `uid` (through `setpriv`); returns the status code.
async fn post_as(uid: u32, url: &str) -> u16 {
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}")).arg("--clear-groups");
    cmd.args(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url]);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .expect("curl ends in time")
        .expect("run setpriv curl");
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    code.trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl as uid {uid}: {code:?} {}", String::from_utf8_lossy(&out.stderr)))
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

async fn ready(readiness: SocketAddr) -> bool {
    matches!(http_get(readiness, "/healthz/ready").await, Ok((200, _)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_from_another_user_is_refused_and_the_process_keeps_running() {
    let test = "quitquitquit_from_another_user_is_refused_and_the_process_keeps_running";
    if !require_root(test) {
        return;
    }
    assert!(
        have("setpriv") && have("curl"),
        "this test runs curl as another user through setpriv; install util-linux and curl"
    );
    let mut mesh = Mesh::new();
    mesh.workload("client", "default", "sleep", 10, "node-a", true);
    mesh.write_config();
    let ip = mesh.subnet.ip(250);
    let addr = |port: u16| SocketAddr::new(ip, port).to_string();
    let mut node = spawn_ready_node(&mesh, "node-a", ip, &["--socks5-addr", &addr(15080)]).await;
    let readiness = SocketAddr::new(ip, 15021);
    let quit = format!("http://{}/quitquitquit", addr(15000));

    assert_eq!(post_as(65534, &quit).await, 403, "uid 65534 must not shut ztunnel down");
    assert!(ready(readiness).await, "ztunnel still answers readiness");
    assert!(node.wait_timeout(Duration::from_millis(300)).is_none(), "ztunnel must keep running");

    assert_eq!(post_as(0, &quit).await, 200, "root may shut ztunnel down");
    let status = tokio::task::spawn_blocking(move || node.wait_timeout(Duration::from_secs(10))).await.unwrap();
    let status = status.expect("ztunnel exits after root's /quitquitquit");
    assert!(status.success(), "exit status after /quitquitquit: {status}");
}
