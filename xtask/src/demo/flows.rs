//! The demo's traffic: real clients run inside the `sleep` pod (curl, testapp), so every
//! connection is an ordinary `connect()` that capture redirects. Each flow is bounded in
//! time and recorded as a [`Flow`] whether it worked or not, with what the client saw, what
//! the server saw, and what the ztunnels counted ([`Evidence`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use ztunnel_tests::traffic;

use crate::lab::blocking::blocking;
use crate::lab::cluster::{Cluster, DemoPod, Role, app_name};
use crate::lab::evidence::{self, Evidence};
use crate::lab::layout::{App, CACHE, DATA, OUTSIDE, SLEEP, WEB, WEB_SERVICE};
use crate::lab::metrics;
use crate::lab::server_log::last_peer;
use crate::lab::units::human_bytes;

/// Bound on the ztunnels' counters showing a flow that has ended.
const SETTLE: Duration = Duration::from_secs(5);
/// Bytes of the small echo flows.
const SMALL_ECHO: u64 = 64 * 1024;

/// The client a flow runs in the source pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Client {
    /// `curl http://<dst>/`.
    Curl,
    /// `testapp connect <dst> --bytes N`: N bytes echoed back, compared by SHA-256.
    Echo { bytes: u64 },
}

/// How a flow should travel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Captured, in HBONE, to the workload with this SPIFFE identity.
    Hbone { destination: String },
    /// Captured, passed through as plain TCP (destination not in the mesh).
    Passthrough,
}

/// One flow to run.
#[derive(Clone, Debug)]
pub(crate) struct FlowSpec {
    pub(crate) from: DemoPod,
    /// The address the client connects to.
    pub(crate) dst: SocketAddr,
    /// How the destination is shown, e.g. `web 10.23.2.2:8080 (node-b)`.
    pub(crate) dst_label: String,
    /// The pod that serves it, and its node.
    pub(crate) server: DemoPod,
    pub(crate) client: Client,
    pub(crate) expect: Expect,
}

/// What the client saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientView {
    /// A one-line summary, e.g. `200, "hello from web"`.
    pub(crate) summary: String,
    /// The peer as the client's `getpeername()` shows it.
    pub(crate) peer: String,
    pub(crate) sent: u64,
    pub(crate) received: u64,
}

/// A flow that ran.
#[derive(Clone, Debug)]
pub(crate) struct Flow {
    pub(crate) spec: FlowSpec,
    pub(crate) client: Result<ClientView, String>,
    /// The peer address the server app saw for this connection.
    pub(crate) server_saw: Option<String>,
    pub(crate) evidence: Evidence,
    /// Where the evidence contradicts the expectation.
    pub(crate) problems: Vec<String>,
}

impl Flow {
    pub(crate) fn ok(&self) -> bool {
        self.client.is_ok() && self.problems.is_empty()
    }
}

/// The demo's flows, all from `sleep`.
pub(crate) fn plan(cluster: &Cluster, bulk_bytes: u64) -> Vec<FlowSpec> {
    let sleep = cluster.pod(SLEEP.name).clone();
    let flow = |server: &DemoPod, dst: SocketAddr, dst_label: String, client: Client| FlowSpec {
        from: sleep.clone(),
        dst,
        dst_label,
        server: server.clone(),
        client,
        expect: match server.spec.spiffe() {
            Some(destination) => Expect::Hbone { destination },
            None => Expect::Passthrough,
        },
    };
    let by_ip = |p: &DemoPod| {
        let addr = p.addr(p.spec.app.port().unwrap_or_default());
        (addr, format!("{} {addr} ({})", p.spec.name, p.spec.node))
    };
    let (web, cache, data, outside) =
        (cluster.pod(WEB.name), cluster.pod(CACHE.name), cluster.pod(DATA.name), cluster.pod(OUTSIDE.name));
    let vip = SocketAddr::new(WEB_SERVICE.vip, WEB_SERVICE.port);
    let (web_addr, web_label) = by_ip(web);
    let (cache_addr, cache_label) = by_ip(cache);
    let (data_addr, data_label) = by_ip(data);
    let (outside_addr, outside_label) = by_ip(outside);
    vec![
        flow(web, web_addr, web_label, Client::Curl),
        flow(web, vip, format!("svc {} VIP {vip}", WEB_SERVICE.name), Client::Curl),
        flow(cache, cache_addr, cache_label, Client::Echo { bytes: SMALL_ECHO }),
        flow(data, data_addr, data_label, Client::Echo { bytes: bulk_bytes }),
        flow(outside, outside_addr, format!("{outside_label}, not in the mesh"), Client::Echo { bytes: SMALL_ECHO }),
    ]
}

/// Runs one flow: scrape, run the client, wait (bounded) for the counters, scrape again.
/// Fails only when the ztunnels cannot be scraped; a failing client is part of the record.
pub(crate) async fn run(cluster: &Cluster, spec: FlowSpec) -> anyhow::Result<Flow> {
    let (src_node, dst_node) = (spec.from.spec.node, spec.server.spec.node);
    let before_src = metrics::parse(&cluster.metrics_text(src_node).await?);
    let before_dst = metrics::parse(&cluster.metrics_text(dst_node).await?);
    let client = run_client(cluster, &spec).await.map_err(|e| format!("{e:#}"));

    let started = tokio::time::Instant::now();
    let evidence = loop {
        let src_changes = evidence::changes(&before_src, &metrics::parse(&cluster.metrics_text(src_node).await?));
        let dst_changes = evidence::changes(&before_dst, &metrics::parse(&cluster.metrics_text(dst_node).await?));
        let found = Evidence {
            source: evidence::side(&src_changes, "source", spec.from.spec.name),
            destination: evidence::side(&dst_changes, "destination", spec.from.spec.name),
        };
        if found.settled() || started.elapsed() > SETTLE {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let role = if matches!(spec.server.spec.app, App::Http(_)) { Role::Http } else { Role::Echo };
    let server_saw = last_peer(&cluster.app_output(&app_name(spec.server.spec.name, role)), spec.server.spec.app);
    let problems = match &client {
        Ok(view) => check(&spec, &evidence, view),
        Err(_) => Vec::new(),
    };
    Ok(Flow { spec, client, server_saw, evidence, problems })
}

/// Runs the flow's client in the source pod, bounded in time.
async fn run_client(cluster: &Cluster, spec: &FlowSpec) -> anyhow::Result<ClientView> {
    let pod = spec.from.pod.clone();
    let dst = spec.dst;
    let (argv, limit) = match spec.client {
        Client::Curl => {
            let write_out = format!(
                "\n{CURL_MARK} %{{http_code}} %{{size_request}} %{{size_header}} %{{size_download}} %{{remote_ip}}:%{{remote_port}}"
            );
            let argv = ["curl", "--silent", "--show-error", "--max-time", "10", "--write-out", &write_out];
            let url = format!("http://{dst}/");
            (argv.iter().map(|s| s.to_string()).chain([url]).collect::<Vec<_>>(), Duration::from_secs(20))
        }
        Client::Echo { bytes } => {
            let timeout = 30 + bytes / (4 * 1024 * 1024);
            let testapp = cluster.binaries().testapp.display().to_string();
            let argv = [testapp, "connect".into(), dst.to_string(), "--bytes".into(), bytes.to_string()];
            let argv = argv.into_iter().chain(["--timeout".into(), timeout.to_string()]).collect::<Vec<_>>();
            (argv, Duration::from_secs(timeout + 10))
        }
    };
    let output = blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut proc = pod.spawn(&argv);
        proc.wait_timeout(limit)
    })
    .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match spec.client {
        Client::Curl => {
            if !output.status.success() {
                bail!("curl failed ({}): {}", output.status, stderr.trim());
            }
            curl_view(&stdout, spec)
        }
        Client::Echo { bytes } => echo_view(&stdout, output.status.success(), bytes),
    }
}

const CURL_MARK: &str = "__curl__";

fn curl_view(stdout: &str, spec: &FlowSpec) -> anyhow::Result<ClientView> {
    let (body, stats) = stdout.rsplit_once(&format!("\n{CURL_MARK} ")).context("curl printed no --write-out line")?;
    let fields: Vec<&str> = stats.split_whitespace().collect();
    let [code, request, header, download, peer] = fields[..] else { bail!("cannot read curl's --write-out {stats:?}") };
    let number = |s: &str| s.parse::<u64>().with_context(|| format!("curl --write-out value {s:?}"));
    let body = body.trim();
    let greeting = format!("hello from {}", spec.server.spec.name);
    if code != "200" || !body.starts_with(&greeting) {
        bail!("expected 200 and {greeting:?}, got {code} {body:?}");
    }
    Ok(ClientView {
        summary: format!("HTTP {code}, body {body:?}"),
        peer: peer.to_string(),
        sent: number(request)?,
        received: number(header)? + number(download)?,
    })
}

/// Reads `testapp connect`'s report (`ztunnel_tests::traffic`).
fn echo_view(stdout: &str, success: bool, bytes: u64) -> anyhow::Result<ClientView> {
    if let Some(error) = traffic::error(stdout) {
        bail!("testapp: {error}");
    }
    let connected = traffic::last(stdout, "connected").context("testapp printed no `connected` line")?;
    let peer = connected["peer"].as_str().context("testapp's `connected` line has no peer")?;
    let echo = traffic::last(stdout, "echo").context("testapp printed no `echo` line")?;
    let (sha, sent_sha) = (echo["sha256"].as_str().unwrap_or(""), echo["sent_sha256"].as_str().unwrap_or("-"));
    let received = traffic::number(&echo, "bytes").unwrap_or(0);
    if !success || sha != sent_sha || received != bytes {
        bail!("echo mismatch: sent {bytes} bytes (SHA-256 {sent_sha}), got {received} back (SHA-256 {sha})");
    }
    Ok(ClientView {
        summary: format!("{} echoed intact, SHA-256 {}…", human_bytes(bytes), &sha[..sha.len().min(16)]),
        peer: peer.to_string(),
        sent: bytes,
        received,
    })
}

/// Where the ztunnels' counters contradict what the flow should have been.
fn check(spec: &FlowSpec, evidence: &Evidence, client: &ClientView) -> Vec<String> {
    let mut problems = Vec::new();
    if !evidence.captured() {
        problems.push(format!(
            "{}'s ztunnel counted no connection from {}: not captured",
            spec.from.spec.node, spec.from.spec.name
        ));
        return problems;
    }
    let sleep_id = spec.from.spec.spiffe().unwrap_or_default();
    match &spec.expect {
        Expect::Hbone { destination } => {
            if !evidence.hbone() {
                problems.push(format!(
                    "expected HBONE (mutual_tls at both ends); source reports {:?}, destination {}",
                    evidence.source.as_ref().map_or("", |s| s.label("connection_security_policy")),
                    if evidence.destination.is_some() { "reports it" } else { "counted nothing" }
                ));
            }
            let want = (sleep_id, destination.clone());
            if evidence.identities().as_ref() != Some(&want) {
                problems.push(format!(
                    "expected identities {} -> {}, metrics show {:?}",
                    want.0,
                    want.1,
                    evidence.identities()
                ));
            }
        }
        Expect::Passthrough => {
            if evidence.hbone() || evidence.destination.is_some() {
                problems.push("expected passthrough, but a destination ztunnel counted it".into());
            }
            if let Some(s) = &evidence.source
                && s.label("destination_workload") != "unknown"
            {
                problems
                    .push(format!("expected destination_workload=unknown, got {:?}", s.label("destination_workload")));
            }
        }
    }
    if let Some(s) = &evidence.source
        && (s.upstream < client.sent || s.downstream < client.received)
    {
        problems.push(format!(
            "source counted {} bytes up and {} down, the client sent {} and received {}",
            s.upstream, s.downstream, client.sent, client.received
        ));
    }
    problems
}

/// Every flow's outcome in one line each, for the failure summary.
pub(crate) fn failures(flows: &[Flow]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, f) in flows.iter().enumerate() {
        let what = format!("flow {} ({} -> {})", i + 1, f.spec.from.spec.name, f.spec.dst_label);
        if let Err(e) = &f.client {
            out.push(format!("traffic: {what}: {e}"));
        }
        out.extend(f.problems.iter().map(|p| format!("traffic: {what}: {p}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn testapp_reports_are_checked() {
        let connected = traffic::line("connected", json!({"local": "10.0.1.2:5000", "peer": "10.0.2.3:9000"}));
        let echo = |sent: &str| traffic::line("echo", json!({"bytes": 4, "sha256": "ab", "sent_sha256": sent}));
        let view = echo_view(&format!("{connected}\n{}\n", echo("ab")), true, 4).expect("intact echo");
        assert_eq!((view.peer.as_str(), view.sent, view.received), ("10.0.2.3:9000", 4, 4));
        assert!(echo_view(&format!("{connected}\n{}\n", echo("cd")), false, 4).is_err());
        let refused = traffic::line("error", json!({"message": "connect: refused"}));
        assert!(echo_view(&refused, false, 4).unwrap_err().to_string().contains("refused"));
    }
}
