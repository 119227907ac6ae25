//! The seven scenarios of `cargo xtask bench`, each run on the same pods through both paths
//! (direct: unenrolled; mesh: eBPF capture, ztunnel A, HBONE, ztunnel B) in alternating
//! order over repeated runs, so drift in the machine's load weighs on both alike.
//!
//! - S1 bulk throughput, 1 and 8 streams (iperf3) — [`throughput`];
//! - S2 request latency at a fixed rate, S3 ztunnel CPU per request and per GiB — [`latency`];
//! - S4 new connections per second over warm tunnels — [`connections`];
//! - S5 cold tunnels per second from many identities — [`cold`];
//! - S6 ztunnel memory per idle tunnelled connection — [`memory`];
//! - S7 state memory and load/update time at 1k–50k workloads — [`state`].

pub(crate) mod cold;
pub(crate) mod connections;
pub(crate) mod latency;
pub(crate) mod memory;
pub(crate) mod state;
pub(crate) mod throughput;

use std::time::Duration;

use super::mesh::Path;

/// How much each scenario does: the full run, or `--quick` for a smoke check.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Runs per path of S1, S2, S4 and S5.
    pub(crate) runs: usize,
    pub(crate) s1_seconds: u64,
    pub(crate) s2_seconds: f64,
    pub(crate) s2_rate: u32,
    pub(crate) s2_connections: usize,
    pub(crate) s4_seconds: f64,
    pub(crate) s4_workers: usize,
    /// Client pods and server pods of S5 (each client connects to every server).
    pub(crate) cold_pods: usize,
    pub(crate) s6_connections: usize,
    /// How long S6 lets a restarted ztunnel sit before reading its idle memory (start-up
    /// allocations, such as parsing the eBPF object, are given back by then).
    pub(crate) s6_idle_wait: Duration,
    /// How long S6 waits after the connections close before the last reading.
    pub(crate) s6_after_close: Duration,
    pub(crate) s7_workloads: Vec<usize>,
}

impl Plan {
    pub(crate) fn full() -> Plan {
        Plan {
            runs: 3,
            s1_seconds: 5,
            s2_seconds: 10.0,
            s2_rate: 1000,
            s2_connections: 4,
            s4_seconds: 3.0,
            s4_workers: 4,
            cold_pods: 32,
            s6_connections: 10_000,
            s6_idle_wait: Duration::from_secs(20),
            s6_after_close: Duration::from_secs(60),
            s7_workloads: vec![1_000, 10_000, 50_000],
        }
    }

    pub(crate) fn quick() -> Plan {
        Plan {
            runs: 1,
            s1_seconds: 1,
            s2_seconds: 2.0,
            s2_rate: 1000,
            s2_connections: 4,
            s4_seconds: 1.0,
            s4_workers: 2,
            cold_pods: 4,
            s6_connections: 500,
            s6_idle_wait: Duration::from_secs(1),
            s6_after_close: Duration::from_secs(3),
            s7_workloads: vec![1_000],
        }
    }
}

/// The paths of each run, alternating D M, M D, D M, ...
pub(crate) fn schedule(runs: usize) -> Vec<Path> {
    (0..runs).flat_map(|r| if r % 2 == 0 { [Path::Direct, Path::Mesh] } else { [Path::Mesh, Path::Direct] }).collect()
}

/// Reads a number from a JSON result, naming the field if it is missing.
pub(crate) fn number(v: &serde_json::Value, pointer: &str) -> anyhow::Result<f64> {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| anyhow::anyhow!("no number at {pointer} in {v}"))
}

/// Fails if a load result counted errors.
pub(crate) fn no_errors(v: &serde_json::Value, what: &str) -> anyhow::Result<()> {
    let errors = v.pointer("/errors/count").and_then(serde_json::Value::as_u64).unwrap_or(0);
    if errors > 0 {
        anyhow::bail!("{what}: {errors} connection(s) failed, first: {}", v["errors"]["first"]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_alternate_so_drift_weighs_on_both() {
        use Path::{Direct as D, Mesh as M};
        assert_eq!(schedule(3), [D, M, M, D, D, M]);
    }
}
