//! `cargo xtask load`: the benchmark's own clients and echo server, run by `cargo xtask bench`
//! *inside* pods (in the pod's cgroup and network namespace), so capture applies to them as
//! to any app. Each mode prints exactly one JSON object line with its results (`hold` prints
//! two: when its connections are open and when they are closed), or `error: <what>` and exits 1.
//!
//! - `echo <addr>`: echo server (tokio), one task per connection, backlog 4096;
//! - `rate <addr>`: fixed request rate over a few connections, request/response latency;
//! - `cps <addr>`: connect, exchange, close in a loop from a few threads, connections/s;
//! - `cold <addr>...`: one connection to each address, each timed from connect to the
//!   first echoed byte, starting at a given wall-clock time so many clients start together;
//! - `hold <addr>`: opens many connections, checks each end to end, holds them until a file
//!   appears, then closes them.
//!
//! iperf3 measures bulk throughput; these cover what iperf3 does not. Blocking std IO with
//! bounded timeouts in the clients; the processes raise their open-file limit to the hard limit.

mod clients;
mod echo;
mod hold;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

/// Bound on each connect, read and write of the clients.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Echo server.
    Echo { addr: SocketAddr },
    /// `rate` requests/s of `size` bytes echoed back, spread over `connections`.
    Rate {
        addr: SocketAddr,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Requests per connection sent first and not counted.
        #[arg(long, default_value_t = 25)]
        warmup: usize,
    },
    /// New connections in a loop: connect, `size` bytes echoed, close.
    Cps {
        addr: SocketAddr,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// One connection to each address (1 byte echoed), starting at `--start-at-ms`.
    Cold {
        #[arg(required = true)]
        addrs: Vec<SocketAddr>,
        /// Wall-clock start, milliseconds since the Unix epoch.
        #[arg(long)]
        start_at_ms: u64,
    },
    /// Open `connections` to `addr`, 1 byte echoed on each, hold until `release` exists.
    Hold {
        addr: SocketAddr,
        #[arg(long)]
        connections: usize,
        #[arg(long)]
        release: PathBuf,
        /// Upper bound on holding.
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
}

pub(crate) fn main(args: LoadArgs) -> anyhow::Result<ExitCode> {
    raise_open_file_limit();
    let result = match args.mode {
        Mode::Echo { addr } => echo::serve(addr),
        Mode::Rate { addr, connections, rate, seconds, size, warmup } => {
            clients::rate(addr, connections, rate, Duration::from_secs_f64(seconds), size, warmup)
        }
        Mode::Cps { addr, workers, seconds, size } => {
            clients::cps(addr, workers, Duration::from_secs_f64(seconds), size)
        }
        Mode::Cold { addrs, start_at_ms } => clients::cold(&addrs, start_at_ms),
        Mode::Hold { addr, connections, release, max_seconds } => {
            hold::hold(addr, connections, &release, Duration::from_secs(max_seconds))
        }
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            say(&format!("error: {e:#}"));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Prints one line and flushes (the bench reads it while the process runs).
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Soft open-file limit up to the hard limit: `hold` and `echo` keep thousands of sockets.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// Latency percentiles in microseconds over `samples` (sorted in place).
pub(crate) fn percentiles(samples: &mut [u64]) -> serde_json::Value {
    samples.sort_unstable();
    let at = |q: f64| -> u64 {
        if samples.is_empty() {
            return 0;
        }
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    serde_json::json!({
        "count": samples.len(),
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "min_us": samples.first().copied().unwrap_or(0),
        "max_us": samples.last().copied().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        let p = percentiles(&mut samples);
        assert_eq!((p["p50_us"].as_u64(), p["p99_us"].as_u64()), (Some(50), Some(99)));
        assert_eq!((p["min_us"].as_u64(), p["max_us"].as_u64()), (Some(1), Some(100)));
        assert_eq!(percentiles(&mut [])["p99_us"], 0);
    }
}
