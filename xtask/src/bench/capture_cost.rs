//! The cost of capture, measured in the demo's own run: the same two pods (`sleep` on node-a,
//! `data` on node-b), captured (HBONE through both ztunnels) and talking directly (both
//! unenrolled with `ztunnel unenroll`). Two measurements, both by the traffic tool `testapp`
//! running inside `sleep`:
//!
//! - connect latency: sequential cycles of connect, one byte echoed, close;
//! - single-stream throughput: one upload to the sink, checked by SHA-256.
//!
//! The paths alternate over a few rounds in the order C D, D C, C D, ... (re-enrolling and
//! unenrolling in between), so a change in the machine's load during the run weighs on both
//! alike. Latency percentiles pool every round's samples; throughput is the median round.
//!
//! Each upload checks which path it took: through the mesh, `data`'s ztunnel counts an mTLS
//! connection from `sleep` (and the sink sees `sleep`'s address, which ztunnel keeps, or
//! 127.0.0.6 where the pod does not allow that); direct, no ztunnel counts it and the sink
//! sees `sleep`'s own address. This is a
//! benchmark, not a test: numbers vary with the machine and its load, and only a failed
//! measurement fails the demo.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use ztunnel_tests::traffic::{self, Latency};

use crate::lab::blocking::blocking;
use crate::lab::cluster::{Cluster, DemoPod, Role, app_name};
use crate::lab::layout::{App, DATA, SLEEP};
use crate::lab::server_log::last_peer;
use crate::lab::units::human_bytes;
use crate::lab::{evidence, metrics};

/// Where ztunnel dials apps from inside their pod when it cannot use the client's address.
const ZTUNNEL_INBOUND_SOURCE: &str = "127.0.0.6";

/// How the two pods talk during one phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    Captured,
    Direct,
}

impl Path {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Path::Captured => "captured (HBONE)",
            Path::Direct => "direct (unenrolled)",
        }
    }
}

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BenchPlan {
    /// Counted connect cycles per path, spread over the rounds.
    pub(crate) cycles: usize,
    /// Uncounted cycles at the start of every phase (a new HBONE pool connection after
    /// re-enrolling, caches).
    pub(crate) warmup: usize,
    /// Bytes of each upload (one per path per round).
    pub(crate) upload_bytes: u64,
    pub(crate) rounds: usize,
}

/// One path's numbers over all rounds.
#[derive(Clone, Debug)]
pub(crate) struct Measurement {
    pub(crate) path: Path,
    pub(crate) latency: Latency,
    pub(crate) cycles: usize,
    /// MiB/s of each round's upload, in round order.
    pub(crate) rates: Vec<f64>,
    pub(crate) upload_bytes: u64,
    /// The peer the sink saw for the last upload.
    pub(crate) sink_saw: String,
}

impl Measurement {
    /// The median round's upload rate.
    pub(crate) fn median_rate(&self) -> f64 {
        let mut sorted = self.rates.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
    }
}

/// The phases in order: C D, D C, C D, ...
fn schedule(rounds: usize) -> Vec<Path> {
    (0..rounds)
        .flat_map(|r| if r % 2 == 0 { [Path::Captured, Path::Direct] } else { [Path::Direct, Path::Captured] })
        .collect()
}

/// Runs the rounds; `sleep` and `data` end unenrolled.
pub(crate) async fn run(cluster: &Cluster, plan: BenchPlan) -> anyhow::Result<[Measurement; 2]> {
    let (sleep, data) = (cluster.pod(SLEEP.name).clone(), cluster.pod(DATA.name).clone());
    let App::EchoAndSink(echo_port, sink_port) = data.spec.app else { bail!("data runs no echo server and sink") };
    let (echo, sink) = (data.addr(echo_port), data.addr(sink_port));
    let rounds = plan.rounds.clamp(1, plan.cycles.max(1));
    println!(
        "    {rounds} rounds; per path and round: {} connect cycles to {echo} after {} warm-up, one {} upload to {sink}",
        plan.cycles / rounds,
        plan.warmup,
        human_bytes(plan.upload_bytes)
    );

    let mut samples: [Vec<u64>; 2] = Default::default();
    let mut rates: [Vec<f64>; 2] = Default::default();
    let mut sink_saw: [String; 2] = Default::default();
    let mut enrolled = true;
    // The commands are shown the first time each is run.
    let mut shown = [false; 2];
    for (phase, path) in schedule(rounds).into_iter().enumerate() {
        let round = phase / 2;
        let want_enrolled = path == Path::Captured;
        if want_enrolled != enrolled {
            for pod in [&sleep, &data] {
                let ran = if want_enrolled { cluster.enroll(pod).await } else { cluster.unenroll(pod).await };
                let ran = ran.with_context(|| format!("switching {} to {}", pod.spec.name, path.label()))?;
                if !shown[path as usize] {
                    println!("    {}", ran.lines().next().unwrap_or_default());
                }
            }
            shown[path as usize] = true;
            enrolled = want_enrolled;
        }
        let i = path as usize;
        // Spread the cycles so that the rounds add up to exactly `plan.cycles`.
        let cycles = plan.cycles / rounds + usize::from(round < plan.cycles % rounds);
        let (cycle_samples, rate, saw) = phase_once(cluster, &sleep, (echo, sink), cycles, plan, path)
            .await
            .with_context(|| format!("round {}, {}", round + 1, path.label()))?;
        println!(
            "    round {} {:<20} p50 {:>6} µs  upload {:>6.0} MiB/s",
            round + 1,
            path.label(),
            Latency::from_samples(&mut cycle_samples.clone()).p50_us,
            rate
        );
        samples[i].extend(cycle_samples);
        rates[i].push(rate);
        sink_saw[i] = saw;
    }
    let measurement = |path: Path| {
        let i = path as usize;
        Measurement {
            path,
            latency: Latency::from_samples(&mut samples[i].clone()),
            cycles: samples[i].len(),
            rates: rates[i].clone(),
            upload_bytes: plan.upload_bytes,
            sink_saw: sink_saw[i].clone(),
        }
    };
    Ok([measurement(Path::Captured), measurement(Path::Direct)])
}

/// One phase: the latency cycles, then one upload whose peer (as the sink saw it) must match
/// the path. Returns the samples, the upload rate in MiB/s and the sink's peer.
async fn phase_once(
    cluster: &Cluster,
    from: &DemoPod,
    (echo, sink): (SocketAddr, SocketAddr),
    cycles: usize,
    plan: BenchPlan,
    path: Path,
) -> anyhow::Result<(Vec<u64>, f64, String)> {
    let testapp = cluster.binaries().testapp.display().to_string();
    let rtt_argv = [&testapp, "rtt", &echo.to_string(), "--count", &cycles.to_string()]
        .into_iter()
        .chain(["--warmup", &plan.warmup.to_string(), "--timeout", &(60 + cycles / 10).to_string()])
        .map(str::to_string)
        .collect();
    let rtt = probe(from, rtt_argv, "rtt", Duration::from_secs(70 + cycles as u64 / 10)).await.context("latency")?;
    let samples: Vec<u64> =
        rtt["samples_us"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_u64).collect();
    if samples.len() != cycles {
        bail!("latency: testapp reported {} samples, expected {cycles}", samples.len());
    }

    let upload_argv = [&testapp, "upload", &sink.to_string(), "--bytes", &plan.upload_bytes.to_string()]
        .into_iter()
        .map(str::to_string)
        .collect();
    let limit = Duration::from_secs(60 + plan.upload_bytes / (4 * 1024 * 1024));
    let before = metrics::parse(&cluster.metrics_text(DATA.node).await?);
    let upload = probe(from, upload_argv, "upload", limit).await.context("upload")?;
    let after = metrics::parse(&cluster.metrics_text(DATA.node).await?);
    let tunnelled = evidence::side(&evidence::changes(&before, &after), "destination", SLEEP.name)
        .is_some_and(|c| c.opened > 0 && c.mutual_tls());
    let micros = traffic::number(&upload, "micros").context("upload: no micros")?;
    let rate = plan.upload_bytes as f64 / (1024.0 * 1024.0) / (micros.max(1) as f64 / 1e6);
    let saw =
        last_peer(&cluster.app_output(&app_name(DATA.name, Role::Sink)), App::EchoAndSink(0, 0)).unwrap_or_default();
    let via_ztunnel = saw.starts_with(&format!("{ZTUNNEL_INBOUND_SOURCE}:"));
    let from_client = saw.starts_with(&format!("{}:", from.ip()));
    match path {
        Path::Captured if !tunnelled => bail!("the captured upload was not counted by {}'s ztunnel", DATA.node),
        Path::Captured if !(via_ztunnel || from_client) => {
            bail!("the captured upload reached the sink from {saw:?}, not from {} or ztunnel", from.ip())
        }
        Path::Direct if tunnelled => bail!("the direct upload went through {}'s ztunnel", DATA.node),
        Path::Direct if !from_client => {
            bail!("the direct upload reached the sink from {saw:?}, not from {}", from.ip())
        }
        _ => {}
    }
    Ok((samples, rate, saw))
}

/// Runs testapp in `pod` and returns its `event` line.
async fn probe(
    pod: &DemoPod,
    argv: Vec<String>,
    event: &'static str,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    let pod = pod.pod.clone();
    let output = blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        pod.spawn(&argv).wait_timeout(limit)
    })
    .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if let Some(error) = traffic::error(&stdout) {
        bail!("{error}");
    }
    traffic::last(&stdout, event).with_context(|| {
        format!(
            "testapp printed no `{event}` line ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_alternate_so_drift_weighs_on_both_paths() {
        use Path::{Captured as C, Direct as D};
        assert_eq!(schedule(3), [C, D, D, C, C, D]);
        assert_eq!(schedule(1), [C, D]);
    }

    #[test]
    fn the_median_round_is_reported() {
        let m = Measurement {
            path: Path::Direct,
            latency: Latency::default(),
            cycles: 0,
            rates: vec![900.0, 300.0, 500.0],
            upload_bytes: 0,
            sink_saw: String::new(),
        };
        assert_eq!(m.median_rate(), 500.0);
    }
}
