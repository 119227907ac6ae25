//! The admin endpoint (127.0.0.1:15000): `/config_dump`, `/logging`, `/quitquitquit` and an
//! index at `/`. It reaches the rest of the process only through [`AdminInputs`].
//!
//! Reading is open to whoever reaches the port; changing (`POST /quitquitquit`, `POST
//! /logging` with `level` or `reset`) needs a caller on loopback running as root or as
//! ztunnel's user (see [`caller`](super::caller)), else 403. Config dumps are built on the
//! blocking pool, at most [`DUMP_CONCURRENCY`] at a time (from the start of building one to
//! the end of sending it); a request that cannot start one within [`DUMP_QUEUE_WAIT`] gets 503.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::server::{self, ConnectionAddrs, HttpResponse};
use super::{caller, logging};
use crate::drain::DrainWatch;
use crate::telemetry::LogHandle;

/// Config dumps built or being sent at once: a dump of a large mesh takes hundreds of MB.
pub(crate) const DUMP_CONCURRENCY: usize = 2;
/// How long a dump request waits for its turn before it is answered 503.
pub(crate) const DUMP_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// What the admin server needs from the rest of the process.
#[derive(Clone)]
pub(crate) struct AdminInputs {
    /// Live control of the log filter (`/logging`).
    pub log: LogHandle,
    /// Produces the `/config_dump` document; called once per request, on a blocking thread.
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

/// Bounds on concurrent config dumps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DumpLimits {
    pub(crate) concurrency: usize,
    pub(crate) queue_wait: Duration,
}

impl Default for DumpLimits {
    fn default() -> DumpLimits {
        DumpLimits { concurrency: DUMP_CONCURRENCY, queue_wait: DUMP_QUEUE_WAIT }
    }
}

/// Endpoints listed by `/`, with what they do.
const ENDPOINTS: &[(&str, &str)] = &[
    ("/config_dump", "dump the current ztunnel configuration (GET)"),
    (
        "/logging",
        "show (GET or POST) or change (POST ?level=<filter>, ?reset; root or ztunnel's user, from loopback) the log filter",
    ),
    ("/quitquitquit", "shut down the server gracefully (POST; root or ztunnel's user, from loopback)"),
];

struct Admin {
    inputs: AdminInputs,
    dumps: Arc<Semaphore>,
    limits: DumpLimits,
}

/// Serves the admin endpoint on `listener` until `inputs.drain` fires.
pub(crate) async fn serve_admin(listener: TcpListener, inputs: AdminInputs) {
    serve_admin_with(listener, inputs, DumpLimits::default()).await
}

/// [`serve_admin`] with the given bounds on config dumps.
pub(crate) async fn serve_admin_with(listener: TcpListener, inputs: AdminInputs, limits: DumpLimits) {
    let drain = inputs.drain.clone();
    let admin = Arc::new(Admin { inputs, dumps: Arc::new(Semaphore::new(limits.concurrency)), limits });
    server::serve("admin", listener, drain, move |req| {
        let admin = admin.clone();
        async move { route(&admin, req).await }
    })
    .await
}

async fn route(admin: &Admin, req: Request<Incoming>) -> HttpResponse {
    let addrs = req.extensions().get::<ConnectionAddrs>().copied();
    let (method, query) = (req.method(), req.uri().query());
    match req.uri().path() {
        "/" => index(),
        "/config_dump" => config_dump(admin, method).await,
        "/logging" if logging::changes(method, query) => match authorize(addrs, "change the log filter").await {
            Ok(()) => logging::handle(&admin.inputs.log, method, query),
            Err(refused) => refused,
        },
        "/logging" => logging::handle(&admin.inputs.log, method, query),
        "/quitquitquit" if method != Method::POST => server::text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        "/quitquitquit" => match authorize(addrs, "shut ztunnel down").await {
            Ok(()) => quit(&admin.inputs),
            Err(refused) => refused,
        },
        _ => server::not_found(),
    }
}

/// Lets the request through if its caller may change things, else answers 403 saying why.
async fn authorize(addrs: Option<ConnectionAddrs>, action: &'static str) -> Result<(), HttpResponse> {
    let verdict = tokio::task::spawn_blocking(move || caller::authorize(addrs)).await;
    let refusal = match verdict {
        Ok(Ok(uid)) => {
            tracing::debug!(peer = ?addrs.map(|a| a.peer), uid, action, "admin change allowed");
            return Ok(());
        }
        Ok(Err(error)) => error.to_string(),
        Err(error) => format!("checking the caller failed: {error}"),
    };
    tracing::warn!(peer = ?addrs.map(|a| a.peer), reason = %refusal, action, "admin change refused");
    Err(server::text(
        StatusCode::FORBIDDEN,
        format!("refused: only root or ztunnel's user, from loopback, may {action}; {refusal}\n"),
    ))
}

fn index() -> HttpResponse {
    let mut body = String::from("admin commands are:\n");
    for (path, what) in ENDPOINTS {
        body.push_str(&format!("  {path}: {what}\n"));
    }
    server::text(StatusCode::OK, body)
}

/// A dump's bytes together with its turn: the turn ends when the body is dropped, that is
/// once it has been written out (or the connection is gone).
struct DumpBody {
    json: Vec<u8>,
    _turn: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for DumpBody {
    fn as_ref(&self) -> &[u8] {
        &self.json
    }
}

async fn config_dump(admin: &Admin, method: &Method) -> HttpResponse {
    if method != Method::GET {
        return server::text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let turn = match tokio::time::timeout(admin.limits.queue_wait, admin.dumps.clone().acquire_owned()).await {
        Ok(Ok(turn)) => turn,
        _ => {
            let mut busy = server::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("config dump: {} dumps are already in progress; try again\n", admin.limits.concurrency),
            );
            busy.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return busy;
        }
    };
    let produce = admin.inputs.config_dump.clone();
    // The turn moves into the blocking task: if the client goes away meanwhile, the dump
    // being built still counts until it is done.
    let built = tokio::task::spawn_blocking(move || {
        let json = serde_json::to_vec_pretty(&produce()).map(|mut json| {
            json.push(b'\n');
            json
        });
        (json, turn)
    })
    .await;
    match built {
        Ok((Ok(json), turn)) => {
            server::with_type(StatusCode::OK, Bytes::from_owner(DumpBody { json, _turn: turn }), "application/json")
        }
        Ok((Err(error), _)) => server::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("config dump: serializing to json failed: {error}\n"),
        ),
        Err(error) => server::text(StatusCode::INTERNAL_SERVER_ERROR, format!("config dump failed: {error}\n")),
    }
}

fn quit(inputs: &AdminInputs) -> HttpResponse {
    tracing::info!("shutdown requested through the admin endpoint");
    (inputs.shutdown)();
    server::text(StatusCode::OK, "shutdown now\n")
}
