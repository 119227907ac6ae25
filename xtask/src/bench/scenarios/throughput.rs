//! S1: bulk throughput from `client` to `server` with iperf3 (Debian's), one stream and 8
//! parallel streams, in MiB/s as iperf3's receiver counted them. While the mesh runs, the CPU
//! time of both ztunnels is read, giving S3's core-seconds per GiB.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::{Plan, number, schedule};
use crate::bench::mesh::{BenchMesh, IPERF_PORT, Path, finish_raw};
use crate::bench::process_stats::{cpu_delta, cpu_of};
use crate::bench::results::{Better, ScenarioResult, Series, Target};

/// Core-seconds of both ztunnels together per GiB moved, per mesh run.
#[derive(Debug, Default)]
pub(crate) struct BulkCpu {
    pub(crate) core_seconds_per_gib: Series,
}

const MIB: f64 = 1024.0 * 1024.0;

pub(crate) async fn run(mesh: &mut BenchMesh, plan: &Plan) -> anyhow::Result<(Vec<ScenarioResult>, BulkCpu)> {
    let mut results = Vec::new();
    let mut cpu = BulkCpu::default();
    let mut one_stream_mesh = 0.0;
    for (id, streams) in [("S1_1", 1usize), ("S1_8", 8)] {
        let (mut direct, mut through) = (Series::default(), Series::default());
        for path in schedule(plan.runs) {
            mesh.set_path(&mesh.pair(), path).await?;
            let pids = mesh.ztunnel_pids()?;
            let before = cpu_of(&pids)?;
            let (bytes, seconds) =
                iperf(mesh, streams, plan.s1_seconds).await.with_context(|| format!("{id} {}", path.label()))?;
            let used: f64 = cpu_delta(&before, &cpu_of(&pids)?)?.iter().sum();
            let rate = bytes / MIB / seconds;
            println!("    {id} {:<6} {:>8.0} MiB/s", path.label(), rate);
            match path {
                Path::Direct => direct.push(rate),
                Path::Mesh => {
                    through.push(rate);
                    cpu.core_seconds_per_gib.push(used / (bytes / (1024.0 * MIB)));
                }
            }
        }
        let mut targets = Vec::new();
        let ratio = through.median() / direct.median().max(f64::MIN_POSITIVE);
        if streams == 1 {
            one_stream_mesh = through.median();
            targets.push(Target { text: "mesh >= 0.40 x direct".into(), met: ratio >= 0.40 });
        } else {
            let vs_one = through.median() / one_stream_mesh.max(f64::MIN_POSITIVE);
            targets.push(Target { text: "mesh >= 0.95 x mesh's 1-stream".into(), met: vs_one >= 0.95 });
        }
        results.push(ScenarioResult {
            id: if streams == 1 { "S1_1" } else { "S1_8" },
            title: if streams == 1 { "bulk, 1 stream (iperf3)" } else { "bulk, 8 streams (iperf3)" },
            unit: "MiB/s",
            better: Better::Higher,
            direct: Some(direct),
            mesh: through,
            targets,
            details: json!({ "streams": streams, "seconds_per_run": plan.s1_seconds }),
        });
    }
    Ok((results, cpu))
}

/// One iperf3 run from `client` to `server`: bytes received and seconds, from its JSON report.
async fn iperf(mesh: &BenchMesh, streams: usize, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let server = mesh.server.addr(IPERF_PORT);
    let argv = ["iperf3", "--client", &server.ip().to_string(), "--port", &server.port().to_string()]
        .into_iter()
        .chain(["--time", &seconds.to_string(), "--parallel", &streams.to_string(), "--json"])
        .map(str::to_string)
        .collect();
    let proc = mesh.spawn(&mesh.client, argv).await?;
    let out = finish_raw(proc, Duration::from_secs(seconds + 30)).await?;
    let report: Value = serde_json::from_str(&out).with_context(|| format!("iperf3 printed no JSON report: {out}"))?;
    if let Some(error) = report.get("error") {
        anyhow::bail!("iperf3: {error}");
    }
    let bytes = number(&report, "/end/sum_received/bytes")?;
    let secs = number(&report, "/end/sum_received/seconds")?;
    Ok((bytes, secs))
}
