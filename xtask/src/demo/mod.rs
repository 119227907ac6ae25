//! `cargo xtask demo`: two ztunnels as two "nodes" on loopback, real traffic through them,
//! and a readable account of what happened.
//!
//! Steps: build the release binary; check the demo addresses are free; write the config;
//! start node A (it generates the shared CA into the state directory), then node B; start the
//! apps; run the flows (HTTP to a service VIP, a SHA-256-checked bulk upload with a direct
//! baseline, a passthrough connection); check the metrics; print certificates; stop both
//! nodes with SIGTERM. Exits 0 only if every step and flow succeeded. Children are stopped on
//! every path (see [`crate::processes`]); Ctrl-C and SIGTERM end the run through the same path.

mod bulk_pattern;
mod checks;
mod http;
mod metrics;
mod node;
mod report;
mod servers;
mod socks;
mod topology;
mod traffic;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use crate::processes::{self, Processes};
use bulk_pattern::Pattern;
use checks::Expected;
use node::NodeFiles;
use servers::Servers;
use topology::{TRUST_DOMAIN, Topology};
use traffic::{Flow, HttpClient, Route};

/// How long a node may take to exit after SIGTERM (its drain deadline is 2 s).
const EXIT_BOUND: Duration = Duration::from_secs(10);
/// How long counters may take to show connections that just closed.
const METRICS_SETTLE: Duration = Duration::from_secs(5);
/// Log lines shown per process when the demo fails.
const LOG_TAIL: usize = 30;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// MiB to upload in the bulk flow (through the mesh, and again direct as a baseline).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=16384))]
    bulk_mib: u64,
    /// HTTP GETs to the service VIP with the built-in client (curl sends one more if found).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1000))]
    http_requests: u64,
    /// Keep the temporary directory (config, CA, ztunnel logs) after a successful run.
    #[arg(long)]
    keep: bool,
}

pub(crate) fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    println!("==> building ztunnel: cargo build --release -p ztunnel");
    let binary = node::build_release().context("step \"build\" failed")?;
    println!("    {}", binary.display());
    let dir = tempfile::Builder::new().prefix("ztunnel-demo-").tempdir().context("cannot create temp dir")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut procs = Processes::default();
    let result = runtime.block_on(async {
        // Registered before any child starts, so an early Ctrl-C is ours to handle.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = run(&args, &binary, dir.path(), &mut procs) => result,
            _ = interrupt.recv() => Err(anyhow!("interrupted (Ctrl-C); stopping")),
            _ = terminate.recv() => Err(anyhow!("terminated (SIGTERM); stopping")),
        }
    });
    match result {
        Ok(summary) => {
            drop(procs);
            if args.keep {
                println!("    files kept in {}", dir.keep().display());
            }
            println!("==> demo PASSED: {summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("==> demo FAILED: {e:#}");
            for (name, log) in procs.logs() {
                eprintln!("---- last {LOG_TAIL} lines of {name} ({}) ----", log.display());
                eprintln!("{}", processes::tail(&log, LOG_TAIL));
            }
            let started_any = !procs.logs().is_empty();
            drop(procs);
            if started_any {
                eprintln!("    files kept in {}", dir.keep().display());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The demo proper; returns a one-line summary or the failing step.
async fn run(args: &DemoArgs, binary: &Path, dir: &Path, procs: &mut Processes) -> anyhow::Result<String> {
    let topo = Topology::standard();
    println!("==> mesh on loopback (trust domain {TRUST_DOMAIN}), files in {}", dir.display());
    report::plan(&topo);
    topo.check_free().context("step \"check addresses\" failed")?;
    let config = dir.join("config.yaml");
    std::fs::write(&config, topo.render_config()).context("step \"write config\" failed")?;
    let files = NodeFiles { binary, config: &config, state_dir: &dir.join("state"), log_dir: dir };

    for n in [&topo.node_a, &topo.node_b] {
        let (pid, took) =
            node::start(procs, n, &files).await.with_context(|| format!("step \"start {}\" failed", n.name))?;
        println!("==> {} ready in {} ms (pid {pid}, log {}/{}.log)", n.name, took.as_millis(), dir.display(), n.name);
    }

    let mut apps = Servers::default();
    async {
        apps.http(topo.web.app_addr(), topo.web.name).await?;
        apps.sink(topo.data.app_addr()).await?;
        apps.echo(topo.outside).await
    }
    .await
    .context("step \"start apps\" failed")?;
    println!(
        "==> apps: web HTTP on {}, data SHA-256 sink on {}, outside echo on {}",
        topo.web.app_addr(),
        topo.data.app_addr(),
        topo.outside
    );

    let mut flows = http_flows(&topo, args.http_requests).await;
    let http_ok = flows.iter().filter(|f| f.outcome.is_ok()).count() as u64;
    let bulk_bytes = args.bulk_mib * 1024 * 1024;
    println!("==> 2. bulk: {} MiB sleep -> data, through the mesh and direct", args.bulk_mib);
    let pattern = Arc::new(Pattern::new());
    let for_digest = pattern.clone();
    let (digest, hash_rate) =
        tokio::task::spawn_blocking(move || traffic::expected_digest(&for_digest, bulk_bytes)).await?;
    let timeout = Duration::from_secs(30 + args.bulk_mib);
    let mesh = traffic::bulk(&topo, Route::Hbone, &pattern, bulk_bytes, digest, timeout).await;
    let direct = traffic::bulk(&topo, Route::Direct, &pattern, bulk_bytes, digest, timeout).await;
    report::throughput(&mesh, &direct, hash_rate);
    let mesh_rate = mesh.mib_per_s;
    let bulk_ok = mesh.flow.outcome.is_ok();
    flows.push(mesh.flow);
    flows.push(direct.flow);
    println!("==> 3. passthrough: sleep -> {} (not in the mesh config)", topo.outside);
    let pass = traffic::passthrough(&topo).await;
    let passthrough_ok = pass.outcome.is_ok();
    flows.push(pass);

    for n in [&topo.node_a, &topo.node_b] {
        procs.ensure_running(n.name).context("step \"traffic\" failed")?;
    }
    println!("==> flows");
    report::flows(&flows);
    let mut failures: Vec<String> = flows
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.outcome.as_ref().err().map(|e| format!("traffic: flow {} ({}): {e}", i + 1, f.what)))
        .collect();
    let served = apps.http_requests.load(std::sync::atomic::Ordering::Relaxed);
    if served != http_ok {
        failures.push(format!("traffic: web served {served} requests, clients saw {http_ok} succeed"));
    }

    let expected = Expected { http_ok, bulk_bytes: bulk_ok.then_some(bulk_bytes), passthrough_ok };
    println!("==> metrics (istio_tcp_*, grouped by the labels that matter)");
    let metric_failures = check_metrics(&topo, expected).await.context("step \"metrics\" failed")?;
    failures.extend(metric_failures.into_iter().map(|f| format!("metrics: {f}")));

    println!("==> certificates (from /config_dump)");
    for n in [&topo.node_a, &topo.node_b] {
        let body = http::get_ok(n.admin, "/config_dump").await.context("step \"config_dump\" failed")?;
        let dump: serde_json::Value = serde_json::from_str(&body).context("config_dump is not JSON")?;
        report::certificates(n.name, &dump);
    }

    println!("==> shutdown (SIGTERM, bound {EXIT_BOUND:?})");
    for n in [&topo.node_b, &topo.node_a] {
        let (status, took) = procs.terminate(n.name, EXIT_BOUND).await.context("step \"shutdown\" failed")?;
        println!("    {} exited ({status}) {} ms after SIGTERM", n.name, took.as_millis());
        if !status.success() {
            failures.push(format!("shutdown: {} did not exit cleanly after SIGTERM: {status}", n.name));
        }
    }

    if !failures.is_empty() {
        bail!("{} check(s) failed (step: what):\n      {}", failures.len(), failures.join("\n      "));
    }
    Ok(format!(
        "{} flows ok, bulk through the mesh at {:.0} MiB/s, both nodes stopped cleanly",
        flows.len(),
        mesh_rate.unwrap_or(0.0)
    ))
}

/// Step 1: GETs to the service VIP (curl first if installed) and one to the workload IP.
async fn http_flows(topo: &Topology, requests: u64) -> Vec<Flow> {
    let vip = topo.web_service.vip_addr();
    let via_vip = format!("svc {} VIP {vip}", topo.web_service.name);
    let curl = curl_available().await;
    println!(
        "==> 1. HTTP: sleep -> {via_vip}; client: {}",
        if curl { "curl (1 request), then the built-in client" } else { "built-in (curl not found)" }
    );
    let mut flows = Vec::new();
    if curl {
        flows.push(traffic::http_get(topo, HttpClient::Curl, vip, "/", &via_vip).await);
    }
    for i in 1..=requests {
        flows.push(traffic::http_get(topo, HttpClient::BuiltIn, vip, &format!("/req/{i}"), &via_vip).await);
    }
    let direct: SocketAddr = topo.web.app_addr();
    flows.push(traffic::http_get(topo, HttpClient::BuiltIn, direct, "/by-ip", &format!("web {direct}")).await);
    if let Some(Ok(sample)) = flows.first().map(|f| &f.outcome) {
        println!("    first response: {sample}");
    }
    let ok = flows.iter().filter(|f| f.outcome.is_ok()).count();
    println!("    {ok}/{} requests answered 200 by web", flows.len());
    flows
}

async fn curl_available() -> bool {
    tokio::process::Command::new("curl")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Scrapes both nodes until the checks hold or [`METRICS_SETTLE`] passes, prints the last
/// scrape, and returns the checks still failing. Scrape errors fail the step.
async fn check_metrics(topo: &Topology, expected: Expected) -> anyhow::Result<Vec<String>> {
    let started = tokio::time::Instant::now();
    loop {
        let a = metrics::parse(&http::get_ok(topo.node_a.metrics, "/metrics").await?);
        let b = metrics::parse(&http::get_ok(topo.node_b.metrics, "/metrics").await?);
        let failures = checks::verify(topo, &a, &b, expected);
        if failures.is_empty() || started.elapsed() > METRICS_SETTLE {
            report::metrics(topo.node_a.name, &a);
            report::metrics(topo.node_b.name, &b);
            if failures.is_empty() {
                println!("    checks: every flow is counted by both reporters with the expected principals");
            }
            return Ok(failures);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
