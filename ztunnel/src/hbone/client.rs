//! One client-side HBONE connection: HTTP/2 handshake over an established (TLS) stream, a
//! driver task that runs the connection and checks the peer with PINGs, and `CONNECT` requests.
//!
//! A peer can stop answering without closing anything (a frozen host, a dropped path). Besides
//! the periodic keepalive PING, a `CONNECT` not answered within
//! [`H2Settings::probe_after`] makes the driver PING the peer at once; with no answer within
//! [`H2Settings::probe_timeout`] the connection is declared dead and closed, its streams fail,
//! and the waiting `CONNECT` fails as retryable ([`Error::PeerUnresponsive`]) so the pool
//! opens it on a fresh connection instead of waiting out the caller's connect timeout. A slow
//! app behind a live peer is not mistaken for a dead peer: the PING is answered by the peer's
//! HTTP/2 layer, whatever its streams wait for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::stream::{StreamGuard, Tunnel};
use super::{Error, H2Settings};

/// A live client connection that can carry many `CONNECT` streams.
#[derive(Clone)]
pub struct ClientConnection {
    send: SendRequest<Bytes>,
    peer: Arc<str>,
    alive: Arc<Liveness>,
    probe_after: std::time::Duration,
    probe_timeout: std::time::Duration,
}

#[derive(Default)]
struct Liveness {
    closed: AtomicBool,
    /// The peer sent GOAWAY (or refused a stream): live streams go on, new ones go elsewhere.
    draining: AtomicBool,
    /// The peer left a PING unanswered past its deadline (set before `closed`).
    unresponsive: AtomicBool,
    /// Wakes the driver to PING the peer now.
    probe: Notify,
    notify: Notify,
}

impl ClientConnection {
    /// Runs the HTTP/2 handshake over `io` and spawns the connection's driver task.
    pub async fn handshake<IO>(io: IO, peer: &str, settings: &H2Settings) -> Result<ClientConnection, Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut conn) = h2::client::Builder::new()
            .initial_window_size(settings.stream_window)
            .initial_connection_window_size(settings.connection_window)
            .max_frame_size(settings.max_frame_size)
            .max_send_buffer_size(settings.max_send_buffer)
            .max_header_list_size(settings.max_header_list_size)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|source| Error::Handshake { peer: peer.to_string(), source })?;
        let alive = Arc::new(Liveness::default());
        let ping = conn.ping_pong();
        let peer: Arc<str> = peer.into();
        let driver_alive = alive.clone();
        let driver_peer = peer.clone();
        let settings = settings.clone();
        let (probe_after, probe_timeout) = (settings.probe_after, settings.probe_timeout);
        tokio::spawn(async move {
            drive(conn, ping, &settings, &driver_peer, &driver_alive).await;
            driver_alive.closed.store(true, Ordering::Release);
            driver_alive.notify.notify_waiters();
        });
        Ok(ClientConnection { send, peer, alive, probe_after, probe_timeout })
    }

    /// True once the connection has ended (peer closed, I/O error, or PING timeout).
    pub fn is_closed(&self) -> bool {
        self.alive.closed.load(Ordering::Acquire)
    }

    /// True while the connection may take new streams.
    pub fn is_usable(&self) -> bool {
        !self.is_closed() && !self.alive.draining.load(Ordering::Acquire)
    }

    /// Resolves when the connection ends.
    pub async fn closed(&self) {
        let notified = self.alive.notify.notified();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    /// Opens one `CONNECT` stream to `authority` and waits for the response.
    /// A 200 yields the tunnel; any other status is an [`Error::Status`].
    pub async fn connect(
        &self,
        request: Request<()>,
        guard: Option<StreamGuard>,
    ) -> Result<(Tunnel, http::HeaderMap), Error> {
        let authority = request.uri().to_string();
        if request.method() != Method::CONNECT {
            return Err(Error::BadRequest { authority, reason: "method must be CONNECT".into() });
        }
        let request_err = |source: h2::Error| {
            // A stream refused by GOAWAY or REFUSED_STREAM was never processed by the peer
            // (RFC 9113 section 6.8): stop using this connection for new streams.
            if super::is_refused(&source) {
                self.alive.draining.store(true, Ordering::Release);
            }
            Error::Request { authority: authority.clone(), source }
        };
        let unresponsive = || Error::PeerUnresponsive { peer: self.peer.to_string(), timeout: self.probe_timeout };
        let answered = async {
            let mut send = self.send.clone().ready().await.map_err(request_err)?;
            let (response, stream) = send.send_request(request, false).map_err(request_err)?;
            Ok((response.await.map_err(request_err)?, stream))
        };
        tokio::pin!(answered);
        let probe = tokio::time::sleep(self.probe_after);
        tokio::pin!(probe);
        let mut probed = false;
        let (response, stream) = loop {
            tokio::select! {
                result = &mut answered => match result {
                    Err(_) if self.alive.unresponsive.load(Ordering::Acquire) => return Err(unresponsive()),
                    result => break result?,
                },
                _ = &mut probe, if !probed => {
                    probed = true;
                    debug!(peer = %self.peer, after = ?self.probe_after, "CONNECT not answered yet; probing the peer with a ping");
                    self.alive.probe.notify_one();
                }
                _ = self.closed() => {
                    if self.alive.unresponsive.load(Ordering::Acquire) {
                        return Err(unresponsive());
                    }
                    // Otherwise the request fails with the connection's own error.
                    break answered.await?;
                }
            }
        };
        if response.status() != StatusCode::OK {
            return Err(Error::Status { authority: authority.clone(), status: response.status() });
        }
        let (parts, body) = response.into_parts();
        Ok((Tunnel::new(stream, body, guard), parts.headers))
    }

    /// The peer this connection was dialled to (for logs).
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

/// Runs the connection until it ends. A PING is sent every `keepalive_interval`, or at once
/// when a caller asks for a probe; one left unanswered past its deadline (`keepalive_timeout`,
/// or `probe_timeout` for a probe) ends the connection as unresponsive.
async fn drive<IO>(
    conn: h2::client::Connection<IO, Bytes>,
    ping: Option<h2::PingPong>,
    settings: &H2Settings,
    peer: &str,
    alive: &Liveness,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tokio::pin!(conn);
    let Some(mut ping) = ping else {
        if let Err(e) = conn.await {
            debug!(peer, error = %e, "hbone connection ended");
        }
        return;
    };
    let mut next_ping = Instant::now() + settings.keepalive_interval;
    // Set while a PING is unanswered: when the connection is declared dead.
    let mut pong_deadline: Option<Instant> = None;
    loop {
        let send_ping = tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    debug!(peer, error = %e, "hbone connection ended");
                }
                return;
            }
            _ = tokio::time::sleep_until(next_ping), if pong_deadline.is_none() => {
                Some(Instant::now() + settings.keepalive_timeout)
            }
            _ = alive.probe.notified() => {
                let deadline = Instant::now() + settings.probe_timeout;
                match pong_deadline {
                    None => Some(deadline),
                    Some(pending) => {
                        pong_deadline = Some(pending.min(deadline));
                        None
                    }
                }
            }
            _ = tokio::time::sleep_until(pong_deadline.unwrap_or(next_ping)), if pong_deadline.is_some() => {
                warn!(peer, "hbone peer did not answer a ping in time; closing the connection and its streams");
                alive.unresponsive.store(true, Ordering::Release);
                alive.closed.store(true, Ordering::Release);
                return;
            }
            answer = std::future::poll_fn(|cx| ping.poll_pong(cx)), if pong_deadline.is_some() => {
                if let Err(e) = answer {
                    debug!(peer, error = %e, "hbone keepalive ping failed");
                    return;
                }
                pong_deadline = None;
                next_ping = Instant::now() + settings.keepalive_interval;
                None
            }
        };
        if let Some(deadline) = send_ping {
            if let Err(e) = ping.send_ping(h2::Ping::opaque()) {
                debug!(peer, error = %e, "hbone keepalive ping failed");
                return;
            }
            pong_deadline = Some(deadline);
        }
    }
}
