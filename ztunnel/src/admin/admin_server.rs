//! The admin endpoint (127.0.0.1:15000): `/config_dump`, `/logging`, `/quitquitquit` and an
//! index at `/`. It reaches the rest of the process only through [`AdminInputs`].

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::logging;
use super::server::{self, HttpResponse};
use crate::drain::DrainWatch;
use crate::telemetry::LogHandle;

/// What the admin server needs from the rest of the process.
#[derive(Clone)]
pub struct AdminInputs {
    /// Live control of the log filter (`/logging`).
    pub log: LogHandle,
    /// Produces the `/config_dump` document; called once per request.
    pub config_dump: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// Starts a graceful shutdown of the process (`POST /quitquitquit`). It must return
    /// promptly: start the shutdown, do not wait for it.
    pub shutdown: Arc<dyn Fn() + Send + Sync>,
    /// Stops the admin server.
    pub drain: DrainWatch,
}

impl std::fmt::Debug for AdminInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminInputs").field("log", &self.log).field("drain", &self.drain).finish_non_exhaustive()
    }
}

/// Endpoints listed by `/`, with what they do.
const ENDPOINTS: &[(&str, &str)] = &[
    ("/config_dump", "dump the current ztunnel configuration (GET)"),
    ("/logging", "show (GET or POST) or change (POST ?level=<filter>, ?reset) the log filter"),
    ("/quitquitquit", "shut down the server gracefully (POST)"),
];

/// Serves the admin endpoint on `listener` until `inputs.drain` fires.
pub async fn serve_admin(listener: TcpListener, inputs: AdminInputs) {
    let drain = inputs.drain.clone();
    let inputs = Arc::new(inputs);
    server::serve("admin", listener, drain, move |req| {
        let inputs = inputs.clone();
        async move { route(&inputs, req) }
    })
    .await
}

fn route(inputs: &AdminInputs, req: Request<Incoming>) -> HttpResponse {
    match req.uri().path() {
        "/" => index(),
        "/config_dump" => config_dump(inputs, req.method()),
        "/logging" => logging::handle(&inputs.log, req.method(), req.uri().query()),
        "/quitquitquit" => quit(inputs, req.method()),
        _ => server::not_found(),
    }
}

fn index() -> HttpResponse {
    let mut body = String::from("admin commands are:\n");
    for (path, what) in ENDPOINTS {
        body.push_str(&format!("  {path}: {what}\n"));
    }
    server::text(StatusCode::OK, body)
}

fn config_dump(inputs: &AdminInputs, method: &Method) -> HttpResponse {
    if method != Method::GET {
        return server::text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let dump = (inputs.config_dump)();
    match serde_json::to_string_pretty(&dump) {
        Ok(mut body) => {
            body.push('\n');
            server::with_type(StatusCode::OK, body, "application/json")
        }
        Err(error) => server::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("config dump: serializing to json failed: {error}\n"),
        ),
    }
}

fn quit(inputs: &AdminInputs, method: &Method) -> HttpResponse {
    if method != Method::POST {
        return server::text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
    }
    tracing::info!("shutdown requested through the admin endpoint");
    (inputs.shutdown)();
    server::text(StatusCode::OK, "shutdown now\n")
}
