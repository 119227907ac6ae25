//! The traffic tool that the tests, the demo and the benchmark run inside pods (in the pod's
//! network namespace and cgroup, so capture applies to it as to any app). Every mode prints
//! JSON lines in the one format of `ztunnel_tests::traffic` (see the table there); a failure
//! prints an `error` line and exits 1, a usage error exits 2.
//!
//! Servers: `serve` (echo), `http` (answers `200` with the client's address), `sink` (reads
//! an upload, answers its length and SHA-256), `relay` (TCP to a unix socket). Clients: `connect` (bytes echoed back and
//! checked), `rtt` (connect + 1-byte echo + close cycles), `upload` (bulk to a sink, checked),
//! `bind` (can this address be bound). Load: `rate` (fixed request rate, latency), `cps`
//! (connections per second), `cold` (one connection per address from a common start time),
//! `hold` (many idle connections until a file appears). Every wait is bounded.

mod clients;
mod load;
mod pattern;
mod servers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;
use ztunnel_tests::traffic;

/// Bound on each connect, read and write of the load clients.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(name = "testapp", about = "The traffic tool run inside test, demo and benchmark pods")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Echo server: echoes until the peer half-closes, then half-closes.
    Serve {
        addr: SocketAddr,
        /// No line per connection (for tens of thousands of connections per second).
        #[arg(long)]
        quiet: bool,
    },
    /// HTTP/1.1 server answering every request `200` with `peer=<client address>`.
    Http { addr: SocketAddr },
    /// Upload sink: reads each connection to its end, answers the byte count (8 bytes, big
    /// endian) and the SHA-256 of what arrived.
    Sink { addr: SocketAddr },
    /// One connection: `bytes` sent (a fixed pattern), echoed back, both SHA-256s compared.
    Connect {
        addr: SocketAddr,
        #[arg(long, default_value_t = 1 << 20)]
        bytes: u64,
        /// Bound on the whole run, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Sequential cycles of connect, one byte echoed, close; latency of the whole cycle.
    Rtt {
        addr: SocketAddr,
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Cycles run first and not counted (pools, caches, neighbour discovery).
        #[arg(long, default_value_t = 0)]
        warmup: usize,
        /// Bound on the whole run, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// One connection uploading `bytes` to a sink, checked by the sink's SHA-256.
    Upload {
        addr: SocketAddr,
        #[arg(long)]
        bytes: u64,
    },
    /// Binds `addr` (and releases it): can an app here take this address?
    Bind { addr: SocketAddr },
    /// TCP listener relaying each connection to the unix socket `path` (to reach a server
    /// outside the network namespace, e.g. a test API server on the host's loopback).
    Relay { addr: SocketAddr, path: PathBuf },
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
    /// New connections in a loop from `workers` threads: connect, `size` bytes echoed, close.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_open_file_limit();
    let result = match cli.mode {
        Mode::Serve { addr, quiet } => servers::echo(addr, quiet),
        Mode::Http { addr } => servers::http(addr),
        Mode::Sink { addr } => servers::sink(addr),
        Mode::Connect { addr, bytes, timeout } => clients::connect(addr, bytes, Duration::from_secs(timeout)),
        Mode::Rtt { addr, count, warmup, timeout } => clients::rtt(addr, count, warmup, Duration::from_secs(timeout)),
        Mode::Upload { addr, bytes } => clients::upload(addr, bytes),
        Mode::Bind { addr } => clients::bind(addr),
        Mode::Relay { addr, path } => servers::relay(addr, &path),
        Mode::Rate { addr, connections, rate, seconds, size, warmup } => {
            load::rate(addr, connections, rate, Duration::from_secs_f64(seconds), size, warmup)
        }
        Mode::Cps { addr, workers, seconds, size } => load::cps(addr, workers, Duration::from_secs_f64(seconds), size),
        Mode::Cold { addrs, start_at_ms } => load::cold(&addrs, start_at_ms),
        Mode::Hold { addr, connections, release, max_seconds } => {
            load::hold(addr, connections, &release, Duration::from_secs(max_seconds))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            traffic::print("error", json!({ "message": format!("{e:#}") }));
            ExitCode::FAILURE
        }
    }
}

/// Soft open-file limit up to the hard limit: `hold` and `serve` keep thousands of sockets.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}
