//! HBONE: TCP connections carried as HTTP/2 `CONNECT` streams over mutual TLS.
//!
//! This module owns the HTTP/2 side of the tunnel: the client connection and its keepalive
//! driver ([`client`]), the pool that multiplexes streams over shared connections ([`pool`]),
//! the server that accepts `CONNECT` streams ([`server`]) and the byte-stream adapters over one
//! stream ([`stream`]). It takes already-established (TLS) byte streams and knows nothing of
//! workloads, policy or certificates: callers pass closures that dial and decide.

pub mod client;
pub mod pool;
pub mod server;
pub mod settings;
pub mod stream;

pub use pool::{HbonePool, PoolConfig, PoolStats};
pub use server::{IncomingConnect, serve_connection};
pub use settings::H2Settings;
pub use stream::{Tunnel, TunnelReader, TunnelWriter};

// Header names are constants so building a request does not parse (and allocate) them.
/// Request header carrying W3C baggage about the source (and, on responses, the destination).
pub const BAGGAGE: http::HeaderName = http::HeaderName::from_static("baggage");
/// Request header recording the original client (`for="ip:port"`) and service host.
pub const FORWARDED: http::HeaderName = http::header::FORWARDED;
/// W3C trace context header.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Failures of the HTTP/2 layer of a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("http/2 handshake with {peer} failed: {source}")]
    Handshake {
        peer: String,
        #[source]
        source: h2::Error,
    },
    #[error("http/2 handshake with {peer} timed out after {timeout:?}")]
    HandshakeTimeout { peer: String, timeout: std::time::Duration },
    #[error("tunnel connection to {peer} is closed")]
    ConnectionClosed { peer: String },
    #[error("sending CONNECT {authority}: {source}")]
    Request {
        authority: String,
        #[source]
        source: h2::Error,
    },
    #[error("CONNECT {authority} answered with status {status}")]
    Status { authority: String, status: http::StatusCode },
    #[error("building CONNECT request for {authority}: {reason}")]
    BadRequest { authority: String, reason: String },
}

impl Error {
    /// True when the peer refused the stream without processing it (GOAWAY or
    /// REFUSED_STREAM), so it may be retried on another connection.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Request { source, .. } if is_refused(source))
    }

    /// The HTTP status the peer answered with, when the failure is a non-200 response.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Whether an HTTP/2 error means the peer did not process the stream.
pub(crate) fn is_refused(err: &h2::Error) -> bool {
    err.is_go_away() || err.reason() == Some(h2::Reason::REFUSED_STREAM)
}

/// Converts an HTTP/2 stream error into the `io::Error` that byte-stream users expect.
pub(crate) fn h2_to_io(err: h2::Error) -> std::io::Error {
    if err.is_io() {
        return err.into_io().unwrap_or_else(|| std::io::Error::other("http/2 i/o error"));
    }
    let kind = match err.reason() {
        Some(h2::Reason::CANCEL) | Some(h2::Reason::NO_ERROR) => std::io::ErrorKind::ConnectionReset,
        _ => std::io::ErrorKind::BrokenPipe,
    };
    std::io::Error::new(kind, err)
}

#[cfg(test)]
mod tests;
