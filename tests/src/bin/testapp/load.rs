//! The load clients of the benchmark: `rate` (fixed request rate, latency), `cps` (new
//! connections per second), `cold` (one connection per address, each timed to its first echoed
//! byte, from a common wall-clock start) and `hold` (many idle connections, each checked end to
//! end, held until a release file appears). Every connect, read and write is bounded by
//! [`IO_TIMEOUT`]; a failed connection counts as an error and the first one is reported with
//! the results (`errors: {count, first}`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use ztunnel_tests::traffic::{Latency, print};

use crate::IO_TIMEOUT;

/// Connects with the IO bounds set and Nagle off (request/response traffic).
pub(crate) fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `out` and reads the same number of bytes back.
pub(crate) fn exchange(stream: &mut TcpStream, out: &[u8], back: &mut [u8]) -> std::io::Result<()> {
    stream.write_all(out)?;
    stream.read_exact(&mut back[..out.len()])
}

/// Errors seen by the worker threads: how many, and the first.
#[derive(Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

impl Errors {
    fn record(errors: &Mutex<Errors>, what: String) {
        let mut e = errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        e.count += 1;
        e.first.get_or_insert(what);
    }

    fn json(&self) -> Value {
        json!({ "count": self.count, "first": self.first })
    }
}

/// `connections` connections, each sending `size` bytes at `rate / connections` per second on
/// a fixed schedule (offset per connection) and timing each echo from its send.
pub(crate) fn rate(
    addr: SocketAddr,
    connections: usize,
    rate: u32,
    duration: Duration,
    size: usize,
    warmup: usize,
) -> anyhow::Result<()> {
    if connections == 0 || rate == 0 {
        bail!("--connections and --rate must be positive");
    }
    let interval = Duration::from_secs_f64(connections as f64 / f64::from(rate));
    let errors = Mutex::new(Errors::default());
    let mut samples: Vec<u64> = Vec::new();
    let started = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..connections)
            .map(|c| {
                let errors = &errors;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let result = (|| -> std::io::Result<()> {
                        let mut stream = connect(addr)?;
                        let (out, mut back) = (vec![0x5au8; size], vec![0u8; size]);
                        let offset = interval.mul_f64(c as f64 / connections as f64);
                        let begin = Instant::now() + offset;
                        for k in 0u32.. {
                            let due = begin + interval * k;
                            if due.duration_since(begin) >= duration {
                                break;
                            }
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            let sent = Instant::now();
                            exchange(&mut stream, &out, &mut back)?;
                            if k as usize >= warmup {
                                mine.push(sent.elapsed().as_micros() as u64);
                            }
                        }
                        Ok(())
                    })();
                    if let Err(e) = result {
                        Errors::record(errors, format!("connection {c}: {e}"));
                    }
                    mine
                })
            })
            .collect();
        for w in workers {
            samples.extend(w.join().unwrap_or_default());
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let errors = errors.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let requests = samples.len();
    print(
        "rate",
        json!({
        "requests": requests,
        "seconds": elapsed,
        "latency": Latency::from_samples(&mut samples).json(),
        "errors": errors.json(),
        }),
    );
    Ok(())
}

/// `workers` threads each looping connect, `size` bytes echoed, close, for `duration`.
pub(crate) fn cps(addr: SocketAddr, workers: usize, duration: Duration, size: usize) -> anyhow::Result<()> {
    let errors = Mutex::new(Errors::default());
    let started = Instant::now();
    let mut samples: Vec<u64> = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let errors = &errors;
                s.spawn(move || {
                    let (out, mut back) = (vec![0x5au8; size], vec![0u8; size]);
                    let mut mine = Vec::new();
                    while started.elapsed() < duration {
                        let t = Instant::now();
                        let result = connect(addr).and_then(|mut stream| exchange(&mut stream, &out, &mut back));
                        match result {
                            Ok(()) => mine.push(t.elapsed().as_micros() as u64),
                            Err(e) => Errors::record(errors, e.to_string()),
                        }
                    }
                    mine
                })
            })
            .collect();
        for h in handles {
            samples.extend(h.join().unwrap_or_default());
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let errors = errors.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let count = samples.len();
    print(
        "cps",
        json!({
        "connections": count,
        "seconds": elapsed,
        "per_second": count as f64 / elapsed,
        "latency": Latency::from_samples(&mut samples).json(),
        "errors": errors.json(),
        }),
    );
    Ok(())
}

/// Waits until `start_at_ms`, then one connection to each address in turn: connect, 1 byte
/// echoed, close. Reports each setup time and the wall-clock span, so the bench can add up
/// many clients started together.
pub(crate) fn cold(addrs: &[SocketAddr], start_at_ms: u64) -> anyhow::Result<()> {
    let start = UNIX_EPOCH + Duration::from_millis(start_at_ms);
    match start.duration_since(SystemTime::now()) {
        Ok(wait) if wait > Duration::from_secs(60) => bail!("--start-at-ms is more than a minute away"),
        Ok(wait) => std::thread::sleep(wait),
        Err(_) => {}
    }
    let began = epoch_us()?;
    let mut errors = Errors::default();
    let mut samples = Vec::with_capacity(addrs.len());
    let mut back = [0u8; 1];
    for addr in addrs {
        let t = Instant::now();
        match connect(*addr).and_then(|mut stream| exchange(&mut stream, b"c", &mut back)) {
            Ok(()) => samples.push(t.elapsed().as_micros() as u64),
            Err(e) => {
                errors.count += 1;
                errors.first.get_or_insert(format!("{addr}: {e}"));
            }
        }
    }
    let ended = epoch_us()?;
    print(
        "cold",
        json!({
        "began_us": began,
        "ended_us": ended,
        "samples_us": samples,
        "errors": errors.json(),
        }),
    );
    Ok(())
}

fn epoch_us() -> anyhow::Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH).context("clock before 1970")?.as_micros() as u64)
}

/// Threads opening connections (each waits for its echo before the next connect).
const OPENERS: usize = 8;
const POLL: Duration = Duration::from_millis(50);

pub(crate) fn hold(addr: SocketAddr, connections: usize, release: &Path, max: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let per_thread = connections.div_ceil(OPENERS);
    let opened: Vec<std::io::Result<Vec<TcpStream>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|t| {
                let n = per_thread.min(connections.saturating_sub(t * per_thread));
                s.spawn(move || {
                    let mut mine = Vec::with_capacity(n);
                    let mut back = [0u8; 1];
                    for _ in 0..n {
                        let mut stream = connect(addr)?;
                        exchange(&mut stream, b"h", &mut back)?;
                        mine.push(stream);
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("opener panicked"))))
            .collect()
    });
    let mut streams = Vec::with_capacity(connections);
    for result in opened {
        streams.extend(result?);
    }
    print("held", json!({ "open": streams.len(), "seconds": started.elapsed().as_secs_f64() }));
    let waiting = Instant::now();
    while !release.exists() {
        if waiting.elapsed() > max {
            bail!("{} did not appear within {max:?}", release.display());
        }
        std::thread::sleep(POLL);
    }
    let closed = streams.len();
    drop(streams);
    print("released", json!({ "closed": closed }));
    Ok(())
}
