//! Copying over real loopback sockets: a reset on either side reaches the other side as a
//! reset, an abandoned copy resets both, and a complete transfer ends with clean FINs.

use std::io::ErrorKind;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A connected pair of loopback sockets: (the app's end, the proxy's end).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (proxy, _) = listener.accept().await.unwrap();
    (app, proxy)
}

/// Closes `s` with an RST.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// Reads until end of stream or error (bounded, 5 s): the bytes and how it ended.
async fn read_until_end(s: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the stream neither ended nor failed within 5 s");
    (got, ended)
}

/// Client and upstream apps with a copy running between them.
async fn proxied() -> (TcpStream, TcpStream, tokio::task::JoinHandle<Result<(), CopyError>>) {
    let (client, proxy_client) = pair().await;
    let (upstream, proxy_upstream) = pair().await;
    let copy = tokio::spawn(copy_bidirectional(
        tcp_halves(proxy_client),
        tcp_halves(proxy_upstream),
        Arc::new(Transferred::default()),
    ));
    (client, upstream, copy)
}

#[tokio::test]
async fn an_upstream_reset_reaches_the_client_as_a_reset() {
    let (mut client, mut upstream, copy) = proxied().await;
    upstream.write_all(b"partial").await.unwrap();
    // Let the bytes through before the reset, so they are not discarded with it.
    let mut first = [0u8; 7];
    client.read_exact(&mut first).await.unwrap();
    reset(upstream);
    let (_, ended) = read_until_end(&mut client).await;
    let err = ended.expect_err("the client saw a clean end of stream after the upstream reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "client read error: {err}");
    let failure = copy.await.unwrap().expect_err("the copy must report the reset");
    assert_eq!(failure.side, Side::Upstream, "{failure}");
    assert!(failure.is_reset(), "a reset must be reported as one: {failure}");
}

#[tokio::test]
async fn a_client_reset_reaches_the_upstream_as_a_reset() {
    let (client, mut upstream, copy) = proxied().await;
    reset(client);
    let (_, ended) = read_until_end(&mut upstream).await;
    let err = ended.expect_err("the upstream saw a clean end of stream after the client reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "upstream read error: {err}");
    let failure = copy.await.unwrap().expect_err("the copy must report the reset");
    assert_eq!(failure.side, Side::Client, "{failure}");
}

#[tokio::test]
async fn a_complete_transfer_ends_with_a_clean_end_of_stream_both_ways() {
    let (mut client, mut upstream, copy) = proxied().await;
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let (got, ended) = read_until_end(&mut upstream).await;
    assert_eq!((got.as_slice(), ended.is_ok()), (&b"request"[..], true), "upstream side: {ended:?}");
    upstream.write_all(b"response").await.unwrap();
    upstream.shutdown().await.unwrap();
    let (got, ended) = read_until_end(&mut client).await;
    assert_eq!((got.as_slice(), ended.is_ok()), (&b"response"[..], true), "client side: {ended:?}");
    copy.await.unwrap().expect("a complete transfer is no failure");
}

#[tokio::test]
async fn an_abandoned_copy_resets_both_sides() {
    let (mut client, mut upstream, copy) = proxied().await;
    client.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    upstream.read_exact(&mut one).await.unwrap();
    // What the drain deadline or a late policy rejection does: the copy is dropped mid-way.
    copy.abort();
    let _ = copy.await;
    for (name, s) in [("client", &mut client), ("upstream", &mut upstream)] {
        let (_, ended) = read_until_end(s).await;
        let err = ended.expect_err(&format!("the {name} saw a clean end of stream when the copy was cut"));
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{name} read error: {err}");
    }
}
