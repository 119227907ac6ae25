//! State at scale: how long the ADS client takes to turn istiod's first response for a big
//! mesh into a ready state snapshot, how much memory that state keeps per workload, and how
//! long one changed workload takes to publish.
//!
//! Run: `cargo run --release -p ztunnel --features testing --example state_scale -- --workloads 50000`
//! (`cargo xtask bench` runs the built binary as `state_scale --workloads N [--services M]`).
//!
//! The input is a [`SyntheticMesh`]: N pods and N/15 services, encoded as the
//! `DeltaDiscoveryResponse` bytes istiod sends, then decoded as the client decodes them. Only
//! what comes after decoding is timed, through the client's own store ([`ResponseReplay`]).
//!
//! Output: one JSON line on stdout (progress goes to stderr):
//! - `load_ms`: median over `--load-runs` fresh loads of applying the first response (every
//!   service and workload) until its snapshot is published (wall time);
//! - `load_cpu_ms`: the same loads' median CPU time of this (single) thread, which on a busy
//!   machine is the fairer number: wall time there includes waiting for a core;
//! - `heap_bytes_per_workload`: heap bytes still allocated once the state is loaded and the
//!   input is dropped, minus those allocated before, divided by N. It counts the sizes asked
//!   of the allocator (this example's counting `#[global_allocator]`), so the allocator's own
//!   per-block overhead and freed-but-kept pages are not in it; `heap_blocks_per_workload` is
//!   the number of live blocks, to judge that overhead by;
//! - `rss_kib_before` / `rss_kib_after`: the process's resident set (VmRSS) just before the
//!   first load, with the decoded input in memory, and just after it, when the store has
//!   consumed and freed the input; pages the allocator keeps after freeing stay counted, so
//!   the difference is an upper bound on what the state adds;
//! - `update_us_median` / `update_us_max`: over `--updates` responses that each carry one
//!   workload with a new IP, the time from applying the decoded response to its snapshot
//!   being published.

#![allow(unsafe_code)] // the counting allocator and the thread CPU clock below; nothing else

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use ztunnel::state::SharedState;
use ztunnel::xds::ADDRESS_TYPE;
use ztunnel::xds::testing::{DecodedResponse, ResponseReplay, SyntheticMesh, TRUST_DOMAIN, encode_response};

/// The system allocator, counting live bytes and blocks.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_BLOCKS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (usize, usize) {
    (LIVE_BYTES.load(Ordering::Relaxed), LIVE_BLOCKS.load(Ordering::Relaxed))
}

#[derive(Parser, Debug)]
#[command(about = "Load, memory and update cost of the mesh state for N workloads")]
struct Args {
    /// Workloads (pods) in the mesh.
    #[arg(long)]
    workloads: usize,
    /// Services (default: one per 15 workloads).
    #[arg(long)]
    services: Option<usize>,
    /// Fresh loads to time; the median is reported.
    #[arg(long, default_value_t = 3)]
    load_runs: usize,
    /// One-workload updates to time after loading.
    #[arg(long, default_value_t = 101)]
    updates: usize,
}

/// The resident set size of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// CPU time this thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn decoded(wire: &[u8]) -> DecodedResponse {
    DecodedResponse::decode(wire).expect("the example's own encoding decodes")
}

/// Applies `response` and checks that every resource was accepted.
fn apply(replay: &mut ResponseReplay, response: DecodedResponse) {
    let done = replay.apply(response).expect("Address is a subscribed type");
    assert!(done.rejected.is_empty(), "the synthetic mesh must be accepted: {:?}", done.rejected);
}

fn main() {
    let args = Args::parse();
    let mut mesh = SyntheticMesh::new(args.workloads);
    if let Some(services) = args.services {
        mesh.services = services.max(1);
    }
    let n = mesh.workloads.max(1);
    eprintln!("state_scale: {} workloads, {} services", mesh.workloads, mesh.services);

    // The first load is measured for memory too, in a process that has not loaded before
    // (later loads reuse freed pages, which would hide their RSS); it is the one kept.
    let heap_before = live();
    let (state, mut replay, first) = load(&mesh);
    let heap_after = live();
    let mut load_times = vec![first.elapsed];
    let mut load_cpu_times = vec![first.cpu];
    for _ in 1..args.load_runs.max(1) {
        let (_, _, again) = load(&mesh);
        load_times.push(again.elapsed);
        load_cpu_times.push(again.cpu);
    }
    let snapshot = state.read();
    assert_eq!(snapshot.workloads().count(), mesh.workloads, "every workload must be in the state");
    drop(snapshot);

    let mut update_times = Vec::with_capacity(args.updates);
    for k in 1..=args.updates {
        let i = (k * 7919) % n;
        let wire = encode_response(ADDRESS_TYPE, &[mesh.workload(i, k)], &[], &format!("u{k}"));
        let response = decoded(&wire);
        let start = Instant::now();
        apply(&mut replay, response);
        update_times.push(start.elapsed());
        let moved = state.read().workload_by_ip(mesh.workload_ip(i, k)).is_some();
        assert!(moved, "update {k} must be visible in the published snapshot");
    }

    let micros = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
    let per_workload = |before: usize, after: usize| after.saturating_sub(before) as f64 / n as f64;
    let report = Report {
        workloads: mesh.workloads,
        services: mesh.services,
        load_ms: (median(load_times).as_secs_f64() * 1e4).round() / 10.0,
        load_cpu_ms: (median(load_cpu_times).as_secs_f64() * 1e4).round() / 10.0,
        heap_bytes_per_workload: per_workload(heap_before.0, heap_after.0).round(),
        heap_blocks_per_workload: (per_workload(heap_before.1, heap_after.1) * 10.0).round() / 10.0,
        rss_kib_before: first.rss_kib_before,
        rss_kib_after: first.rss_kib_after,
        update_us_median: micros(median(update_times.clone())),
        update_us_max: micros(update_times.iter().max().copied().unwrap_or_default()),
    };
    println!("{}", serde_json::to_string(&report).expect("plain numbers serialize"));
}

/// The JSON line, fields in this order.
#[derive(serde::Serialize)]
struct Report {
    workloads: usize,
    services: usize,
    load_ms: f64,
    load_cpu_ms: f64,
    heap_bytes_per_workload: f64,
    heap_blocks_per_workload: f64,
    rss_kib_before: u64,
    rss_kib_after: u64,
    update_us_median: f64,
    update_us_max: f64,
}

/// What one load measured.
struct Load {
    elapsed: Duration,
    cpu: Duration,
    rss_kib_before: u64,
    rss_kib_after: u64,
}

/// Encodes and decodes the whole mesh as one response (untimed), then times applying it to a
/// fresh state. The input is dropped before returning.
fn load(mesh: &SyntheticMesh) -> (SharedState, ResponseReplay, Load) {
    let wire = encode_response(ADDRESS_TYPE, &mesh.resources(), &[], "1");
    let response = decoded(&wire);
    drop(wire);
    let state = SharedState::new("");
    let mut replay = ResponseReplay::new(state.clone(), TRUST_DOMAIN);
    let rss_kib_before = rss_kib();
    let (start, cpu_start) = (Instant::now(), thread_cpu_time());
    apply(&mut replay, response);
    let (elapsed, cpu) = (start.elapsed(), thread_cpu_time().saturating_sub(cpu_start));
    let rss_kib_after = rss_kib();
    eprintln!("loaded in {elapsed:?} ({cpu:?} on the CPU)");
    (state, replay, Load { elapsed, cpu, rss_kib_before, rss_kib_after })
}
