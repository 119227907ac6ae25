//! The demo's applications, as tokio tasks bound to their workload addresses: an HTTP/1.1
//! server for `web`, a SHA-256 sink for `data`, and a TCP echo server for the unmeshed
//! destination. They stop when the [`Servers`] that owns them is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Largest request head the HTTP server reads.
const MAX_HEAD: usize = 16 * 1024;
/// Read buffer of the sink.
const SINK_BUFFER: usize = 256 * 1024;
/// What the sink answers after the client half-closes: 8 bytes big-endian length, then the
/// 32-byte SHA-256 of everything received.
pub(crate) const SINK_REPLY_LEN: usize = 8 + 32;

/// Running servers; aborted on drop.
#[derive(Default)]
pub(crate) struct Servers {
    tasks: JoinSet<()>,
    /// HTTP requests answered by the `web` server.
    pub(crate) http_requests: Arc<AtomicU64>,
}

impl Servers {
    /// HTTP server on `addr`, answering every GET with a line naming `workload` and the peer.
    pub(crate) async fn http(&mut self, addr: SocketAddr, workload: &'static str) -> anyhow::Result<()> {
        let listener = bind(addr, "http server").await?;
        let count = self.http_requests.clone();
        self.tasks.spawn(accept_loop(listener, move |stream, peer| {
            let count = count.clone();
            async move {
                if serve_http(stream, peer, addr, workload).await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        Ok(())
    }

    /// SHA-256 sink on `addr` (see [`SINK_REPLY_LEN`]).
    pub(crate) async fn sink(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let listener = bind(addr, "sink").await?;
        self.tasks.spawn(accept_loop(listener, |stream, _| async move {
            let _ = serve_sink(stream).await;
        }));
        Ok(())
    }

    /// Echo server on `addr`; half-closes after the client does.
    pub(crate) async fn echo(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let listener = bind(addr, "echo server").await?;
        self.tasks.spawn(accept_loop(listener, |mut stream, _| async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        }));
        Ok(())
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("{what} cannot listen on {addr}"))
}

/// Accepts until aborted, one task per connection.
async fn accept_loop<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => { connections.spawn(handle(stream, peer)); }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_http(mut stream: TcpStream, peer: SocketAddr, local: SocketAddr, workload: &str) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0 && head.len() + n <= MAX_HEAD, "bad request head");
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let request_line = text.lines().next().unwrap_or("");
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = if method == "GET" {
        ("200 OK", format!("hello from {workload} at {local}: {method} {path}, connection from {peer}\n"))
    } else {
        ("405 Method Not Allowed", format!("{workload} only answers GET\n"))
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

async fn serve_sink(mut stream: TcpStream) -> anyhow::Result<()> {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; SINK_BUFFER];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let mut reply = Vec::with_capacity(SINK_REPLY_LEN);
    reply.extend_from_slice(&total.to_be_bytes());
    reply.extend_from_slice(&hasher.finalize());
    stream.write_all(&reply).await?;
    stream.shutdown().await?;
    Ok(())
}
