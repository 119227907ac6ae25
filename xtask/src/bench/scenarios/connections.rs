//! S4: new connections per second from `client` to `server` over warm tunnels: a few threads
//! each looping connect, 1 KiB echoed, close. Through the mesh every connection is a new
//! HBONE stream on an already established HTTP/2 connection (a short uncounted run first
//! makes sure of that), so this measures per-connection work, not handshakes.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::{Plan, no_errors, number, schedule};
use crate::bench::mesh::{BenchMesh, Path};
use crate::bench::results::{Better, ScenarioResult, Series, Target};

pub(crate) async fn run(mesh: &mut BenchMesh, plan: &Plan) -> anyhow::Result<ScenarioResult> {
    let mut rates: [Series; 2] = Default::default();
    let mut p99: [Series; 2] = Default::default();
    let cps = |seconds: f64| -> Vec<String> {
        vec![
            "cps".into(),
            mesh.echo_addr().to_string(),
            format!("--workers={}", plan.s4_workers),
            format!("--seconds={seconds}"),
            "--size=1024".into(),
        ]
    };
    let (warm, counted) = (cps(0.3), cps(plan.s4_seconds));
    let limit = Duration::from_secs_f64(plan.s4_seconds + 30.0);
    for path in schedule(plan.runs) {
        mesh.set_path(&mesh.pair(), path).await?;
        let client = mesh.client.clone();
        let what = format!("S4 {}", path.label());
        no_errors(&mesh.load(&client, &warm, limit).await.with_context(|| what.clone())?, &what)?;
        let result = mesh.load(&client, &counted, limit).await.with_context(|| what.clone())?;
        no_errors(&result, &what)?;
        let rate = number(&result, "/per_second")?;
        let i = path as usize;
        rates[i].push(rate);
        p99[i].push(number(&result, "/latency/p99_us")?);
        println!("    S4 {:<6} {:>7.0} connections/s", path.label(), rate);
    }
    let [direct, through] = rates;
    let ratio = through.median() / direct.median().max(f64::MIN_POSITIVE);
    Ok(ScenarioResult {
        id: "S4",
        title: "new connections over warm tunnels",
        unit: "conn/s",
        better: Better::Higher,
        direct: Some(direct),
        mesh: through,
        targets: vec![Target { text: "mesh >= 0.40 x direct".into(), met: ratio >= 0.40 }],
        details: json!({
            "workers": plan.s4_workers,
            "seconds_per_run": plan.s4_seconds,
            "bytes_echoed_per_connection": 1024,
            "cycle_p99_us": { "direct": p99[Path::Direct as usize].median(), "mesh": p99[Path::Mesh as usize].median() },
        }),
    })
}
