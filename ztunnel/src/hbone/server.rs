//! Server side of HBONE: accepts `CONNECT` streams on an established (TLS) connection.
//!
//! Each well-formed `CONNECT` becomes an [`IncomingConnect`] handed to the caller's handler,
//! which decides (policy, upstream dial) and then accepts with 200 or rejects with a status.
//! Malformed requests (not `CONNECT`, authority not `ip:port`) are answered 400 here and
//! logged as refusals ([`super::refusals`]). When the
//! drain signal fires the connection sends GOAWAY and ends once its streams finish.
//!
//! What one peer can make the server hold is bounded: the HTTP/2 handshake must finish within
//! [`H2Settings::handshake_timeout`], a request's decoded headers within
//! [`H2Settings::max_header_list_size`], and open streams within
//! [`H2Settings::max_concurrent_streams`].

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::refusals::{Refusal, log_refusal};
use super::stream::Tunnel;
use super::{Error, H2Settings};

/// One `CONNECT` request waiting for the handler's decision.
pub struct IncomingConnect {
    /// Destination named by `:authority`.
    pub authority: SocketAddr,
    /// Request headers (`baggage`, `forwarded`, `traceparent`, ...).
    pub headers: HeaderMap,
    respond: SendResponse<Bytes>,
    body: RecvStream,
}

impl IncomingConnect {
    /// Answers 200 (with `headers`) and returns the tunnel.
    pub fn accept(mut self, headers: HeaderMap) -> Result<Tunnel, h2::Error> {
        let mut response = Response::new(());
        *response.headers_mut() = headers;
        let send = self.respond.send_response(response, false)?;
        Ok(Tunnel::new(send, self.body, None))
    }

    /// Answers with a non-200 status and ends the stream.
    pub fn reject(mut self, status: StatusCode) {
        let mut response = Response::new(());
        *response.status_mut() = status;
        if let Err(e) = self.respond.send_response(response, true) {
            debug!(authority = %self.authority, error = %e, "could not send hbone rejection");
        }
    }
}

/// Why a request is malformed, for the 400 answer's log line.
pub(crate) fn parse_request<B>(request: &Request<B>) -> Result<SocketAddr, String> {
    if request.method() != Method::CONNECT {
        return Err(format!("method {} is not CONNECT", request.method()));
    }
    let authority = request.uri().authority().ok_or("request has no :authority")?;
    authority
        .as_str()
        .parse::<SocketAddr>()
        .map_err(|_| format!(":authority {:?} is not an ip:port address", authority.as_str()))
}

/// Serves HBONE streams on one connection until the peer closes it or `drain` completes and
/// the remaining streams finish. `handler` runs in its own task per stream.
pub async fn serve_connection<IO, H, Fut>(
    io: IO,
    peer: SocketAddr,
    settings: &H2Settings,
    drain: impl Future<Output = ()>,
    handler: H,
) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: Fn(IncomingConnect) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handshake_err = |source| Error::Handshake { peer: peer.to_string(), source };
    let handshake = h2::server::Builder::new()
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_frame_size(settings.max_frame_size)
        .max_send_buffer_size(settings.max_send_buffer)
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(settings.max_header_list_size)
        .handshake::<_, Bytes>(io);
    tokio::pin!(drain);
    // The peer must send its preface in time; a drain does not wait for one that never comes.
    let mut conn = tokio::select! {
        conn = handshake => conn.map_err(handshake_err)?,
        _ = tokio::time::sleep(settings.handshake_timeout) => {
            return Err(Error::HandshakeTimeout { peer: peer.to_string(), timeout: settings.handshake_timeout });
        }
        _ = &mut drain => return Ok(()),
    };
    let mut ping = conn.ping_pong();
    let mut draining = false;
    let mut next_ping = tokio::time::Instant::now() + settings.keepalive_interval;
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                None => return Ok(()),
                Some(Err(e)) => {
                    if e.is_go_away() || e.is_io() {
                        debug!(%peer, error = %e, "hbone connection ended");
                        return Ok(());
                    }
                    return Err(handshake_err(e));
                }
                Some(Ok((request, mut respond))) => match parse_request(&request) {
                    Ok(authority) => {
                        let (parts, body) = request.into_parts();
                        let incoming = IncomingConnect { authority, headers: parts.headers, respond, body };
                        tokio::spawn(handler(incoming));
                    }
                    Err(reason) => {
                        log_refusal(Refusal::BadRequest, peer, None, &reason);
                        let mut response = Response::new(());
                        *response.status_mut() = StatusCode::BAD_REQUEST;
                        let _ = respond.send_response(response, true);
                    }
                },
            },
            _ = &mut drain, if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
            _ = tokio::time::sleep_until(next_ping), if ping.is_some() => {
                if awaiting_pong {
                    debug!(%peer, "hbone client did not answer keepalive ping; closing connection");
                    return Ok(());
                }
                if let Some(Err(e)) = ping.as_mut().map(|p| p.send_ping(h2::Ping::opaque())) {
                    debug!(%peer, error = %e, "hbone keepalive ping failed");
                    return Ok(());
                }
                awaiting_pong = true;
                next_ping = tokio::time::Instant::now() + settings.keepalive_timeout;
            }
            answer = std::future::poll_fn(|cx| match ping.as_mut() {
                Some(p) => p.poll_pong(cx),
                None => std::task::Poll::Pending,
            }), if awaiting_pong => {
                awaiting_pong = false;
                next_ping = tokio::time::Instant::now() + settings.keepalive_interval;
                if let Err(e) = answer {
                    debug!(%peer, error = %e, "hbone keepalive ping failed");
                    return Ok(());
                }
            }
        }
    }
}
