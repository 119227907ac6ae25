//! The HBONE `CONNECT` request an outbound connection sends: what the destination (our
//! ztunnel, Istio's, or a waypoint's Envoy) reads to route, attribute and trace the stream.
//!
//! Istio's HBONE requires, for a TCP connection from a local workload:
//! - `:method` `CONNECT` and `:authority` = the target `IP:port` (authority-form: no
//!   `:scheme`, no `:path`);
//! - `baggage`: `k8s.cluster.name`, `k8s.namespace.name`, `k8s.<workload type>.name`, then
//!   `service.name` and `service.version` when the workload has canonical labels;
//! - `forwarded`: `for="<client ip:port>"`, with `;host=<service hostname>` when the client
//!   addressed a service;
//! - `traceparent`: a fresh W3C trace context, `00-<32 hex>-<16 hex>-00`.
//!
//! Building is pure (no IO, the trace ids are given), so every byte of it is unit tested here.

use crate::types::ClientAddr;

use http::{HeaderValue, Method, Request};
use rand::Rng;

use super::Error;
use super::route::Route;
use crate::hbone;
use crate::state::Workload;

/// A W3C trace context for one request: trace id and parent (span) id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceIds {
    pub(crate) trace: u128,
    pub(crate) span: u64,
}

impl TraceIds {
    /// Fresh random ids.
    pub(crate) fn random() -> TraceIds {
        let mut rng = rand::rng();
        TraceIds { trace: rng.random(), span: rng.random() }
    }

    /// The `traceparent` value: version 00, not sampled.
    fn header(self) -> String {
        format!("00-{:032x}-{:016x}-00", self.trace, self.span)
    }
}

/// The `CONNECT` request for `route`, sent on behalf of `source` whose connection came from
/// `client`; `cluster_id` names the cluster when the workload does not.
pub(crate) fn connect_request(
    route: &Route,
    source: &Workload,
    client: ClientAddr,
    cluster_id: &str,
    trace: TraceIds,
) -> Result<Request<()>, Error> {
    let header = |v: String| {
        HeaderValue::from_str(&v)
            .map_err(|_| Error::Internal(format!("header value {v:?} is not valid for an hbone request")))
    };
    Request::builder()
        .method(Method::CONNECT)
        .uri(route.target.to_string())
        .header(hbone::BAGGAGE, header(baggage(source, cluster_id))?)
        .header(hbone::FORWARDED, header(forwarded(route, client))?)
        .header(hbone::TRACEPARENT, header(trace.header())?)
        .body(())
        .map_err(|e| Error::Internal(format!("building CONNECT {}: {e}", route.target)))
}

/// Istio's `baggage` describing the source workload.
fn baggage(source: &Workload, cluster_id: &str) -> String {
    let cluster = if source.cluster_id.is_empty() { cluster_id } else { &source.cluster_id };
    let kind = if source.workload_type.is_empty() { "deployment" } else { &source.workload_type };
    let workload = if source.workload_name.is_empty() { &source.name } else { &source.workload_name };
    let mut baggage =
        format!("k8s.cluster.name={cluster},k8s.namespace.name={},k8s.{kind}.name={workload}", source.namespace);
    if !source.canonical_name.is_empty() {
        baggage.push_str(&format!(",service.name={}", source.canonical_name));
    }
    if !source.canonical_revision.is_empty() {
        baggage.push_str(&format!(",service.version={}", source.canonical_revision));
    }
    baggage
}

/// RFC 7239 `forwarded`: the client, and the service hostname when one was addressed.
fn forwarded(route: &Route, client: ClientAddr) -> String {
    let mut forwarded = format!("for=\"{client}\"");
    if let Some(service) = &route.service {
        forwarded.push_str(&format!(";host={}", service.hostname));
    }
    forwarded
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::proxy::route::plan_outbound;
    use crate::state::{SharedState, apply, parse_local_config};
    use crate::types::OrigDst;

    const CONFIG: &str = r#"
workloads:
- uid: c//v1/Pod/shop/client-7f9c
  name: client-7f9c
  namespace: shop
  serviceAccount: client
  workloadName: client
  workloadType: deployment
  canonicalName: client
  canonicalRevision: v2
  clusterId: east
  workloadIps: ["10.0.0.9"]
  protocol: HBONE
  node: n1
- uid: c//v1/Pod/batch/job-1
  name: job-1
  namespace: batch
  workloadType: job
  workloadIps: ["10.0.0.8", "fd00::8"]
  protocol: HBONE
  node: n1
- uid: c//v1/Pod/shop/web-1
  name: web-1
  namespace: shop
  serviceAccount: web
  workloadIps: ["10.0.1.1", "fd00::1:1"]
  protocol: HBONE
  node: n2
  services: {"shop/web.shop.svc.cluster.local": {80: 8080}}
services:
- name: web
  namespace: shop
  hostname: web.shop.svc.cluster.local
  vips: ["/10.96.0.10"]
  ports: {80: 8080}
"#;

    const TRACE: TraceIds = TraceIds { trace: 0x0af7651916cd43dd8448eb211c80319c, span: 0xb7ad6b7169203331 };

    fn request(src_uid: &str, client: &str, dst: &str) -> Request<()> {
        let state = SharedState::new("");
        apply(&state, parse_local_config(CONFIG.as_bytes(), "connect-request.yaml", "cluster.local").unwrap());
        let snapshot = state.read();
        let source: Arc<Workload> =
            snapshot.workload_by_uid(&src_uid.into()).expect("source workload in the test config");
        let route = plan_outbound(&snapshot, OrigDst(dst.parse().unwrap()), &mut StdRng::seed_from_u64(1)).unwrap();
        connect_request(&route, &source, ClientAddr(client.parse().unwrap()), "Kubernetes", TRACE).unwrap()
    }

    /// Every header, in order, as (name, value) text.
    fn headers(request: &Request<()>) -> Vec<(String, String)> {
        request.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn service_request_carries_every_header_istio_reads() {
        let request = request("c//v1/Pod/shop/client-7f9c", "10.0.0.9:40000", "10.96.0.10:80");
        assert_eq!(request.method(), Method::CONNECT);
        // Authority-form: h2 then sends only `:method` and `:authority`.
        assert_eq!(request.uri().to_string(), "10.0.1.1:8080");
        assert_eq!(request.uri().scheme(), None);
        assert_eq!(request.uri().path_and_query(), None);
        assert_eq!(
            headers(&request),
            pairs(&[
                (
                    "baggage",
                    "k8s.cluster.name=east,k8s.namespace.name=shop,k8s.deployment.name=client,\
                     service.name=client,service.version=v2"
                ),
                ("forwarded", "for=\"10.0.0.9:40000\";host=web.shop.svc.cluster.local"),
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
            ])
        );
    }

    #[test]
    fn workload_request_names_no_host_and_falls_back_for_missing_labels() {
        // Addressed by workload IP (no service): no `host=`. The workload has no workload name,
        // canonical labels or cluster: its pod name, its type, and the proxy's cluster are used.
        let request = request("c//v1/Pod/batch/job-1", "10.0.0.8:1234", "10.0.1.1:9090");
        assert_eq!(request.uri().to_string(), "10.0.1.1:9090");
        assert_eq!(
            headers(&request),
            pairs(&[
                ("baggage", "k8s.cluster.name=Kubernetes,k8s.namespace.name=batch,k8s.job.name=job-1"),
                ("forwarded", "for=\"10.0.0.8:1234\""),
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
            ])
        );
    }

    #[test]
    fn ipv6_targets_and_clients_are_bracketed() {
        let request = request("c//v1/Pod/batch/job-1", "[fd00::8]:1234", "[fd00::1:1]:9090");
        assert_eq!(request.uri().to_string(), "[fd00::1:1]:9090");
        assert_eq!(request.headers()["forwarded"], "for=\"[fd00::8]:1234\"");
    }

    #[test]
    fn trace_ids_are_zero_padded_and_fresh_per_request() {
        assert_eq!(TraceIds { trace: 1, span: 2 }.header(), "00-00000000000000000000000000000001-0000000000000002-00");
        assert_ne!(TraceIds::random(), TraceIds::random(), "two requests must not share a trace id");
    }
}
