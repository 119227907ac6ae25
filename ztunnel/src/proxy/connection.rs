//! One proxied connection's record: Istio metric counters resolved when it opens (shared with
//! every connection of the same label set, see [`super::connection_labels`]), and at close the
//! byte counts, the closed counter (with `response_flags`), for a failure the failure counter
//! (with its bounded reason, [`Error::reason`]), and one access-log line.
//!
//! The record keeps only shared handles (workloads, identities, service, counters) while the
//! connection is open; the access-log text is formatted at close, and only if the log is on.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use super::connection_labels::{ConnectionMetricsCache, SeriesKey};
use super::copy::Transferred;
use super::{Error, FailureSource};
use crate::identity::Identity;
use crate::metrics::{ConnectionMetrics, Reporter, ResponseFlags};
use crate::policy::{Decision, PolicyKey, Reason};
use crate::state::{Service, Workload};
use crate::telemetry::{ConnectionFailure, ConnectionLog, Direction, log_connection};
use crate::types::{ClientAddr, OrigDst};

/// The peer at one end of a connection, as far as it is known.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub workload: Option<Arc<Workload>>,
    pub identity: Option<Identity>,
}

/// Tracks one connection from open to close.
pub struct ConnectionRecord {
    cache: ConnectionMetricsCache,
    counters: Arc<ConnectionMetrics>,
    /// Who talked to whom: the metric labels' inputs, and the access log's.
    key: SeriesKey,
    opened: Opened,
    started: Instant,
    pub transferred: Arc<Transferred>,
}

/// What the access log says besides the peers, kept until close.
struct Opened {
    direction: Direction,
    src_addr: ClientAddr,
    dst_addr: OrigDst,
    policy: Option<PolicyKey>,
    dry_run: Option<Reason>,
}

/// What is known about a connection when it opens.
pub struct Opening<'a> {
    pub direction: Direction,
    /// The client's address.
    pub src_addr: ClientAddr,
    /// The address the client asked for.
    pub dst_addr: OrigDst,
    pub source: Peer,
    pub destination: Peer,
    pub service: Option<&'a Arc<Service>>,
    pub mtls: bool,
}

/// `namespace/name` of a workload or service, formatted only when logged.
struct Namespaced<'a>(&'a str, &'a str);

impl fmt::Display for Namespaced<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

impl<'a> Namespaced<'a> {
    fn workload(w: &'a Workload) -> Namespaced<'a> {
        Namespaced(&w.namespace, &w.name)
    }
}

/// A value for the access log, formatted only if the log line is written.
fn shown<T: fmt::Display>(value: Option<&T>) -> Option<&dyn fmt::Display> {
    value.map(|v| v as &dyn fmt::Display)
}

impl ConnectionRecord {
    /// Counts the connection as opened.
    pub fn open(cache: &ConnectionMetricsCache, o: Opening<'_>) -> ConnectionRecord {
        let reporter = match o.direction {
            Direction::Outbound => Reporter::Source,
            Direction::Inbound => Reporter::Destination,
        };
        let key = SeriesKey::new(reporter, o.source, o.destination, o.service, o.mtls);
        let counters = cache.counters(&key);
        counters.opened();
        ConnectionRecord {
            cache: cache.clone(),
            counters,
            key,
            opened: Opened {
                direction: o.direction,
                src_addr: o.src_addr,
                dst_addr: o.dst_addr,
                policy: None,
                dry_run: None,
            },
            started: Instant::now(),
            transferred: Default::default(),
        }
    }

    /// Notes the authorization decision for the access log: the deciding policy, and what
    /// dry-run policies would have done when they would deny.
    pub fn set_decision(&mut self, decision: &Decision) {
        self.opened.policy = decision.reason.policy().cloned();
        self.opened.dry_run = decision.dry_run_denial().cloned();
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
            Err(e) if e.kind() == FailureSource::Policy => ResponseFlags::Denied,
            Err(_) => ResponseFlags::ConnectionFailure,
        };
        if flags == ResponseFlags::None {
            self.counters.closed();
        } else {
            self.cache.counters(&self.key.with_flags(flags)).closed();
        }
        if let Err(e) = result {
            let reporter = match self.opened.direction {
                Direction::Outbound => Reporter::Source,
                Direction::Inbound => Reporter::Destination,
            };
            self.cache.failed(reporter, e.reason());
        }
        if let Err(Error::Denied(denial)) = result {
            // A late rejection names the policy that closed the connection.
            self.opened.policy = denial.reason.policy().cloned();
        }
        self.opened.log(&self.key, to_upstream, to_client, self.started.elapsed(), result);
    }
}

impl Opened {
    fn log(
        &self,
        peers: &SeriesKey,
        bytes_sent: u64,
        bytes_recv: u64,
        duration: std::time::Duration,
        result: &Result<(), Error>,
    ) {
        let ((src, src_identity), (dst, dst_identity)) = (peers.source(), peers.destination());
        let (src_workload, dst_workload) = (src.map(Namespaced::workload), dst.map(Namespaced::workload));
        let dst_service = peers.service().map(|s| Namespaced(&s.namespace, &s.hostname));
        log_connection(&ConnectionLog {
            src_addr: self.src_addr.addr(),
            src_workload: shown(src_workload.as_ref()),
            src_identity: shown(src_identity),
            dst_addr: self.dst_addr.addr(),
            dst_service: shown(dst_service.as_ref()),
            dst_workload: shown(dst_workload.as_ref()),
            dst_identity: shown(dst_identity),
            direction: self.direction,
            bytes_sent,
            bytes_recv,
            duration,
            policy: shown(self.policy.as_ref()),
            dry_run: shown(self.dry_run.as_ref()),
            error: result.as_ref().err().map(|e| ConnectionFailure { source: e.kind(), message: e }),
        });
    }
}
