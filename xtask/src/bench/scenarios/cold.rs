//! S5: cold tunnels per second. `cold_pods` client pods on node-a each connect once to each
//! of `cold_pods` server pods on node-b, all clients starting at the same instant; every pod
//! has its own identity, so through the mesh every connection is a new (source identity,
//! destination) pair and needs its own TLS handshake between the ztunnels. Both ztunnels are
//! restarted before each mesh run so no pooled connection survives from the run before.
//!
//! The rate is all connections over the span from the first client's start to the last
//! client's end; setup time is connect to the first echoed byte of each connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{Value, json};

use super::{Plan, number, schedule};
use crate::bench::mesh::{BenchMesh, ECHO_PORT, Path, finish};
use crate::bench::results::{Better, ScenarioResult, Series, Target};

/// Time given to start every client process before the common start.
const START_DELAY: Duration = Duration::from_millis(1500);

pub(crate) async fn run(mesh: &mut BenchMesh, plan: &Plan) -> anyhow::Result<ScenarioResult> {
    let pods: Vec<_> = mesh.cold_clients.iter().chain(&mesh.cold_servers).cloned().collect();
    let mut rates: [Series; 2] = Default::default();
    let mut p99: [Series; 2] = Default::default();
    for path in schedule(plan.runs) {
        mesh.set_path(&pods, path).await?;
        if path == Path::Mesh {
            mesh.restart_ztunnels().await?;
        }
        let (rate, setup_p99, count) = one_run(mesh).await.with_context(|| format!("S5 {}", path.label()))?;
        println!(
            "    S5 {:<6} {:>7.0} connections/s, setup p99 {:>6.0} µs ({count} connections)",
            path.label(),
            rate,
            setup_p99
        );
        rates[path as usize].push(rate);
        p99[path as usize].push(setup_p99);
    }
    mesh.set_path(&pods, Path::Direct).await?;
    let [direct, through] = rates;
    let mesh_p99 = p99[Path::Mesh as usize].median();
    Ok(ScenarioResult {
        id: "S5",
        title: "cold tunnels (new identity pair each)",
        unit: "conn/s",
        better: Better::Higher,
        direct: Some(direct),
        mesh: through.clone(),
        targets: vec![
            Target { text: ">= 1500 cold tunnels/s".into(), met: through.median() >= 1500.0 },
            Target { text: format!("p99 setup <= 2 ms (is {:.2} ms)", mesh_p99 / 1000.0), met: mesh_p99 <= 2000.0 },
        ],
        details: json!({
            "client_pods": mesh.cold_clients.len(),
            "server_pods": mesh.cold_servers.len(),
            "connections_per_run": mesh.cold_clients.len() * mesh.cold_servers.len(),
            "setup_p99_us": { "direct": p99[Path::Direct as usize].median(), "mesh": mesh_p99 },
            "setup_p99_us_runs": { "direct": p99[Path::Direct as usize].runs, "mesh": p99[Path::Mesh as usize].runs },
        }),
    })
}

/// One run: every client to every server. Returns (connections/s, p99 setup µs, count).
async fn one_run(mesh: &BenchMesh) -> anyhow::Result<(f64, f64, usize)> {
    let servers: Vec<String> = mesh.cold_servers.iter().map(|s| s.addr(ECHO_PORT).to_string()).collect();
    let start = SystemTime::now().duration_since(UNIX_EPOCH)? + START_DELAY;
    let testapp = crate::lab::cluster::path_str(&mesh.cluster.binaries().testapp)?;
    let mut procs = Vec::new();
    for (i, client) in mesh.cold_clients.iter().enumerate() {
        // Each client starts at a different server, so the first handshakes spread out.
        let mut argv = vec![testapp.clone(), "cold".into()];
        argv.extend(servers.iter().cycle().skip(i).take(servers.len()).cloned());
        argv.push(format!("--start-at-ms={}", start.as_millis()));
        procs.push(mesh.spawn(client, argv).await?);
    }
    let mut results: Vec<Value> = Vec::new();
    for proc in procs {
        results.push(finish(proc, Duration::from_secs(60)).await?);
    }
    let mut samples: Vec<u64> = Vec::new();
    let (mut began, mut ended) = (u64::MAX, 0u64);
    for r in &results {
        super::no_errors(r, "S5")?;
        began = began.min(number(r, "/began_us")? as u64);
        ended = ended.max(number(r, "/ended_us")? as u64);
        samples.extend(r["samples_us"].as_array().into_iter().flatten().filter_map(Value::as_u64));
    }
    let count = samples.len();
    let span = (ended.saturating_sub(began)).max(1) as f64 / 1e6;
    let p99 = ztunnel_tests::traffic::Latency::from_samples(&mut samples).p99_us as f64;
    Ok((count as f64 / span, p99, count))
}
