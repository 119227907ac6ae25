//! L4 authorization with real traffic: client (node-a) -> HBONE -> server's ztunnel (node-b)
//! -> app. Denials must answer the CONNECT with 401 before any byte reaches the app, show as
//! SOCKS reply 2 and `response_flags="DENY"` on both ends, and name the policy in metrics.

use std::net::{IpAddr, SocketAddr};

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ztunnel::identity::Identity;
use ztunnel::policy::{Action, Match};
use ztunnel_tests::counting::CountingServer;
use ztunnel_tests::mesh::TRUST_DOMAIN;
use ztunnel_tests::policies::{exact, hbone_connect_status, namespace_policy, principal};
use ztunnel_tests::{Mesh, MeshNode, socks5_connect};

const DENIED: &str = "istio_authorization_denied_connections_total";
const CLOSED: &str = "istio_tcp_connections_closed_total";

/// `lab/sleep` and `shop/good` clients on node-a, `shop/web` server on node-b.
struct Setup {
    mesh: Mesh,
    lab: IpAddr,
    good: IpAddr,
    server: IpAddr,
}

fn setup() -> Setup {
    let mut mesh = Mesh::new();
    let lab = mesh.workload("sleep", "lab", "sleep", 10, "node-a", true);
    let good = mesh.workload("good", "shop", "good", 11, "node-a", true);
    let server = mesh.workload("web", "shop", "web", 20, "node-b", true);
    Setup { mesh, lab, good, server }
}

async fn start(mesh: &Mesh) -> (MeshNode, MeshNode) {
    mesh.write_config();
    (mesh.start_node("node-a").await, mesh.start_node("node-b").await)
}

/// Asserts `client` is refused with SOCKS reply 2 ("not allowed").
async fn assert_refused(a: &MeshNode, client: IpAddr, dst: SocketAddr, why: &str) {
    let err = socks5_connect(a.socks5(), client, dst).await.map(|_| ()).expect_err(why);
    assert!(err.to_string().contains("reply code 2"), "{why}: expected SOCKS reply 2 (not allowed), got: {err}");
}

fn server_identity() -> Identity {
    Identity::new(TRUST_DOMAIN, "shop", "web")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_by_namespace_answers_401_and_never_reaches_the_app() {
    let Setup { mut mesh, lab, good, server } = setup();
    let deny = Match { namespaces: vec![exact("lab")], ..Match::default() };
    mesh.policy(namespace_policy("shop", "deny-lab", Action::Deny, deny));
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    let (a, b) = start(&mesh).await;

    assert_refused(&a, lab, app.addr, "lab is denied").await;
    let status =
        hbone_connect_status(&mesh, &Identity::new(TRUST_DOMAIN, "lab", "other"), &server_identity(), app.addr)
            .await
            .expect("CONNECT answered");
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a denied CONNECT is answered 401 on the wire");
    assert_eq!(app.accepted(), 0, "denied connections must never reach the app");
    a.echo(good, app.addr).await.expect("shop is not denied");
    assert_eq!(app.accepted(), 1);

    let policy = [("policy", "shop/deny-lab"), ("reason", "explicitly_denied")];
    assert_eq!(b.wait_metric(DENIED, &policy, 2).await, 2, "both denials counted by policy:\n{}", b.metrics().await);
    let dst_deny = [("reporter", "destination"), ("response_flags", "DENY")];
    assert_eq!(b.wait_metric(CLOSED, &dst_deny, 2).await, 2, "{}", b.metrics().await);
    // The source ztunnel saw the 401 and classified it as a policy refusal.
    let src_deny = [("reporter", "source"), ("source_workload", "sleep"), ("response_flags", "DENY")];
    assert_eq!(a.wait_metric(CLOSED, &src_deny, 1).await, 1, "{}", a.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_by_principal_denies_everyone_else() {
    let Setup { mut mesh, lab, good, server } = setup();
    let allow = Match { principals: vec![principal("lab", "sleep")], ..Match::default() };
    mesh.policy(namespace_policy("shop", "allow-sleep", Action::Allow, allow));
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    let (a, b) = start(&mesh).await;

    a.echo(lab, app.addr).await.expect("lab/sleep is allowed by principal");
    assert_refused(&a, good, app.addr, "shop/good is not allowed: ALLOW policies exist and none matches").await;
    let intruder = Identity::new(TRUST_DOMAIN, "lab", "intruder");
    let status = hbone_connect_status(&mesh, &intruder, &server_identity(), app.addr).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "same namespace, other service account: 401");
    assert_eq!(app.accepted(), 1, "only the allowed connection reached the app");
    let not_allowed = [("policy", "-"), ("reason", "not_allowed")];
    assert_eq!(b.wait_metric(DENIED, &not_allowed, 2).await, 2, "{}", b.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_by_destination_port() {
    let Setup { mut mesh, good, server, .. } = setup();
    let deny = Match { destination_ports: vec![9090], ..Match::default() };
    mesh.policy(namespace_policy("shop", "deny-9090", Action::Deny, deny));
    let open = CountingServer::start(SocketAddr::new(server, 8080)).await;
    let closed = CountingServer::start(SocketAddr::new(server, 9090)).await;
    let (a, b) = start(&mesh).await;

    a.echo(good, open.addr).await.expect("port 8080 is open");
    assert_refused(&a, good, closed.addr, "port 9090 is denied").await;
    assert_eq!((open.accepted(), closed.accepted()), (1, 0));
    let policy = [("policy", "shop/deny-9090")];
    assert_eq!(b.wait_metric(DENIED, &policy, 1).await, 1, "{}", b.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_cidrs_deny_and_allow() {
    let Setup { mut mesh, lab, good, server } = setup();
    let lab_only = ztunnel::policy::Cidr::host(lab);
    mesh.policy(namespace_policy(
        "shop",
        "deny-lab-ip",
        Action::Deny,
        Match { source_ips: vec![lab_only], ..Match::default() },
    ));
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    let (a, b) = start(&mesh).await;
    assert_refused(&a, lab, app.addr, "the /32 of the lab client is denied").await;
    a.echo(good, app.addr).await.expect("another address is not");

    // An ALLOW for the whole test subnet admits both; one for 10.0.0.0/8 admits neither.
    let subnet: ztunnel::policy::Cidr = format!("{}/24", mesh.subnet.ip(0)).parse().unwrap();
    mesh.policies.clear();
    mesh.policy(namespace_policy(
        "shop",
        "allow-subnet",
        Action::Allow,
        Match { source_ips: vec![subnet], ..Match::default() },
    ));
    mesh.write_config();
    wait_policy(&b, "shop/allow-subnet").await;
    a.echo(lab, app.addr).await.expect("lab is in the allowed subnet");
    a.echo(good, app.addr).await.expect("good is in the allowed subnet");
    let elsewhere: ztunnel::policy::Cidr = "10.0.0.0/8".parse().unwrap();
    mesh.policies.clear();
    mesh.policy(namespace_policy(
        "shop",
        "allow-ten",
        Action::Allow,
        Match { source_ips: vec![elsewhere], ..Match::default() },
    ));
    mesh.write_config();
    wait_policy(&b, "shop/allow-ten").await;
    assert_refused(&a, good, app.addr, "127.x is not in 10.0.0.0/8").await;
    assert_eq!(app.accepted(), 3);
}

/// Waits (bounded) until `node` has loaded policy `key`.
pub async fn wait_policy(node: &MeshNode, key: &str) {
    for _ in 0..100 {
        if node.state().read().policies().get(key).is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("policy {key} never loaded: {}", node.config_dump().await["localConfig"]);
}

#[path = "policy_live.rs"]
mod live;
