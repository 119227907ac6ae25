//! The readiness endpoint (port 15021): `GET /healthz/ready` answers 200 `ready` once every
//! startup task has finished, else 503 naming the tasks still pending.

use http::{Method, StatusCode};
use tokio::net::TcpListener;

use super::server::{self, HttpResponse};
use crate::drain::DrainWatch;
use crate::readiness::Ready;

/// Serves the readiness endpoint on `listener` until `drain` fires.
pub(crate) async fn serve_readiness(listener: TcpListener, ready: Ready, drain: DrainWatch) {
    server::serve("readiness", listener, drain, move |req| {
        let ready = ready.clone();
        async move {
            match (req.uri().path(), req.method()) {
                ("/healthz/ready", &Method::GET) => readiness(&ready),
                ("/healthz/ready", _) => server::text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
                _ => server::not_found(),
            }
        }
    })
    .await
}

fn readiness(ready: &Ready) -> HttpResponse {
    let pending = ready.pending();
    if pending.is_empty() {
        server::text(StatusCode::OK, "ready\n")
    } else {
        server::text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready, pending: {}\n", pending.join(", ")))
    }
}
