//! Hot reload of the local config file: poll, wait for it to settle, validate, apply or reject.
//!
//! The file is read every `interval` and its bytes compared with the last bytes seen. Polling
//! (rather than inotify) is deliberate: Kubernetes ConfigMap volumes update by swapping a
//! `..data` symlink and editors and tools replace files by rename, both of which an inotify
//! watch on the file's inode misses or sees as deletion; comparing contents catches every kind
//! of replacement, needs no extra dependency, and costs one small read per interval.
//!
//! A change is applied only once the file has read the same for `settle` (at least one more
//! poll): a file written in place may be caught half-way, and a truncated file can still be
//! valid YAML that silently drops workloads. Writers should still replace the file atomically
//! (write elsewhere, then rename). An invalid change is logged with the full error and the
//! previous config keeps serving; the same bad bytes are not re-reported every tick. Every
//! attempt is published as a [`ReloadStatus`](super::ReloadStatus) on the shared state.
//!
//! Reading, parsing and building the new state run on a blocking thread, never on a runtime
//! worker, so a large or hostile file cannot stall traffic; the file is only read if it is a
//! regular file (see `local_file`), so a FIFO at the path cannot hang the watcher or shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{error, info};

use super::SharedState;
use super::local::{apply, parse_local_config};
use super::local_file::read_config_file;

/// How long a changed file must read the same before it is applied, unless told otherwise.
pub const CONFIG_SETTLE: Duration = Duration::from_millis(500);

/// What the last handled poll saw, so an unchanged file (or an unchanged read error) is skipped.
#[derive(PartialEq)]
enum Seen {
    Nothing,
    Bytes(Arc<[u8]>),
    ReadError(String),
}

/// A change seen but not yet applied: its bytes and when they were first read.
struct Pending {
    bytes: Arc<[u8]>,
    since: Instant,
}

struct Watcher {
    path: PathBuf,
    state: SharedState,
    trust_domain: Arc<str>,
    settle: Duration,
    seen: Seen,
    pending: Option<Pending>,
}

/// Watches `path` until `stop` completes, applying valid changes to `state` once they have
/// read the same for `settle`. Workloads without `trustDomain` get `trust_domain`. The bytes
/// `state` was last built from count as already seen, so a config loaded at startup is not
/// applied twice.
pub async fn watch_local_config(
    path: PathBuf,
    state: SharedState,
    trust_domain: String,
    interval: Duration,
    settle: Duration,
    stop: impl Future<Output = ()>,
) {
    let seen = match state.read().source.clone() {
        Some(bytes) => Seen::Bytes(bytes),
        None => Seen::Nothing,
    };
    let mut watcher = Watcher { path, state, trust_domain: trust_domain.into(), settle, seen, pending: None };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        // A poll waits for a blocking thread; stopping must not wait for it.
        tokio::select! {
            _ = &mut stop => return,
            _ = watcher.poll() => {}
        }
    }
}

impl Watcher {
    async fn poll(&mut self) {
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || read_config_file(&path)).await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return self.read_failed(e.to_string()),
            Err(e) => return self.read_failed(format!("reading local config {} failed: {e}", self.path.display())),
        };
        if matches!(&self.seen, Seen::Bytes(b) if **b == *bytes) {
            self.pending = None;
            return;
        }
        let now = Instant::now();
        match &self.pending {
            Some(p) if *p.bytes == *bytes && now.duration_since(p.since) >= self.settle => {}
            Some(p) if *p.bytes == *bytes => return,
            _ => {
                self.pending = Some(Pending { bytes: bytes.into(), since: now });
                return;
            }
        }
        let Some(Pending { bytes, .. }) = self.pending.take() else { return };
        self.seen = Seen::Bytes(bytes.clone());
        self.parse_and_apply(bytes).await;
    }

    fn read_failed(&mut self, message: String) {
        self.pending = None;
        if matches!(&self.seen, Seen::ReadError(m) if *m == message) {
            return;
        }
        self.seen = Seen::ReadError(message.clone());
        reject(&self.state, message);
    }

    async fn parse_and_apply(&self, bytes: Arc<[u8]>) {
        let file = self.path.display().to_string();
        let (state, trust_domain) = (self.state.clone(), self.trust_domain.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let cfg = parse_local_config(&bytes, &file, &trust_domain).map_err(|e| e.to_string())?;
            let (workloads, services) = (cfg.workloads().len(), cfg.services().len());
            let generation = apply(&state, cfg);
            info!(path = %file, generation, workloads, services, "applied local config change");
            Ok::<u64, String>(generation)
        })
        .await;
        match outcome {
            Ok(Ok(generation)) => self.state.update_reload_status(|s| {
                s.attempts += 1;
                s.applied += 1;
                s.generation = generation;
                s.last_error = None;
            }),
            Ok(Err(message)) => reject(&self.state, message),
            Err(e) => reject(&self.state, format!("checking local config {} failed: {e}", self.path.display())),
        }
    }
}

fn reject(state: &SharedState, message: String) {
    error!(error = %message, "rejected local config change; the previous config keeps serving");
    state.update_reload_status(|s| {
        s.attempts += 1;
        s.rejected += 1;
        s.last_error = Some(message);
    });
}
