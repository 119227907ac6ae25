//! One client-side HBONE connection: HTTP/2 handshake over an established (TLS) stream, a
//! driver task that runs the connection and checks the peer with PINGs, and `CONNECT` requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::stream::{StreamGuard, Tunnel};
use super::{Error, H2Settings};

/// A live client connection that can carry many `CONNECT` streams.
#[derive(Clone)]
pub struct ClientConnection {
    send: SendRequest<Bytes>,
    peer: Arc<str>,
    alive: Arc<Liveness>,
}

#[derive(Default)]
struct Liveness {
    closed: AtomicBool,
    /// The peer sent GOAWAY (or refused a stream): live streams go on, new ones go elsewhere.
    draining: AtomicBool,
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
        tokio::spawn(async move {
            drive(conn, ping, &settings, &driver_peer).await;
            driver_alive.closed.store(true, Ordering::Release);
            driver_alive.notify.notify_waiters();
        });
        Ok(ClientConnection { send, peer, alive })
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
        let mut send = self.send.clone().ready().await.map_err(request_err)?;
        let (response, stream) = send.send_request(request, false).map_err(request_err)?;
        let response = response.await.map_err(request_err)?;
        if response.status() != StatusCode::OK {
            return Err(Error::Status { authority, status: response.status() });
        }
        let (parts, body) = response.into_parts();
        Ok((Tunnel::new(stream, body, guard), parts.headers))
    }

    /// The peer this connection was dialled to (for logs).
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

/// Runs the connection until it ends; a PING left unanswered past the timeout ends it.
async fn drive<IO>(
    conn: h2::client::Connection<IO, Bytes>,
    ping: Option<h2::PingPong>,
    settings: &H2Settings,
    peer: &str,
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
    loop {
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    debug!(peer, error = %e, "hbone connection ended");
                }
                return;
            }
            _ = tokio::time::sleep(settings.keepalive_interval) => {}
        }
        let pong = tokio::time::timeout(settings.keepalive_timeout, ping.ping(h2::Ping::opaque()));
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    debug!(peer, error = %e, "hbone connection ended");
                }
                return;
            }
            answer = pong => match answer {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    debug!(peer, error = %e, "hbone keepalive ping failed");
                    return;
                }
                Err(_) => {
                    warn!(peer, timeout = ?settings.keepalive_timeout, "hbone peer did not answer keepalive ping; closing connection");
                    return;
                }
            },
        }
    }
}
