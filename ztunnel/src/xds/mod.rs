//! istiod as config and certificate source: the Delta ADS client ([`XdsClient`]) that keeps
//! `state` in step with istiod's `istio.workload.Address` and `istio.security.Authorization`
//! resources, and the client of istiod's certificate service ([`IstioCa`]).
//!
//! The CA client lives here, not in `identity`, because it shares the generated protobuf code
//! and the TLS/token plumbing (`grpc`) with the ADS client; it plugs into the certificate
//! manager through `identity`'s [`CertificateSource`](crate::identity::CertificateSource)
//! trait. Generated types (`proto`) never leave this module: `convert` turns them into `state`
//! types with `TryFrom`. The fake istiod for tests is in `testing` (feature `testing`).

mod ca_client;
mod client;
pub mod convert;
mod grpc;
mod proto;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::Serialize;

pub use ca_client::IstioCa;
pub use client::{XdsClient, XdsClientConfig};
pub use convert::ResourceError;
pub use store::{ADDRESS_TYPE, AUTHORIZATION_TYPE, TYPES};

/// Why talking to istiod failed. Each names the address or file involved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum XdsError {
    #[error("invalid istiod address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot use root certificate {path}: {reason}")]
    RootCert { path: PathBuf, reason: String },
    #[error("cannot use service-account token {path}: {reason}")]
    Token { path: PathBuf, reason: String },
    #[error("cannot connect to istiod {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("xds stream to istiod {address} failed: {reason}")]
    Stream { address: String, reason: String },
}

/// The ADS client's counters, shown in `/config_dump` under `xds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct XdsStatus {
    pub connected: bool,
    /// Streams established so far.
    pub streams: u64,
    pub acks: u64,
    pub nacks: u64,
    /// The error detail of the latest NACK.
    pub last_nack: Option<String>,
    /// Why the latest stream ended.
    pub last_error: Option<String>,
}
