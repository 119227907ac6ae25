//! Hot reload of the local config file: poll, validate, apply or reject.
//!
//! The file is read every `interval` and its bytes compared with the last bytes seen. Polling
//! (rather than inotify) is deliberate: Kubernetes ConfigMap volumes update by swapping a
//! `..data` symlink and editors and tools replace files by rename, both of which an inotify
//! watch on the file's inode misses or sees as deletion; comparing contents catches every kind
//! of replacement, needs no extra dependency, and costs one small read per interval.
//!
//! A valid change is applied at once. An invalid one is logged with the full error and the
//! previous config keeps serving; the same bad bytes are not re-reported every tick. Writers
//! should still replace the file atomically (write elsewhere, then rename) so a half-written
//! file is never seen. Every attempt is published as a [`ReloadStatus`](super::ReloadStatus) on the
//! shared state.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tracing::{error, info};

use super::SharedState;
use super::local::{LocalConfigError, apply, parse_local_config};

/// What the last poll saw, so an unchanged file (or an unchanged read error) is skipped.
#[derive(PartialEq)]
enum Seen {
    Nothing,
    Bytes(Arc<[u8]>),
    ReadError(String),
}

/// Watches `path` until `stop` completes, applying valid changes to `state`. Workloads
/// without `trustDomain` get `trust_domain`. The bytes `state` was last built from count as
/// already seen, so a config loaded at startup is not applied twice.
pub async fn watch_local_config(
    path: PathBuf,
    state: SharedState,
    trust_domain: String,
    interval: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut seen = match state.read().source.clone() {
        Some(bytes) => Seen::Bytes(bytes),
        None => Seen::Nothing,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        poll_once(&path, &state, &trust_domain, &mut seen).await;
    }
}

async fn poll_once(path: &PathBuf, state: &SharedState, trust_domain: &str, seen: &mut Seen) {
    let file = path.display().to_string();
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(source) => {
            let message = LocalConfigError::Read { file, source }.to_string();
            if matches!(seen, Seen::ReadError(m) if *m == message) {
                return;
            }
            *seen = Seen::ReadError(message.clone());
            reject(state, message);
            return;
        }
    };
    if matches!(seen, Seen::Bytes(b) if **b == *bytes) {
        return;
    }
    let bytes: Arc<[u8]> = bytes.into();
    *seen = Seen::Bytes(bytes.clone());
    match parse_local_config(&bytes, &file, trust_domain) {
        Ok(cfg) => {
            let (workloads, services) = (cfg.workloads().len(), cfg.services().len());
            let generation = apply(state, cfg);
            info!(path = %file, generation, workloads, services, "applied local config change");
            state.update_reload_status(|s| {
                s.attempts += 1;
                s.applied += 1;
                s.generation = generation;
                s.last_error = None;
            });
        }
        Err(e) => reject(state, e.to_string()),
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::IpAddr;

    use tokio::sync::oneshot;

    use super::*;
    use crate::state::{ReloadStatus, load_local_config};

    const INTERVAL: Duration = Duration::from_millis(20);
    const WAIT: Duration = Duration::from_secs(10);

    fn config(ip: &str) -> String {
        format!("workloads:\n- uid: w1\n  name: w1\n  namespace: default\n  workloadIps: [\"{ip}\"]\n")
    }

    /// Replaces the file atomically, as ConfigMap updates and careful tools do.
    fn replace_file(dir: &tempfile::TempDir, path: &std::path::Path, text: &str) {
        let mut tmp = tempfile::NamedTempFile::new_in(dir.path()).unwrap();
        tmp.write_all(text.as_bytes()).unwrap();
        tmp.persist(path).unwrap();
    }

    async fn wait_for(
        rx: &mut tokio::sync::watch::Receiver<ReloadStatus>,
        what: &str,
        done: impl Fn(&ReloadStatus) -> bool,
    ) -> ReloadStatus {
        let waited = tokio::time::timeout(WAIT, rx.wait_for(|s| done(s))).await.map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(s)) => s,
            _ => panic!("timed out waiting for {what}; status: {:?}", *rx.borrow()),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn applies_good_change_and_rejects_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.yaml");
        replace_file(&dir, &path, &config("10.0.0.1"));
        let state = SharedState::new("");
        apply(&state, load_local_config(&path, "cluster.local").unwrap());
        assert_eq!(state.generation(), 1);

        let mut status = state.reload_status();
        let mut generations = state.subscribe();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(watch_local_config(
            path.clone(),
            state.clone(),
            "cluster.local".into(),
            INTERVAL,
            async move {
                let _ = stop_rx.await;
            },
        ));

        // The startup config is not applied a second time.
        tokio::time::sleep(INTERVAL * 5).await;
        assert_eq!(*status.borrow(), ReloadStatus::default());
        assert_eq!(state.generation(), 1);

        replace_file(&dir, &path, &config("10.0.0.2"));
        let s = wait_for(&mut status, "the good change", |s| s.applied == 1).await;
        assert_eq!((s.attempts, s.generation, s.last_error), (1, 2, None));
        assert!(generations.has_changed().unwrap(), "subscribers must be notified");
        assert_eq!(*generations.borrow_and_update(), 2);
        let st = state.read();
        assert!(st.workload_by_ip(ip("10.0.0.2")).is_some());
        assert!(st.workload_by_ip(ip("10.0.0.1")).is_none());

        replace_file(&dir, &path, &config("10.0.0.300"));
        let s = wait_for(&mut status, "the bad change", |s| s.rejected == 1).await;
        let err = s.last_error.expect("a rejected change records its error");
        assert!(
            err.contains("local.yaml") && err.contains("workloadIps[0]") && err.contains("10.0.0.300"),
            "error should name file, field and value: {err}"
        );
        // The bad bytes are reported once, and the previous config keeps serving.
        tokio::time::sleep(INTERVAL * 5).await;
        assert_eq!(status.borrow().attempts, 2);
        assert_eq!(state.generation(), 2);
        assert!(state.read().workload_by_ip(ip("10.0.0.2")).is_some());

        // Removing the file is reported, still keeping the config.
        std::fs::remove_file(&path).unwrap();
        let s = wait_for(&mut status, "the read error", |s| s.rejected == 2).await;
        assert!(s.last_error.unwrap().contains("cannot read local config"));
        assert!(state.read().workload_by_ip(ip("10.0.0.2")).is_some());

        replace_file(&dir, &path, &config("10.0.0.3"));
        let s = wait_for(&mut status, "recovery", |s| s.applied == 2).await;
        assert_eq!((s.generation, s.last_error), (3, None));
        assert!(state.read().workload_by_ip(ip("10.0.0.3")).is_some());

        stop_tx.send(()).unwrap();
        tokio::time::timeout(WAIT, task).await.expect("watcher must return once stopped").unwrap();
    }
}
