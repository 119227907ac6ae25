//! The servers: `serve` (echo; tokio, one task per connection, a 4096-connection backlog),
//! `http`, `sink` and `relay` (threads per connection). Each prints `listening` once bound.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use ztunnel_tests::traffic::print;

const BACKLOG: u32 = 4096;
/// The echo buffer: exchanges are small, or bulk that streams through; 10,000 held
/// connections keep 40 MiB here.
const ECHO_BUFFER: usize = 4 * 1024;
const SINK_BUFFER: usize = 256 * 1024;
/// How long `http` waits for a request head.
const HTTP_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_HEAD_LIMIT: usize = 16 * 1024;

pub(crate) fn echo(addr: SocketAddr, quiet: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr).with_context(|| format!("bind {addr}"))?;
        let listener = socket.listen(BACKLOG)?;
        print("listening", json!({ "local": listener.local_addr()?.to_string() }));
        loop {
            let (mut stream, peer) = listener.accept().await.context("accept")?;
            if !quiet {
                let local = stream.local_addr().map_or_else(|e| format!("?({e})"), |a| a.to_string());
                print("accepted", json!({ "peer": peer.to_string(), "local": local }));
            }
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut buf = vec![0u8; ECHO_BUFFER];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            total += n as u64;
                        }
                    }
                }
                let _ = stream.shutdown().await;
                if !quiet {
                    print("closed", json!({ "peer": peer.to_string(), "bytes": total }));
                }
            });
        }
    })
}

pub(crate) fn http(addr: SocketAddr) -> anyhow::Result<()> {
    serve_threads(addr, |mut stream, peer| {
        let _ = stream.set_read_timeout(Some(HTTP_HEAD_TIMEOUT));
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HTTP_HEAD_LIMIT {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let body = format!("peer={peer}\n");
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        let _ = stream.write_all(answer.as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
    })
}

pub(crate) fn sink(addr: SocketAddr) -> anyhow::Result<()> {
    serve_threads(addr, |stream, peer| match drain_and_reply(stream) {
        Ok(n) => print("received", json!({ "peer": peer.to_string(), "bytes": n })),
        Err(e) => print("failed", json!({ "peer": peer.to_string(), "reason": format!("{e:#}") })),
    })
}

/// Accepts forever, printing `accepted` and handing each connection to a thread.
fn serve_threads(addr: SocketAddr, handle: fn(TcpStream, SocketAddr)) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    print("listening", json!({ "local": listener.local_addr()?.to_string() }));
    loop {
        let (stream, peer) = listener.accept().context("accept")?;
        let local = stream.local_addr().map_or_else(|e| format!("?({e})"), |a| a.to_string());
        print("accepted", json!({ "peer": peer.to_string(), "local": local }));
        std::thread::spawn(move || handle(stream, peer));
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
    let mut reply = Vec::with_capacity(crate::clients::SINK_REPLY_LEN);
    reply.extend_from_slice(&total.to_be_bytes());
    reply.extend_from_slice(&hasher.finalize());
    stream.write_all(&reply)?;
    stream.shutdown(Shutdown::Write)?;
    Ok(total)
}

/// Relays each accepted TCP connection to the unix socket at `path`, both ways, passing on
/// half-closes. A connection the socket refuses is closed.
pub(crate) fn relay(addr: SocketAddr, path: &std::path::Path) -> anyhow::Result<()> {
    let path = path.to_path_buf();
    let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    print("listening", json!({ "local": listener.local_addr()?.to_string() }));
    loop {
        let (tcp, _) = listener.accept().context("accept")?;
        let Ok(unix) = std::os::unix::net::UnixStream::connect(&path) else { continue };
        let (Ok(tcp_back), Ok(unix_back)) = (tcp.try_clone(), unix.try_clone()) else { continue };
        std::thread::spawn(move || {
            let (mut from, mut to) = (tcp, unix);
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
        std::thread::spawn(move || {
            let (mut from, mut to) = (unix_back, tcp_back);
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}
