//! S6: ztunnel memory per idle tunnelled connection. Both ztunnels are restarted (fresh
//! processes, `client` and `server` enrolled) and left alone for `s6_idle_wait` (start-up
//! allocations are given back by then), their idle resident memory read; then
//! `s6_connections` connections from `client` to `server` are opened, each checked end to end
//! with a 1-byte echo, and held idle while the memory is read again; then they are closed and
//! the memory read a last time after `s6_after_close`.
//!
//! Memory is `VmRSS` (every resident page: heap, stacks and the mapped binary) of each ztunnel
//! process, read once it stops changing; `RssAnon` (heap and stacks only) is reported beside it.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use super::Plan;
use ztunnel_tests::traffic;

use crate::bench::mesh::{BenchMesh, Path, finish};
use crate::bench::process_stats::{Resident, settled_resident};
use crate::bench::results::{Better, ScenarioResult, Series, Target};
use crate::lab::blocking::blocking;
use crate::lab::cluster::path_str;

const SETTLE_STEP: Duration = Duration::from_millis(500);
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

pub(crate) async fn run(mesh: &mut BenchMesh, plan: &Plan, dir: &std::path::Path) -> anyhow::Result<ScenarioResult> {
    mesh.set_path(&mesh.pair(), Path::Mesh).await?;
    mesh.restart_ztunnels().await?;
    let pids = mesh.ztunnel_pids()?;
    tokio::time::sleep(plan.s6_idle_wait).await;
    let idle = read(&pids).await?;
    println!("    S6 idle      A {:>7} KiB  B {:>7} KiB", idle[0].rss_kib, idle[1].rss_kib);

    let release = dir.join("s6-release");
    let _ = std::fs::remove_file(&release);
    let n = plan.s6_connections;
    let argv = vec![
        path_str(&mesh.cluster.binaries().testapp)?,
        "hold".into(),
        mesh.echo_addr().to_string(),
        format!("--connections={n}"),
        format!("--release={}", path_str(&release)?),
    ];
    let mut proc = mesh.spawn(&mesh.client, argv).await?;
    let opened = blocking(move || {
        let line = proc.wait_for_stdout("\"held\"", Duration::from_secs(120));
        Ok((line, proc))
    })
    .await?;
    let (line, mut proc) = opened;
    let line = line.with_context(|| format!("S6: opening {n} connections: {}", proc.stdout()))?;
    let open = traffic::last(&line, "held").and_then(|v| traffic::number(&v, "open")).unwrap_or(0) as usize;
    if open != n {
        bail!("S6: {open} of {n} connections opened");
    }
    let held = read(&pids).await?;
    println!("    S6 {n} held A {:>7} KiB  B {:>7} KiB", held[0].rss_kib, held[1].rss_kib);

    std::fs::write(&release, b"").context("S6: cannot write the release file")?;
    let released = blocking(move || {
        proc.wait_for_stdout("released", Duration::from_secs(60))?;
        Ok(proc)
    })
    .await?;
    finish(released, Duration::from_secs(30)).await.context("S6: closing")?;
    tokio::time::sleep(plan.s6_after_close).await;
    mesh.ensure_running()?;
    let after = read(&pids).await?;
    println!(
        "    S6 {:?} after close A {:>7} KiB  B {:>7} KiB",
        plan.s6_after_close, after[0].rss_kib, after[1].rss_kib
    );

    let per_conn = |i: usize, f: fn(&Resident) -> u64| f(&held[i]).saturating_sub(f(&idle[i])) as f64 / n as f64;
    let rss = |r: &Resident| r.rss_kib;
    let anon = |r: &Resident| r.anon_kib;
    let worst = per_conn(0, rss).max(per_conn(1, rss));
    let back = |i: usize| after[i].rss_kib as f64 / idle[i].rss_kib.max(1) as f64;
    let worst_back = back(0).max(back(1));
    let mut series = Series::default();
    series.push(worst);
    Ok(ScenarioResult {
        id: "S6",
        title: "memory per idle tunnelled connection (busier ztunnel)",
        unit: "KiB/conn",
        better: Better::Lower,
        direct: None,
        mesh: series,
        targets: vec![
            Target { text: "<= 2.5 KiB per connection per ztunnel (VmRSS)".into(), met: worst <= 2.5 },
            Target {
                text: format!("{:?} after close <= 1.5 x idle (is {worst_back:.2}x)", plan.s6_after_close),
                met: worst_back <= 1.5,
            },
        ],
        details: json!({
            "connections": n,
            "measure": "VmRSS of the ztunnel process (heap, stacks, mapped binary), settled; anon = RssAnon",
            "ztunnel_a": reading(&idle[0], &held[0], &after[0], per_conn(0, rss), per_conn(0, anon)),
            "ztunnel_b": reading(&idle[1], &held[1], &after[1], per_conn(1, rss), per_conn(1, anon)),
            "seconds_after_close": plan.s6_after_close.as_secs_f64(),
        }),
    })
}

async fn read(pids: &[u32; 2]) -> anyhow::Result<[Resident; 2]> {
    Ok([
        settled_resident(pids[0], SETTLE_STEP, SETTLE_LIMIT).await?,
        settled_resident(pids[1], SETTLE_STEP, SETTLE_LIMIT).await?,
    ])
}

fn reading(idle: &Resident, held: &Resident, after: &Resident, per_conn: f64, per_conn_anon: f64) -> serde_json::Value {
    json!({
        "idle_rss_kib": idle.rss_kib, "idle_anon_kib": idle.anon_kib,
        "held_rss_kib": held.rss_kib, "held_anon_kib": held.anon_kib,
        "after_close_rss_kib": after.rss_kib, "after_close_anon_kib": after.anon_kib,
        "kib_per_connection": per_conn, "anon_kib_per_connection": per_conn_anon,
        "after_close_vs_idle": after.rss_kib as f64 / idle.rss_kib.max(1) as f64,
    })
}
