//! `cargo xtask bench`: what the mesh costs, measured against direct TCP in the same run.
//!
//! Builds the release `ztunnel` (and the `state_scale` example), sets up the namespaced
//! topology (client pod on node-a, server pod on node-b, plus the cold-tunnel pods; one
//! ztunnel per node with eBPF capture) and runs each scenario through both paths: direct (the
//! pods unenrolled) and mesh (enrolled: capture, ztunnel A, HBONE, ztunnel B). Prints a table
//! with the median, min and max of the repeated runs, the ratio against direct and each
//! target, and writes the same as JSON (`--json`), keyed by scenario id, so runs can be
//! compared across commits.
//!
//! This is a benchmark, not a test: a missed target is reported, never a failure. The run
//! fails only if a scenario cannot run (a connection fails, a tool is missing, a ztunnel
//! dies). `--quick` runs everything small, as CI's smoke check. Everything created is removed
//! on every path, as in the demo.

pub(crate) mod capture_cost;
mod mesh;
mod process_stats;
mod results;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::lab::binaries::{self, Binaries};
use crate::lab::cleanup::Created;
use crate::lab::interruptible::run_until_signal;
use crate::lab::prerequisites;
use crate::workspace;
use mesh::BenchMesh;
use results::ScenarioResult;
use scenarios::Plan;

/// The example that measures state at scale (S7).
const STATE_SCALE_BUILD: &str = "cargo build --release -p ztunnel --example state_scale";

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Everything small (1 run per path, short durations, few pods): a smoke check.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/bench.json")]
    json: PathBuf,
    /// Runs per path for S1, S2, S4 and S5 (default 3, or 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=20))]
    runs: Option<u64>,
    /// Only these scenarios (comma separated: S1,S2,S3,S4,S5,S6,S7; S3 needs S1 and S2).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl BenchArgs {
    fn wants(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s.eq_ignore_ascii_case(id))
    }
}

pub(crate) fn main(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut plan = if args.quick { Plan::quick() } else { Plan::full() };
    if let Some(runs) = args.runs {
        plan.runs = runs as usize;
    }
    println!("==> checking this machine");
    prerequisites::ensure(&[prerequisites::IPERF3]).context("step \"prerequisites\" failed")?;
    println!("==> building (release)");
    let binaries = binaries::build().context("step \"build\" failed")?;
    let example = if args.wants("S7") {
        Some(binaries::build_one(STATE_SCALE_BUILD, "state_scale").context("step \"build\" failed")?)
    } else {
        None
    };
    let dir = tempfile::Builder::new().prefix("ztunnel-bench-").tempdir().context("cannot create temp dir")?;
    let created = Created::default();
    let result = run_until_signal(run(&args, &plan, binaries, example.as_deref(), dir.path(), &created));
    let cleanup = created.check();
    let results = match (result, cleanup) {
        (Ok(results), Ok(_)) => results,
        (result, cleanup) => {
            if let Err(e) = &result {
                eprintln!("==> bench FAILED: {e:#}");
            }
            if let Err(e) = &cleanup {
                eprintln!("==> bench FAILED: {e:#}");
            }
            eprintln!("    ztunnel logs kept in {}", dir.keep().display());
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("==> results (median [min–max] over runs; ratio = mesh / direct)");
    println!("{}", results::table(&results));
    let json_path = if args.json.is_absolute() { args.json.clone() } else { workspace::root().join(&args.json) };
    write_json(&json_path, &results, &plan, args.quick)?;
    let missed: Vec<String> = results
        .iter()
        .flat_map(|r| r.targets.iter().filter(|t| !t.met).map(move |t| format!("{} {}", r.id, t.text)))
        .collect();
    println!("==> JSON written to {}", json_path.display());
    println!(
        "==> bench done in {:.0} s: {} scenarios, {} target(s) missed{}",
        started.elapsed().as_secs_f64(),
        results.len(),
        missed.len(),
        if missed.is_empty() { String::new() } else { format!(": {}", missed.join("; ")) }
    );
    Ok(ExitCode::SUCCESS)
}

async fn run(
    args: &BenchArgs,
    plan: &Plan,
    binaries: Binaries,
    example: Option<&Path>,
    dir: &Path,
    created: &Created,
) -> anyhow::Result<Vec<ScenarioResult>> {
    let mut results = Vec::new();
    let needs_mesh = ["S1", "S2", "S3", "S4", "S5", "S6"].iter().any(|s| args.wants(s));
    if needs_mesh {
        let cold = if args.wants("S5") { plan.cold_pods } else { 0 };
        println!(
            "==> mesh: node-a (client + {cold} cold clients), node-b (server + {cold} cold servers), files in {}",
            dir.display()
        );
        let mut mesh = BenchMesh::create(binaries, dir, cold).await.context("step \"mesh\" failed")?;
        created.topology(mesh.cluster.id());
        created.processes(mesh.cluster.processes());
        let started = mesh.start_ztunnels().await;
        created.processes(mesh.cluster.processes());
        started.context("step \"ztunnels\" failed")?;
        let outcome = scenarios_on_mesh(args, plan, &mut mesh, dir, created, &mut results).await;
        created.processes(mesh.cluster.processes());
        if let Err(e) = outcome {
            // A ztunnel that died explains a failed scenario better than the scenario's error.
            mesh.ensure_running().context("a ztunnel died")?;
            return Err(e);
        }
    }
    if let Some(example) = example {
        println!("==> S7 state at scale ({:?} workloads)", plan.s7_workloads);
        results.push(scenarios::state::run(example, plan).await.context("scenario S7 failed")?);
    }
    Ok(results)
}

async fn scenarios_on_mesh(
    args: &BenchArgs,
    plan: &Plan,
    mesh: &mut BenchMesh,
    dir: &Path,
    created: &Created,
    results: &mut Vec<ScenarioResult>,
) -> anyhow::Result<()> {
    let mut bulk_cpu = scenarios::throughput::BulkCpu::default();
    if args.wants("S1") || args.wants("S3") {
        println!("==> S1 bulk throughput (iperf3, {} s per run, {} runs per path)", plan.s1_seconds, plan.runs);
        let (s1, cpu) = scenarios::throughput::run(mesh, plan).await.context("scenario S1 failed")?;
        results.extend(s1);
        bulk_cpu = cpu;
    }
    if args.wants("S2") || args.wants("S3") {
        println!("==> S2 latency and S3 CPU ({} req/s, {} s per run)", plan.s2_rate, plan.s2_seconds);
        let [s2, s3] = scenarios::latency::run(mesh, plan, bulk_cpu).await.context("scenario S2 failed")?;
        results.push(s2);
        results.push(s3);
    }
    if args.wants("S4") {
        println!("==> S4 new connections over warm tunnels ({} s per run)", plan.s4_seconds);
        results.push(scenarios::connections::run(mesh, plan).await.context("scenario S4 failed")?);
    }
    if args.wants("S5") {
        println!("==> S5 cold tunnels ({0} x {0} identity pairs per run)", plan.cold_pods);
        let s5 = scenarios::cold::run(mesh, plan).await;
        created.processes(mesh.cluster.processes());
        results.push(s5.context("scenario S5 failed")?);
    }
    if args.wants("S6") {
        println!("==> S6 memory per idle tunnelled connection ({} connections)", plan.s6_connections);
        let s6 = scenarios::memory::run(mesh, plan, dir).await;
        created.processes(mesh.cluster.processes());
        results.push(s6.context("scenario S6 failed")?);
    }
    mesh.ensure_running()
}

fn write_json(path: &Path, results: &[ScenarioResult], plan: &Plan, quick: bool) -> anyhow::Result<()> {
    let meta = json!({
        "quick": quick,
        "runs_per_path": plan.runs,
        "commit": git_commit(),
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    let doc = results::to_json(results, meta);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The checked-out commit, if git can tell.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace::root())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
