//! Tests of the indexed snapshot and the shared handle: lookups, endpoint picking, generations
//! and the config dump.

use std::collections::HashMap;
use std::net::IpAddr;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const YAML: &str = r#"
workloads:
- {uid: a, name: a, namespace: ns, node: n1, workloadIps: ["10.0.0.1"], services: {"ns/web": {80: 8080}}}
- {uid: b, name: b, namespace: ns, node: n1, workloadIps: ["10.0.0.2", "fd00::2"], services: {"ns/web": {80: 9090}}}
- {uid: c, name: c, namespace: ns, node: n2, workloadIps: ["10.0.0.3"], capacity: 3, services: {"ns/web": {}}}
- {uid: sick, name: sick, namespace: ns, node: n2, workloadIps: ["10.0.0.4"], status: Unhealthy, services: {"ns/web": {80: 8080}, "ns/tolerant": {80: 8080}}}
- {uid: only81, name: only81, namespace: ns, node: n2, workloadIps: ["10.0.0.5"], services: {"ns/split": {81: 8181}}}
- {uid: remote, name: remote, namespace: ns, network: far, workloadIps: ["10.0.0.1"], services: {"ns/web": {80: 8080}}}
- {uid: gone, name: gone, namespace: ns, services: {"ns/web": {80: 8080}}}
services:
- {name: web, namespace: ns, hostname: web, vips: ["/10.96.0.1", "far/10.96.0.1"], ports: {80: 8080, 81: 8081}}
- {name: split, namespace: ns, hostname: split, vips: ["/10.96.0.2"], ports: {80: 0, 81: 0}}
- name: tolerant
  namespace: ns
  hostname: tolerant
  vips: ["/10.96.0.3"]
  ports: {80: 8080}
  loadBalancer: {healthPolicy: AllowAll}
policies:
- {name: p, namespace: ns, scope: Namespace, action: Deny}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn shared() -> SharedState {
    let state = SharedState::new("");
    let cfg = parse_local_config(YAML.as_bytes(), "test.yaml", "cluster.local").unwrap_or_else(|e| panic!("{e}"));
    apply(&state, cfg);
    state
}

#[test]
fn lookups_by_ip_vip_uid_host_and_node() {
    let st = shared().read();
    assert_eq!(&*st.workload_by_ip(ip("10.0.0.2")).unwrap().uid, "b");
    assert_eq!(&*st.workload_by_ip(ip("fd00::2")).unwrap().uid, "b");
    // 10.0.0.1 exists in two networks; a plain lookup stays in ours.
    assert_eq!(&*st.workload_by_ip(ip("10.0.0.1")).unwrap().uid, "a");
    assert_eq!(&*st.workload_by_address("far", ip("10.0.0.1")).unwrap().uid, "remote");
    assert!(st.workload_by_ip(ip("10.9.9.9")).is_none());
    assert_eq!(&*st.service_by_vip(ip("10.96.0.2")).unwrap().hostname, "split");
    assert_eq!(&*st.service_by_address("far", ip("10.96.0.1")).unwrap().name, "web");
    assert!(st.service_by_vip(ip("10.0.0.1")).is_none());
    assert_eq!(&*st.workload_by_uid(&"c".into()).unwrap().name, "c");
    assert!(st.service_by_host("ns", "web").is_some());
    assert!(st.service_by_host("other", "web").is_none());
    let mut on_n2: Vec<_> = st.workloads_on_node("n2").iter().map(|w| w.uid.to_string()).collect();
    on_n2.sort();
    assert_eq!(on_n2, ["c", "only81", "sick"]);
    assert!(st.workloads_on_node("n9").is_empty());
    // The endpoint index agrees with the services' own endpoint lists.
    for w in st.workloads() {
        let mut indexed: Vec<&str> = st.services_of(&w.uid).map(|s| &*s.hostname).collect();
        let mut scanned: Vec<&str> =
            st.services().filter(|s| s.endpoints.contains_key(&w.uid)).map(|s| &*s.hostname).collect();
        indexed.sort();
        scanned.sort();
        assert_eq!(indexed, scanned, "services of {}", w.uid);
    }
    assert!(st.services().any(|s| !s.endpoints.is_empty()), "the fixture must have endpoints");
    assert!(st.services_of(&"no-such-uid".into()).next().is_none());
    assert_eq!(st.workloads().count(), 7);
    assert_eq!(st.services().count(), 3);
    assert_eq!(st.policies().len(), 1);
}

#[test]
fn endpoints_use_endpoint_then_service_target_port() {
    let st = shared().read();
    let web = st.service_by_host("ns", "web").unwrap();
    let mut eps: Vec<_> = st.endpoints_for(&web, 80).into_iter().map(|(w, port)| (w.uid.to_string(), port)).collect();
    eps.sort();
    // c has no mapping for 80, so the service's 8080 applies; sick is unhealthy; gone has no
    // address; remote is in another network but has an IP, as in Istio.
    assert_eq!(
        eps,
        [("a".to_string(), 8080), ("b".to_string(), 9090), ("c".to_string(), 8080), ("remote".to_string(), 8080)]
    );
    assert!(st.endpoints_for(&web, 443).is_empty(), "undeclared port");

    // With target port 0 on the service, only endpoints mapping the port serve it.
    let split = st.service_by_host("ns", "split").unwrap();
    assert!(st.endpoints_for(&split, 80).is_empty());
    let e81 = st.endpoints_for(&split, 81);
    assert_eq!(e81.len(), 1);
    assert_eq!((&*e81[0].0.uid, e81[0].1), ("only81", 8181));
    let mut rng = StdRng::seed_from_u64(7);
    assert!(st.pick_endpoint(&split, 80, &mut rng).is_none());
}

#[test]
fn pick_reaches_every_healthy_endpoint_by_weight_and_never_unhealthy() {
    let st = shared().read();
    let web = st.service_by_host("ns", "web").unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let mut counts: HashMap<String, u32> = HashMap::new();
    const DRAWS: u32 = 6000;
    for _ in 0..DRAWS {
        let (w, port) = st.pick_endpoint(&web, 80, &mut rng).expect("web has endpoints");
        assert_ne!(&*w.uid, "sick", "unhealthy endpoint picked");
        assert_ne!(&*w.uid, "gone", "unreachable endpoint picked");
        assert_eq!(port, if &*w.uid == "b" { 9090 } else { 8080 });
        *counts.entry(w.uid.to_string()).or_default() += 1;
    }
    // Weights a=1, b=1, c=3, remote=1: c should get about half of the draws.
    for uid in ["a", "b", "c", "remote"] {
        assert!(counts.get(uid).copied().unwrap_or(0) > 0, "{uid} never picked: {counts:?}");
    }
    let c_share = f64::from(counts["c"]) / f64::from(DRAWS);
    assert!((0.45..0.55).contains(&c_share), "c share {c_share}: {counts:?}");
}

#[test]
fn allow_all_health_policy_includes_unhealthy_endpoints() {
    let st = shared().read();
    let tolerant = st.service_by_host("ns", "tolerant").unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let (w, port) = st.pick_endpoint(&tolerant, 80, &mut rng).unwrap();
    assert_eq!((&*w.uid, port), ("sick", 8080));
}

#[test]
fn replace_bumps_generation_and_notifies() {
    let state = SharedState::new("");
    let mut rx = state.subscribe();
    assert_eq!(state.generation(), 0);
    let old = state.read();
    let cfg = parse_local_config(YAML.as_bytes(), "test.yaml", "cluster.local").unwrap();
    assert_eq!(apply(&state, cfg), 1);
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);
    assert_eq!(state.read().generation(), 1);
    // A snapshot taken earlier is unaffected.
    assert_eq!(old.workloads().count(), 0);
    assert!(old.workload_by_ip(ip("10.0.0.1")).is_none());
}

#[test]
fn stale_service_handle_picks_from_current_snapshot() {
    let state = shared();
    let web = state.read().service_by_host("ns", "web").unwrap();
    let only_a = r#"
workloads:
- {uid: a, name: a, namespace: ns, workloadIps: ["10.0.0.1"], services: {"ns/web": {80: 8080}}}
services:
- {name: web, namespace: ns, hostname: web, vips: ["/10.96.0.1"], ports: {80: 8080}}
"#;
    apply(&state, parse_local_config(only_a.as_bytes(), "t.yaml", "td").unwrap());
    let st = state.read();
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..50 {
        assert_eq!(&*st.pick_endpoint(&web, 80, &mut rng).unwrap().0.uid, "a");
    }
}

#[test]
fn config_dump_shows_workloads_services_and_policies() {
    let dump = shared().config_dump();
    assert_eq!(dump["generation"], 1);
    let workloads = dump["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 7);
    assert_eq!(workloads[0]["uid"], "a");
    assert_eq!(workloads[0]["workloadIps"][0], "10.0.0.1");
    assert_eq!(workloads[0]["protocol"], "TCP");
    assert_eq!(workloads[0]["serviceAccount"], "default");
    assert_eq!(workloads[0]["services"][0], "ns/web");
    // Sorted by namespace and hostname (snapshots keep no config order).
    let services: Vec<_> =
        dump["services"].as_array().unwrap().iter().map(|s| s["hostname"].as_str().unwrap()).collect();
    assert_eq!(services, ["split", "tolerant", "web"]);
    let web = &dump["services"][2];
    assert_eq!(web["vips"][1], "far/10.96.0.1");
    assert_eq!(web["ports"]["80"], 8080);
    assert_eq!(web["endpoints"]["b"]["port"]["80"], 9090);
    assert_eq!(web["endpoints"]["sick"]["status"], "Unhealthy");
    assert_eq!(dump["policies"][0]["action"], "Deny");
    assert_eq!(dump["localConfig"]["attempts"], 0);
}

/// Per-workload memory is a target (see the state_scale example); these are the entries
/// every workload or endpoint pays for.
#[test]
fn index_entries_stay_compact() {
    use std::mem::size_of;
    eprintln!(
        "Workload {} Service {} Endpoint {} Candidate {}",
        size_of::<Workload>(),
        size_of::<Service>(),
        size_of::<Endpoint>(),
        size_of::<super::store::Candidate>()
    );
    assert!(size_of::<Endpoint>() <= 72, "Endpoint grew to {} bytes", size_of::<Endpoint>());
    assert!(size_of::<super::store::Candidate>() <= 24, "Candidate grew");
    assert!(size_of::<super::arc_list::ArcList<Workload>>() <= 16, "ArcList grew");
}
