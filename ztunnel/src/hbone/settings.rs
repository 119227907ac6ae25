//! HTTP/2 tuning shared by the HBONE client and server.
//!
//! Windows and frame sizes decide bulk throughput over one tunnel: the stream window must
//! cover the bandwidth-delay product of one stream, and the connection window sits above it so
//! that one busy stream cannot starve the others on a shared connection.

use std::time::Duration;

/// HTTP/2 settings for one side of HBONE connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Settings {
    /// Initial flow-control window of each stream (bytes).
    pub stream_window: u32,
    /// Flow-control window of the whole connection (bytes); larger than `stream_window`.
    pub connection_window: u32,
    /// Largest DATA frame we accept (bytes, 16 KiB..16 MiB).
    pub max_frame_size: u32,
    /// Most bytes buffered per stream before writes wait for the socket.
    pub max_send_buffer: usize,
    /// Streams a peer may open on one connection we serve.
    pub max_concurrent_streams: u32,
    /// How often an HTTP/2 PING checks that the peer is alive.
    pub keepalive_interval: Duration,
    /// How long a PING may stay unanswered before the connection is declared dead.
    pub keepalive_timeout: Duration,
    /// A `CONNECT` not answered after this long makes the client PING the peer at once.
    pub probe_after: Duration,
    /// How long that probing PING may stay unanswered before the connection is declared dead
    /// (and the `CONNECT` retried on a fresh connection).
    pub probe_timeout: Duration,
    /// Largest decoded header list a peer may send in one request or response (bytes). HPACK
    /// lets a few bytes on the wire name kilobytes of indexed headers, so this bounds what
    /// one stream can make us hold, whatever its size on the wire.
    pub max_header_list_size: u32,
    /// Bound on the HTTP/2 handshake (the peer's connection preface and SETTINGS) once the
    /// transport is up: a peer that completes mTLS and then stays silent is dropped.
    pub handshake_timeout: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 256 * 1024,
            max_send_buffer: 1024 * 1024,
            max_concurrent_streams: 1000,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            // A live peer answers a PING within a round trip whatever its streams wait for; a
            // dead pooled connection then costs a new stream about 4 s, not the whole connect
            // timeout.
            probe_after: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(3),
            // As Istio's ztunnel serves HBONE.
            max_header_list_size: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}
