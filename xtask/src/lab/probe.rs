//! `cargo xtask probe`: the measuring client and sink that the demo runs *inside* pods (the
//! demo spawns its own executable in a pod's cgroup and network namespace), so that capture
//! applies to them exactly as to any app there.
//!
//! - `probe rtt <addr> --count N [--warmup W]`: N sequential connections, each connect, one
//!   byte out, the byte echoed back, close; prints the latency percentiles of the whole cycle
//!   and every sample (so runs can be pooled). One process for all N, so process start-up is
//!   not measured.
//! - `probe upload <addr> --bytes N`: one connection sending N bytes (see [`Pattern`]),
//!   half-closed, then the sink's digest; checks the digest and prints the rate.
//! - `probe sink <addr>`: accepts connections, reads each to its end, answers with the byte
//!   count (8 bytes, big endian) and the SHA-256 of what arrived, then closes.
//!
//! Every line printed is `key=value` pairs after a leading word, parsed by [`parse_fields`].
//! Blocking std IO, every wait bounded; no tokio here.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};

use super::bulk_pattern::Pattern;

/// Bound on each connect, read and write of the probe.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// What the sink answers: 8-byte big-endian count, then the 32-byte SHA-256.
const SINK_REPLY_LEN: usize = 8 + 32;
/// Read buffer of the sink.
const SINK_BUFFER: usize = 256 * 1024;

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Sequential connect + 1-byte echo + close cycles against an echo server.
    Rtt {
        addr: SocketAddr,
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Cycles run first and not counted (pools, caches, ARP).
        #[arg(long, default_value_t = 20)]
        warmup: usize,
    },
    /// One connection uploading `bytes` to a sink, checked by the sink's SHA-256.
    Upload {
        addr: SocketAddr,
        #[arg(long)]
        bytes: u64,
    },
    /// Serve as the upload sink.
    Sink { addr: SocketAddr },
}

pub(crate) fn main(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let result = match args.mode {
        Mode::Rtt { addr, count, warmup } => rtt(addr, count, warmup),
        Mode::Upload { addr, bytes } => upload(addr, bytes),
        Mode::Sink { addr } => sink(addr),
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            // On stdout, with the results, so the demo reads one stream.
            say(&format!("error: {e:#}"));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn rtt(addr: SocketAddr, count: usize, warmup: usize) -> anyhow::Result<()> {
    ensure!(count > 0, "--count must be at least 1");
    for i in 0..warmup {
        one_cycle(addr).with_context(|| format!("warm-up cycle {}", i + 1))?;
    }
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        samples.push(one_cycle(addr).with_context(|| format!("cycle {} of {count}", i + 1))?);
    }
    let listed: Vec<String> = samples.iter().map(|d| d.as_micros().to_string()).collect();
    let stats = LatencyStats::from_samples(&mut samples);
    say(&format!(
        "rtt count={count} min_us={} p50_us={} p90_us={} p99_us={} max_us={} samples_us={}",
        stats.min_us,
        stats.p50_us,
        stats.p90_us,
        stats.p99_us,
        stats.max_us,
        listed.join(",")
    ));
    Ok(())
}

/// Connect, send one byte, wait for it to come back, close: the time of the whole cycle.
fn one_cycle(addr: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(b"x").context("send")?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).context("receive the echo")?;
    ensure!(byte == *b"x", "echo returned {byte:?}");
    drop(stream);
    Ok(started.elapsed())
}

/// Percentiles of a latency sample, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LatencyStats {
    pub(crate) min_us: u64,
    pub(crate) p50_us: u64,
    pub(crate) p90_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
}

impl LatencyStats {
    /// Nearest-rank percentiles (sorts `samples`); all zero for an empty sample.
    pub(crate) fn from_samples(samples: &mut [Duration]) -> LatencyStats {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        samples.sort_unstable();
        let at = |p: usize| {
            let rank = (p * samples.len()).div_ceil(100).clamp(1, samples.len());
            u64::try_from(samples[rank - 1].as_micros()).unwrap_or(u64::MAX)
        };
        LatencyStats { min_us: at(0), p50_us: at(50), p90_us: at(90), p99_us: at(99), max_us: at(100) }
    }
}

fn upload(addr: SocketAddr, bytes: u64) -> anyhow::Result<()> {
    let pattern = Pattern::new();
    let mut hasher = Sha256::new();
    for chunk in pattern.chunks(bytes) {
        hasher.update(chunk);
    }
    let expected: [u8; 32] = hasher.finalize().into();

    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).with_context(|| format!("connect {addr}"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut sent = 0u64;
    for chunk in pattern.chunks(bytes) {
        stream.write_all(chunk).with_context(|| format!("send after {sent} bytes"))?;
        sent += chunk.len() as u64;
    }
    stream.shutdown(Shutdown::Write).context("half-close")?;
    let mut reply = [0u8; SINK_REPLY_LEN];
    stream.read_exact(&mut reply).context("read the sink's digest")?;
    let elapsed = started.elapsed();
    let (count, digest) = reply.split_at(8);
    let count = u64::from_be_bytes(count.try_into().context("count field")?);
    if count != bytes || digest != expected {
        bail!(
            "sink received {count} bytes with SHA-256 {}, sent {bytes} with {}",
            hex::encode(digest),
            hex::encode(expected)
        );
    }
    let mib_per_s = bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64();
    say(&format!(
        "upload bytes={bytes} micros={} mib_per_s={mib_per_s:.1} sha256={}",
        elapsed.as_micros(),
        hex::encode(expected)
    ));
    Ok(())
}

fn sink(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    say(&format!("listening local={}", listener.local_addr()?));
    loop {
        let (stream, peer) = listener.accept().context("accept")?;
        std::thread::spawn(move || match drain_and_reply(stream) {
            Ok(n) => say(&format!("received peer={peer} bytes={n}")),
            Err(e) => say(&format!("failed peer={peer} reason={:?}", format!("{e:#}"))),
        });
    }
}

fn drain_and_reply(mut stream: TcpStream) -> anyhow::Result<u64> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; SINK_BUFFER];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let mut reply = Vec::with_capacity(SINK_REPLY_LEN);
    reply.extend_from_slice(&total.to_be_bytes());
    reply.extend_from_slice(&hasher.finalize());
    stream.write_all(&reply)?;
    stream.shutdown(Shutdown::Write)?;
    Ok(total)
}

/// The `key=value` fields of the first line starting with `word `, e.g.
/// `rtt count=5 p50_us=80` -> `[("count", "5"), ("p50_us", "80")]`.
pub(crate) fn parse_fields<'a>(output: &'a str, word: &str) -> Option<Vec<(&'a str, &'a str)>> {
    let line = output.lines().find_map(|l| l.strip_prefix(word)?.strip_prefix(' '))?;
    Some(line.split_whitespace().filter_map(|f| f.split_once('=')).collect())
}

/// A numeric field of [`parse_fields`]' result.
pub(crate) fn field<T: std::str::FromStr>(fields: &[(impl AsRef<str>, impl AsRef<str>)], key: &str) -> Option<T> {
    fields.iter().find(|(k, _)| k.as_ref() == key).and_then(|(_, v)| v.as_ref().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let s = LatencyStats::from_samples(&mut samples);
        assert_eq!((s.min_us, s.p50_us, s.p90_us, s.p99_us, s.max_us), (1, 50, 90, 99, 100));
        let mut one = vec![Duration::from_micros(7)];
        assert_eq!(LatencyStats::from_samples(&mut one).p99_us, 7);
        assert_eq!(LatencyStats::from_samples(&mut []), LatencyStats::default());
    }

    #[test]
    fn fields_are_read_from_the_named_line() {
        let out = "listening local=1.2.3.4:5\nrtt count=3 p50_us=81 p99_us=200\n";
        let fields = parse_fields(out, "rtt").expect("rtt line");
        assert_eq!(field::<u64>(&fields, "p50_us"), Some(81));
        assert_eq!(field::<u64>(&fields, "missing"), None);
        assert!(parse_fields(out, "upload").is_none());
        assert!(parse_fields("rttx a=1", "rtt").is_none(), "the word must be whole");
    }
}
