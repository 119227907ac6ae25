//! The checking clients: `connect` (bytes echoed back, compared by SHA-256), `rtt` (connect,
//! one byte echoed, close, timed), `upload` (bulk to a sink, checked by the sink's digest) and
//! `bind`. Blocking std IO; every step is bounded.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;
use sha2::{Digest, Sha256};
use ztunnel_tests::traffic::{Latency, print};

use crate::IO_TIMEOUT;
use crate::pattern::Pattern;

/// What the sink answers: 8-byte big-endian count, then the 32-byte SHA-256.
pub(crate) const SINK_REPLY_LEN: usize = 8 + 32;
const READ_BUFFER: usize = 64 * 1024;

pub(crate) fn connect(addr: SocketAddr, bytes: u64, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    // A watchdog bounds the whole run, whatever blocks.
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        print("error", json!({ "message": format!("timed out after {}s", timeout.as_secs()) }));
        std::process::exit(1);
    });
    let stream = TcpStream::connect_timeout(&addr, timeout).context("connect")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let local = stream.local_addr().context("getsockname")?;
    let peer = stream.peer_addr().context("getpeername")?;
    print("connected", json!({ "local": local.to_string(), "peer": peer.to_string() }));

    let mut writer = stream.try_clone().context("clone socket")?;
    // Written from another thread so that a full echo buffer cannot deadlock the reader.
    let sender = std::thread::spawn(move || -> anyhow::Result<String> {
        let pattern = Pattern::new();
        let mut hash = Sha256::new();
        let mut sent = 0u64;
        for chunk in pattern.chunks(bytes) {
            writer.write_all(chunk).with_context(|| format!("send after {sent} bytes"))?;
            hash.update(chunk);
            sent += chunk.len() as u64;
        }
        writer.shutdown(Shutdown::Write).context("half-close")?;
        Ok(hex::encode(hash.finalize()))
    });

    let mut reader = stream;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut received = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                received += n as u64;
            }
            Err(e) => bail!("receive after {received} bytes: {e}"),
        }
    }
    let sent_sha = sender.join().map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    let sha = hex::encode(hash.finalize());
    print(
        "echo",
        json!({ "bytes": received, "sha256": sha, "sent_sha256": sent_sha, "elapsed_us": started.elapsed().as_micros() as u64 }),
    );
    ensure!(received == bytes && sha == sent_sha, "echo mismatch: sent {bytes} bytes, received {received}");
    Ok(())
}

pub(crate) fn rtt(addr: SocketAddr, count: usize, warmup: usize, timeout: Duration) -> anyhow::Result<()> {
    ensure!(count > 0, "--count must be at least 1");
    let deadline = Instant::now() + timeout;
    let mut samples = Vec::with_capacity(count);
    for i in 0..warmup + count {
        ensure!(Instant::now() < deadline, "timed out after {i} of {} cycles", warmup + count);
        let took = one_cycle(addr).with_context(|| format!("cycle {} of {}", i + 1, warmup + count))?;
        if i >= warmup {
            samples.push(took.as_micros() as u64);
        }
    }
    let listed = samples.clone();
    let latency = Latency::from_samples(&mut samples);
    print("rtt", json!({ "latency": latency.json(), "samples_us": listed }));
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

pub(crate) fn upload(addr: SocketAddr, bytes: u64) -> anyhow::Result<()> {
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
    print(
        "upload",
        json!({ "bytes": bytes, "micros": elapsed.as_micros() as u64, "mib_per_s": mib_per_s, "sha256": hex::encode(expected) }),
    );
    Ok(())
}

pub(crate) fn bind(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    print("bound", json!({ "local": listener.local_addr()?.to_string() }));
    Ok(())
}
