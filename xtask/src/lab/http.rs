//! A minimal HTTP/1.1 GET client for ztunnel's admin, metrics and readiness endpoints, which
//! listen on localhost inside each node's network namespace: the socket is made in that
//! namespace (see `Node::connect`), the request runs from here. One request per connection
//! (`Connection: close`), body read to the end of the stream.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ztunnel_tests::netns::Node;

/// Bound on one admin/metrics/readiness request.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Sends `GET path` with `Host: host` on `stream` and reads the whole response.
pub(crate) async fn get<S>(mut stream: S, host: &str, path: &str) -> anyhow::Result<Response>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xtask-demo\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.context("sending request")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.context("reading response")?;
    let (status, body) = parse(&raw)?;
    Ok(Response { status, body })
}

/// `GET http://addr/path` from inside `node`'s namespace on a fresh connection, bounded in time.
pub(crate) async fn get_in(node: &Node, addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    let exchange = async {
        let stream = node.connect(addr).await?;
        get(stream, &addr.to_string(), path).await
    };
    tokio::time::timeout(LOCAL_TIMEOUT, exchange)
        .await
        .with_context(|| format!("GET http://{addr}{path} in {} timed out", node.name()))?
        .with_context(|| format!("GET http://{addr}{path} in {}", node.name()))
}

/// Like [`get_in`] but fails unless the status is 200; returns the body.
pub(crate) async fn get_ok_in(node: &Node, addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let response = get_in(node, addr, path).await?;
    if response.status != 200 {
        bail!("GET http://{addr}{path} in {} answered {}", node.name(), response.status);
    }
    Ok(response.body)
}

/// Splits a raw response into status and (de-chunked) body.
fn parse(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("incomplete HTTP response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad HTTP status line: {:?}", head.lines().next().unwrap_or("")))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Ok((status, body))
}

/// Decodes a `Transfer-Encoding: chunked` body (no trailers expected).
fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size_line, after) = rest.split_once("\r\n").context("truncated chunk size")?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).with_context(|| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).context("truncated chunk")?;
        out.push_str(chunk);
        rest = after.get(size..).and_then(|r| r.strip_prefix("\r\n")).context("chunk without CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse(plain).unwrap(), (200, "hello".to_string()));
        let chunked = b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse(chunked).unwrap(), (503, "abcde".to_string()));
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err(), "a response without a header end is an error");
    }
}
