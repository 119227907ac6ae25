//! Network helpers: unique loopback subnets, echo servers, a SOCKS5 client, HTTP scraping.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A /24 of loopback addresses owned by one test.
#[derive(Clone, Copy, Debug)]
pub struct Subnet {
    a: u8,
    b: u8,
}

impl Subnet {
    /// Picks a random 127.a.b.0/24 whose `.1:15008` is free.
    pub fn unique() -> Subnet {
        for _ in 0..200 {
            let a: u8 = rand::random_range(20..=250);
            let b: u8 = rand::random();
            let probe = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, a, b, 1)), 15008);
            if std::net::TcpListener::bind(probe).is_ok() {
                return Subnet { a, b };
            }
        }
        panic!("no free loopback /24 found after 200 tries");
    }

    /// Address `127.a.b.host`.
    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.a, self.b, host))
    }
}

/// A TCP server that echoes every connection (and half-closes after the client does).
/// Returns its address; runs until the test's runtime ends.
pub async fn echo_server(addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("echo server cannot bind {addr}: {e}"));
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Connects from `source` (the client workload's address) to the SOCKS5 server and asks for
/// `dst`. Returns the stream after a successful reply, or the SOCKS reply code as an error.
pub async fn socks5_connect(socks: SocketAddr, source: IpAddr, dst: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("binding client source {source}"))?;
    let mut s = socket.connect(socks).await.with_context(|| format!("connecting to socks5 at {socks}"))?;
    s.write_all(&[5, 1, 0]).await?;
    let mut greet = [0u8; 2];
    s.read_exact(&mut greet).await?;
    if greet != [5, 0] {
        bail!("socks5 greeting refused: {greet:?}");
    }
    let mut req = vec![5, 1, 0];
    match dst.ip() {
        IpAddr::V4(v4) => {
            req.push(1);
            req.extend(v4.octets());
        }
        IpAddr::V6(v6) => {
            req.push(4);
            req.extend(v6.octets());
        }
    }
    req.extend(dst.port().to_be_bytes());
    s.write_all(&req).await?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.context("reading socks5 reply")?;
    if reply[1] != 0 {
        bail!("socks5 reply code {}", reply[1]);
    }
    Ok(s)
}

/// One echo round trip through the SOCKS5 entry at `socks` from `client` to `dst`: the bytes
/// sent come back and the connection ends cleanly.
pub async fn socks5_echo(socks: SocketAddr, client: IpAddr, dst: SocketAddr) -> anyhow::Result<()> {
    let mut s = socks5_connect(socks, client, dst).await?;
    s.write_all(b"ping").await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).await?;
    anyhow::ensure!(back == b"ping", "echo returned {back:?}");
    Ok(())
}

/// Plain HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await??;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad response: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
