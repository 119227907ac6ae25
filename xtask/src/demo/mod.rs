//! `cargo xtask demo`: a two-node ambient mesh on this machine with real eBPF capture, real
//! apps and real traffic, and a readable account of what happened.
//!
//! Steps: check the machine (root, cgroup v2, tools; installs missing ones with apt-get);
//! build the release `ztunnel` and `testapp`; build 2 nodes and 5 pods from network
//! namespaces, veths, bridges and cgroups (the tests' harness); start the apps in the pods;
//! start one ztunnel per node inside the node's namespace with `--capture`; enroll the four
//! mesh pods with `ztunnel enroll`; run the flows from the `sleep` pod (curl by pod IP and by
//! service VIP, a same-node echo, a SHA-256-checked bulk echo across nodes, one connection to
//! a pod outside the mesh); print the flow table (captured? HBONE? identities, bytes, all read
//! from the ztunnels' own metrics), the metrics of both ztunnels and their certificates;
//! measure the cost of capture (see [`capture_cost`]); stop both ztunnels with SIGTERM; remove
//! everything and check nothing is left.
//!
//! Exits 0 only if every step and flow succeeded; otherwise it names the failing step and
//! shows the end of the ztunnel logs. Everything is removed on every path, including Ctrl-C
//! and SIGTERM: the signal ends the run future, whose drop kills the processes and removes
//! the namespaces, cgroups and bpffs pins (see [`crate::lab::cluster`]).

mod flows;
mod report;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::bench::capture_cost::{self, BenchPlan};
use crate::lab::binaries::{self, Binaries};
use crate::lab::blocking::blocking;
use crate::lab::cleanup::Created;
use crate::lab::cluster::{self, Cluster};
use crate::lab::interruptible::{Interrupted, run_until_signal};
use crate::lab::layout::{self, NODES, TRUST_DOMAIN};
use crate::lab::{metrics, prerequisites};

/// How long a ztunnel may take to exit after SIGTERM (its drain deadline is 2 s).
const EXIT_BOUND: Duration = Duration::from_secs(10);
/// Log lines shown per ztunnel when the demo fails.
const LOG_TAIL: usize = 30;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// MiB echoed in the bulk flow (sleep -> data, through HBONE, checked by SHA-256).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=16384))]
    bulk_mib: u64,
    /// Connect cycles per path in the capture-cost benchmark (spread over the rounds).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    bench_cycles: u64,
    /// MiB of each upload in the capture-cost benchmark (one per path and round).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=16384))]
    bench_mib: u64,
    /// Rounds of the capture-cost benchmark; the paths alternate C D, D C, ...
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    bench_rounds: u64,
    /// Skip the capture-cost benchmark.
    #[arg(long)]
    no_bench: bool,
    /// Keep the demo's directory (mesh config, ztunnel logs) after a successful run.
    #[arg(long)]
    keep: bool,
}

pub(crate) fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    println!("==> checking this machine");
    prerequisites::ensure(&[]).context("step \"prerequisites\" failed")?;
    println!("==> building (release)");
    let binaries = binaries::build().context("step \"build\" failed")?;
    println!("    {}\n    {}", binaries.ztunnel.display(), binaries.testapp.display());
    let dir = tempfile::Builder::new().prefix("ztunnel-demo-").tempdir().context("cannot create temp dir")?;
    let created = Created::default();
    let result = run_until_signal(run(&args, binaries, dir.path(), &created));
    let interrupted = result.as_ref().is_err_and(|e| e.is::<Interrupted>());
    if let Err(e) = &result {
        eprintln!("==> demo FAILED: {e:#}");
        if !interrupted {
            show_logs(dir.path());
        }
    }
    let cleanup = created.check();
    match &cleanup {
        Ok(Some(id)) => println!(
            "==> cleanup: ztunnels and apps stopped; namespaces, cgroups and bpffs pins of topology {id} removed"
        ),
        Ok(None) => {}
        Err(e) => eprintln!("==> demo FAILED: {e:#}"),
    }
    match (result, cleanup) {
        (Ok(summary), Ok(_)) => {
            if args.keep {
                println!("    files kept in {}", dir.keep().display());
            }
            println!("==> demo PASSED: {summary}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            if !interrupted || args.keep {
                eprintln!("    files kept in {}", dir.keep().display());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The demo proper; returns a one-line summary or the failing step.
async fn run(args: &DemoArgs, binaries: Binaries, dir: &Path, created: &Created) -> anyhow::Result<String> {
    println!("==> mesh: 2 nodes, 5 pods (trust domain {TRUST_DOMAIN}), files in {}", dir.display());
    let log_dir = dir.to_path_buf();
    let create = move || Cluster::create("demo", binaries, &log_dir, &layout::PODS, &[layout::WEB_SERVICE]);
    let mut cluster = blocking(create).await.context("step \"mesh\" failed")?;
    created.topology(cluster.id());
    report::plan(&cluster);

    let www = dir.join("www");
    std::fs::create_dir_all(&www).context("step \"apps\" failed")?;
    std::fs::write(www.join("index.html"), "hello from web (python3 http.server in pod web)\n")
        .context("step \"apps\" failed")?;
    let started = cluster.start_apps(&www).await;
    created.processes(cluster.processes());
    started.context("step \"apps\" failed")?;
    println!("==> apps listening: {}", cluster.app_names().join(", "));

    for node in NODES {
        let started = cluster.start_ztunnel(node).await;
        created.processes(cluster.processes());
        let (pid, took) = started.with_context(|| format!("step \"start ztunnel on {node}\" failed"))?;
        println!(
            "==> ztunnel on {node} ready in {} ms (pid {pid}, --capture, in netns {}, log {})",
            took.as_millis(),
            cluster.node(node).netns_name(),
            cluster::ztunnel_log(dir, node).display()
        );
    }

    println!("==> enroll the mesh pods (what a node agent does when a pod starts)");
    for pod in cluster.pods.iter().filter(|p| p.spec.in_mesh()) {
        let shown = cluster.enroll(pod).await.context("step \"enroll\" failed")?;
        println!("    {}", shown.lines().next().unwrap_or_default());
    }
    for node in NODES {
        let listing = cluster.enrolled(node).await.context("step \"enroll\" failed")?;
        for line in listing.lines() {
            println!("    {line}");
        }
    }

    println!("==> traffic, every client running inside the sleep pod (no proxy settings, no SOCKS)");
    let mut flows = Vec::new();
    for spec in flows::plan(&cluster, args.bulk_mib * 1024 * 1024) {
        println!("    {} -> {} ...", spec.from.spec.name, spec.dst_label);
        match flows::run(&cluster, spec).await {
            Ok(flow) => flows.push(flow),
            Err(e) => {
                // A scrape failed: a ztunnel that died is the better explanation.
                for node in NODES {
                    cluster.ensure_running(node).context("step \"traffic\" failed")?;
                }
                return Err(e.context("step \"traffic\" failed"));
            }
        }
    }
    for node in NODES {
        cluster.ensure_running(node).context("step \"traffic\" failed")?;
    }
    println!("==> flows (captured, HBONE, identities and bytes as the ztunnels counted them)");
    report::flows(&flows);
    let mut failures = flows::failures(&flows);

    println!("==> metrics (istio_tcp_*, grouped by the labels that matter)");
    for node in NODES {
        let text = cluster.metrics_text(node).await.context("step \"metrics\" failed")?;
        report::metrics(node, &metrics::parse(&text));
    }
    println!("==> certificates (from /config_dump)");
    for node in NODES {
        let dump = cluster.config_dump(node).await.context("step \"certificates\" failed")?;
        report::certificates(node, &dump);
    }

    let mut cost = None;
    if args.no_bench {
        println!("==> capture cost: skipped (--no-bench)");
    } else {
        println!("==> capture cost: the same two pods captured, then unenrolled and talking directly");
        let plan = BenchPlan {
            cycles: usize::try_from(args.bench_cycles).unwrap_or(usize::MAX),
            warmup: 10,
            upload_bytes: args.bench_mib * 1024 * 1024,
            rounds: usize::try_from(args.bench_rounds).unwrap_or(1),
        };
        match capture_cost::run(&cluster, plan).await {
            Ok(measurements) => {
                report::bench(&measurements);
                let [captured, direct] = &measurements;
                cost = Some(format!(
                    "connect cycle p50 {} µs captured vs {} µs direct, one stream {:.0} vs {:.0} MiB/s",
                    captured.latency.p50_us,
                    direct.latency.p50_us,
                    captured.median_rate(),
                    direct.median_rate()
                ));
            }
            Err(e) => failures.push(format!("capture cost: {e:#}")),
        }
    }

    println!("==> shutdown (SIGTERM, bound {EXIT_BOUND:?})");
    for node in NODES.iter().rev() {
        let (status, took) = cluster.terminate(node, EXIT_BOUND).await.context("step \"shutdown\" failed")?;
        println!("    ztunnel on {node} exited ({status}) {} ms after SIGTERM", took.as_millis());
        if !status.success() {
            failures.push(format!("shutdown: ztunnel on {node} did not exit cleanly after SIGTERM: {status}"));
        }
    }

    if !failures.is_empty() {
        bail!("{} check(s) failed (step: what):\n      {}", failures.len(), failures.join("\n      "));
    }
    let hbone = flows.iter().filter(|f| f.evidence.hbone()).count();
    let mut summary = format!(
        "{} flows captured as expected ({hbone} in HBONE, {} passed through); ",
        flows.len(),
        flows.len() - hbone
    );
    if let Some(cost) = cost {
        summary.push_str(&cost);
        summary.push_str("; ");
    }
    summary.push_str("both ztunnels stopped cleanly");
    Ok(summary)
}

/// Prints the end of each ztunnel log.
fn show_logs(dir: &Path) {
    for node in NODES {
        let log = cluster::ztunnel_log(dir, node);
        if log.exists() {
            eprintln!("---- last {LOG_TAIL} lines of ztunnel on {node} ({}) ----", log.display());
            eprintln!("{}", tail(&log, LOG_TAIL));
        }
    }
}

/// The last `lines` lines of a log file (best effort).
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
