//! HBONE client, pool and server over plain loopback TCP (TLS is layered by callers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

fn connect_request(authority: &str) -> Request<()> {
    Request::builder().method(Method::CONNECT).uri(authority).body(()).unwrap()
}

/// An HBONE server whose streams echo everything back, then half-close when the client does.
/// Authority port 401 is rejected with 401 to exercise non-200 answers.
async fn echo_server(settings: H2Settings) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (io, peer) = listener.accept().await.unwrap();
            let settings = settings.clone();
            tokio::spawn(async move {
                let _ = serve_connection(
                    io,
                    peer,
                    &settings,
                    std::future::pending(),
                    |incoming: IncomingConnect| async move {
                        if incoming.authority.port() == 401 {
                            incoming.reject(StatusCode::UNAUTHORIZED);
                            return;
                        }
                        let (mut r, mut w) = incoming.accept(Default::default()).unwrap().split();
                        while let Ok(Some(chunk)) = r.read_chunk().await {
                            w.write_chunk(chunk).await.unwrap();
                        }
                        w.close().unwrap();
                    },
                )
                .await;
            });
        }
    });
    addr
}

fn dial(addr: SocketAddr) -> impl Fn() -> std::future::Ready<std::io::Result<TcpStream>> {
    move || {
        std::future::ready(std::net::TcpStream::connect(addr).and_then(|s| {
            s.set_nonblocking(true)?;
            TcpStream::from_std(s)
        }))
    }
}

#[tokio::test]
async fn stream_round_trip_and_half_close() {
    let addr = echo_server(H2Settings::default()).await;
    let pool: HbonePool<&str> = HbonePool::new(PoolConfig::default());
    let (tunnel, _) = pool.connect(&"k", dial(addr), || Ok(connect_request("10.0.0.1:80"))).await.unwrap();
    let (mut r, mut w) = tunnel.split();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let send = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&send).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), payload.len(), "echoed length differs");
    assert!(got == payload, "echoed bytes differ");
}

#[tokio::test]
async fn non_200_answers_surface_as_status_errors() {
    let addr = echo_server(H2Settings::default()).await;
    let pool: HbonePool<&str> = HbonePool::new(PoolConfig::default());
    let err =
        pool.connect(&"k", dial(addr), || Ok(connect_request("10.0.0.1:401"))).await.err().expect("401 must fail");
    match err {
        pool::PoolError::Hbone(e) => assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED), "got {e}"),
        other => panic!("expected an hbone status error, got {other}"),
    }
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let addr = echo_server(H2Settings::default()).await;
    let io = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    for (method, uri) in [(Method::GET, "http://10.0.0.1:80/"), (Method::CONNECT, "example.com:80")] {
        let mut send = send.clone().ready().await.unwrap();
        let req = Request::builder().method(method.clone()).uri(uri).body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{method} {uri} should be refused as malformed");
    }
}

#[tokio::test]
async fn pool_caps_streams_per_connection_and_reuses_connections() {
    let addr = echo_server(H2Settings::default()).await;
    let config = PoolConfig { max_streams_per_connection: 100, ..Default::default() };
    let pool: HbonePool<&str> = HbonePool::new(config);
    // 250 streams held open at once need exactly three connections.
    let mut tunnels = Vec::new();
    let opens = (0..250).map(|_| pool.connect(&"k", dial(addr), || Ok(connect_request("10.0.0.1:80"))));
    for result in futures_util::future::join_all(opens).await {
        tunnels.push(result.unwrap().0);
    }
    let stats = pool.stats();
    assert_eq!(stats.connections_opened, 3, "250 streams at 100 per connection: {stats:?}");
    assert_eq!(stats.streams_active, 250, "{stats:?}");
    drop(tunnels);
    assert_eq!(pool.stats().streams_active, 0);
    // Later streams reuse pooled connections instead of dialling.
    for _ in 0..20 {
        let (t, _) = pool.connect(&"k", dial(addr), || Ok(connect_request("10.0.0.1:80"))).await.unwrap();
        drop(t);
    }
    assert_eq!(pool.stats().connections_opened, 3, "sequential streams must reuse connections");
    // A different key never shares a connection.
    let _t = pool.connect(&"other", dial(addr), || Ok(connect_request("10.0.0.1:80"))).await.unwrap();
    assert_eq!(pool.stats().connections_opened, 4);
}

#[tokio::test]
async fn idle_connections_are_released() {
    let addr = echo_server(H2Settings::default()).await;
    let config = PoolConfig { idle_timeout: Duration::from_millis(200), ..Default::default() };
    let pool: HbonePool<&str> = HbonePool::new(config);
    let (t, _) = pool.connect(&"k", dial(addr), || Ok(connect_request("10.0.0.1:80"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pool.stats().connections_open, 1, "a connection with a live stream must stay");
    drop(t);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.stats().connections_open != 0 {
        assert!(tokio::time::Instant::now() < deadline, "idle connection not released: {:?}", pool.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _t = pool.connect(&"k", dial(addr), || Ok(connect_request("10.0.0.1:80"))).await.unwrap();
    assert_eq!(pool.stats().connections_opened, 2, "a released connection is redialled");
}

#[tokio::test]
async fn after_a_burst_one_idle_connection_per_key_stays_warm() {
    let addr = echo_server(H2Settings::default()).await;
    let config = PoolConfig {
        max_streams_per_connection: 1,
        idle_timeout: Duration::from_secs(60),
        surplus_idle_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let pool: HbonePool<&str> = HbonePool::new(config);
    let mut burst = Vec::new();
    for _ in 0..3 {
        burst.push(pool.connect(&"k", dial(addr), || Ok(connect_request("10.0.0.1:80"))).await.unwrap());
    }
    assert_eq!(pool.stats().connections_open, 3, "one stream per connection: the burst needs three");
    drop(burst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pool.stats().connections_open != 1 {
        assert!(tokio::time::Instant::now() < deadline, "surplus idle connections not released: {:?}", pool.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(pool.stats().connections_open, 1, "the warm connection must outlive the surplus timeout");
    let _t = pool.connect(&"k", dial(addr), || Ok(connect_request("10.0.0.1:80"))).await.unwrap();
    assert_eq!(pool.stats().connections_opened, 3, "the next stream reuses the warm connection");
}

#[tokio::test]
async fn dead_peer_is_detected_with_ping() {
    let server = echo_server(H2Settings::default()).await;
    let (relay, freeze) = relay_freezing_existing(server).await;
    let h2 = H2Settings {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let io = TcpStream::connect(relay).await.unwrap();
    let conn = client::ClientConnection::handshake(io, "relay", &h2).await.unwrap();
    let (t, _) = conn.connect(connect_request("10.0.0.1:80"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!conn.is_closed(), "a peer answering pings must stay connected");
    freeze();
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("frozen peer not detected by keepalive ping");
    assert!(conn.is_closed());
    drop(t);
}

#[tokio::test]
async fn server_drain_sends_goaway_and_finishes_live_streams() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (io, peer) = listener.accept().await.unwrap();
        serve_connection(
            io,
            peer,
            &H2Settings::default(),
            async {
                drain_rx.await.ok();
            },
            |incoming: IncomingConnect| async move {
                let (mut r, mut w) = incoming.accept(Default::default()).unwrap().split();
                while let Ok(Some(chunk)) = r.read_chunk().await {
                    w.write_chunk(chunk).await.unwrap();
                }
                w.close().unwrap();
            },
        )
        .await
    });
    let io = TcpStream::connect(addr).await.unwrap();
    let conn = client::ClientConnection::handshake(io, "server", &H2Settings::default()).await.unwrap();
    let (t, _) = conn.connect(connect_request("10.0.0.1:80"), None).await.unwrap();
    let (mut r, mut w) = t.split();
    drain_tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The live stream still works after the drain began.
    w.write_chunk(Bytes::from_static(b"still here")).await.unwrap();
    w.close().unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"still here");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server did not finish after drain")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn streams_refused_by_a_draining_server_move_to_a_new_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let (io, peer) = listener.accept().await.unwrap();
            let mut drain = drain_rx.clone();
            // Only the connections open when the drain starts are drained.
            let draining_now = *drain.borrow();
            tokio::spawn(async move {
                let drained = async move {
                    if draining_now {
                        std::future::pending::<()>().await
                    }
                    let _ = drain.wait_for(|d| *d).await;
                };
                let _ = serve_connection(
                    io,
                    peer,
                    &H2Settings::default(),
                    drained,
                    |incoming: IncomingConnect| async move {
                        let (mut r, mut w) = incoming.accept(Default::default()).unwrap().split();
                        while let Ok(Some(chunk)) = r.read_chunk().await {
                            w.write_chunk(chunk).await.unwrap();
                        }
                        w.close().unwrap();
                    },
                )
                .await;
            });
        }
    });
    let pool: HbonePool<&str> = HbonePool::new(PoolConfig::default());
    let (held, _) = pool.connect(&"k", dial(addr), || Ok(connect_request("10.0.0.1:80"))).await.unwrap();
    drain_tx.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The first connection got GOAWAY but still carries `held`; a new stream must succeed.
    let (fresh, _) =
        pool.connect(&"k", dial(addr), || Ok(connect_request("10.0.0.1:80"))).await.expect("stream after GOAWAY");
    assert_eq!(pool.stats().connections_opened, 2, "the refused stream moved to a new connection");
    for tunnel in [held, fresh] {
        let (mut r, mut w) = tunnel.split();
        w.write_chunk(Bytes::from_static(b"alive")).await.unwrap();
        w.close().unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"alive", "both streams keep working");
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_sends_no_preface_is_dropped_after_the_handshake_timeout() {
    let (server_io, _client_io) = tokio::io::duplex(1024);
    let settings = H2Settings { handshake_timeout: Duration::from_secs(3), ..H2Settings::default() };
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let served = serve_connection(server_io, peer, &settings, std::future::pending(), |_: IncomingConnect| async {});
    let result = tokio::time::timeout(Duration::from_secs(60), served).await.expect("the server gives up by itself");
    assert!(matches!(result, Err(Error::HandshakeTimeout { .. })), "expected a handshake timeout, got {result:?}");
}

#[tokio::test]
async fn a_drain_does_not_wait_for_a_silent_peers_preface() {
    let (server_io, _client_io) = tokio::io::duplex(1024);
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let settings = H2Settings::default();
    let served = serve_connection(server_io, peer, &settings, std::future::ready(()), |_: IncomingConnect| async {});
    let result = tokio::time::timeout(Duration::from_secs(5), served).await.expect("drain ends the wait at once");
    assert!(result.is_ok(), "a drained connection ends cleanly: {result:?}");
}

#[tokio::test]
async fn request_headers_beyond_the_list_limit_are_refused() {
    let small = H2Settings { max_header_list_size: 1024, ..H2Settings::default() };
    let addr = echo_server(small).await;
    let io = TcpStream::connect(addr).await.unwrap();
    let conn = client::ClientConnection::handshake(io, "echo", &H2Settings::default()).await.unwrap();
    let mut big = connect_request("10.0.0.1:80");
    big.headers_mut().insert("x-pad", http::HeaderValue::from_str(&"a".repeat(4096)).unwrap());
    match conn.connect(big, None).await {
        // A list far over the limit costs the peer its connection (GOAWAY ENHANCE_YOUR_CALM);
        // one slightly over gets the stream answered 431.
        Err(Error::Request { source, .. }) if source.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) => {}
        Err(Error::Status { status, .. }) if status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {}
        other => panic!("4 KiB of headers against a 1 KiB limit must be refused, got {:?}", other.map(|_| ())),
    }
    let io = TcpStream::connect(addr).await.unwrap();
    let conn = client::ClientConnection::handshake(io, "echo", &H2Settings::default()).await.unwrap();
    conn.connect(connect_request("10.0.0.1:80"), None).await.expect("small requests still pass");
}

/// A TCP relay whose connections can be frozen: once frozen, a connection forwards nothing more
/// in either direction (like a peer that vanished without closing its socket), while
/// connections accepted afterwards work normally. Returns its address and a way to freeze the
/// connections open so far.
async fn relay_freezing_existing(target: SocketAddr) -> (SocketAddr, Arc<dyn Fn() + Send + Sync>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let live: Arc<std::sync::Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
    let freeze_all = {
        let live = live.clone();
        Arc::new(move || {
            for frozen in live.lock().unwrap().drain(..) {
                frozen.store(true, Ordering::Relaxed);
            }
        })
    };
    tokio::spawn(async move {
        loop {
            let (a, _) = listener.accept().await.unwrap();
            let b = TcpStream::connect(target).await.unwrap();
            let frozen = Arc::new(AtomicBool::new(false));
            live.lock().unwrap().push(frozen.clone());
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            for (mut from, mut to) in [(ar, bw), (br, aw)] {
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from.read(&mut buf).await {
                        if n == 0 || frozen.load(Ordering::Relaxed) {
                            // Frozen: hold both sockets open and forward nothing, for good.
                            if frozen.load(Ordering::Relaxed) {
                                std::future::pending::<()>().await;
                            }
                            break;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    (addr, freeze_all)
}

#[tokio::test]
async fn a_new_stream_leaves_a_frozen_pooled_connection_for_a_fresh_one_quickly() {
    let server = echo_server(H2Settings::default()).await;
    let (relay, freeze) = relay_freezing_existing(server).await;
    // Default settings: the periodic keepalive (10 s) is far off; only the probe can help.
    let pool: HbonePool<&str> = HbonePool::new(PoolConfig::default());
    let (first, _) = pool.connect(&"k", dial(relay), || Ok(connect_request("10.0.0.1:80"))).await.unwrap();
    drop(first);
    assert_eq!(pool.stats().connections_open, 1, "one pooled connection before the freeze");
    freeze();

    let started = std::time::Instant::now();
    let opened = tokio::time::timeout(
        Duration::from_secs(10),
        pool.connect(&"k", dial(relay), || Ok(connect_request("10.0.0.1:80"))),
    )
    .await
    .expect("a new stream waited the whole 10 s for a frozen pooled connection");
    let elapsed = started.elapsed();
    let (tunnel, _) = opened.expect("the stream opens on a fresh connection");
    println!("new stream open after {elapsed:?} with the pooled connection frozen");
    let defaults = H2Settings::default();
    assert!(
        elapsed < defaults.probe_after + defaults.probe_timeout + Duration::from_secs(1),
        "the frozen connection took {elapsed:?} to leave"
    );
    // The fresh tunnel carries bytes.
    let (mut r, mut w) = tunnel.split();
    w.write_all(b"alive").await.unwrap();
    w.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, b"alive");
    let stats = pool.stats();
    assert_eq!(stats.connections_opened, 2, "a fresh connection was dialled: {stats:?}");
    assert_eq!(stats.connections_open, 1, "the dead connection was dropped from the pool: {stats:?}");
}
