//! The real binary with a local config file that changes under it: a file that would cost the
//! YAML parser minutes is refused at once while traffic keeps flowing, a FIFO at the path
//! neither hangs the reload nor SIGTERM, and a workload dropped from the file is logged.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ztunnel_tests::mesh::write_atomically;
use ztunnel_tests::process::{ChildGuard, node_command, spawn_ready, spawn_ready_node, ztunnel_binary};
use ztunnel_tests::wait::until_ok;
use ztunnel_tests::{Mesh, echo_server, http_get, socks5_echo};

const WAIT: Duration = Duration::from_secs(10);

/// One echo round trip through the node's SOCKS5 entry, bounded.
async fn echo(socks: SocketAddr, client: IpAddr, dst: SocketAddr) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(5), socks5_echo(socks, client, dst))
        .await
        .map_err(|_| anyhow::anyhow!("echo through {socks} to {dst} timed out"))?
}

/// The `localConfig` reload status from `/config_dump`.
async fn reload_status(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(admin, "/config_dump").await.expect("config_dump answers");
    assert_eq!(status, 200, "config_dump answered {status}: {body}");
    let dump: serde_json::Value = serde_json::from_str(&body).expect("config_dump is JSON");
    dump["localConfig"].clone()
}

/// Polls the reload status (bounded) until `done` holds; returns it.
async fn wait_reload(admin: SocketAddr, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    until_ok(what, WAIT, || async {
        let status = reload_status(admin).await;
        if done(&status) { Ok(status) } else { Err(format!("reload status: {status}")) }
    })
    .await
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat has a command").1.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (in clock ticks of 1/100 s).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Two workloads on `node-a`, served by the real binary with SOCKS5 as the traffic entry.
struct Node {
    mesh: Mesh,
    child: ChildGuard,
    client: IpAddr,
    app: SocketAddr,
    socks: SocketAddr,
    admin: SocketAddr,
}

/// With `log`, the binary's log (written to stdout) goes to that file.
async fn start_node(log: Option<std::fs::File>) -> Node {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let web = mesh.workload("web", "default", "web", 20, "node-a", true);
    mesh.write_config();
    let ip = mesh.subnet.ip(250);
    let socks = SocketAddr::new(ip, 15080);
    let app = echo_server(SocketAddr::new(web, 8080)).await;
    let extra = ["--socks5-addr", &socks.to_string(), "--config-poll-interval", "100ms"];
    let child = match log {
        None => spawn_ready_node(&mesh, "node-a", ip, &extra).await,
        Some(log) => {
            let mut cmd = node_command(&mesh, "node-a", ip, &extra);
            cmd.stdout(Stdio::from(log));
            spawn_ready(cmd, SocketAddr::new(ip, 15021), "node-a").await
        }
    };
    let node = Node { mesh, child, client, app, socks, admin: SocketAddr::new(ip, 15000) };
    echo(node.socks, node.client, node.app).await.expect("traffic flows before the change");
    node
}

/// 200 KB of nested flow lists, the shape that makes the YAML scanner's cost grow with the
/// square of the nesting (about a minute of CPU for the old reader).
fn nested_lists() -> String {
    format!("workloads: {}", "[a, ".repeat(50 * 1024))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_brackets_are_refused_quickly_while_traffic_keeps_flowing() {
    let node = start_node(None).await;
    let cpu_before = cpu_time(node.child.pid());
    let started = Instant::now();
    write_atomically(&node.mesh.config_path(), &nested_lists());

    // Parallel requests while the change is read, checked and refused.
    let (mut sent, mut failed) = (0, Vec::new());
    loop {
        let round = (0..23).map(|_| echo(node.socks, node.client, node.app));
        for result in futures_util::future::join_all(round).await {
            sent += 1;
            if let Err(e) = result {
                failed.push(e.to_string());
            }
        }
        let rejected = reload_status(node.admin).await["rejected"].as_u64() == Some(1);
        if (rejected && sent >= 46) || started.elapsed() > WAIT {
            break;
        }
    }
    let cpu = cpu_time(node.child.pid()).saturating_sub(cpu_before);
    println!("{:?}: {cpu:?} of CPU; {sent} requests, {} failed", started.elapsed(), failed.len());
    let status = wait_reload(node.admin, "the nested file to be refused", |s| s["rejected"] == 1).await;
    let refused_after = started.elapsed();
    let error = status["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains("config.yaml") && error.contains("nest deeper than 32 levels") && error.contains("line 1"),
        "the refusal names the file, the limit and where: {status}"
    );
    assert!(failed.is_empty(), "{} of {sent} requests failed during the reload: {failed:?}", failed.len());
    // Settling (500 ms) and polling; the CPU covers all the requests too.
    assert!(refused_after < Duration::from_secs(3), "the nested file was refused only after {refused_after:?}");
    assert!(cpu < Duration::from_secs(3), "the refused change cost {cpu:?} of CPU");
    assert_eq!(status["applied"], 0, "nothing was applied: {status}");
    echo(node.socks, node.client, node.app).await.expect("the previous config keeps serving");
}

fn mkfifo(path: &std::path::Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("run mkfifo");
    assert!(status.success(), "mkfifo {} failed", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_the_config_path_is_refused_and_sigterm_still_stops_ztunnel() {
    let node = start_node(None).await;
    let path = node.mesh.config_path();
    // Made beside the file and renamed over it, as a replacement by rename would be.
    let fifo = path.with_extension("fifo");
    mkfifo(&fifo);
    std::fs::rename(&fifo, &path).expect("rename the FIFO over the config");

    let status = wait_reload(node.admin, "the FIFO to be refused", |s| s["rejected"] == 1).await;
    let error = status["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("FIFO") && error.contains("not a regular file"), "a clear refusal: {status}");
    echo(node.socks, node.client, node.app).await.expect("the previous config keeps serving");

    node.child.terminate();
    let mut child = node.child;
    let exited = tokio::task::spawn_blocking(move || child.wait_timeout(WAIT)).await.unwrap();
    let status = exited.expect("ztunnel must exit after SIGTERM with a FIFO at its config path");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test]
async fn a_fifo_as_the_startup_config_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("local.yaml");
    mkfifo(&fifo);
    let log = dir.path().join("stderr.log");
    let mut cmd = Command::new(ztunnel_binary());
    cmd.args(["proxy", "--config"]).arg(&fifo).args(["--node", "node-a", "--state-dir"]).arg(dir.path().join("ca"));
    for flag in ["--admin-addr", "--metrics-addr", "--readiness-addr"] {
        cmd.args([flag, "127.0.0.1:0"]);
    }
    cmd.stderr(Stdio::from(std::fs::File::create(&log).unwrap())).env("RUST_BACKTRACE", "0");
    let mut child = ChildGuard::spawn(cmd);
    let exited = tokio::task::spawn_blocking(move || child.wait_timeout(WAIT)).await.unwrap();
    let status = exited.expect("ztunnel must not block on a FIFO given as its config");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "a FIFO config must fail the start; stderr: {stderr}");
    assert!(
        stderr.contains("local.yaml") && stderr.contains("FIFO") && stderr.contains("not a regular file"),
        "the error names the file and why: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_workload_from_the_config_logs_a_warning_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ztunnel.log");
    let mut node = start_node(Some(std::fs::File::create(&log).unwrap())).await;
    let web_ip = node.app.ip();
    node.mesh.workloads.retain(|w| w.name != "web");
    node.mesh.write_config();

    let line = until_ok("ztunnel warns about the removed workload", WAIT, || async {
        let text = std::fs::read_to_string(&log).unwrap();
        text.lines().find(|l| l.contains("removed from the local config")).map(str::to_string).ok_or(text)
    })
    .await;
    assert!(
        line.contains("WARN")
            && line.contains("default/web")
            && line.contains(&web_ip.to_string())
            && line.contains("plaintext"),
        "the warning names the pod, its address and what happens to its traffic: {line}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("default/client"), "a kept workload is not reported: {text}");
}
