//! SOCKS5 client (RFC 1928, no authentication, CONNECT to an IP address) that connects from
//! a chosen source address: ztunnel identifies the source workload by the client's IP.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Opens a TCP connection from `source` (any port) to `socks` and asks it for `dst`.
/// Returns the stream once the proxy reports success.
pub(crate) async fn connect(socks: SocketAddr, source: IpAddr, dst: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = dial_from(source, socks).await.with_context(|| format!("connecting to socks5 {socks}"))?;
    handshake(stream, dst).await.with_context(|| format!("socks5 CONNECT {dst} via {socks}"))
}

/// Plain TCP from `source` to `dst`, for measurements without the mesh.
pub(crate) async fn dial_from(source: IpAddr, dst: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("binding client socket to {source}"))?;
    Ok(socket.connect(dst).await?)
}

async fn handshake(mut s: TcpStream, dst: SocketAddr) -> anyhow::Result<TcpStream> {
    s.write_all(&[5, 1, 0]).await?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method).await.context("reading method selection")?;
    if method != [5, 0] {
        bail!("proxy refused no-auth method (answered {method:?})");
    }
    let mut request = vec![5, 1, 0];
    match dst.ip() {
        IpAddr::V4(v4) => {
            request.push(1);
            request.extend(v4.octets());
        }
        IpAddr::V6(v6) => {
            request.push(4);
            request.extend(v6.octets());
        }
    }
    request.extend(dst.port().to_be_bytes());
    s.write_all(&request).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.context("reading CONNECT reply")?;
    if head[1] != 0 {
        bail!("proxy answered {} ({})", head[1], reply_name(head[1]));
    }
    // Skip the bound address: IPv4 or IPv6, then the port.
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        other => bail!("unexpected bound address type {other} in CONNECT reply"),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).await?;
    Ok(s)
}

fn reply_name(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown reply code",
    }
}
