//! The control socket: `ztunnel enroll` / `unenroll` / `pods` talk to the running daemon over
//! a unix socket (mode 0600 in a directory only its owner may write, see [`socket`]) with one
//! JSON request and one JSON answer per line.
//!
//! What a client can hold is bounded: a request line is at most [`MAX_LINE`] bytes, it must
//! arrive within [`LINE_TIMEOUT`], and at most [`MAX_CONNECTIONS`] connections are served at
//! once. A client over a bound gets one error answer and the connection is closed.
//!
//! The control socket is one enrollment source among others: an enroll request names the
//! pod's uid and network namespace, and may give its addresses (`ips`); it calls
//! [`Pods::enroll`] like every source. Requests from older clients that still send a `cgroup`
//! are accepted; the field is ignored with a warning (capture no longer needs it).

mod framing;
mod socket;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::records::{EnrollRecord, EnrollSource};
use super::{PodEnrollment, Pods};
use crate::accept_loop::accept_until_drained;
use crate::drain::DrainWatch;
use crate::types::WorkloadUid;
pub(crate) use framing::{LineFramer, LineTooLong};
pub(crate) use socket::bind;

/// Longest request line accepted (a request is a few hundred bytes).
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// A request line must arrive in full within this time from the connection (or from the
/// previous answer); an idle or trickling client is then answered an error and closed.
pub(crate) const LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are answered an error and closed.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// Bytes read from a client at a time.
const READ_CHUNK: usize = 8 * 1024;
/// Bound on writing one answer to a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ControlRequest {
    Enroll {
        uid: String,
        netns: PathBuf,
        /// The pod's addresses, used until state has its workload.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ips: Vec<std::net::IpAddr>,
        /// Sent by older clients; ignored (with a warning). `ztunnel enroll` sends none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cgroup: Option<PathBuf>,
    },
    Unenroll {
        uid: String,
    },
    Pods,
}

/// The daemon's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<EnrollRecord>,
}

impl ControlResponse {
    fn error(message: impl Into<String>) -> ControlResponse {
        ControlResponse { error: Some(message.into()), ..Default::default() }
    }
}

/// Failures of the control socket, each naming the socket, directory or limit involved.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket directory {path}: {what} failed: {source}")]
    Directory {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket directory {path} is not safe: {reason}")]
    UnsafeDirectory { path: String, reason: String },
    #[error("control socket {path}: {what} failed: {source}")]
    Socket {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("control request line longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("control request line not complete within {0:?}")]
    LineTimeout(Duration),
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
}

impl From<LineTooLong> for ControlError {
    fn from(LineTooLong { max }: LineTooLong) -> ControlError {
        ControlError::LineTooLong { max }
    }
}

/// What answers control requests: the capture in the daemon, a fake in tests.
pub(crate) trait ControlHandler: Send + Sync + 'static {
    fn answer(&self, request: ControlRequest) -> impl Future<Output = ControlResponse> + Send;
}

impl ControlHandler for Pods {
    async fn answer(&self, request: ControlRequest) -> ControlResponse {
        let done = |r: Result<(), super::PodsError>| match r {
            Ok(()) => ControlResponse { ok: true, ..Default::default() },
            Err(e) => ControlResponse::error(e.to_string()),
        };
        match request {
            ControlRequest::Enroll { uid, netns, ips, cgroup } => {
                if let Some(cgroup) = cgroup {
                    warn!(uid, cgroup = %cgroup.display(), "enroll request: the cgroup field is ignored; a pod is captured by its network namespace");
                }
                let pod = PodEnrollment { uid: WorkloadUid::from(uid), netns, ips, exclusions: Default::default() };
                done(self.enroll(pod, EnrollSource::Api).await)
            }
            ControlRequest::Unenroll { uid } => done(self.unenroll(&WorkloadUid::from(uid)).await),
            ControlRequest::Pods => ControlResponse { ok: true, pods: self.enrolled().await, ..Default::default() },
        }
    }
}

/// Serves control requests until the drain starts.
pub(crate) async fn serve<H: ControlHandler>(listener: UnixListener, handler: Arc<H>, drain: DrainWatch) {
    let busy = answer_line(&ControlResponse::error(format!(
        "ztunnel is already serving {MAX_CONNECTIONS} control connections; try again"
    )));
    serve_bounded(listener, "control socket", MAX_CONNECTIONS, busy, drain, move |stream| {
        let handler = handler.clone();
        async move { handle(stream, &*handler).await }
    })
    .await;
}

/// Serves a line-protocol unix socket until the drain starts, at most `limit` connections at
/// once, each by `serve_one`. A connection over the limit is sent `busy` (a line far smaller
/// than a fresh socket's buffer, so a non-blocking write takes it whole) and closed.
pub(crate) async fn serve_bounded<F, E>(
    listener: UnixListener,
    what: &'static str,
    limit: usize,
    busy: Vec<u8>,
    drain: DrainWatch,
    serve_one: impl Fn(UnixStream) -> F,
) where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let slots = Arc::new(Semaphore::new(limit));
    accept_until_drained(&listener, what, &drain, |(stream, _)| {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Err(e) = stream.try_write(&busy) {
                debug!(error = %e, socket = what, "cannot answer a connection over the limit");
            }
            warn!(limit, socket = what, "connection refused: too many at once");
            return;
        };
        let served = serve_one(stream);
        tokio::spawn(async move {
            if let Err(e) = served.await {
                warn!(error = %e, socket = what, "connection failed");
            }
            drop(slot);
        });
    })
    .await;
}

/// Serves one connection: request lines in, answers out, until the client closes or breaks
/// a limit (then it gets an error answer and the connection ends).
pub(crate) async fn handle<S, H>(stream: S, handler: &H) -> Result<(), ControlError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: ControlHandler + ?Sized,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let mut framer = LineFramer::new(MAX_LINE);
    loop {
        let line = match read_line(&mut read, &mut framer, LINE_TIMEOUT).await {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(error @ (ControlError::LineTooLong { .. } | ControlError::LineTimeout(_))) => {
                let _ = send(&mut write, &ControlResponse::error(error.to_string())).await;
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        let response = match parse_request(&line) {
            Ok(request) => handler.answer(request).await,
            Err(response) => response,
        };
        send(&mut write, &response).await?;
    }
}

/// Parses one request line; a bad one becomes the error answer to send back.
pub(crate) fn parse_request(line: &[u8]) -> Result<ControlRequest, ControlResponse> {
    serde_json::from_slice(line).map_err(|e| ControlResponse::error(format!("bad request: {e}")))
}

/// One answer as a line of JSON.
pub(crate) fn answer_line(response: &ControlResponse) -> Vec<u8> {
    // Serializing these plain structs cannot fail; an empty object would still be a line.
    let mut line = serde_json::to_vec(response).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

async fn send<W: AsyncWrite + Unpin>(write: &mut W, response: &ControlResponse) -> Result<(), ControlError> {
    Ok(write_line(write, &answer_line(response)).await?)
}

/// Writes one answer line, bounded by [`WRITE_TIMEOUT`] (a client that does not read).
pub(crate) async fn write_line<W: AsyncWrite + Unpin>(write: &mut W, line: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(line)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "client does not read its answer")),
    }
}

/// Reads the next request line: `None` when the client closed between requests. The line
/// must be complete within `limit`; a last line without `\n` before the close counts.
pub(crate) async fn read_line<R: AsyncRead + Unpin>(
    read: &mut R,
    framer: &mut LineFramer,
    limit: Duration,
) -> Result<Option<Vec<u8>>, ControlError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        if let Some(line) = framer.next_line()? {
            return Ok(Some(line));
        }
        let n = match tokio::time::timeout_at(deadline, read.read(&mut chunk)).await {
            Ok(n) => n?,
            Err(_) => return Err(ControlError::LineTimeout(limit)),
        };
        if n == 0 {
            return Ok(framer.finish());
        }
        framer.push(&chunk[..n]);
    }
}

/// Sends one request to the daemon at `path` and returns its answer.
pub async fn request(path: &Path, request: &ControlRequest) -> std::io::Result<ControlResponse> {
    let stream = UnixStream::connect(path).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot reach ztunnel's control socket {}: {e}", path.display()))
    })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let line = BufReader::new(read)
        .lines()
        .next_line()
        .await?
        .ok_or_else(|| std::io::Error::other("daemon closed the control socket"))?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}
