//! Per-connection telemetry cost: what the proxy does for every connection it carries,
//! from open (labels, counters resolved, `istio_tcp_connections_opened_total`) through the
//! byte counts to close (`..._closed_total`, access-log record), via the proxy's own
//! `ConnectionRecord`.
//!
//! - `repeated-pair`: every connection goes from the same source workload to the same
//!   destination workload and service (the common case: a client calling its backend);
//! - `distinct-pairs/10000`: connections cycle through 10,000 (source, destination) pairs
//!   (100 sources x 100 destinations), so label lookups hit a large table;
//! - `repeated-pair/access-log-on`: as `repeated-pair` with the access log enabled and
//!   written to a sink, to show what formatting the log line costs.
//!
//! Run: `cargo bench -p ztunnel --bench metrics`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ztunnel::metrics::Metrics;
use ztunnel::proxy::ConnectionMetricsCache;
use ztunnel::proxy::connection::{ConnectionRecord, Opening, Peer};
use ztunnel::state::{LocalConfig, Service, Workload, parse_local_config};
use ztunnel::telemetry::Direction;
use ztunnel::types::{ClientAddr, OrigDst};

const SOURCES: usize = 100;
const DESTINATIONS: usize = 100;

/// `SOURCES` client workloads `client-N` and `DESTINATIONS` server workloads `server-N`, each
/// server behind its own service `server-N.shop.svc.cluster.local`.
fn mesh() -> LocalConfig {
    let mut yaml = String::from("workloads:\n");
    for (role, count, base) in [("client", SOURCES, 1), ("server", DESTINATIONS, 2)] {
        for i in 0..count {
            let _ = write!(
                yaml,
                "- uid: cluster1//v1/Pod/shop/{role}-{i}\n  name: {role}-{i}-7d9f\n  namespace: shop\n  \
                 serviceAccount: {role}-{i}\n  workloadName: {role}-{i}\n  canonicalName: {role}-{i}\n  \
                 canonicalRevision: v1\n  clusterId: cluster1\n  node: node-a\n  protocol: HBONE\n  \
                 workloadIps: [\"10.{base}.{}.{}\"]\n",
                i / 250,
                i % 250 + 1
            );
        }
    }
    yaml.push_str("services:\n");
    for i in 0..DESTINATIONS {
        let _ = write!(
            yaml,
            "- name: server-{i}\n  namespace: shop\n  hostname: server-{i}.shop.svc.cluster.local\n  \
             vips: [\"/10.96.{}.{}\"]\n  ports: {{80: 8080}}\n",
            i / 250,
            i % 250 + 1
        );
    }
    parse_local_config(yaml.as_bytes(), "bench.yaml", "cluster.local").expect("benchmark mesh parses")
}

struct Pair {
    source: Arc<Workload>,
    destination: Arc<Workload>,
    service: Arc<Service>,
}

/// One connection as the outbound proxy records it: open, 1 KiB each way, close.
fn record_connection(metrics: &ConnectionMetricsCache, pair: &Pair) {
    let src_addr: SocketAddr = SocketAddr::new(pair.source.workload_ips[0], 40000);
    let dst_addr: SocketAddr = SocketAddr::new(pair.destination.workload_ips[0], 8080);
    let record = ConnectionRecord::open(
        metrics,
        Opening {
            direction: Direction::Outbound,
            src_addr: ClientAddr(src_addr),
            dst_addr: OrigDst(dst_addr),
            source: Peer { identity: Some(pair.source.identity()), workload: Some(pair.source.clone()) },
            destination: Peer { identity: Some(pair.destination.identity()), workload: Some(pair.destination.clone()) },
            service: Some(&pair.service),
            mtls: true,
        },
    );
    record.transferred.sent.fetch_add(1024, Ordering::Relaxed);
    record.transferred.received.fetch_add(1024, Ordering::Relaxed);
    record.close(&Ok(()));
}

fn bench(c: &mut Criterion) {
    let cfg = mesh();
    let workloads: Vec<Arc<Workload>> = cfg.workloads().iter().cloned().map(Arc::new).collect();
    let services: Vec<Arc<Service>> = cfg.services().iter().cloned().map(Arc::new).collect();
    let (clients, servers) = workloads.split_at(SOURCES);
    let pairs: Vec<Pair> = (0..SOURCES * DESTINATIONS)
        .map(|n| Pair {
            source: clients[n % SOURCES].clone(),
            destination: servers[n / SOURCES].clone(),
            service: services[n / SOURCES].clone(),
        })
        .collect();

    let mut group = c.benchmark_group("connection-telemetry");
    group.throughput(Throughput::Elements(1));
    let metrics = ConnectionMetricsCache::new(Arc::new(Metrics::new()), "cluster1");
    group.bench_function("repeated-pair", |b| b.iter(|| record_connection(black_box(&metrics), &pairs[0])));

    let metrics = ConnectionMetricsCache::new(Arc::new(Metrics::new()), "cluster1");
    let mut next = 0;
    group.bench_function(format!("distinct-pairs/{}", pairs.len()), |b| {
        b.iter(|| {
            next = (next + 1) % pairs.len();
            record_connection(black_box(&metrics), &pairs[next])
        })
    });

    let metrics = ConnectionMetricsCache::new(Arc::new(Metrics::new()), "cluster1");
    let sink = tracing_subscriber::fmt().with_writer(std::io::sink).with_ansi(false).finish();
    tracing::subscriber::with_default(sink, || {
        group.bench_function("repeated-pair/access-log-on", |b| {
            b.iter(|| record_connection(black_box(&metrics), &pairs[0]))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
