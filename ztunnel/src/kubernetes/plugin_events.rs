//! Serves the plugin-event socket ([`super::cni_event`]): the chained CNI plugin connects on
//! CNI ADD, sends one [`PodAdded`] line and waits; the agent enrolls the pod from the network
//! namespace and addresses given and answers only once the pod is captured (or says why not).
//!
//! The socket follows the control socket's habits: mode 0600 in a directory of mode 0700
//! (or an existing one only root or ztunnel may write to), a request line of at most
//! [`MAX_REQUEST_LINE`] bytes that must arrive within [`LINE_TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] connections served at once (more are answered an error at once), and
//! an answer bounded by [`ENROLL_TIMEOUT`], short of the plugin's own wait.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::cni_event::{ANSWER_TIMEOUT, Answer, MAX_REQUEST_LINE, PodAdded};
use crate::drain::DrainWatch;
use crate::pods::control::{ControlError, LineFramer, read_line, serve_bounded, write_line};

/// The request line must arrive within this time from the connection.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Bound on enrolling one pod, shorter than the plugin's wait so it always gets an answer.
pub const ENROLL_TIMEOUT: Duration = ANSWER_TIMEOUT.saturating_sub(Duration::from_secs(5));

/// Failures of the plugin-event socket, naming the socket or the limit.
#[derive(Debug, thiserror::Error)]
pub enum PluginEventError {
    #[error("plugin-event socket {path}: {source}")]
    Bind {
        path: String,
        #[source]
        source: ControlError,
    },
    #[error("plugin-event request line longer than {MAX_REQUEST_LINE} bytes")]
    LineTooLong,
    #[error("plugin-event request line not complete within {LINE_TIMEOUT:?}")]
    LineTimeout,
    #[error("plugin-event connection closed before a request")]
    NoRequest,
    #[error("plugin-event connection: {0}")]
    Io(#[from] std::io::Error),
}

/// What enrolls the pods the plugin announces: the node agent, a fake in tests.
pub trait PodAddedHandler: Send + Sync + 'static {
    fn pod_added(&self, added: PodAdded) -> impl Future<Output = Answer> + Send;
}

/// Binds the socket at `path` (replacing a stale one).
pub fn bind(path: &Path) -> Result<UnixListener, PluginEventError> {
    crate::pods::control::bind(path)
        .map_err(|source| PluginEventError::Bind { path: path.display().to_string(), source })
}

/// Serves plugin events until the drain starts.
pub async fn serve<H: PodAddedHandler>(listener: UnixListener, handler: Arc<H>, drain: DrainWatch) {
    let busy =
        answer_line(&Answer::failed(format!("ztunnel is already serving {MAX_CONNECTIONS} plugin events; try again")));
    serve_bounded(listener, "plugin-event socket", MAX_CONNECTIONS, busy, drain, move |stream| {
        let handler = handler.clone();
        async move { handle(stream, &*handler).await }
    })
    .await;
}

/// Serves one connection: one request, one answer.
pub async fn handle<S, H>(stream: S, handler: &H) -> Result<(), PluginEventError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: PodAddedHandler + ?Sized,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let answer = match read_request(&mut read).await {
        Ok(line) => match serde_json::from_slice::<PodAdded>(&line) {
            Ok(added) => {
                let pod = format!("{}/{}", added.pod_namespace, added.pod_name);
                match tokio::time::timeout(ENROLL_TIMEOUT, handler.pod_added(added)).await {
                    Ok(answer) => answer,
                    Err(_) => Answer::failed(format!("pod {pod}: not captured within {ENROLL_TIMEOUT:?}")),
                }
            }
            Err(e) => Answer::failed(format!("bad plugin event: {e}")),
        },
        Err(e @ (PluginEventError::LineTooLong | PluginEventError::LineTimeout)) => {
            let _ = send(&mut write, &Answer::failed(e.to_string())).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    send(&mut write, &answer).await
}

async fn read_request<R: AsyncRead + Unpin>(read: &mut R) -> Result<Vec<u8>, PluginEventError> {
    let mut framer = LineFramer::new(MAX_REQUEST_LINE);
    match read_line(read, &mut framer, LINE_TIMEOUT).await {
        Ok(Some(line)) => Ok(line),
        Ok(None) => Err(PluginEventError::NoRequest),
        Err(ControlError::LineTooLong { .. }) => Err(PluginEventError::LineTooLong),
        Err(ControlError::LineTimeout(_)) => Err(PluginEventError::LineTimeout),
        Err(ControlError::Io(e)) => Err(PluginEventError::Io(e)),
        Err(other) => Err(PluginEventError::Io(std::io::Error::other(other.to_string()))),
    }
}

fn answer_line(answer: &Answer) -> Vec<u8> {
    let mut line = serde_json::to_vec(answer).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    line.push(b'\n');
    line
}

async fn send<W: AsyncWrite + Unpin>(write: &mut W, answer: &Answer) -> Result<(), PluginEventError> {
    Ok(write_line(write, &answer_line(answer)).await?)
}

/// Sends one event to the agent at `path` and returns its answer (what the plugin does; used
/// by tests and tools).
pub async fn send_event(path: &Path, added: &PodAdded) -> std::io::Result<Answer> {
    let stream = UnixStream::connect(path).await?;
    let (mut read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(added).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(ANSWER_TIMEOUT, read.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer from the node agent"))??;
    serde_json::from_slice(answer.trim_ascii()).map_err(std::io::Error::other)
}

#[cfg(test)]
#[path = "plugin_events_tests.rs"]
mod tests;
