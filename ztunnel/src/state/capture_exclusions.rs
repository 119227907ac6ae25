//! Per-pod capture exclusions from Istio's pod annotations: which outbound ports and networks
//! and which inbound ports of a captured pod bypass ztunnel.
//!
//! One parser, [`CaptureExclusions::from_annotations`], serves every enrollment source: the
//! local config's `capture.annotations` map today, a pod's `metadata.annotations` when the
//! Kubernetes node agent enrolls it. Value formats follow Istio's validation of the same
//! annotations: comma-separated lists, ports 1-65535 (spaces around each allowed), networks
//! written `address/prefix` (IPv4 or IPv6), and a boolean for
//! `ambient.istio.io/bypass-inbound-capture` (Go's `strconv.ParseBool` spellings). Unlike
//! Istio, which skips a malformed value with a log line, a malformed value is an error that
//! names the pod and the annotation: a silently ignored exclusion is a surprise either way.
//! Annotations this module does not know are ignored, as Kubernetes pods carry many.
//! Parsing only; the capture layer turns the result into map entries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::policy::Cidr;

/// Outbound TCP to these destination ports is not captured.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// Outbound TCP to these networks is not captured.
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
/// Inbound TCP to these local ports reaches the application directly.
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// `true`: no inbound TCP is captured (only outbound is), for pods such as ingress gateways
/// that receive traffic from outside the mesh.
pub const BYPASS_INBOUND_CAPTURE: &str = "ambient.istio.io/bypass-inbound-capture";

/// What a captured pod keeps out of capture. The default excludes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureExclusions {
    pub outbound_ports: BTreeSet<u16>,
    #[serde(serialize_with = "serialize_cidrs")]
    pub outbound_ranges: Vec<Cidr>,
    pub inbound_ports: BTreeSet<u16>,
    pub bypass_inbound: bool,
}

fn serialize_cidrs<S: serde::Serializer>(cidrs: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(cidrs.iter().map(|c| format!("{}/{}", c.network(), c.prefix())))
}

/// A malformed exclusion annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {pod}: annotation {annotation}: {reason}")]
pub struct AnnotationError {
    pub pod: String,
    pub annotation: &'static str,
    pub reason: String,
}

impl CaptureExclusions {
    /// Reads the exclusion annotations of the pod named `pod` (used in errors only).
    pub fn from_annotations(pod: &str, annotations: &BTreeMap<String, String>) -> Result<Self, AnnotationError> {
        let err = |annotation: &'static str| {
            move |reason: String| AnnotationError { pod: pod.to_string(), annotation, reason }
        };
        let value = |name: &str| annotations.get(name).map(String::as_str);
        let mut exclusions = CaptureExclusions::default();
        if let Some(v) = value(EXCLUDE_OUTBOUND_PORTS) {
            exclusions.outbound_ports = parse_ports(v).map_err(err(EXCLUDE_OUTBOUND_PORTS))?;
        }
        if let Some(v) = value(EXCLUDE_OUTBOUND_IP_RANGES) {
            exclusions.outbound_ranges = parse_ranges(v).map_err(err(EXCLUDE_OUTBOUND_IP_RANGES))?;
        }
        if let Some(v) = value(EXCLUDE_INBOUND_PORTS) {
            exclusions.inbound_ports = parse_ports(v).map_err(err(EXCLUDE_INBOUND_PORTS))?;
        }
        if let Some(v) = value(BYPASS_INBOUND_CAPTURE) {
            exclusions.bypass_inbound = parse_bool(v).map_err(err(BYPASS_INBOUND_CAPTURE))?;
        }
        Ok(exclusions)
    }

    /// True when nothing is excluded.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `"80, 443"`: comma-separated ports 1-65535; an empty value is an empty list.
fn parse_ports(value: &str) -> Result<BTreeSet<u16>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(BTreeSet::new());
    }
    value
        .split(',')
        .map(|item| {
            let item = item.trim();
            match item.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("{item:?} is not a port (1-65535) in {value:?}")),
                Ok(port) => Ok(port),
            }
        })
        .collect()
}

/// `"10.0.0.0/8,fd00::/8"`: comma-separated networks with explicit prefix lengths.
fn parse_ranges(value: &str) -> Result<Vec<Cidr>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|item| {
            let bad = |why: &str| format!("{item:?} is not an address/prefix network in {value:?}: {why}");
            let (addr, prefix) = item.split_once('/').ok_or_else(|| bad("no prefix length"))?;
            let addr: IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
            let prefix: u32 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
            Cidr::new(addr, prefix).map_err(|e| bad(&e.to_string()))
        })
        .collect()
}

/// Go's `strconv.ParseBool` spellings, which Istio uses for boolean annotations.
fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true or false)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<CaptureExclusions, AnnotationError> {
        let map = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        CaptureExclusions::from_annotations("default/app-1", &map)
    }

    #[test]
    fn parses_istio_exclusion_annotations() {
        let got = parse(&[
            (EXCLUDE_OUTBOUND_PORTS, "5432, 6379"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.96.0.0/12,fd00::/8,169.254.169.254/32"),
            (EXCLUDE_INBOUND_PORTS, "9090"),
            (BYPASS_INBOUND_CAPTURE, "true"),
            ("unrelated.example.com/annotation", "anything"),
        ])
        .unwrap();
        assert_eq!(got.outbound_ports, BTreeSet::from([5432, 6379]));
        let ranges: Vec<String> =
            got.outbound_ranges.iter().map(|c| format!("{}/{}", c.network(), c.prefix())).collect();
        assert_eq!(ranges, ["10.96.0.0/12", "fd00::/8", "169.254.169.254/32"]);
        assert_eq!(got.inbound_ports, BTreeSet::from([9090]));
        assert!(got.bypass_inbound);
        assert!(parse(&[]).unwrap().is_empty(), "no annotations exclude nothing");
        assert!(parse(&[(EXCLUDE_OUTBOUND_PORTS, "")]).unwrap().is_empty(), "an empty list is allowed");
        assert!(!parse(&[(BYPASS_INBOUND_CAPTURE, "False")]).unwrap().bypass_inbound);
    }

    const CAPTURED_WORKLOAD: &str = "workloads:\n- uid: cluster1//v1/Pod/shop/web-1\n  name: web-1\n  namespace: shop\n  \
        workloadIps: [\"10.0.0.1\"]\n  node: node-a\n  capture:\n    netns: /var/run/netns/web\n    \
        cgroup: /sys/fs/cgroup/web\n    annotations:\n";

    #[test]
    fn the_local_config_capture_block_takes_the_annotations() {
        let yaml = format!(
            "{CAPTURED_WORKLOAD}      traffic.sidecar.istio.io/excludeInboundPorts: \"9090\"\n      \
             ambient.istio.io/bypass-inbound-capture: \"false\"\n      example.com/other: x\n"
        );
        let config = crate::state::parse_local_config(yaml.as_bytes(), "/etc/ztunnel/local.yaml", "cluster.local")
            .unwrap_or_else(|e| panic!("a capture block with annotations must parse: {e}"));
        let exclusions = &config.captures()[0].exclusions;
        assert_eq!(exclusions.inbound_ports, BTreeSet::from([9090]));
        assert!(!exclusions.bypass_inbound && exclusions.outbound_ports.is_empty());
    }

    #[test]
    fn a_capture_block_with_a_cgroup_is_accepted_with_a_warning_naming_the_field() {
        let config =
            crate::state::parse_local_config(CAPTURED_WORKLOAD.as_bytes(), "/etc/ztunnel/local.yaml", "cluster.local")
                .unwrap_or_else(|e| panic!("an older capture block with a cgroup must still parse: {e}"));
        assert_eq!(config.captures()[0].netns, std::path::PathBuf::from("/var/run/netns/web"));
        let warned =
            config.warnings().iter().any(|w| w.contains("workloads[0]") && w.contains("capture.cgroup is ignored"));
        assert!(warned, "the ignored cgroup must be warned about, naming the entry and field: {:?}", config.warnings());
        let without = CAPTURED_WORKLOAD.replace("    cgroup: /sys/fs/cgroup/web\n", "");
        let config = crate::state::parse_local_config(without.as_bytes(), "/etc/ztunnel/local.yaml", "cluster.local")
            .unwrap_or_else(|e| panic!("a capture block needs no cgroup: {e}"));
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    }

    #[test]
    fn a_malformed_annotation_rejects_the_local_config_naming_the_entry() {
        let yaml = format!("{CAPTURED_WORKLOAD}      traffic.sidecar.istio.io/excludeOutboundIPRanges: \"10.0.0.0\"\n");
        let err = crate::state::parse_local_config(yaml.as_bytes(), "/etc/ztunnel/local.yaml", "cluster.local")
            .expect_err("a network without a prefix length must be refused")
            .to_string();
        for part in
            ["workloads[0]", "capture.annotations", "pod shop/web-1", EXCLUDE_OUTBOUND_IP_RANGES, "no prefix length"]
        {
            assert!(err.contains(part), "the error must name {part:?}: {err}");
        }
    }

    #[test]
    fn malformed_values_name_the_pod_and_the_annotation() {
        let cases = [
            (EXCLUDE_OUTBOUND_PORTS, "80,http", "\"http\" is not a port"),
            (EXCLUDE_INBOUND_PORTS, "0", "\"0\" is not a port"),
            (EXCLUDE_INBOUND_PORTS, "70000", "\"70000\" is not a port"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.1", "no prefix length"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33", "too long"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8, fd00::/8", "bad address"),
            (BYPASS_INBOUND_CAPTURE, "yes", "not a boolean"),
        ];
        for (annotation, value, expected) in cases {
            let err = parse(&[(annotation, value)]).expect_err(&format!("{annotation}={value:?} must be rejected"));
            assert_eq!((err.pod.as_str(), err.annotation), ("default/app-1", annotation));
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("pod default/app-1: annotation {annotation}: ")) && text.contains(expected),
                "{annotation}={value:?}: unexpected message {text:?}"
            );
        }
    }
}
