//! Proxying: SOCKS5 and HBONE listeners, outbound and inbound connection handling, copying.
//!
//! Each accepted connection is planned first ([`route`], pure over state), then dialled
//! ([`outbound`] / [`inbound`]), then copied ([`copy`]); [`connection`] records it in metrics and
//! the access log. Inbound connections are authorized before the app is dialled
//! ([`authorize`]) and stay tracked while open so policy changes can close them ([`admitted`]);
//! both inbound paths share that tail (authorize, dial the app, copy, record) in `to_app`.
//! Every failure is classified by whose fault it was ([`FailureSource`]) so operators know where
//! to look and metric labels stay bounded.

pub(crate) mod accept;
pub(crate) mod admitted;
#[cfg(test)]
mod admitted_tests;
pub mod authorize;
pub(crate) mod client_address;
pub(crate) mod connect_request;
pub mod connection;
pub(crate) mod connection_labels;
pub(crate) mod copy;
#[cfg(test)]
mod fault_tests;
pub(crate) mod host_destination;
pub(crate) mod inbound;
pub(crate) mod listeners;
pub(crate) mod outbound;
pub(crate) mod pod;
pub(crate) mod route;
pub(crate) mod socket;
pub(crate) mod socks5;
#[cfg(test)]
mod task_size_tests;
mod to_app;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::drain::DrainWatch;
use crate::hbone::{H2Settings, HbonePool};
use crate::identity::{CertManager, Identity};
use crate::metrics::Metrics;
use crate::state::SharedState;
use crate::types::WorkloadUid;

pub use crate::in_pod::HBONE_PORT;
pub use admitted::{Admission, AdmittedConnections};
pub use authorize::{Denial, InboundFacts};
pub use connection_labels::ConnectionMetricsCache;

/// Settings the proxy needs from the process configuration.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Name of this node: workloads whose `node` matches are served here.
    pub node: String,
    /// Cluster this ztunnel runs in (baggage and metrics).
    pub cluster_id: String,
    /// Timeout for dialling upstreams and tunnels.
    pub connect_timeout: Duration,
    /// `SO_MARK` on every socket ztunnel opens, so capture skips them; `None` disables.
    pub socket_mark: Option<u32>,
    pub h2: H2Settings,
}

/// Key of pooled HBONE connections: traffic from one source workload, as one identity, to one
/// identity at one address shares connections. The source workload is part of the key because
/// a tunnel is dialled from inside the source pod's network namespace, so its peer address
/// (what the destination attributes and authorizes by) is that pod's: a connection dialled
/// for pod A must never carry pod B's traffic, even when both run as the same service account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Uid of the source workload.
    pub source_workload: WorkloadUid,
    pub source: Identity,
    pub destination: Identity,
    pub gateway: SocketAddr,
}

/// Everything the proxy components share.
#[derive(Clone)]
pub struct ProxyInputs {
    pub settings: Arc<ProxySettings>,
    pub state: SharedState,
    pub certs: Arc<CertManager>,
    pub metrics: Arc<Metrics>,
    /// Counters of connections, resolved once per label set (built on `metrics`).
    pub connection_metrics: ConnectionMetricsCache,
    pub pool: HbonePool<PoolKey>,
    /// Held by every live connection: the drain waits for these to drop.
    pub drain: DrainWatch,
    /// Fires when the drain deadline passed: live connections are then closed.
    pub force_close: ForceClose,
    /// Admitted inbound connections, re-authorized when policies change.
    pub admitted: AdmittedConnections,
}

/// Signal that the drain deadline has passed and connections must close now.
#[derive(Clone, Debug)]
pub struct ForceClose(tokio::sync::watch::Receiver<bool>);

/// Sending side of [`ForceClose`].
#[derive(Debug)]
pub struct ForceCloseTrigger(tokio::sync::watch::Sender<bool>);

impl ForceClose {
    pub fn new() -> (ForceCloseTrigger, ForceClose) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (ForceCloseTrigger(tx), ForceClose(rx))
    }

    /// Resolves once connections must close.
    pub async fn fired(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// Runs `copy` unless the deadline passes first.
    pub async fn or_close<T>(&self, copy: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::select! {
            result = copy => result,
            _ = self.fired() => Err(Error::DrainDeadline),
        }
    }
}

impl ForceCloseTrigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

/// Whose fault a failed connection was (shared with the access log).
pub use crate::telemetry::FailureSource;

/// A failed proxied connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no workload on node {node} has source address {ip}")]
    UnknownSource { ip: IpAddr, node: String },
    #[error("socks5 handshake: {0}")]
    Socks5(String),
    #[error(transparent)]
    Route(#[from] route::RouteError),
    #[error("certificate for {identity}: {reason}")]
    Certificate { identity: Identity, reason: String },
    #[error("tls handshake with {peer}: {reason}")]
    TlsIdentity { peer: SocketAddr, reason: String },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("tunnel to {gateway}: {source}")]
    Hbone {
        gateway: SocketAddr,
        #[source]
        source: crate::hbone::Error,
    },
    #[error("hbone request for {authority} is not for a workload on this node")]
    UnknownDestination { authority: SocketAddr },
    #[error("copying: {0}")]
    Copy(#[from] copy::CopyError),
    #[error("{0}")]
    Denied(Denial),
    #[error("closed: the drain deadline passed")]
    DrainDeadline,
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A short, fixed name of the cause (the `reason` label of
    /// `istio_tcp_connection_failures_total`): a reset by either side is told apart from other
    /// I/O failures, so a cut transfer never hides among clean closes.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::UnknownSource { .. } | Error::Socks5(_) | Error::UnknownDestination { .. } => "bad_request",
            Error::Route(_) => "no_route",
            Error::Certificate { .. } | Error::TlsIdentity { .. } => "tls",
            Error::Connect { .. } => "connect_failed",
            Error::ConnectTimeout { .. } => "connect_timeout",
            Error::Hbone { source, .. } if source.status().is_some() => "tunnel_refused",
            Error::Hbone { .. } => "tunnel_failed",
            Error::Copy(e) => match (e.side, e.is_reset()) {
                (copy::Side::Client, true) => "client_reset",
                (copy::Side::Client, false) => "client_error",
                (copy::Side::Upstream, true) => "upstream_reset",
                (copy::Side::Upstream, false) => "upstream_error",
            },
            Error::Denied(d) if d.late => "late_rejection",
            Error::Denied(_) => "denied",
            Error::DrainDeadline => "drain_deadline",
            Error::Internal(_) => "internal",
        }
    }

    /// Whose fault this failure is.
    pub fn kind(&self) -> FailureSource {
        match self {
            Error::UnknownSource { .. } | Error::Socks5(_) | Error::UnknownDestination { .. } => FailureSource::Client,
            Error::Route(route::RouteError::UnknownServicePort { .. }) => FailureSource::Client,
            Error::Route(_) => FailureSource::Upstream,
            Error::Certificate { .. } | Error::TlsIdentity { .. } => FailureSource::Identity,
            Error::Denied(_) => FailureSource::Policy,
            Error::Connect { .. } | Error::ConnectTimeout { .. } => FailureSource::Upstream,
            Error::Hbone { source, .. } => match source.status() {
                Some(http::StatusCode::UNAUTHORIZED) | Some(http::StatusCode::FORBIDDEN) => FailureSource::Policy,
                Some(http::StatusCode::BAD_REQUEST) => FailureSource::Internal,
                _ => FailureSource::Upstream,
            },
            Error::Copy(e) => match e.side {
                copy::Side::Client => FailureSource::Client,
                copy::Side::Upstream => FailureSource::Upstream,
            },
            Error::Internal(_) | Error::DrainDeadline => FailureSource::Internal,
        }
    }
}
