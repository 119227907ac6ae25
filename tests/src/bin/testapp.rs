//! A small TCP application to run inside test pods, printing one parseable line per event.
//!
//! ```text
//! testapp serve <ip:port>                          echo server
//!   listening local=<addr>
//!   accepted peer=<peer> local=<local>             (one per connection)
//!   closed peer=<peer> bytes=<n>
//! testapp http <ip:port>                           HTTP/1.1 server answering 200 "peer=<peer>"
//!   listening local=<addr>
//!   accepted peer=<peer> local=<local>             (one per connection)
//! testapp connect <ip:port> [--bytes N] [--timeout SECS]
//!   connected local=<local> peer=<getpeername>
//!   echo bytes=<n> sha256=<hex> sent_sha256=<hex> elapsed_us=<connect to last echo byte>
//!   (exit 0 only if the hashes match)
//! testapp rtt <ip:port> [--count N] [--timeout SECS]
//!   rtt count=<n> p50_us=<..> p90_us=<..> p99_us=<..> min_us=<..> max_us=<..>
//!   (each round: connect, send 1 byte, read the echo, close)
//! testapp bind <ip:port>
//!   bound
//! testapp relay <ip:port> <unix socket path>       TCP listener relaying each connection to
//!   listening local=<addr>                         a unix socket (to reach a server outside
//!                                                  the network namespace)
//! ```
//! Failures print `error: <what>: <cause>` and exit 1; usage errors exit 2.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const DEFAULT_BYTES: u64 = 1 << 20;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => parse_addr(&args, 1).and_then(|addr| serve(addr).map_err(Failure::Error)),
        Some("http") => parse_addr(&args, 1).and_then(|addr| serve_http(addr).map_err(Failure::Error)),
        Some("connect") => ConnectArgs::parse(&args).and_then(|a| connect(&a).map_err(Failure::Error)),
        Some("rtt") => ConnectArgs::parse(&args).and_then(|a| rtt(&a).map_err(Failure::Error)),
        Some("bind") => parse_addr(&args, 1).and_then(|addr| bind(addr).map_err(Failure::Error)),
        Some("relay") => parse_addr(&args, 1).and_then(|addr| {
            let path = args.get(2).ok_or_else(|| Failure::Usage("missing <unix socket path>".into()))?;
            relay(addr, path).map_err(Failure::Error)
        }),
        _ => Err(Failure::Usage("expected serve, http, connect, rtt, bind or relay".into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(msg)) => {
            println!("error: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!(
                "usage: testapp serve|connect|rtt|bind <ip:port> [--bytes N] [--count N] [--timeout SECS]: {msg}"
            );
            ExitCode::from(2)
        }
    }
}

enum Failure {
    Error(String),
    Usage(String),
}

fn parse_addr(args: &[String], at: usize) -> Result<SocketAddr, Failure> {
    let raw = args.get(at).ok_or_else(|| Failure::Usage("missing <ip:port>".into()))?;
    raw.parse().map_err(|e| Failure::Usage(format!("bad address {raw:?}: {e}")))
}

/// Prints one line and flushes, so a test reading the output file sees it at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn serve(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("local address: {e}"))?;
    say(&format!("listening local={local}"));
    loop {
        let (stream, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let local = stream.local_addr().map_or_else(|e| format!("?({e})"), |a| a.to_string());
        say(&format!("accepted peer={peer} local={local}"));
        std::thread::spawn(move || echo(stream, peer));
    }
}

fn serve_http(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("local address: {e}"))?;
    say(&format!("listening local={local}"));
    loop {
        let (stream, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let local = stream.local_addr().map_or_else(|e| format!("?({e})"), |a| a.to_string());
        say(&format!("accepted peer={peer} local={local}"));
        std::thread::spawn(move || answer_http(stream, peer));
    }
}

/// Reads one request head (bounded, 5 s) and answers `200` with the peer's address.
fn answer_http(mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!("peer={peer}\n");
    let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

/// Echoes until the peer half-closes, then half-closes too.
fn echo(mut stream: TcpStream, peer: SocketAddr) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
                total += n as u64;
            }
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    say(&format!("closed peer={peer} bytes={total}"));
}

struct ConnectArgs {
    addr: SocketAddr,
    bytes: u64,
    count: u64,
    timeout: Duration,
}

impl ConnectArgs {
    fn parse(args: &[String]) -> Result<ConnectArgs, Failure> {
        let mut parsed =
            ConnectArgs { addr: parse_addr(args, 1)?, bytes: DEFAULT_BYTES, count: 100, timeout: DEFAULT_TIMEOUT };
        let mut rest = args[2..].iter();
        while let Some(flag) = rest.next() {
            let value = rest.next().ok_or_else(|| Failure::Usage(format!("{flag} needs a value")))?;
            let number: u64 = value.parse().map_err(|_| Failure::Usage(format!("{flag}: bad number {value:?}")))?;
            match flag.as_str() {
                "--bytes" => parsed.bytes = number,
                "--count" => parsed.count = number.max(1),
                "--timeout" => parsed.timeout = Duration::from_secs(number),
                _ => return Err(Failure::Usage(format!("unknown option {flag}"))),
            }
        }
        Ok(parsed)
    }
}

/// Byte `i` of what `connect` sends: a fixed pattern, so both sides can check it.
fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8 ^ (i >> 16) as u8
}

fn connect(args: &ConnectArgs) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + args.timeout;
    // A watchdog bounds the whole run, whatever blocks.
    let limit = args.timeout;
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        say(&format!("error: timed out after {}s", limit.as_secs()));
        std::process::exit(1);
    });
    let stream = TcpStream::connect_timeout(&args.addr, args.timeout).map_err(|e| format!("connect: {e}"))?;
    let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let _ = stream.set_read_timeout(Some(remaining));
    let _ = stream.set_write_timeout(Some(remaining));
    let local = stream.local_addr().map_err(|e| format!("getsockname: {e}"))?;
    let peer = stream.peer_addr().map_err(|e| format!("getpeername: {e}"))?;
    say(&format!("connected local={local} peer={peer}"));

    let mut writer = stream.try_clone().map_err(|e| format!("clone socket: {e}"))?;
    let bytes = args.bytes;
    // Write from another thread so a full echo buffer cannot deadlock us.
    let sender = std::thread::spawn(move || -> Result<String, String> {
        let mut hash = Sha256::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < bytes {
            let n = chunk.len().min((bytes - sent) as usize);
            for (j, b) in chunk[..n].iter_mut().enumerate() {
                *b = pattern_byte(sent + j as u64);
            }
            writer.write_all(&chunk[..n]).map_err(|e| format!("send: {e}"))?;
            hash.update(&chunk[..n]);
            sent += n as u64;
        }
        writer.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
        Ok(hex::encode(hash.finalize()))
    });

    let mut reader = stream;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                received += n as u64;
            }
            Err(e) => return Err(format!("receive after {received} bytes: {e}")),
        }
    }
    let sent_sha = sender.join().map_err(|_| "sender thread panicked".to_string())??;
    let sha = hex::encode(hash.finalize());
    let elapsed_us = started.elapsed().as_micros();
    say(&format!("echo bytes={received} sha256={sha} sent_sha256={sent_sha} elapsed_us={elapsed_us}"));
    if received != bytes || sha != sent_sha {
        return Err(format!("echo mismatch: sent {bytes} bytes, received {received}"));
    }
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<(), String> {
    TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    say("bound");
    Ok(())
}

/// Connection round trips: connect, one byte each way, close. Prints latency percentiles.
fn rtt(args: &ConnectArgs) -> Result<(), String> {
    let deadline = Instant::now() + args.timeout;
    let mut samples = Vec::with_capacity(args.count as usize);
    for i in 0..args.count {
        if Instant::now() > deadline {
            return Err(format!("timed out after {i} of {} rounds", args.count));
        }
        let started = Instant::now();
        let mut stream = TcpStream::connect_timeout(&args.addr, args.timeout).map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(args.timeout));
        stream.write_all(&[7]).map_err(|e| format!("send: {e}"))?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).map_err(|e| format!("read echo: {e}"))?;
        drop(stream);
        samples.push(started.elapsed().as_micros() as u64);
    }
    samples.sort_unstable();
    let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    say(&format!(
        "rtt count={} p50_us={} p90_us={} p99_us={} min_us={} max_us={}",
        samples.len(),
        pct(50),
        pct(90),
        pct(99),
        samples[0],
        samples[samples.len() - 1]
    ));
    Ok(())
}

fn relay(addr: SocketAddr, path: &str) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("local address: {e}"))?;
    say(&format!("listening local={local}"));
    loop {
        let (tcp, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let Ok(unix) = std::os::unix::net::UnixStream::connect(path) else {
            continue;
        };
        let (Ok(tcp_back), Ok(unix_back)) = (tcp.try_clone(), unix.try_clone()) else { continue };
        std::thread::spawn(move || copy_then_shut(tcp, unix));
        std::thread::spawn(move || copy_then_shut_back(unix_back, tcp_back));
    }
}

fn copy_then_shut(mut from: TcpStream, mut to: std::os::unix::net::UnixStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn copy_then_shut_back(mut from: std::os::unix::net::UnixStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
