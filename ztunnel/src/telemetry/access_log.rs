//! The access log: one `tracing` event with target `access` per finished connection.
//!
//! Field names follow Istio's ztunnel access log so existing log queries keep working.
//! Fields whose value is unknown are left out rather than logged empty; `error` and
//! `error.kind` appear only on failure, and a failure is logged at `ERROR` level. Two fields
//! are ours: `policy`, the authorization policy that decided (`namespace/name`, when one
//! did), and `policy.dry_run`, what dry-run policies would have decided when that differs.
//!
//! Values are borrowed as `Display`s and formatted only when the event is enabled, so a
//! connection keeps no log text while it is open and pays nothing when the log is off. They are
//! logged as strings, so the text and JSON outputs read exactly as they did when values were
//! `String`s.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use tracing::Level;

/// Which way the connection went through this proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Arrived for a workload on this node.
    Inbound,
    /// Left a workload on this node.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Whose fault a failed connection was; a small fixed set so logs can be grouped by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureSource {
    /// The client misbehaved or went away.
    Client,
    /// The destination refused, reset or could not be reached.
    Upstream,
    /// Authorization policy denied the connection.
    Policy,
    /// A certificate or peer identity problem.
    Identity,
    /// A fault of this proxy.
    Internal,
}

impl FailureSource {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureSource::Client => "client",
            FailureSource::Upstream => "upstream",
            FailureSource::Policy => "policy",
            FailureSource::Identity => "identity",
            FailureSource::Internal => "internal",
        }
    }
}

/// Why a connection failed.
#[derive(Clone, Copy)]
pub struct ConnectionFailure<'a> {
    pub source: FailureSource,
    /// The error, as displayed (logged as `error`).
    pub message: &'a dyn Display,
}

/// Everything the access log says about one connection.
#[derive(Clone, Copy)]
pub struct ConnectionLog<'a> {
    /// The client's address (`src.addr`).
    pub src_addr: SocketAddr,
    /// Source workload name (`src.workload`).
    pub src_workload: Option<&'a dyn Display>,
    /// Source SPIFFE identity (`src.identity`).
    pub src_identity: Option<&'a dyn Display>,
    /// The address the connection went to (`dst.addr`).
    pub dst_addr: SocketAddr,
    /// Destination service hostname, when addressed through a service (`dst.service`).
    pub dst_service: Option<&'a dyn Display>,
    /// Destination workload name (`dst.workload`).
    pub dst_workload: Option<&'a dyn Display>,
    /// Destination SPIFFE identity (`dst.identity`).
    pub dst_identity: Option<&'a dyn Display>,
    pub direction: Direction,
    /// Bytes sent from the client towards the destination.
    pub bytes_sent: u64,
    /// Bytes received from the destination and returned to the client.
    pub bytes_recv: u64,
    /// Time from accept to close (`duration_ms`).
    pub duration: Duration,
    /// The authorization policy that allowed or denied the connection (`policy`).
    pub policy: Option<&'a dyn Display>,
    /// What dry-run policies would have decided, when they would deny (`policy.dry_run`).
    pub dry_run: Option<&'a dyn Display>,
    /// Set when the connection failed (`error`, `error.kind`).
    pub error: Option<ConnectionFailure<'a>>,
}

/// The access-log target, for filters such as `access=off`.
pub const ACCESS_LOG_TARGET: &str = "access";

macro_rules! access_event {
    ($level:expr, $log:expr, $duration_ms:expr, $($extra:tt)*) => {
        tracing::event!(
            target: ACCESS_LOG_TARGET,
            $level,
            src.addr = %$log.src_addr,
            src.workload = $log.src_workload.map(|v| v.to_string()).as_deref(),
            src.identity = $log.src_identity.map(|v| v.to_string()).as_deref(),
            dst.addr = %$log.dst_addr,
            dst.service = $log.dst_service.map(|v| v.to_string()).as_deref(),
            dst.workload = $log.dst_workload.map(|v| v.to_string()).as_deref(),
            dst.identity = $log.dst_identity.map(|v| v.to_string()).as_deref(),
            direction = $log.direction.as_str(),
            bytes_sent = $log.bytes_sent,
            bytes_recv = $log.bytes_recv,
            duration_ms = $duration_ms,
            policy = $log.policy.map(|v| v.to_string()).as_deref(),
            policy.dry_run = $log.dry_run.map(|v| v.to_string()).as_deref(),
            $($extra)*
        )
    };
}

/// Emits the access-log event for one finished connection.
pub fn log_connection(log: &ConnectionLog<'_>) {
    let duration_ms = u64::try_from(log.duration.as_millis()).unwrap_or(u64::MAX);
    match &log.error {
        None => access_event!(Level::INFO, log, duration_ms, "connection complete"),
        Some(failure) => access_event!(
            Level::ERROR,
            log,
            duration_ms,
            error = %failure.message,
            error.kind = failure.source.as_str(),
            "connection complete"
        ),
    }
}
