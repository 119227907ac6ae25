//! The control socket: `ztunnel enroll` / `unenroll` / `pods` talk to the running daemon over
//! a unix socket (mode 0600, root only) with one JSON request and one JSON answer per line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

use super::Capture;
use super::records::{EnrollRecord, EnrollSource};
use crate::drain::DrainWatch;

/// A request to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ControlRequest {
    Enroll { uid: String, netns: PathBuf, cgroup: PathBuf },
    Unenroll { uid: String },
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

/// Binds the control socket (replacing a stale one) with owner-only permissions.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control requests until the drain starts.
pub async fn serve(listener: UnixListener, capture: Arc<Capture>, drain: DrainWatch) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let capture = capture.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &capture).await {
                        warn!(error = %e, "control connection failed");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, capture: &Capture) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<ControlRequest>(&line) {
            Err(e) => ControlResponse { error: Some(format!("bad request: {e}")), ..Default::default() },
            Ok(request) => answer(request, capture).await,
        };
        let mut text = serde_json::to_string(&response).map_err(std::io::Error::other)?;
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
    }
    Ok(())
}

async fn answer(request: ControlRequest, capture: &Capture) -> ControlResponse {
    let done = |r: Result<(), super::CaptureError>| match r {
        Ok(()) => ControlResponse { ok: true, ..Default::default() },
        Err(e) => ControlResponse { error: Some(e.to_string()), ..Default::default() },
    };
    match request {
        ControlRequest::Enroll { uid, netns, cgroup } => {
            done(capture.enroll(&uid, &netns, &cgroup, EnrollSource::Api).await)
        }
        ControlRequest::Unenroll { uid } => done(capture.unenroll(&uid).await),
        ControlRequest::Pods => ControlResponse { ok: true, pods: capture.enrolled().await, ..Default::default() },
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
