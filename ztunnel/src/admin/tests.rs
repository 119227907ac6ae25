//! Real HTTP/1.1 requests over loopback to each server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use super::*;
use crate::drain::{self, DrainMode, DrainOutcome, DrainTrigger};
use crate::metrics::tests::parse_samples;
use crate::metrics::{ConnectionLabels, Metrics, Reporter, SecurityPolicy};
use crate::readiness::Ready;
use crate::telemetry::LogHandle;

/// Bound on every wait in these tests.
pub(super) const WAIT: Duration = Duration::from_secs(10);

pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: HashMap<String, String>,
    pub(super) body: String,
}

fn request_bytes(method: &str, target: &str, headers: &[(&str, &str)], close: bool) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n");
    if close {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

fn parse_reply(raw: &[u8]) -> Reply {
    let raw = String::from_utf8_lossy(raw);
    let (head, body) = raw.split_once("\r\n\r\n").expect("response has a header block");
    let mut lines = head.lines();
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply { status, headers, body: body.to_string() }
}

/// Sends one request with `Connection: close` and reads the whole response.
pub(super) async fn fetch(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to server");
        stream.write_all(&request_bytes(method, target, headers, true)).await.expect("write request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        parse_reply(&raw)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: no response within {WAIT:?}"))
}

pub(super) async fn get(addr: SocketAddr, target: &str) -> Reply {
    fetch(addr, "GET", target, &[]).await
}

pub(super) async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

pub(super) async fn stop(trigger: DrainTrigger, server: tokio::task::JoinHandle<()>) {
    assert_eq!(trigger.drain(WAIT).await, DrainOutcome::Complete);
    tokio::time::timeout(WAIT, server).await.expect("server returns after the drain").unwrap();
}

#[tokio::test]
async fn metrics_server_serves_both_paths() {
    let metrics = Arc::new(Metrics::new());
    let labels = ConnectionLabels {
        reporter: Reporter::Destination,
        source_workload: "sleep".into(),
        destination_workload: "echo".into(),
        connection_security_policy: SecurityPolicy::MutualTls,
        ..Default::default()
    };
    metrics.connection_opened(&labels);
    metrics.connection_closed(&labels, 10, 20);

    let (listener, addr) = bind().await;
    let (trigger, watch) = drain::new();
    let server = tokio::spawn(serve_metrics(listener, metrics.clone(), watch));

    let plain = get(addr, "/metrics").await;
    assert_eq!(plain.status, 200, "body: {}", plain.body);
    assert_eq!(plain.headers["content-type"], PLAIN_TEXT_CONTENT_TYPE);
    let samples = parse_samples(&plain.body);
    for (name, value) in [
        ("istio_tcp_connections_opened_total", "1"),
        ("istio_tcp_connections_closed_total", "1"),
        ("istio_tcp_sent_bytes_total", "10"),
        ("istio_tcp_received_bytes_total", "20"),
    ] {
        let found: Vec<_> = samples.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "{name} in:\n{}", plain.body);
        assert_eq!(found[0].value, value, "{name}");
        assert_eq!(found[0].labels["reporter"], "destination");
        assert_eq!(found[0].labels["source_workload"], "sleep");
        assert_eq!(found[0].labels["connection_security_policy"], "mutual_tls");
        assert_eq!(found[0].labels.len(), 23, "{name} label set");
    }

    let scraped = fetch(
        addr,
        "GET",
        "/stats/prometheus",
        &[("Accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")],
    )
    .await;
    assert_eq!(scraped.status, 200);
    assert_eq!(scraped.headers["content-type"], OPENMETRICS_CONTENT_TYPE);
    assert_eq!(scraped.body, plain.body, "both paths serve the same text");

    assert_eq!(get(addr, "/stats").await.status, 404);
    stop(trigger, server).await;
}

#[tokio::test]
async fn readiness_flips_after_last_guard() {
    let ready = Ready::new();
    let certs = ready.register("certificates");
    let config = ready.register("config");
    let (listener, addr) = bind().await;
    let (trigger, watch) = drain::new();
    let server = tokio::spawn(serve_readiness(listener, ready.clone(), watch));

    let reply = get(addr, "/healthz/ready").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "not ready, pending: certificates, config\n");
    drop(certs);
    let reply = get(addr, "/healthz/ready").await;
    assert_eq!((reply.status, reply.body.as_str()), (503, "not ready, pending: config\n"));
    drop(config);
    let reply = get(addr, "/healthz/ready").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ready\n"));
    assert_eq!(reply.headers["content-type"], "text/plain; charset=utf-8");

    assert_eq!(fetch(addr, "POST", "/healthz/ready", &[]).await.status, 405);
    assert_eq!(get(addr, "/ready").await.status, 404);
    stop(trigger, server).await;
}

/// An admin server on loopback with a config dump of our choosing; `shutdowns` counts the
/// calls of its shutdown hook.
pub(super) struct AdminFixture {
    pub(super) addr: SocketAddr,
    pub(super) log: LogHandle,
    pub(super) shutdowns: Arc<AtomicUsize>,
    pub(super) trigger: DrainTrigger,
    pub(super) server: tokio::task::JoinHandle<()>,
}

pub(super) async fn admin_serving(
    dump: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    limits: admin_server::DumpLimits,
) -> AdminFixture {
    let log = LogHandle::detached("info").unwrap();
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let (listener, addr) = bind().await;
    let (trigger, drain) = drain::new();
    let counter = shutdowns.clone();
    let inputs = AdminInputs {
        log: log.clone(),
        config_dump: dump,
        shutdown: Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
        drain,
    };
    let server = tokio::spawn(admin_server::serve_admin_with(listener, inputs, limits));
    AdminFixture { addr, log, shutdowns, trigger, server }
}

async fn admin_fixture() -> AdminFixture {
    admin_serving(Arc::new(|| serde_json::json!({"workloads": [{"name": "echo"}]})), Default::default()).await
}

#[tokio::test]
async fn admin_config_dump_index_and_quit() {
    let f = admin_fixture().await;
    let dump = get(f.addr, "/config_dump").await;
    assert_eq!(dump.status, 200);
    assert_eq!(dump.headers["content-type"], "application/json");
    let value: serde_json::Value = serde_json::from_str(&dump.body).expect("json body");
    assert_eq!(value, serde_json::json!({"workloads": [{"name": "echo"}]}));
    assert!(dump.body.contains("\n  \"workloads\""), "pretty printed:\n{}", dump.body);

    let index = get(f.addr, "/").await;
    assert_eq!(index.status, 200);
    for path in ["/config_dump", "/logging", "/quitquitquit"] {
        assert!(index.body.contains(path), "{path} not listed:\n{}", index.body);
    }
    assert_eq!(get(f.addr, "/stats/prometheus").await.status, 404);

    assert_eq!(get(f.addr, "/quitquitquit").await.status, 405);
    assert_eq!(f.shutdowns.load(Ordering::SeqCst), 0, "GET must not shut down");
    let quit = fetch(f.addr, "POST", "/quitquitquit", &[]).await;
    assert_eq!((quit.status, quit.body.as_str()), (200, "shutdown now\n"));
    assert_eq!(f.shutdowns.load(Ordering::SeqCst), 1, "shutdown callback ran once");
    stop(f.trigger, f.server).await;
}

#[tokio::test]
async fn admin_logging_shows_and_changes_filter() {
    let f = admin_fixture().await;
    let shown = get(f.addr, "/logging").await;
    assert_eq!((shown.status, shown.body.as_str()), (200, "current log level is info\n"));

    let changed = fetch(f.addr, "POST", "/logging?level=debug", &[]).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(f.log.current(), "debug");
    assert_eq!(changed.body, "current log level is debug\n");

    let reset = fetch(f.addr, "POST", "/logging?reset&level=hbone=debug,info", &[]).await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    let mut directives: Vec<String> = f.log.current().split(',').map(String::from).collect();
    directives.sort();
    assert_eq!(directives, vec!["hbone=debug", "info"]);
    assert_eq!(reset.body, format!("current log level is {}\n", f.log.current()));

    let escaped = fetch(f.addr, "POST", "/logging?level=proxy%3Dtrace", &[]).await;
    assert_eq!(escaped.status, 200, "{}", escaped.body);
    assert!(f.log.current().contains("proxy=trace"), "{}", f.log.current());

    let before = f.log.current();
    let bad = fetch(f.addr, "POST", "/logging?level=hbone=loud", &[]).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.starts_with("log filter \"hbone=loud\": "), "{}", bad.body);
    assert_eq!(f.log.current(), before, "a bad spec changes nothing");

    let via_get = get(f.addr, "/logging?level=trace").await;
    assert_eq!(via_get.status, 405);
    assert_eq!(f.log.current(), before, "GET never changes the filter");
    stop(f.trigger, f.server).await;
}

/// A server whose handler answers only when released, to observe draining.
struct SlowServer {
    addr: SocketAddr,
    release: Arc<Notify>,
    entered: oneshot::Receiver<()>,
    trigger: DrainTrigger,
    server: tokio::task::JoinHandle<()>,
}

async fn slow_server() -> SlowServer {
    let (listener, addr) = bind().await;
    let (trigger, watch) = drain::new();
    let release = Arc::new(Notify::new());
    let (entered_tx, entered) = oneshot::channel();
    let entered_tx = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
    let gate = release.clone();
    let server = tokio::spawn(server::serve("test", listener, watch, move |_req| {
        let gate = gate.clone();
        let entered = entered_tx.lock().unwrap().take();
        async move {
            if let Some(tx) = entered {
                let _ = tx.send(());
            }
            gate.notified().await;
            server::text(StatusCode::OK, "done\n")
        }
    }));
    SlowServer { addr, release, entered, trigger, server }
}

/// Waits (bounded) until connecting to `addr` is refused.
async fn wait_until_refused(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} still accepts connections after the drain started");
}

#[tokio::test]
async fn drain_finishes_in_flight_request_and_stops_accepting() {
    let s = slow_server().await;
    let addr = s.addr;
    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::timeout(WAIT, s.entered).await.expect("request reached the handler").unwrap();

    let drain = tokio::spawn(s.trigger.drain(WAIT));
    wait_until_refused(addr).await;
    assert!(!drain.is_finished(), "drain completed while a request was in flight");
    assert!(!s.server.is_finished(), "server returned while a request was in flight");

    s.release.notify_one();
    let reply = in_flight.await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "done\n"));
    assert_eq!(drain.await.unwrap(), DrainOutcome::Complete);
    tokio::time::timeout(WAIT, s.server).await.expect("server returns after its last connection").unwrap();
}

#[tokio::test]
async fn idle_keep_alive_connection_does_not_block_drain() {
    let (listener, addr) = bind().await;
    let (trigger, watch) = drain::new();
    let server = tokio::spawn(serve_readiness(listener, Ready::new(), watch));
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(&request_bytes("GET", "/healthz/ready", &[], false)).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, idle.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "first response");

    stop(trigger, server).await;
    let n = tokio::time::timeout(WAIT, idle.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 0, "server closed the idle connection on drain");
}

#[tokio::test]
async fn immediate_drain_drops_in_flight_request() {
    let s = slow_server().await;
    let mut client = TcpStream::connect(s.addr).await.unwrap();
    client.write_all(&request_bytes("GET", "/slow", &[], true)).await.unwrap();
    tokio::time::timeout(WAIT, s.entered).await.expect("request reached the handler").unwrap();

    let outcome = s.trigger.drain_with(DrainMode::Immediate, WAIT).await;
    assert_eq!(outcome, DrainOutcome::Complete, "nothing waits for the blocked handler");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut raw)).await.expect("connection closed").ok();
    assert!(raw.is_empty(), "no response expected: {}", String::from_utf8_lossy(&raw));
    tokio::time::timeout(WAIT, s.server).await.unwrap().unwrap();
}
