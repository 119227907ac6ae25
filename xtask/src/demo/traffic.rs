//! The demo's flows, each bounded in time and recorded as a [`Flow`] whether it worked or not:
//! HTTP GETs (curl or the built-in client) to the `web` service, a bulk upload to `data`
//! verified by SHA-256 (through the mesh and, as a baseline, direct), and one connection to an
//! unmeshed server (passthrough).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::bulk_pattern::Pattern;
use super::servers::SINK_REPLY_LEN;
use super::topology::Topology;
use super::{http, socks};

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// How a flow travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// SOCKS5 -> node A -> HBONE (mTLS, HTTP/2 CONNECT) -> node B -> app.
    Hbone,
    /// SOCKS5 -> node A -> plain TCP to a destination outside the mesh.
    Passthrough,
    /// Plain TCP, no ztunnel (baseline).
    Direct,
}

impl Route {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::Hbone => "HBONE",
            Route::Passthrough => "passthrough",
            Route::Direct => "direct (no mesh)",
        }
    }
}

/// What happened to one flow.
#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) what: String,
    pub(crate) source: String,
    pub(crate) destination: String,
    pub(crate) route: Route,
    /// Expected SPIFFE ids (source, destination); `None` where no certificate is involved.
    pub(crate) identities: Option<(String, String)>,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    /// A short success note, or the error chain.
    pub(crate) outcome: Result<String, String>,
}

/// Which HTTP client sends a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpClient {
    Curl,
    BuiltIn,
}

/// One GET from `sleep` through node A's SOCKS5 to `dst`, expecting 200 from `web`.
pub(crate) async fn http_get(topo: &Topology, client: HttpClient, dst: SocketAddr, path: &str, label: &str) -> Flow {
    let mut flow = Flow {
        what: format!("HTTP GET {path} ({})", if client == HttpClient::Curl { "curl" } else { "built-in client" }),
        source: topo.sleep.name.to_string(),
        destination: label.to_string(),
        route: Route::Hbone,
        identities: Some((topo.sleep.spiffe(), topo.web.spiffe())),
        sent: 0,
        received: 0,
        outcome: Err(String::new()),
    };
    let result = tokio::time::timeout(HTTP_TIMEOUT, async {
        match client {
            HttpClient::Curl => curl_get(topo, dst, path).await,
            HttpClient::BuiltIn => {
                let stream = socks::connect(topo.node_a.socks5, topo.sleep.ip, dst).await?;
                http::get(stream, &dst.to_string(), path).await
            }
        }
    })
    .await
    .with_context(|| format!("no response within {HTTP_TIMEOUT:?}"))
    .and_then(|r| r);
    flow.outcome = match result {
        Ok(response) => {
            flow.sent = response.bytes_sent;
            flow.received = response.bytes_received;
            let body = response.body.trim().to_string();
            if response.status == 200 && body.starts_with(&format!("hello from {}", topo.web.name)) {
                Ok(format!("200: {body}"))
            } else {
                Err(format!("unexpected response {}: {body:?}", response.status))
            }
        }
        Err(e) => Err(format!("{e:#}")),
    };
    flow
}

/// `curl --interface <sleep ip> --socks5 <node A>`: a real client through the mesh.
async fn curl_get(topo: &Topology, dst: SocketAddr, path: &str) -> anyhow::Result<http::Response> {
    const MARK: &str = "\n__xtask_curl__";
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "8", "--interface"])
        .arg(topo.sleep.ip.to_string())
        .arg("--socks5")
        .arg(topo.node_a.socks5.to_string())
        .args(["--write-out", &format!("{MARK} %{{http_code}} %{{size_request}} %{{size_header}} %{{size_download}}")])
        .arg(format!("http://{dst}{path}"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run curl")?;
    if !output.status.success() {
        bail!("curl failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, stats) = text.rsplit_once(MARK).context("curl printed no --write-out line")?;
    let n: Vec<u64> = stats.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    ensure!(n.len() == 4, "cannot read curl --write-out {stats:?}");
    Ok(http::Response {
        status: u16::try_from(n[0]).unwrap_or(0),
        body: body.to_string(),
        bytes_sent: n[1],
        bytes_received: n[2] + n[3],
    })
}

/// The digest of the first `bytes` of `pattern`, and how fast this machine hashed it (the
/// sink hashes inline, so that rate caps every bulk measurement).
pub(crate) fn expected_digest(pattern: &Pattern, bytes: u64) -> ([u8; 32], f64) {
    let started = Instant::now();
    let mut hasher = Sha256::new();
    for chunk in pattern.chunks(bytes) {
        hasher.update(chunk);
    }
    let digest = hasher.finalize().into();
    (digest, bytes as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64())
}

/// A measured upload: the flow record and, when it worked, the rate in MiB/s.
pub(crate) struct Bulk {
    pub(crate) flow: Flow,
    pub(crate) mib_per_s: Option<f64>,
    pub(crate) elapsed: Duration,
}

/// Uploads `bytes` from `sleep` to `data`, through the mesh or direct, and checks the digest
/// the sink returns. Timing covers connect, upload and the sink's reply.
pub(crate) async fn bulk(
    topo: &Topology,
    route: Route,
    pattern: &Pattern,
    bytes: u64,
    digest: [u8; 32],
    timeout: Duration,
) -> Bulk {
    let dst = topo.data.app_addr();
    let mib = bytes as f64 / (1024.0 * 1024.0);
    let mut flow = Flow {
        what: format!("bulk upload {mib:.0} MiB, SHA-256 checked"),
        source: topo.sleep.name.to_string(),
        destination: format!("{} {dst}", topo.data.name),
        route,
        identities: (route == Route::Hbone).then(|| (topo.sleep.spiffe(), topo.data.spiffe())),
        sent: 0,
        received: 0,
        outcome: Err(String::new()),
    };
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let stream = match route {
            Route::Direct => {
                socks::dial_from(topo.sleep.ip, dst).await.with_context(|| format!("connecting to {dst}"))?
            }
            _ => socks::connect(topo.node_a.socks5, topo.sleep.ip, dst).await?,
        };
        upload(stream, pattern, bytes).await
    })
    .await
    .with_context(|| format!("not finished within {timeout:?}"))
    .and_then(|r| r);
    let elapsed = started.elapsed();
    let mut mib_per_s = None;
    flow.outcome = match result {
        Ok((received, got_len, got_digest)) => {
            flow.sent = bytes;
            flow.received = received;
            if got_len != bytes {
                Err(format!("sink received {got_len} bytes, {bytes} were sent"))
            } else if got_digest != digest {
                Err(format!("SHA-256 mismatch: sent {}, sink got {}", hex::encode(digest), hex::encode(got_digest)))
            } else {
                let rate = mib / elapsed.as_secs_f64();
                mib_per_s = Some(rate);
                Ok(format!("sha256 {}… matches, {rate:.0} MiB/s", &hex::encode(digest)[..12]))
            }
        }
        Err(e) => Err(format!("{e:#}")),
    };
    Bulk { flow, mib_per_s, elapsed }
}

/// Sends the pattern, half-closes, and reads the sink's (length, digest) reply.
async fn upload(mut stream: TcpStream, pattern: &Pattern, bytes: u64) -> anyhow::Result<(u64, u64, [u8; 32])> {
    let mut sent = 0u64;
    for chunk in pattern.chunks(bytes) {
        stream.write_all(chunk).await.with_context(|| format!("upload broke after {sent} bytes"))?;
        sent += chunk.len() as u64;
    }
    stream.shutdown().await.context("half-closing the upload")?;
    let mut reply = [0u8; SINK_REPLY_LEN];
    stream.read_exact(&mut reply).await.context("reading the sink's digest (was the half-close delivered?)")?;
    let (len, digest) = reply.split_at(8);
    let len = u64::from_be_bytes(len.try_into().context("sink length")?);
    let digest: [u8; 32] = digest.try_into().context("sink digest")?;
    Ok((SINK_REPLY_LEN as u64, len, digest))
}

/// One echo exchange from `sleep` to the unmeshed server, through node A (passthrough).
pub(crate) async fn passthrough(topo: &Topology) -> Flow {
    let dst = topo.outside;
    let message = format!("hello from {} to a server outside the mesh\n", topo.sleep.name);
    let mut flow = Flow {
        what: "TCP echo".to_string(),
        source: topo.sleep.name.to_string(),
        destination: format!("outside {dst} (not in config)"),
        route: Route::Passthrough,
        identities: None,
        sent: 0,
        received: 0,
        outcome: Err(String::new()),
    };
    let result = tokio::time::timeout(ECHO_TIMEOUT, async {
        let mut stream = socks::connect(topo.node_a.socks5, topo.sleep.ip, dst).await?;
        stream.write_all(message.as_bytes()).await?;
        stream.shutdown().await?;
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).await?;
        anyhow::Ok(echoed)
    })
    .await
    .with_context(|| format!("no echo within {ECHO_TIMEOUT:?}"))
    .and_then(|r| r);
    flow.outcome = match result {
        Ok(echoed) => {
            flow.sent = message.len() as u64;
            flow.received = echoed.len() as u64;
            if echoed == message.as_bytes() {
                Ok("echoed intact".to_string())
            } else {
                Err(format!("echo differs: {:?}", String::from_utf8_lossy(&echoed)))
            }
        }
        Err(e) => Err(format!("{e:#}")),
    };
    flow
}
