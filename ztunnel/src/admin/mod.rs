//! The local HTTP endpoints: admin (127.0.0.1:15000), Prometheus metrics (15020) and
//! readiness (15021).
//!
//! Each server takes an already-bound `TcpListener` (so tests bind port 0), serves HTTP/1
//! until its drain watch fires, then stops accepting and lets requests in flight finish.
//! The servers only present what lower layers own (metrics, readiness, log filter, the
//! config dump closure); they must not hold proxy or state logic of their own. Reading is
//! open to whoever reaches a port; changing anything through admin is checked in `caller`.

mod admin_server;
mod caller;
#[cfg(test)]
mod guard_tests;
mod logging;
mod metrics_server;
mod readiness_server;
mod server;
#[cfg(test)]
mod tests;

pub(crate) use admin_server::{AdminInputs, serve_admin};
pub(crate) use metrics_server::serve_metrics;
#[cfg(test)]
pub(crate) use metrics_server::{OPENMETRICS_CONTENT_TYPE, PLAIN_TEXT_CONTENT_TYPE};
pub(crate) use readiness_server::serve_readiness;
