//! The local config watcher against real files: valid changes applied once settled, invalid
//! ones rejected while the previous config keeps serving, and files that would hang or stall
//! the reader refused without delaying anything else.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::watch::watch_local_config;
use super::{ReloadStatus, SharedState, apply, load_local_config};

const INTERVAL: Duration = Duration::from_millis(20);
const SETTLE: Duration = Duration::from_millis(60);
const WAIT: Duration = Duration::from_secs(10);

fn config(ip: &str) -> String {
    format!("workloads:\n- uid: w1\n  name: w1\n  namespace: default\n  workloadIps: [\"{ip}\"]\n")
}

fn two_workloads() -> String {
    "workloads:\n- uid: w1\n  name: w1\n  namespace: default\n  workloadIps: [\"10.0.0.1\"]\n\
     - uid: w2\n  name: w2\n  namespace: default\n  workloadIps: [\"10.0.0.2\"]\n"
        .to_string()
}

/// Replaces the file atomically, as ConfigMap updates and careful tools do.
fn replace_file(dir: &tempfile::TempDir, path: &Path, text: &str) {
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

/// A state loaded from `text` written to a new `local.yaml`.
fn loaded(text: &str) -> (tempfile::TempDir, PathBuf, SharedState) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.yaml");
    replace_file(&dir, &path, text);
    let state = SharedState::new("");
    apply(&state, load_local_config(&path, "cluster.local").unwrap());
    (dir, path, state)
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn start(path: &Path, state: &SharedState, settle: Duration) -> Running {
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(watch_local_config(
        path.to_path_buf(),
        state.clone(),
        "cluster.local".into(),
        INTERVAL,
        settle,
        async move {
            let _ = stop_rx.await;
        },
    ));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task).await.expect("watcher must return once stopped").unwrap();
    }
}

#[tokio::test]
async fn applies_good_change_and_rejects_bad_one() {
    let (dir, path, state) = loaded(&config("10.0.0.1"));
    assert_eq!(state.generation(), 1);

    let mut status = state.reload_status();
    let mut generations = state.subscribe();
    let watcher = start(&path, &state, SETTLE);

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

    watcher.stop().await;
}

/// A file written in place can be read half-way; a truncated file may still be valid (here it
/// drops the second workload). It must not be applied while it keeps changing.
#[tokio::test]
async fn a_change_caught_half_way_is_not_applied_until_it_settles() {
    let (_dir, path, state) = loaded(&config("10.0.0.1"));
    let mut status = state.reload_status();
    let mut generations = state.subscribe();
    let settle = Duration::from_millis(400);
    let watcher = start(&path, &state, settle);

    let full = two_workloads();
    // The first workload complete, the second not yet written: valid YAML, one workload.
    let half = &full[..full.find("- uid: w2").unwrap()];
    std::fs::write(&path, half).unwrap();
    let first_write = tokio::time::Instant::now();
    // Several polls see the half-written file, for less than the settle time.
    tokio::time::sleep(Duration::from_millis(150)).await;
    std::fs::write(&path, &full).unwrap();

    let s = wait_for(&mut status, "the complete file", |s| s.applied >= 1).await;
    assert!(first_write.elapsed() >= settle, "applied after {:?}, before settling", first_write.elapsed());
    assert_eq!(s.applied, 1, "only the complete file may be applied: {s:?}");
    assert_eq!(*generations.borrow_and_update(), 2, "exactly one change was applied");
    let st = state.read();
    assert!(st.workload_by_ip(ip("10.0.0.1")).is_some() && st.workload_by_ip(ip("10.0.0.2")).is_some());

    // A file that stays as written is applied once it has settled.
    std::fs::write(&path, config("10.0.0.9")).unwrap();
    let written = tokio::time::Instant::now();
    wait_for(&mut status, "the settled change", |s| s.applied == 2).await;
    assert!(written.elapsed() >= settle, "applied after {:?}, before settling", written.elapsed());
    assert!(state.read().workload_by_ip(ip("10.0.0.9")).is_some());
    watcher.stop().await;
}

/// A FIFO with no writer blocks a plain open forever; the watcher must refuse it, keep the
/// config, and still stop when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_the_path_is_refused_and_the_watcher_still_stops() {
    let (_dir, path, state) = loaded(&config("10.0.0.1"));
    let mut status = state.reload_status();
    let watcher = start(&path, &state, SETTLE);
    // Made beside it and renamed over it, so no poll sees the path missing.
    let fifo = path.with_extension("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    std::fs::rename(&fifo, &path).unwrap();

    let s = wait_for(&mut status, "the FIFO to be refused", |s| s.rejected == 1).await;
    let err = s.last_error.unwrap();
    assert!(err.contains("local.yaml") && err.contains("FIFO") && err.contains("not a regular file"), "{err}");
    assert!(state.read().workload_by_ip(ip("10.0.0.1")).is_some(), "the previous config keeps serving");
    // Polls go on (and do not pile up blocked threads); stopping is prompt.
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(status.borrow().attempts, 1, "the same refusal is reported once");
    watcher.stop().await;
}

/// 200 KB of `[`: refused at once with a clear error, the previous config keeps serving.
#[tokio::test]
async fn deeply_nested_brackets_are_refused_quickly() {
    let (dir, path, state) = loaded(&config("10.0.0.1"));
    let mut status = state.reload_status();
    let watcher = start(&path, &state, SETTLE);
    let started = tokio::time::Instant::now();
    replace_file(&dir, &path, &"[".repeat(200 * 1024));
    let s = wait_for(&mut status, "the nested file to be refused", |s| s.rejected == 1).await;
    // Settling plus a few polls; the YAML parser would take about a minute.
    assert!(started.elapsed() < Duration::from_secs(2), "refused after {:?}", started.elapsed());
    let err = s.last_error.unwrap();
    assert!(
        err.contains("local.yaml") && err.contains("nest deeper than 32") && err.contains("line 1 column 33"),
        "error should name the file, the limit and where: {err}"
    );
    assert!(state.read().workload_by_ip(ip("10.0.0.1")).is_some(), "the previous config keeps serving");
    watcher.stop().await;
}

/// Parsing and building a large config takes a while; it must not hold the runtime's worker.
/// On a single-threaded runtime, a ticking task keeps ticking while a large change is applied.
#[tokio::test(flavor = "current_thread")]
async fn a_large_change_is_parsed_off_the_runtime_worker() {
    let (dir, path, state) = loaded(&config("10.0.0.1"));
    let big = large_config(WORKLOADS);
    let parse_cost = {
        let started = std::time::Instant::now();
        super::parse_local_config(big.as_bytes(), "big.yaml", "cluster.local").expect("the large config is valid");
        started.elapsed()
    };
    let mut status = state.reload_status();
    let watcher = start(&path, &state, SETTLE);

    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    let ticker = tokio::spawn(async move {
        let mut longest = Duration::ZERO;
        loop {
            let before = std::time::Instant::now();
            let done = tokio::select! {
                _ = &mut done_rx => true,
                _ = tokio::time::sleep(Duration::from_millis(5)) => false,
            };
            // Also the last round: a blocked worker delays the wake-up that ends it.
            longest = longest.max(before.elapsed());
            if done {
                return longest;
            }
        }
    });
    replace_file(&dir, &path, &big);
    wait_for(&mut status, "the large change", |s| s.applied == 1).await;
    done_tx.send(()).unwrap();
    let longest = ticker.await.unwrap();
    println!("parsing the large config takes {parse_cost:?}; the longest 5 ms sleep meanwhile took {longest:?}");
    assert!(
        longest < parse_cost / 2,
        "a 5 ms sleep took up to {longest:?} while a config that takes {parse_cost:?} to parse was applied"
    );
    assert!(state.read().workload_by_ip(ip(&workload_ip(WORKLOADS - 1))).is_some());
    watcher.stop().await;
}

const WORKLOADS: usize = 20_000;

fn workload_ip(i: usize) -> String {
    format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)
}

fn large_config(workloads: usize) -> String {
    let mut text = String::from("workloads:\n");
    for i in 0..workloads {
        text.push_str(&format!(
            "- uid: w{i}\n  name: w{i}\n  namespace: ns{}\n  serviceAccount: sa{i}\n  workloadIps: [\"{}\"]\n",
            i % 50,
            workload_ip(i)
        ));
    }
    text
}
