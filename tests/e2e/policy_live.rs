//! Policies over time and mTLS modes: STRICT against PERMISSIVE, an open connection closed
//! when a DENY policy arrives, dry-run, and the real binary's access log naming the policy.
//!
//! These nodes run without eBPF capture, so a non-mesh client would reach an app directly.
//! Here STRICT is shown (a) over real traffic: mesh (HBONE) clients still pass, and (b) for
//! plaintext, by asking the server's running ztunnel to decide a connection without a peer
//! identity with its live state, the call its 15006 listener makes. `capture_policy.rs`
//! shows the refusal of real captured plaintext in network namespaces.

use std::process::{Command, Stdio};
use std::time::Duration;

use ztunnel::policy::{MtlsMode, Reason, static_strict_key};
use ztunnel::proxy::InboundFacts;
use ztunnel::proxy::authorize::decide;
use ztunnel::types::{ClientAddr, OrigDst};
use ztunnel_tests::http_get;
use ztunnel_tests::process::{ChildGuard, ztunnel_binary};
use ztunnel_tests::wait::{eventually, until_ok};

use super::*;

/// What `node` decides for a plaintext connection (no peer identity) from `client` to
/// workload `name` on `port`.
fn plaintext_decision(node: &MeshNode, name: &str, client: IpAddr, port: u16) -> ztunnel::policy::Decision {
    let state = node.state().read();
    let workload = state.workloads().find(|w| &*w.name == name).cloned().expect("workload in state");
    let facts = InboundFacts {
        source_identity: None,
        source_addr: ClientAddr(SocketAddr::new(client, 40000)),
        destination: OrigDst(SocketAddr::new(workload.workload_ips[0], port)),
        workload,
    };
    decide(&state, &facts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_plaintext_and_permissive_accepts_it() {
    let Setup { mut mesh, lab, server, .. } = setup();
    let legacy = mesh.workload("legacy", "shop", "legacy", 21, "node-b", true);
    mesh.namespace_mtls("shop", MtlsMode::Strict);
    mesh.workload_mtls("legacy", MtlsMode::Permissive);
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    let legacy_app = CountingServer::start(SocketAddr::new(legacy, 8080)).await;
    let (a, b) = start(&mesh).await;

    a.echo(lab, app.addr).await.expect("HBONE (mTLS) traffic passes STRICT");
    a.echo(lab, legacy_app.addr).await.expect("and PERMISSIVE");
    let strict = plaintext_decision(&b, "web", lab, 8080);
    assert_eq!(strict.reason, Reason::Denied(static_strict_key()), "STRICT refuses plaintext");
    let permissive = plaintext_decision(&b, "legacy", lab, 8080);
    assert_eq!(permissive.reason, Reason::NoAllowPolicy, "PERMISSIVE (workload override) accepts plaintext");
    let dump = b.config_dump().await;
    let web = dump["workloads"].as_array().unwrap().iter().find(|w| w["name"] == "web").unwrap().clone();
    assert_eq!(web["authorizationPolicies"][0], "istio-system/istio_converted_static_strict", "{web}");

    // Switching the namespace to PERMISSIVE applies live.
    mesh.namespace_mtls("shop", MtlsMode::Permissive);
    mesh.write_config();
    eventually("plaintext is allowed (PERMISSIVE) after the reload", Duration::from_secs(5), || async {
        plaintext_decision(&b, "web", lab, 8080).is_allowed()
    })
    .await;
    a.echo(lab, app.addr).await.expect("mTLS still passes");
}

async fn round_trip(s: &mut tokio::net::TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back)).await.expect("echo in time").unwrap();
    assert_eq!(back, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connection_is_closed_when_a_deny_policy_arrives() {
    let Setup { mut mesh, lab, good, server } = setup();
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    let (a, b) = start(&mesh).await;
    let mut doomed = socks5_connect(a.socks5(), lab, app.addr).await.unwrap();
    let mut kept = socks5_connect(a.socks5(), good, app.addr).await.unwrap();
    round_trip(&mut doomed, b"before").await;
    round_trip(&mut kept, b"before").await;

    mesh.policy(namespace_policy(
        "shop",
        "deny-lab",
        Action::Deny,
        Match { namespaces: vec![exact("lab")], ..Match::default() },
    ));
    mesh.write_config();
    let mut buf = [0u8; 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), doomed.read(&mut buf))
        .await
        .expect("the denied connection must be closed within 10 s of the policy change");
    assert!(matches!(ended, Ok(0) | Err(_)), "expected EOF or reset, got {ended:?}");
    round_trip(&mut kept, b"after").await;
    assert_refused(&a, lab, app.addr, "new connections from lab are refused too").await;

    let late = [("policy", "shop/deny-lab"), ("reason", "explicitly_denied")];
    let got = b.wait_metric("istio_authorization_late_rejections_total", &late, 1).await;
    assert_eq!(got, 1, "one late rejection:\n{}", b.metrics().await);
    let closed_deny = [("reporter", "destination"), ("source_workload", "sleep"), ("response_flags", "DENY")];
    assert_eq!(b.wait_metric(CLOSED, &closed_deny, 2).await, 2, "late and new denial:\n{}", b.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_lets_traffic_through_and_counts_what_it_would_deny() {
    let Setup { mut mesh, lab, server, .. } = setup();
    let mut audit = namespace_policy(
        "shop",
        "audit-lab",
        Action::Deny,
        Match { namespaces: vec![exact("lab")], ..Match::default() },
    );
    audit.dry_run = true;
    mesh.policy(audit);
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    let (a, b) = start(&mesh).await;

    a.echo(lab, app.addr).await.expect("dry-run never denies");
    assert_eq!(app.accepted(), 1);
    let would = [("policy", "shop/audit-lab"), ("reason", "explicitly_denied")];
    let got = b.wait_metric("istio_authorization_dry_run_denials_total", &would, 1).await;
    assert_eq!(got, 1, "{}", b.metrics().await);
    let ok = [("reporter", "destination"), ("source_workload", "sleep"), ("response_flags", "-")];
    assert_eq!(b.wait_metric(CLOSED, &ok, 1).await, 1, "{}", b.metrics().await);
    assert_eq!(b.wait_metric(DENIED, &[], 0).await, 0, "nothing enforced");
}

/// Polls `path` (bounded) until a line satisfies `want`; returns it.
async fn wait_log_line(path: &std::path::Path, what: &str, want: impl Fn(&str) -> bool) -> String {
    until_ok(&format!("a log line for {what}"), Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines().find(|l| want(l)).map(str::to_string).ok_or(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_denials_dry_runs_and_late_rejections_with_the_policy() {
    let Setup { mut mesh, lab, good, server } = setup();
    mesh.policy(namespace_policy(
        "shop",
        "deny-lab",
        Action::Deny,
        Match { namespaces: vec![exact("lab")], ..Match::default() },
    ));
    let mut audit = namespace_policy(
        "shop",
        "audit-good",
        Action::Deny,
        Match { namespaces: vec![exact("shop")], ..Match::default() },
    );
    audit.dry_run = true;
    mesh.policy(audit.clone());
    mesh.write_config();
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    let a = mesh.start_node("node-a").await;

    // node-b is the real binary, its log in a file.
    let ip = mesh.subnet.ip(250);
    let addr = |port: u16| SocketAddr::new(ip, port).to_string();
    let log = mesh.dir.path().join("node-b.log");
    let mut cmd = Command::new(ztunnel_binary());
    cmd.args(["proxy", "--config"]).arg(mesh.config_path());
    cmd.args(["--node", "node-b", "--state-dir"]).arg(mesh.ca_dir());
    cmd.args(["--socks5-addr", "off", "--admin-addr", &addr(15000), "--metrics-addr", &addr(15020)]);
    cmd.args(["--readiness-addr", &addr(15021), "--log-level", "info"]);
    cmd.stdout(Stdio::from(std::fs::File::create(&log).unwrap()));
    let _b = ChildGuard::spawn(cmd);
    eventually("the ztunnel binary is ready", Duration::from_secs(10), || async {
        matches!(http_get(SocketAddr::new(ip, 15021), "/healthz/ready").await, Ok((200, _)))
    })
    .await;

    assert_refused(&a, lab, app.addr, "lab is denied").await;
    let denied =
        wait_log_line(&log, "the denial", |l| l.contains("connection complete") && l.contains("shop/deny-lab")).await;
    assert!(denied.contains("policy=\"shop/deny-lab\""), "access log names the policy: {denied}");
    assert!(
        denied.contains("connection closed due to policy rejection: explicitly denied by: shop/deny-lab"),
        "{denied}"
    );
    assert!(denied.contains("ERROR") && denied.contains("error.kind=\"policy\""), "{denied}");

    let mut live = socks5_connect(a.socks5(), good, app.addr).await.expect("dry-run lets shop through");
    round_trip(&mut live, b"hello").await;
    let dry = wait_log_line(&log, "the dry-run", |l| l.contains("dry-run") && l.contains("shop/audit-good")).await;
    assert!(dry.contains("explicitly denied by: shop/audit-good"), "{dry}");

    // Enforcing the audit policy closes the open connection: a late rejection.
    mesh.policies.retain(|p| &*p.name != "audit-good");
    audit.dry_run = false;
    mesh.policy(audit);
    mesh.write_config();
    let late = wait_log_line(&log, "the late rejection", |l| l.contains("late rejection")).await;
    assert!(late.contains("shop/audit-good"), "{late}");
    let closed = wait_log_line(&log, "the closed connection", |l| l.contains("after a policy change")).await;
    assert!(closed.contains("policy=\"shop/audit-good\"") && closed.contains("connection complete"), "{closed}");
}
