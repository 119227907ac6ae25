//! Tests of local config parsing and validation: an Istio-format example, defaults, and one
//! table row per rejected input naming the file, entry and field.

use super::*;

use super::local_cases::cases;

const FILE: &str = "/etc/ztunnel/local.yaml";
const EXAMPLE: &str = include_str!("testdata/istio-local.yaml");

fn parse(yaml: &str) -> Result<LocalConfig, LocalConfigError> {
    parse_local_config(yaml.as_bytes(), FILE, "example.org")
}

/// A service `ns/web.ns.svc` with VIP /10.96.0.1 and port 80 -> 8080, for references.
pub(super) const SVC: &str = "services:
- name: web
  namespace: ns
  hostname: web.ns.svc
  vips: [\"/10.96.0.1\"]
  ports: {80: 8080}
";

pub(super) fn workload(uid: &str, ip: &str) -> String {
    format!("- uid: {uid}\n  name: {uid}\n  namespace: ns\n  workloadIps: [\"{ip}\"]\n")
}

#[test]
fn istio_format_example_parses() {
    let cfg = parse(EXAMPLE).unwrap_or_else(|e| panic!("example must parse: {e}"));
    assert_eq!(cfg.workloads().len(), 2);
    assert_eq!(cfg.services().len(), 2);
    let cart = &cfg.workloads()[0];
    assert_eq!(&*cart.uid, "kind//v1/Pod/shop/cart-0");
    assert_eq!(cart.protocol, Protocol::Hbone);
    assert_eq!(cart.identity().to_string(), "spiffe://example.org/ns/shop/sa/cart");
    assert_eq!(&*cart.locality.zone, "eu-1");
    assert_eq!(&*cart.cluster_id, "kind");
    let legacy = &cfg.workloads()[1];
    assert_eq!(&*legacy.service_account, "default");
    assert_eq!(legacy.status, HealthStatus::Unhealthy);
    assert_eq!(legacy.capacity, 3);
    assert_eq!(&*legacy.authorization_policies[0], "shop/allow-cart");

    let svc = &cfg.services()[0];
    assert_eq!(svc.vips, vec!["/127.10.1.1".parse().unwrap()]);
    let ep = &svc.endpoints[&cart.uid];
    assert_eq!(ep.port.get(&80), Some(&8080));
    assert_eq!(svc.endpoints[&legacy.uid].status, HealthStatus::Unhealthy);
    let store = &cfg.services()[1];
    assert_eq!(&*store.vips[0].network, "remote");
    assert_eq!(store.ports.get(&443), Some(&0));
    assert_eq!(store.waypoint.as_ref().map(|w| w.hbone_mtls_port), Some(15008));
    assert_eq!(store.load_balancer.as_ref().map(|l| l.mode), Some(LoadBalancerMode::Failover));

    assert_eq!(cfg.policies().len(), 2);
    let deny = &cfg.policies()[0];
    assert_eq!(deny.key().as_str(), "shop/deny-9999");
    assert_eq!(deny.rules[0].clauses[0].matches[0].not_destination_ports, vec![9999]);
    let sleep = &cfg.policies()[1];
    assert_eq!(sleep.scope, crate::policy::Scope::WorkloadSelector);
    assert_eq!(
        sleep.rules[0].clauses[0].matches[0].principals,
        vec![crate::policy::StringMatch::Exact("cluster.local/ns/shop/sa/sleep".into())]
    );
    // legacy-0 lists a policy the file does not define: loaded, with a warning.
    assert_eq!(cfg.warnings().len(), 1, "{:?}", cfg.warnings());
    assert!(
        cfg.warnings()[0].contains("authorizationPolicies[0]: no policy \"shop/allow-cart\""),
        "{:?}",
        cfg.warnings()
    );
}

#[test]
fn defaults_follow_istio() {
    let cfg = parse("workloads:\n- uid: u1\n  name: a\n  namespace: ns\n  serviceAccount: \"\"\n").unwrap();
    let w = &cfg.workloads()[0];
    assert_eq!(&*w.service_account, "default");
    assert_eq!(&*w.trust_domain, "example.org");
    assert_eq!(w.protocol, Protocol::Tcp);
    assert_eq!(w.status, HealthStatus::Healthy);
    assert_eq!(w.capacity, 1);
    assert!(w.workload_ips.is_empty());
    let own_td = parse("workloads:\n- {uid: u1, name: a, namespace: ns, trustDomain: corp.example}\n").unwrap();
    assert_eq!(own_td.workloads()[0].identity().to_string(), "spiffe://corp.example/ns/ns/sa/default");
    // Every top-level key is optional.
    let empty = parse("services: []\n").unwrap();
    assert!(empty.workloads().is_empty() && empty.policies().is_empty());
}

#[test]
fn accepted_overlaps() {
    // The same IP in two networks, host-network workloads sharing the node IP, and the same
    // hostname in two namespaces are all fine.
    let yaml = "workloads:
- {uid: a, name: a, namespace: ns, network: n1, workloadIps: [\"10.0.0.1\"]}
- {uid: b, name: b, namespace: ns, network: n2, workloadIps: [\"10.0.0.1\"]}
- {uid: c, name: c, namespace: ns, networkMode: HostNetwork, workloadIps: [\"192.168.0.1\"]}
- {uid: d, name: d, namespace: ns, networkMode: HostNetwork, workloadIps: [\"192.168.0.1\"]}
services:
- {name: s, namespace: a, hostname: s.example, vips: [\"/10.96.0.1\"]}
- {name: s, namespace: b, hostname: s.example, vips: [\"other/10.96.0.1\"]}
";
    let cfg = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cfg.workloads().len(), cfg.services().len()), (4, 2));
}

#[test]
fn rejections_name_file_entry_and_field() {
    for c in cases() {
        let err = match parse(&c.yaml) {
            Ok(_) => panic!("case {:?}: expected an error, config was accepted", c.name),
            Err(e) => e,
        };
        let msg = err.to_string();
        let LocalConfigError::Invalid { file, entry, field, reason, location } = err else {
            panic!("case {:?}: expected an invalid-config error, got {msg}", c.name);
        };
        assert_eq!(file, FILE, "case {:?}: {msg}", c.name);
        assert_eq!(entry.as_deref(), c.entry, "case {:?}: entry in {msg}", c.name);
        assert_eq!(field.as_deref(), c.field, "case {:?}: field in {msg}", c.name);
        assert!(reason.contains(c.reason), "case {:?}: reason should contain {:?}: {msg}", c.name, c.reason);
        assert_eq!(location.is_some(), c.located, "case {:?}: location in {msg}", c.name);
        assert!(msg.starts_with(&format!("local config {FILE}: ")), "{msg}");
        for part in [c.entry, c.field].into_iter().flatten() {
            assert!(msg.contains(part), "case {:?}: message lacks {part:?}: {msg}", c.name);
        }
        if let Some(at) = location {
            assert!(msg.contains(&format!("at line {}", at.line)), "case {:?}: {msg}", c.name);
        }
    }
}

#[test]
fn type_error_location_points_at_the_value() {
    let yaml = format!("workloads:\n{}", workload("u1", "10.0.0.300"));
    let Err(LocalConfigError::Invalid { location, .. }) = parse(&yaml) else {
        panic!("bad IP must be rejected");
    };
    assert_eq!(location.map(|l| l.line), Some(5), "workloadIps is on line 5");
}

#[test]
fn empty_file_is_rejected() {
    for yaml in ["", "# nothing yet\n"] {
        assert!(matches!(parse(yaml), Err(LocalConfigError::Empty { .. })), "{yaml:?} must be rejected as empty");
    }
}

#[test]
fn missing_file_names_the_path() {
    let err = load_local_config(std::path::Path::new("/nonexistent/ztunnel.yaml"), "td").unwrap_err();
    assert!(err.to_string().starts_with("cannot read local config /nonexistent/ztunnel.yaml"), "{err}");
}

/// Collects what a log subscriber writes.
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn removing_a_workload_is_logged_with_its_name_and_addresses() {
    let both = format!("workloads:\n{}{}", workload("uid-a", "10.0.0.1"), workload("uid-b", "10.0.0.2"));
    let only_a = format!("workloads:\n{}", workload("uid-a", "10.0.0.1"));
    let state = SharedState::new("");
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    tracing::subscriber::with_default(subscriber, || {
        apply(&state, parse(&both).unwrap());
        apply(&state, parse(&only_a).unwrap());
    });
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let removed: Vec<&str> = logs.lines().filter(|l| l.contains("removed from the local config")).collect();
    assert_eq!(removed.len(), 1, "one warning for the one removed workload; logs:\n{logs}");
    let line = removed[0];
    assert!(
        line.contains("WARN")
            && line.contains("uid-b")
            && line.contains("ns/uid-b")
            && line.contains("10.0.0.2")
            && line.contains("plaintext"),
        "the warning names the workload, its pod and addresses, and what happens to its traffic: {line}"
    );
}
