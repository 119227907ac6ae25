//! One proxied connection's record: Istio metric labels resolved once when it opens, and at
//! close the byte counts, the closed counter (with `response_flags`) and one access-log line.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;

use super::copy::Transferred;
use super::{Error, ErrorKind};
use crate::identity::Identity;
use crate::metrics::{ConnectionLabels, ConnectionMetrics, Metrics, Reporter, ResponseFlags, SecurityPolicy};
use crate::policy::Decision;
use crate::state::{Service, Workload};
use crate::telemetry::{ConnectionFailure, ConnectionLog, Direction, log_connection};

/// The peer at one end of a connection, as far as it is known.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub workload: Option<Arc<Workload>>,
    pub identity: Option<Identity>,
}

/// Tracks one connection from open to close.
pub struct ConnectionRecord {
    metrics: Arc<Metrics>,
    labels: ConnectionLabels,
    counters: ConnectionMetrics,
    log: ConnectionLog,
    started: Instant,
    pub transferred: Arc<Transferred>,
}

fn or_unknown(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "unknown".to_string(),
    }
}

fn workload_name(w: &Workload) -> &str {
    if w.workload_name.is_empty() { &w.name } else { &w.workload_name }
}

fn app(w: &Workload) -> &str {
    if w.canonical_name.is_empty() { workload_name(w) } else { &w.canonical_name }
}

/// Builds the Istio label set for a connection.
fn labels(
    reporter: Reporter,
    source: &Peer,
    destination: &Peer,
    service: Option<&Service>,
    mtls: bool,
    cluster_id: &str,
) -> ConnectionLabels {
    let src = source.workload.as_deref();
    let dst = destination.workload.as_deref();
    let principal = |p: &Peer| {
        p.identity.as_ref().map(|i| i.to_string()).or_else(|| p.workload.as_ref().map(|w| w.identity().to_string()))
    };
    let cluster = |w: Option<&Workload>| match w {
        Some(w) if !w.cluster_id.is_empty() => w.cluster_id.to_string(),
        Some(_) => cluster_id.to_string(),
        None => "unknown".to_string(),
    };
    let src_namespace =
        src.map(|w| w.namespace.to_string()).or_else(|| source.identity.as_ref().map(|i| i.namespace().to_string()));
    ConnectionLabels {
        reporter,
        source_workload: or_unknown(src.map(workload_name)),
        source_canonical_service: or_unknown(src.map(app)),
        source_canonical_revision: or_unknown(src.map(|w| &*w.canonical_revision)),
        source_workload_namespace: or_unknown(src_namespace.as_deref()),
        source_principal: or_unknown(principal(source).as_deref()),
        source_app: or_unknown(src.map(app)),
        source_version: or_unknown(src.map(|w| &*w.canonical_revision)),
        source_cluster: cluster(src),
        destination_service: or_unknown(service.map(|s| &*s.hostname)),
        destination_service_namespace: or_unknown(service.map(|s| &*s.namespace)),
        destination_service_name: or_unknown(service.map(|s| &*s.name)),
        destination_workload: or_unknown(dst.map(workload_name)),
        destination_canonical_service: or_unknown(dst.map(app)),
        destination_canonical_revision: or_unknown(dst.map(|w| &*w.canonical_revision)),
        destination_workload_namespace: or_unknown(dst.map(|w| &*w.namespace)),
        destination_principal: or_unknown(principal(destination).as_deref()),
        destination_app: or_unknown(dst.map(app)),
        destination_version: or_unknown(dst.map(|w| &*w.canonical_revision)),
        destination_cluster: cluster(dst),
        request_protocol: Default::default(),
        response_flags: ResponseFlags::None,
        connection_security_policy: if mtls { SecurityPolicy::MutualTls } else { SecurityPolicy::Unknown },
    }
}

/// What is known about a connection when it opens.
pub struct Opening<'a> {
    pub direction: Direction,
    pub src_addr: SocketAddr,
    pub dst_addr: SocketAddr,
    pub source: Peer,
    pub destination: Peer,
    pub service: Option<&'a Service>,
    pub mtls: bool,
    pub cluster_id: &'a str,
}

impl ConnectionRecord {
    /// Counts the connection as opened.
    pub fn open(metrics: &Arc<Metrics>, o: Opening<'_>) -> ConnectionRecord {
        let reporter = match o.direction {
            Direction::Outbound => Reporter::Source,
            Direction::Inbound => Reporter::Destination,
        };
        let labels = labels(reporter, &o.source, &o.destination, o.service, o.mtls, o.cluster_id);
        let counters = metrics.connection(&labels);
        counters.opened();
        let identity = |p: &Peer| p.identity.as_ref().map(|i| i.to_string());
        let workload = |p: &Peer| p.workload.as_ref().map(|w| format!("{}/{}", w.namespace, w.name));
        let log = ConnectionLog {
            src_addr: o.src_addr,
            src_workload: workload(&o.source),
            src_identity: identity(&o.source),
            dst_addr: o.dst_addr,
            dst_service: o.service.map(|s| format!("{}/{}", s.namespace, s.hostname)),
            dst_workload: workload(&o.destination),
            dst_identity: identity(&o.destination),
            direction: o.direction,
            bytes_sent: 0,
            bytes_recv: 0,
            duration: Default::default(),
            policy: None,
            dry_run: None,
            error: None,
        };
        ConnectionRecord {
            metrics: metrics.clone(),
            labels,
            counters,
            log,
            started: Instant::now(),
            transferred: Default::default(),
        }
    }

    /// Notes the authorization decision for the access log: the deciding policy, and what
    /// dry-run policies would have done when they would deny.
    pub fn set_decision(&mut self, decision: &Decision) {
        self.log.policy = decision.reason.policy().map(ToString::to_string);
        self.log.dry_run = decision.dry_run_denial().map(ToString::to_string);
    }

    /// Records the end of the connection: bytes, the closed counter and the access-log line.
    /// `bytes_sent` in the log is client -> upstream; `istio_tcp_received_bytes_total` counts
    /// the same bytes (received from the downstream client, in Istio's terms).
    pub fn close(mut self, result: &Result<(), Error>) {
        let (to_upstream, to_client) = self.transferred.totals();
        self.counters.add_received(to_upstream);
        self.counters.add_sent(to_client);
        // Istio's flags: DENY for policy refusals, CONNECT when the upstream or tunnel could
        // not be established; failures after the bytes started flowing carry none.
        let flags = match result {
            Ok(()) | Err(Error::Copy(_)) => ResponseFlags::None,
            Err(e) if e.kind() == ErrorKind::Policy => ResponseFlags::Denied,
            Err(_) => ResponseFlags::ConnectionFailure,
        };
        if flags == ResponseFlags::None {
            self.counters.closed();
        } else {
            self.labels.response_flags = flags;
            self.metrics.connection(&self.labels).closed();
        }
        if let Err(Error::Denied(denial)) = result {
            // A late rejection names the policy that closed the connection.
            self.log.policy = denial.reason.policy().map(ToString::to_string);
        }
        self.log.bytes_sent = to_upstream;
        self.log.bytes_recv = to_client;
        self.log.duration = self.started.elapsed();
        self.log.error = result.as_ref().err().map(|e| ConnectionFailure { source: e.kind(), message: e.to_string() });
        log_connection(&self.log);
    }
}
