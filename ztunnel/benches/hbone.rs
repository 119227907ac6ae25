//! HBONE stream framing without TLS: our HTTP/2 `CONNECT` client (through the pool) and
//! server talking over an in-memory `tokio::io::duplex` pipe, so only HTTP/2 framing, flow
//! control and our stream adapters are measured (no sockets, no crypto).
//!
//! - `bulk/16KiB`, `bulk/256KiB`: DATA throughput on one open stream, client to server, in
//!   chunks of that size (the server reads and drops them);
//! - `streams/connect-1KiB-echo-close`: streams per second on a warm connection: `CONNECT`
//!   with Istio's three request headers, 200, 1 KiB sent and echoed back, both halves closed.
//!
//! Run: `cargo bench -p ztunnel --bench hbone`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Method, Request};
use tokio::io::DuplexStream;
use tokio::runtime::Runtime;
use ztunnel::hbone::{self, H2Settings, HbonePool, IncomingConnect, PoolConfig, Tunnel, serve_connection};

/// In-memory pipe capacity each way (bytes buffered before the writer waits).
const PIPE_BUFFER: usize = 1024 * 1024;
/// Authority whose streams the bench server drains and acknowledges instead of echoing.
const SINK_PORT: u16 = 9;

/// The request the outbound proxy sends, with headers of realistic size.
fn connect_request(authority: &str) -> Request<()> {
    Request::builder()
        .method(Method::CONNECT)
        .uri(authority)
        .header(hbone::BAGGAGE, "k8s.cluster.name=cluster1,k8s.namespace.name=shop,k8s.deployment.name=client,service.name=client,service.version=v1")
        .header(hbone::FORWARDED, "for=\"10.1.0.1:40000\";host=server.shop.svc.cluster.local")
        .header(hbone::TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        .body(())
        .expect("benchmark request is valid")
}

/// Echoes each stream back; streams to port [`SINK_PORT`] are drained and answered with the
/// byte count (8 bytes, big endian) once the client half-closes.
async fn handle(incoming: IncomingConnect) {
    let sink = incoming.authority.port() == SINK_PORT;
    let Ok(tunnel) = incoming.accept(Default::default()) else { return };
    let (mut reader, mut writer) = tunnel.split();
    let mut total = 0u64;
    while let Ok(Some(chunk)) = reader.read_chunk().await {
        total += chunk.len() as u64;
        if !sink && writer.write_chunk(chunk).await.is_err() {
            return;
        }
    }
    if sink {
        let _ = writer.write_chunk(Bytes::copy_from_slice(&total.to_be_bytes())).await;
    }
    let _ = writer.close();
}

/// A pool with one warm connection to a server on the other end of a duplex pipe.
async fn warm_pool(rt_settings: &H2Settings) -> HbonePool<&'static str> {
    let (client_io, server_io) = tokio::io::duplex(PIPE_BUFFER);
    let settings = rt_settings.clone();
    let peer: SocketAddr = "10.1.0.1:40000".parse().expect("valid address");
    tokio::spawn(async move {
        let _ = serve_connection(server_io, peer, &settings, std::future::pending(), handle).await;
    });
    let pool = HbonePool::new(PoolConfig { h2: rt_settings.clone(), ..PoolConfig::default() });
    let io: Mutex<Option<DuplexStream>> = Mutex::new(Some(client_io));
    let dial = || {
        let io = io.lock().expect("not poisoned").take();
        std::future::ready(io.ok_or("the bench pipe is dialled only once"))
    };
    let (tunnel, _) =
        pool.connect(&"bench", dial, || Ok(connect_request("10.2.0.1:8080"))).await.expect("first stream");
    exchange(tunnel, Bytes::from_static(b"warm-up")).await;
    pool
}

/// Sends `payload`, half-closes, and reads the answer to its end.
async fn exchange(tunnel: Tunnel, payload: Bytes) -> u64 {
    let (mut reader, mut writer) = tunnel.split();
    writer.write_chunk(payload).await.expect("payload sent");
    writer.close().expect("half-close sent");
    let mut got = 0u64;
    while let Some(chunk) = reader.read_chunk().await.expect("answer read") {
        got += chunk.len() as u64;
    }
    got
}

fn no_dial() -> std::future::Ready<Result<DuplexStream, &'static str>> {
    std::future::ready(Err("the warm connection must carry every stream"))
}

/// Time to push `iters` chunks of `size` bytes through one stream and get the server's count.
async fn bulk(pool: &HbonePool<&'static str>, size: usize, iters: u64) -> Duration {
    let authority = format!("10.2.0.1:{SINK_PORT}");
    let (tunnel, _) = pool.connect(&"bench", no_dial, || Ok(connect_request(&authority))).await.expect("bulk stream");
    let chunk = Bytes::from(vec![0x5a; size]);
    let (mut reader, mut writer) = tunnel.split();
    let started = Instant::now();
    for _ in 0..iters {
        writer.write_chunk(chunk.clone()).await.expect("chunk sent");
    }
    writer.close().expect("half-close sent");
    let mut answer = Vec::new();
    while let Some(part) = reader.read_chunk().await.expect("count read") {
        answer.extend_from_slice(&part);
    }
    let elapsed = started.elapsed();
    let count = u64::from_be_bytes(answer.as_slice().try_into().expect("8-byte count"));
    assert_eq!(count, iters * size as u64, "server received every byte");
    elapsed
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let settings = H2Settings::default();
    let pool = rt.block_on(warm_pool(&settings));

    let mut group = c.benchmark_group("hbone-bulk");
    for (name, size) in [("16KiB", 16 * 1024), ("256KiB", 256 * 1024)] {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| b.iter_custom(|iters| rt.block_on(bulk(&pool, size, iters))));
    }
    group.finish();

    let mut group = c.benchmark_group("hbone-streams");
    group.throughput(Throughput::Elements(1));
    let payload = Bytes::from(vec![0x42; 1024]);
    group.bench_function("connect-1KiB-echo-close", |b| {
        b.iter(|| stream_round_trip(&rt, &pool, payload.clone()));
    });
    group.finish();
    assert_eq!(pool.stats().connections_opened, 1, "every stream rode the one warm connection");
}

fn stream_round_trip(rt: &Runtime, pool: &HbonePool<&'static str>, payload: Bytes) {
    rt.block_on(async {
        let (tunnel, _) =
            pool.connect(&"bench", no_dial, || Ok(connect_request("10.2.0.1:8080"))).await.expect("stream opens");
        let echoed = exchange(tunnel, payload).await;
        black_box(echoed);
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
