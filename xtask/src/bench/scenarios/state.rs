//! S7: state at scale, measured by ztunnel's `state_scale` example (a separate process per
//! size, so each reading starts from a clean heap): N workloads and N/15 services encoded as
//! the Delta xDS `Address` resources istiod sends, then applied through the same code the
//! xDS client runs. Reports the heap kept per workload, the time from decoded resources to
//! a ready snapshot, and the time to apply one changed workload at that size. No direct
//! baseline applies.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::{Plan, number};
use crate::bench::mesh::last_json;
use crate::bench::results::{Better, ScenarioResult, Series, Target};

/// Bound on one example run.
const RUN_LIMIT: Duration = Duration::from_secs(300);

pub(crate) async fn run(example: &Path, plan: &Plan) -> anyhow::Result<ScenarioResult> {
    let mut sizes = Vec::new();
    for &n in &plan.s7_workloads {
        let out = tokio::time::timeout(
            RUN_LIMIT,
            tokio::process::Command::new(example).arg("--workloads").arg(n.to_string()).kill_on_drop(true).output(),
        )
        .await
        .with_context(|| format!("S7: state_scale --workloads {n} did not finish within {RUN_LIMIT:?}"))?
        .context("S7: cannot run state_scale")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            anyhow::bail!(
                "S7: state_scale --workloads {n} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v = last_json(&stdout).with_context(|| format!("S7: state_scale printed no JSON: {stdout}"))?;
        println!(
            "    S7 {n:>6} workloads: {:>6.0} B/workload, load {:>7.1} ms, one update {:>7.1} µs",
            number(&v, "/heap_bytes_per_workload")?,
            number(&v, "/load_ms")?,
            number(&v, "/update_us_median")?
        );
        sizes.push(v);
    }
    let largest = sizes.last().context("S7: no sizes to run")?.clone();
    let per_workload = number(&largest, "/heap_bytes_per_workload")?;
    let (load_ms, update_us) = (number(&largest, "/load_ms")?, number(&largest, "/update_us_median")?);
    let n = number(&largest, "/workloads")?;
    let mut series = Series::default();
    series.push(per_workload);
    let at = |what: &str| format!("{what} at {n:.0}");
    Ok(ScenarioResult {
        id: "S7",
        title: "state: heap per workload (largest size)",
        unit: "B/workload",
        better: Better::Lower,
        direct: None,
        mesh: series,
        targets: vec![
            Target { text: at("<= 0.9 KiB per workload"), met: per_workload <= 0.9 * 1024.0 },
            Target { text: at(&format!("load <= 165 ms (is {load_ms:.1})")), met: load_ms <= 165.0 },
            Target {
                text: at(&format!("one update <= 1 ms (is {:.3})", update_us / 1000.0)),
                met: update_us <= 1000.0,
            },
        ],
        details: json!({ "sizes": Value::Array(sizes) }),
    })
}
