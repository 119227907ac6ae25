//! The HTTP/1 plumbing shared by the admin, metrics and readiness servers: serving an
//! already-bound listener through the shared accept loop ([`crate::accept_loop`]) until the
//! drain signal, letting requests in flight finish, plus small response and query helpers.
//! Knows nothing about any endpoint.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::accept_loop::accept_until_drained;
use crate::drain::{DrainMode, DrainWatch};

/// Response type of every handler.
pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// A client that has not sent its request headers by then is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1 on `listener` with `handler` until `drain` fires; then stops accepting,
/// closes idle connections, lets requests in flight finish (a graceful drain) or drops
/// them (an immediate one), and returns once every connection is gone. Each connection
/// holds a clone of `drain`, so the drain trigger also waits for them.
pub(crate) async fn serve<H, F>(server: &'static str, listener: TcpListener, drain: DrainWatch, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let address = listener.local_addr().ok();
    info!(server, address = ?address, "serving");
    let mut connections = JoinSet::new();
    // These servers may use the descriptors the proxy leaves in reserve: no reserve check.
    let mode = accept_until_drained(&listener, server, &drain, |(stream, peer)| {
        // Finished connections are collected as new ones come, so the set holds the live ones.
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_connection(server, stream, peer, handler.clone(), drain.clone()));
    })
    .await;
    drop(listener);
    debug!(server, ?mode, open = connections.len(), "draining");
    while connections.join_next().await.is_some() {}
    info!(server, "stopped");
}

async fn serve_connection<H, F>(
    server: &'static str,
    stream: TcpStream,
    peer: SocketAddr,
    handler: H,
    drain: DrainWatch,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let local = stream.local_addr().ok();
    let service = service_fn(move |mut req: Request<Incoming>| {
        if let Some(local) = local {
            req.extensions_mut().insert(ConnectionAddrs { peer, local });
        }
        let response = handler(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        mode = drain.signaled() => {
            if mode == DrainMode::Immediate {
                return;
            }
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        debug!(server, %peer, %error, "connection ended with an error");
    }
}

/// Both ends of the connection a request came on, in every request's extensions (absent only
/// if the socket could not tell its local address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnectionAddrs {
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// Our end, the address the client connected to.
    pub(crate) local: SocketAddr,
}

/// A `text/plain` response.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    with_type(status, body.into(), "text/plain; charset=utf-8")
}

/// A response with the given status, body and content type.
pub(crate) fn with_type(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An empty 404.
pub(crate) fn not_found() -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// The percent-decoded value of the first `name` parameter in `query` (`+` is a space);
/// `Some("")` for a bare `name` without `=`.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

/// Decodes `%XX` escapes and `+`; malformed escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let q = Some("reset&level=hbone%3Ddebug%2Cinfo&x=a+b");
        assert_eq!(query_param(q, "level").as_deref(), Some("hbone=debug,info"));
        assert_eq!(query_param(q, "reset").as_deref(), Some(""));
        assert_eq!(query_param(q, "x").as_deref(), Some("a b"));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "level"), None);
        assert_eq!(
            query_param(Some("level=hbone=debug,info"), "level").as_deref(),
            Some("hbone=debug,info"),
            "unescaped = and , in the value are kept"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
