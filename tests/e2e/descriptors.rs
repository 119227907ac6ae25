//! Descriptor exhaustion: the real binary under a low open-file limit, driven out of
//! descriptors by local clients, must refuse what it cannot take and keep its health and
//! metrics endpoints answering, then recover once the clients leave.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use ztunnel_tests::process::{ChildGuard, ztunnel_binary};
use ztunnel_tests::{Mesh, echo_server, http_get, socks5_connect};

/// Most connections the test opens; far more than 512 descriptors can carry.
const MAX_CLIENTS: usize = 1000;

/// One byte echoed through `s`, within a bounded wait.
async fn echoes(s: &mut TcpStream, byte: u8) -> bool {
    let round_trip = async {
        s.write_all(&[byte]).await?;
        let mut back = [0u8; 1];
        s.read_exact(&mut back).await?;
        anyhow::Ok(back[0] == byte)
    };
    matches!(tokio::time::timeout(Duration::from_secs(10), round_trip).await, Ok(Ok(true)))
}

/// Polls `path` (bounded, 30 s) until it answers 200 (startup); returns the last outcome otherwise.
async fn answers_200(addr: SocketAddr, path: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), http_get(addr, path)).await {
            Ok(Ok((200, _))) => return Ok(()),
            Ok(Ok((status, body))) => last = format!("status {status}: {body}"),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "no answer within 10 s".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

/// The soft and hard "Max open files" of `pid`.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc/<pid>/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    (fields.next().unwrap_or_default().to_string(), fields.next().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_descriptors_refuse_new_clients_and_keep_readiness_and_metrics_answering() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-b", false);
    mesh.write_config();
    let server = echo_server(SocketAddr::new(server, 8080)).await;

    // The real binary, started with a soft limit of 256 and a hard limit of 512 descriptors.
    let ip = mesh.subnet.ip(250);
    let addr = |port: u16| SocketAddr::new(ip, port);
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=256:512").arg("--").arg(ztunnel_binary());
    cmd.args(["proxy", "--config"]).arg(mesh.config_path());
    cmd.args(["--node", "node-a", "--state-dir"]).arg(mesh.ca_dir());
    for (flag, port) in
        [("--socks5-addr", 15080), ("--admin-addr", 15000), ("--metrics-addr", 15020), ("--readiness-addr", 15021)]
    {
        cmd.arg(flag).arg(addr(port).to_string());
    }
    cmd.args(["--log-level", "error"]);
    let node = ChildGuard::spawn(cmd);
    let (socks, readiness, metrics) = (addr(15080), addr(15021), addr(15020));
    answers_200(readiness, "/healthz/ready").await.expect("ztunnel binary becomes ready");

    // The attack: connections through the proxy until it has no descriptors left.
    let mut open = Vec::new();
    let mut refusal = None;
    for i in 0..MAX_CLIENTS {
        match tokio::time::timeout(Duration::from_secs(10), socks5_connect(socks, client, server)).await {
            Err(_) => panic!("client {i} was left waiting for 10 s instead of being served or refused"),
            Ok(Err(e)) => {
                refusal = Some(e);
                break;
            }
            Ok(Ok(mut s)) => {
                assert!(echoes(&mut s, b'a').await, "connection {i} does not echo");
                open.push(s);
            }
        }
    }
    let refusal = refusal.unwrap_or_else(|| panic!("{MAX_CLIENTS} connections all served under a 512 limit"));
    assert!(open.len() >= 100, "only {} connections before the first refusal ({refusal:#})", open.len());

    // More clients beyond the limit, some silent, one asking for a connection.
    let mut silent = Vec::new();
    for _ in 0..20 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(client, 0)).unwrap();
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(5), socket.connect(socks)).await {
            silent.push(s);
        }
    }
    // Health and metrics answer every time, not only once the silent clients time out (each
    // request gets 10 s, no retries).
    for round in 0..3 {
        for (addr, path) in [(readiness, "/healthz/ready"), (metrics, "/metrics")] {
            let answer = tokio::time::timeout(Duration::from_secs(10), http_get(addr, path)).await;
            match answer {
                Ok(Ok((200, _))) => {}
                other => panic!("{path} while the proxy is exhausted (round {round}): expected 200, got {other:?}"),
            }
        }
    }
    let beyond = tokio::time::timeout(Duration::from_secs(10), socks5_connect(socks, client, server)).await;
    match beyond {
        Err(_) => panic!("a client beyond the limit was left waiting for 10 s instead of being refused"),
        Ok(Ok(_)) => panic!("a client beyond the limit was served although the proxy refused before"),
        Ok(Err(_)) => {}
    }

    // The connections already open keep working.
    let mut broken = 0;
    for s in &mut open {
        if !echoes(s, b'b').await {
            broken += 1;
        }
    }
    assert_eq!(broken, 0, "{broken} of {} open connections stopped echoing", open.len());

    // Once the clients leave, new connections work again.
    let served = open.len();
    drop(open);
    drop(silent);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut recovered = false;
    while !recovered && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(5), socks5_connect(socks, client, server)).await
        {
            recovered = echoes(&mut s, b'c').await;
        }
        if !recovered {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(recovered, "no new connection served within 30 s after {served} clients closed");

    // The soft limit was raised to the hard one at start.
    assert_eq!(open_file_limits(node.pid()), ("512".into(), "512".into()), "soft open-file limit raised to the hard");
}
