//! The HTTPS side: accepts TLS connections on a listener the handle bound, serves HTTP/1.1,
//! checks the bearer token, routes each request to a verb, and records it. Stopping aborts
//! the accept task, which drops every open connection (and so every watch) at once, as an
//! API server that goes away does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use rustls::ServerConfig;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::RecordedRequest;
use super::api::{self, PatchRequest};
use super::routes::{Query, Route};
use super::status::ApiError;
use super::store::Store;

/// The largest patch body accepted (the real server's limit is a few MiB).
const MAX_BODY: usize = 1 << 20;
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// State that outlives a stop and restart: the store and the signals watches listen to.
pub(crate) struct Shared {
    store: Mutex<Store>,
    pub(crate) token: String,
    pub(crate) addr: SocketAddr,
    /// Bumped to make every watch send a bookmark now.
    pub(crate) bookmarks: watch::Sender<u64>,
    /// Bumped to end every open watch.
    pub(crate) close_watches: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(token: String, addr: SocketAddr) -> Shared {
        Shared {
            store: Mutex::new(Store::default()),
            token,
            addr,
            bookmarks: watch::Sender::new(0),
            close_watches: watch::Sender::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves `listener` until the returned task is aborted.
pub(crate) fn serve(shared: Arc<Shared>, tls: Arc<ServerConfig>, listener: TcpListener) -> JoinHandle<()> {
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        // Owned by this task: aborting it drops the set, which aborts every connection.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(connection(shared.clone(), acceptor.clone(), stream));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

async fn connection(shared: Arc<Shared>, acceptor: TlsAcceptor, stream: tokio::net::TcpStream) {
    let Ok(Ok(tls)) = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await else {
        return;
    };
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(respond(shared, request).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
}

async fn respond(shared: Arc<Shared>, request: Request<Incoming>) -> Response<ResponseBody> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let (response, code) = match dispatch(&shared, request).await {
        Ok(reply) => reply,
        Err(e) => (json_response(StatusCode::from_u16(e.code()).expect("valid code"), &e.to_status()), e.code()),
    };
    shared.lock().note_request(RecordedRequest { method, path, query, code });
    response
}

async fn dispatch(shared: &Arc<Shared>, request: Request<Incoming>) -> Result<(Response<ResponseBody>, u16), ApiError> {
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == shared.token);
    if !authorized {
        return Err(ApiError::Unauthorized);
    }
    let route = Route::parse(request.uri().path())?;
    let query = Query::parse(request.uri().query().unwrap_or_default())?;
    let method = request.method().clone();
    let ok = |body: Value| Ok((json_response(StatusCode::OK, &body), 200));
    match (method, route) {
        (Method::GET, Route::Version) => ok(api::version()),
        (Method::GET, Route::ApiVersions) => ok(api::api_versions(shared.addr)),
        (Method::GET, Route::CoreResources) => ok(api::core_resources()),
        (Method::GET, Route::ApiGroups) => ok(api::api_groups()),
        (Method::GET, Route::Namespaces) if query.watch => {
            watch_response(super::watch::start::<Namespace>(shared, None, &query)?)
        }
        (Method::GET, Route::Namespaces) => ok(api::list::<Namespace>(&shared.lock(), None, &query)?),
        (Method::GET, Route::Namespace(name)) => ok(api::get::<Namespace>(&shared.lock(), &(String::new(), name))?),
        (Method::GET, Route::Pods(ns)) if query.watch => {
            watch_response(super::watch::start::<Pod>(shared, ns, &query)?)
        }
        (Method::GET, Route::Pods(ns)) => ok(api::list::<Pod>(&shared.lock(), ns.as_deref(), &query)?),
        (Method::GET, Route::Pod { namespace, name, .. }) => ok(api::get::<Pod>(&shared.lock(), &(namespace, name))?),
        (Method::PATCH, Route::Pod { namespace, name, status }) => {
            let content_type = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = Limited::new(request.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| ApiError::BadRequest(format!("cannot read the patch body for pods {name:?}: {e}")))?
                .to_bytes();
            let patch = PatchRequest {
                key: (namespace, name),
                status,
                content_type: &content_type,
                body: &body,
                query: &query,
            };
            ok(api::patch::<Pod>(&mut shared.lock(), &patch)?)
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn watch_response((body, code): (super::watch::WatchBody, u16)) -> Result<(Response<ResponseBody>, u16), ApiError> {
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.boxed_unsync())
        .expect("valid response");
    Ok((response, code))
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<ResponseBody> {
    let bytes = serde_json::to_vec(body).expect("responses serialize");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed_unsync())
        .expect("valid response")
}
