//! HBONE: TCP connections carried as HTTP/2 `CONNECT` streams over mutual TLS.
//!
//! This module owns the HTTP/2 side of the tunnel: the client connection and its keepalive
//! driver ([`client`]), the pool that multiplexes streams over shared connections ([`pool`]),
//! the server that accepts `CONNECT` streams ([`server`]), the byte-stream adapters over one
//! stream ([`stream`]) and the rate-limited log of refused inbound connections ([`refusals`]). It takes already-established (TLS) byte streams and knows nothing of
//! workloads, policy or certificates: callers pass closures that dial and decide.

pub mod client;
pub(crate) mod pool;
pub(crate) mod refusals;
pub(crate) mod server;
pub(crate) mod settings;
pub(crate) mod stream;

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
    #[error("tunnel connection to {peer} stopped answering (no ping answer within {timeout:?}); it was closed")]
    PeerUnresponsive { peer: String, timeout: std::time::Duration },
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
    /// True when the stream may be retried on another connection: the peer refused it
    /// without processing it (GOAWAY or REFUSED_STREAM), or its connection was found dead
    /// before it was answered (no byte of the client's was sent on it).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Request { source, .. } => is_refused(source),
            Error::PeerUnresponsive { .. } => true,
            _ => false,
        }
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
    // Any RST_STREAM is the peer's reset of the tunnelled connection (RFC 9113 section 8.5),
    // whatever its code: it must be passed on as a reset, never as an orderly end.
    let kind = if err.is_reset() || matches!(err.reason(), Some(h2::Reason::CANCEL)) {
        std::io::ErrorKind::ConnectionReset
    } else {
        std::io::ErrorKind::BrokenPipe
    };
    std::io::Error::new(kind, err)
}

#[cfg(test)]
mod tests;
