//! S2: latency of 1 KiB requests echoed at a fixed 1000 requests/s over 4 connections, from
//! `client` to `server`, direct and through the mesh: p50/p90/p99 and what the mesh adds.
//! While the mesh runs, the CPU time of each ztunnel gives S3's CPU per request; S3 is
//! assembled here from that and S1's CPU per GiB.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::throughput::BulkCpu;
use super::{Plan, no_errors, number, schedule};
use crate::bench::mesh::{BenchMesh, Path};
use crate::bench::process_stats::{cpu_delta, cpu_of};
use crate::bench::results::{Better, ScenarioResult, Series, Target};

const PERCENTILES: [&str; 3] = ["p50", "p90", "p99"];

pub(crate) async fn run(mesh: &mut BenchMesh, plan: &Plan, bulk: BulkCpu) -> anyhow::Result<[ScenarioResult; 2]> {
    // [path][percentile] over runs.
    let mut lat: [[Series; 3]; 2] = Default::default();
    let mut per_request: [Series; 2] = Default::default();
    let mut worst_per_request = Series::default();
    let args = vec![
        "rate".to_string(),
        mesh.echo_addr().to_string(),
        format!("--connections={}", plan.s2_connections),
        format!("--rate={}", plan.s2_rate),
        format!("--seconds={}", plan.s2_seconds),
        "--size=1024".to_string(),
    ];
    let limit = Duration::from_secs_f64(plan.s2_seconds + 30.0);
    for path in schedule(plan.runs) {
        mesh.set_path(&mesh.pair(), path).await?;
        let pids = mesh.ztunnel_pids()?;
        let before = cpu_of(&pids)?;
        let client = mesh.client.clone();
        let result = mesh.load(&client, &args, limit).await.with_context(|| format!("S2 {}", path.label()))?;
        let used = cpu_delta(&before, &cpu_of(&pids)?)?;
        no_errors(&result, "S2")?;
        let requests = number(&result, "/requests")?;
        let i = path as usize;
        for (p, name) in PERCENTILES.iter().enumerate() {
            lat[i][p].push(number(&result, &format!("/latency/{name}_us"))?);
        }
        println!(
            "    S2 {:<6} p50 {:>5} µs  p90 {:>5} µs  p99 {:>5} µs  ({requests} requests)",
            path.label(),
            lat[i][0].runs.last().copied().unwrap_or_default(),
            lat[i][1].runs.last().copied().unwrap_or_default(),
            lat[i][2].runs.last().copied().unwrap_or_default()
        );
        if path == Path::Mesh {
            let us: Vec<f64> = used.iter().map(|s| s * 1e6 / requests.max(1.0)).collect();
            per_request[0].push(us[0]);
            per_request[1].push(us[1]);
            worst_per_request.push(us[0].max(us[1]));
        }
    }
    let [direct, through] = &lat;
    let added: Vec<f64> = (0..3).map(|p| through[p].median() - direct[p].median()).collect();
    let s2 = ScenarioResult {
        id: "S2",
        title: "1 KiB req/resp at 1000/s over 4 conns, p50",
        unit: "µs",
        better: Better::Lower,
        direct: Some(direct[0].clone()),
        mesh: through[0].clone(),
        targets: vec![
            Target { text: format!("added p50 <= 125 µs (is {:.0})", added[0]), met: added[0] <= 125.0 },
            Target { text: format!("added p99 <= 250 µs (is {:.0})", added[2]), met: added[2] <= 250.0 },
        ],
        details: json!({
            "rate_per_second": plan.s2_rate,
            "connections": plan.s2_connections,
            "seconds_per_run": plan.s2_seconds,
            "direct_us": percentile_json(direct),
            "mesh_us": percentile_json(through),
            "added_us": { "p50": added[0], "p90": added[1], "p99": added[2] },
        }),
    };
    let per_gib = bulk.core_seconds_per_gib.median();
    let s3 = ScenarioResult {
        id: "S3",
        title: "ztunnel CPU per request at 1000/s (busier ztunnel)",
        unit: "µs CPU/request",
        better: Better::Lower,
        direct: None,
        mesh: worst_per_request.clone(),
        targets: vec![
            Target { text: "<= 40 µs per request per ztunnel".into(), met: worst_per_request.median() <= 40.0 },
            Target {
                text: format!("<= 0.9 core-s per GiB in S1, both ztunnels (is {per_gib:.2})"),
                met: per_gib <= 0.9,
            },
        ],
        details: json!({
            "us_per_request_ztunnel_a": per_request[0].median(),
            "us_per_request_ztunnel_b": per_request[1].median(),
            "us_per_1000_requests_both": (per_request[0].median() + per_request[1].median()) * 1000.0,
            "core_seconds_per_gib_both": per_gib,
            "core_seconds_per_gib_runs": bulk.core_seconds_per_gib.runs,
        }),
    };
    Ok([s2, s3])
}

fn percentile_json(series: &[Series; 3]) -> serde_json::Value {
    json!({ "p50": series[0].median(), "p90": series[1].median(), "p99": series[2].median() })
}
