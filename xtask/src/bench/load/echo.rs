//! The benchmark's echo server: tokio, one task per connection, a 4096-connection backlog,
//! echoing until the peer half-closes, then half-closing. Quiet: a line per connection would
//! cost more than the echo at tens of thousands of connections per second.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::say;

const BACKLOG: u32 = 4096;
/// The exchanges are small (at most a few KiB); 10,000 held connections keep 40 MiB here.
const BUFFER: usize = 4 * 1024;

pub(super) fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr).with_context(|| format!("bind {addr}"))?;
        let listener = socket.listen(BACKLOG)?;
        say(&format!("listening local={}", listener.local_addr()?));
        loop {
            let (stream, _) = listener.accept().await.context("accept")?;
            tokio::spawn(echo(stream));
        }
    })
}

async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; BUFFER];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}
