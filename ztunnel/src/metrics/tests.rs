use std::collections::BTreeMap;

use super::*;

/// One sample line of OpenMetrics text: name, labels, value.
#[derive(Debug, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: String,
}

/// Parses the sample lines (comments skipped) of OpenMetrics text, unescaping label values.
pub(crate) fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("label set closes with }");
                    (name.to_string(), parse_labels(body))
                }
            };
            Sample { name, labels, value: value.to_string() }
        })
        .collect()
}

fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} value starts with a quote");
        let mut value = String::new();
        loop {
            match chars.next().expect("label value ends with a quote") {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("dangling escape in label {key}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

fn outbound_labels() -> ConnectionLabels {
    ConnectionLabels {
        reporter: Reporter::Source,
        source_workload: "sleep".into(),
        source_canonical_service: "sleep".into(),
        source_canonical_revision: "v1".into(),
        source_workload_namespace: "default".into(),
        source_principal: "spiffe://cluster.local/ns/default/sa/sleep".into(),
        source_app: "sleep".into(),
        source_version: "v1".into(),
        source_cluster: "Kubernetes".into(),
        destination_service: "echo.default.svc.cluster.local".into(),
        destination_service_namespace: "default".into(),
        destination_service_name: "echo".into(),
        destination_workload: "echo-v1".into(),
        destination_canonical_service: "echo".into(),
        destination_canonical_revision: "v1".into(),
        destination_workload_namespace: "default".into(),
        destination_principal: "spiffe://cluster.local/ns/default/sa/echo".into(),
        destination_app: "echo".into(),
        destination_version: "v1".into(),
        destination_cluster: "Kubernetes".into(),
        request_protocol: RequestProtocol::Tcp,
        response_flags: ResponseFlags::None,
        connection_security_policy: SecurityPolicy::MutualTls,
    }
}

fn expected_label_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn find<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}

const TCP_METRICS: [&str; 4] = [
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
    "istio_tcp_received_bytes_total",
    "istio_tcp_sent_bytes_total",
];

#[test]
fn records_connection_with_istio_names_and_labels() {
    let metrics = Metrics::new();
    let labels = outbound_labels();
    metrics.connection_opened(&labels);
    metrics.connection_opened(&labels);
    metrics.connection_closed(&labels, 1200, 300);
    metrics.add_bytes(&labels, 5, 7);

    let text = metrics.encode();
    assert!(text.ends_with("# EOF\n"), "openmetrics text ends with # EOF:\n{text}");
    for family in [
        "istio_tcp_connections_opened",
        "istio_tcp_connections_closed",
        "istio_tcp_received_bytes",
        "istio_tcp_sent_bytes",
    ] {
        assert!(text.contains(&format!("# TYPE {family} counter\n")), "missing TYPE line for {family}:\n{text}");
    }
    let expected = expected_label_map(&[
        ("reporter", "source"),
        ("source_workload", "sleep"),
        ("source_canonical_service", "sleep"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "default"),
        ("source_principal", "spiffe://cluster.local/ns/default/sa/sleep"),
        ("source_app", "sleep"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_service", "echo.default.svc.cluster.local"),
        ("destination_service_namespace", "default"),
        ("destination_service_name", "echo"),
        ("destination_workload", "echo-v1"),
        ("destination_canonical_service", "echo"),
        ("destination_canonical_revision", "v1"),
        ("destination_workload_namespace", "default"),
        ("destination_principal", "spiffe://cluster.local/ns/default/sa/echo"),
        ("destination_app", "echo"),
        ("destination_version", "v1"),
        ("destination_cluster", "Kubernetes"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
    ]);
    let samples = parse_samples(&text);
    for (name, value) in TCP_METRICS.iter().zip(["2", "1", "307", "1205"]) {
        let found = find(&samples, name);
        assert_eq!(found.len(), 1, "one series of {name} expected:\n{text}");
        assert_eq!(found[0].labels, expected, "label set of {name}");
        assert_eq!(found[0].value, value, "value of {name}");
    }
}

#[test]
fn empty_labels_are_unknown_and_values_are_escaped() {
    let metrics = Metrics::new();
    let labels = ConnectionLabels {
        reporter: Reporter::Destination,
        source_workload: "we\"ird\\name\n".into(),
        response_flags: ResponseFlags::ConnectionFailure,
        ..Default::default()
    };
    metrics.connection_opened(&labels);
    let text = metrics.encode();
    let samples = parse_samples(&text);
    let opened = find(&samples, "istio_tcp_connections_opened_total");
    assert_eq!(opened.len(), 1, "{text}");
    let l = &opened[0].labels;
    assert_eq!(l.len(), 23, "exactly the Istio label set: {l:?}");
    assert_eq!(l["reporter"], "destination");
    assert_eq!(l["source_workload"], "we\"ird\\name\n", "escaping round-trips");
    assert_eq!(l["destination_principal"], "unknown");
    assert_eq!(l["source_cluster"], "unknown");
    assert_eq!(l["request_protocol"], "tcp");
    assert_eq!(l["response_flags"], "CONNECT");
    assert_eq!(l["connection_security_policy"], "unknown");
    assert!(!text.contains("workload=\"\""), "no empty label values expected:\n{text}");
}

#[test]
fn connection_handle_updates_the_same_series() {
    let metrics = Metrics::new();
    let labels = outbound_labels();
    let conn = metrics.connection(&labels);
    conn.opened();
    conn.add_sent(10);
    conn.add_received(4);
    conn.add_sent(1);
    conn.closed();
    metrics.connection_opened(&labels);

    let samples = parse_samples(&metrics.encode());
    let value = |name: &str| {
        let found = find(&samples, name);
        assert_eq!(found.len(), 1, "one series of {name}");
        found[0].value.clone()
    };
    assert_eq!(value("istio_tcp_connections_opened_total"), "2");
    assert_eq!(value("istio_tcp_connections_closed_total"), "1");
    assert_eq!(value("istio_tcp_sent_bytes_total"), "11");
    assert_eq!(value("istio_tcp_received_bytes_total"), "4");
}

#[test]
fn distinct_label_sets_are_distinct_series() {
    let metrics = Metrics::new();
    let mut inbound = outbound_labels();
    inbound.reporter = Reporter::Destination;
    metrics.connection_opened(&outbound_labels());
    metrics.connection_opened(&inbound);
    let samples = parse_samples(&metrics.encode());
    let opened = find(&samples, "istio_tcp_connections_opened_total");
    let mut reporters: Vec<&str> = opened.iter().map(|s| s.labels["reporter"].as_str()).collect();
    reporters.sort();
    assert_eq!(reporters, vec!["destination", "source"]);
    assert!(opened.iter().all(|s| s.value == "1"), "{opened:?}");
}

#[test]
fn build_info_is_exported() {
    let samples = parse_samples(&Metrics::new().encode());
    let build = find(&samples, "istio_build");
    assert_eq!(build.len(), 1, "one istio_build series: {samples:?}");
    assert_eq!(build[0].labels, expected_label_map(&[("component", "ztunnel"), ("tag", env!("CARGO_PKG_VERSION"))]));
    assert_eq!(build[0].value, "1");
}
