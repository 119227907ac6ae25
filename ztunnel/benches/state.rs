//! Per-connection state lookups in a mesh of 50,000 workloads and 3,333 services (15 or 16
//! pods each), loaded through the ADS client's store from a [`SyntheticMesh`]:
//!
//! - `workload-by-ip`: the destination (or source) workload of a connection by its IP;
//! - `service-by-vip`: the service behind a VIP;
//! - `service-by-vip+pick-endpoint`: that, then a weighted random endpoint for port 80, as
//!   outbound routing to a service does;
//! - `services-of-workload`: the services a workload is an endpoint of, as inbound does.
//!
//! Each iteration looks up the next of 1,024 keys spread over the mesh, so the numbers are
//! not those of one hot cache line.
//!
//! Run: `cargo bench -p ztunnel --bench state`.

use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use ztunnel::state::SharedState;
use ztunnel::xds::ADDRESS_TYPE;
use ztunnel::xds::testing::{DecodedResponse, ResponseReplay, SyntheticMesh, TRUST_DOMAIN, encode_response};

const WORKLOADS: usize = 50_000;
const KEYS: usize = 1024;

fn loaded(mesh: &SyntheticMesh) -> SharedState {
    let state = SharedState::new("");
    let mut replay = ResponseReplay::new(state.clone(), TRUST_DOMAIN);
    let wire = encode_response(ADDRESS_TYPE, &mesh.resources(), &[], "1");
    let done = replay.apply(DecodedResponse::decode(&wire).expect("decodes")).expect("subscribed type");
    assert!(done.rejected.is_empty(), "mesh rejected: {:?}", done.rejected);
    state
}

fn bench(c: &mut Criterion) {
    let mesh = SyntheticMesh::new(WORKLOADS);
    let state = loaded(&mesh);
    let st = state.read();
    let workload_ips: Vec<IpAddr> = (0..KEYS).map(|k| mesh.workload_ip(k * WORKLOADS / KEYS, 0)).collect();
    let vips: Vec<IpAddr> = (0..KEYS).map(|k| mesh.service_vip(k * mesh.services / KEYS)).collect();
    let uids: Vec<_> =
        workload_ips.iter().map(|ip| st.workload_by_ip(*ip).expect("loaded workload").uid.clone()).collect();
    for vip in &vips {
        let svc = st.service_by_vip(*vip).expect("loaded service");
        let endpoints = st.endpoints_for(&svc, 80).len();
        assert!(endpoints >= 15, "{vip}: every pod of the service is an endpoint, found {endpoints}");
    }

    let mut group = c.benchmark_group("state-50000");
    group.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    let mut key = move || {
        next = (next + 1) % KEYS;
        next
    };
    group.bench_function("workload-by-ip", |b| b.iter(|| st.workload_by_ip(workload_ips[key()])));
    group.bench_function("service-by-vip", |b| b.iter(|| st.service_by_vip(vips[key()])));
    let mut rng = StdRng::seed_from_u64(7);
    group.bench_function("service-by-vip+pick-endpoint", |b| {
        b.iter(|| {
            let svc = st.service_by_vip(vips[key()])?;
            st.pick_endpoint(&svc, 80, &mut rng)
        })
    });
    group.bench_function("services-of-workload", |b| b.iter(|| st.services_of(&uids[key()]).count()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
