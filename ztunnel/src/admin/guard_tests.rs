//! The admin endpoint under abuse: many concurrent config dumps (built off the async
//! runtime, bounded in number, a turn held until the body is sent) and changes asked by a
//! user who may not make them (refused 403 while the process keeps serving).

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::admin_server::{DUMP_CONCURRENCY, DumpLimits};
use super::tests::{WAIT, admin_serving, fetch, get, stop};

/// Bound on how long a probed dump waits for its gate (a blocked runtime never opens it).
const GATE_WAIT: Duration = Duration::from_secs(5);

/// Holds config dumps until opened, and records how they ran.
#[derive(Default)]
struct DumpProbe {
    open: Mutex<bool>,
    opened: Condvar,
    active: AtomicUsize,
    most_active: AtomicUsize,
    calls: AtomicUsize,
    /// Set if a dump waited [`GATE_WAIT`] without the gate opening.
    gave_up: AtomicBool,
    /// Set if a dump ran on the thread of the (current-thread) test runtime.
    on_runtime_thread: AtomicBool,
}

impl DumpProbe {
    fn dump(&self, runtime_thread: ThreadId) -> serde_json::Value {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if std::thread::current().id() == runtime_thread {
            self.on_runtime_thread.store(true, Ordering::SeqCst);
        }
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_active.fetch_max(now, Ordering::SeqCst);
        let open = self.open.lock().unwrap();
        let (open, waited) = self.opened.wait_timeout_while(open, GATE_WAIT, |open| !*open).unwrap();
        drop(open);
        if waited.timed_out() {
            self.gave_up.store(true, Ordering::SeqCst);
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
        serde_json::json!({"workloads": []})
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Waits (bounded) until `n` dumps are being built at once.
    async fn wait_active(&self, n: usize) {
        for _ in 0..500 {
            if self.active.load(Ordering::SeqCst) == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} dumps in progress at once, have {} (calls so far {})",
            self.active.load(Ordering::SeqCst),
            self.calls.load(Ordering::SeqCst)
        );
    }
}

fn probed(probe: &Arc<DumpProbe>) -> Arc<dyn Fn() -> serde_json::Value + Send + Sync> {
    let (probe, runtime_thread) = (probe.clone(), std::thread::current().id());
    Arc::new(move || probe.dump(runtime_thread))
}

/// Eight concurrent dumps that take long to build: the async runtime (one thread here) keeps
/// answering other requests, and at most [`DUMP_CONCURRENCY`] dumps are built at once.
#[tokio::test]
async fn slow_config_dumps_run_off_the_runtime_and_two_at_a_time() {
    let probe = Arc::new(DumpProbe::default());
    let a = admin_serving(probed(&probe), DumpLimits::default()).await;
    let addr = a.addr;
    let dumps: Vec<_> = (0..8).map(|_| tokio::spawn(async move { get(addr, "/config_dump").await })).collect();
    probe.wait_active(DUMP_CONCURRENCY).await;

    let logging = get(a.addr, "/logging").await;
    assert_eq!((logging.status, logging.body.as_str()), (200, "current log level is info\n"));
    assert_eq!(probe.active.load(Ordering::SeqCst), DUMP_CONCURRENCY, "answered while the dumps were still held");

    probe.open();
    for dump in dumps {
        let reply = dump.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&reply.body).unwrap(),
            serde_json::json!({"workloads": []})
        );
    }
    assert_eq!(probe.calls.load(Ordering::SeqCst), 8);
    assert_eq!(probe.most_active.load(Ordering::SeqCst), DUMP_CONCURRENCY, "dumps built at once");
    assert!(!probe.gave_up.load(Ordering::SeqCst), "a dump blocked the runtime until it gave up");
    assert!(!probe.on_runtime_thread.load(Ordering::SeqCst), "a dump was built on the async runtime's thread");
    stop(a.trigger, a.server).await;
}

#[tokio::test]
async fn a_dump_that_cannot_start_in_time_is_answered_503() {
    let probe = Arc::new(DumpProbe::default());
    let limits = DumpLimits { concurrency: 1, queue_wait: Duration::from_millis(200) };
    let a = admin_serving(probed(&probe), limits).await;
    let addr = a.addr;
    let first = tokio::spawn(async move { get(addr, "/config_dump").await });
    probe.wait_active(1).await;
    let busy = get(a.addr, "/config_dump").await;
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(busy.headers["retry-after"], "1");
    assert_eq!(busy.body, "config dump: 1 dumps are already in progress; try again\n");
    probe.open();
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(get(a.addr, "/config_dump").await.status, 200, "the turn is free again");
    stop(a.trigger, a.server).await;
}

/// A dump's turn lasts until its body is sent: a client that does not read a large dump
/// cannot make the server build more of them meanwhile.
#[tokio::test]
async fn a_dump_being_sent_still_holds_its_turn() {
    const BIG: usize = 16 * 1024 * 1024;
    let limits = DumpLimits { concurrency: 1, queue_wait: Duration::from_millis(200) };
    let a = admin_serving(Arc::new(|| serde_json::json!({"blob": "x".repeat(BIG)})), limits).await;

    let mut slow = TcpStream::connect(a.addr).await.unwrap();
    slow.write_all(b"GET /config_dump HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(WAIT, slow.read(&mut head)).await.expect("response starts").unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..n]));

    let busy = get(a.addr, "/config_dump").await;
    assert_eq!(busy.status, 503, "a second dump while the first is unsent");

    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, slow.read_to_end(&mut rest)).await.expect("body in time").unwrap();
    assert!(n + rest.len() > BIG, "the whole dump arrived");
    let mut again = get(a.addr, "/config_dump").await;
    for _ in 0..50 {
        if again.status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        again = get(a.addr, "/config_dump").await;
    }
    assert_eq!(again.status, 200, "the turn ends once the body is sent");
    stop(a.trigger, a.server).await;
}

/// Runs `curl` (as `uid` through `setpriv` unless root) and returns the status code and body.
async fn curl_as(uid: u32, method: &str, url: &str) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}")).arg("--clear-groups");
    cmd.args(["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output()).await.expect("curl ends in time").expect("run setpriv curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.parse().unwrap_or_else(|_| panic!("curl as uid {uid}: {text:?} {:?}", out.stderr));
    (code, body.to_string())
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Another local user (uid 65534) may read but not shut ztunnel down or change its log
/// filter; root may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_another_user_are_refused_and_roots_are_honoured() {
    let test = "changes_from_another_user_are_refused_and_roots_are_honoured";
    if !crate::test_skip::require_root(test, "to run a client as another user") {
        return;
    }
    if !have("setpriv") || !have("curl") {
        crate::test_skip::skip(test, "needs setpriv and curl");
        return;
    }
    let a = admin_serving(Arc::new(|| serde_json::json!({"workloads": []})), DumpLimits::default()).await;
    let url = |path: &str| format!("http://{}{path}", a.addr);

    let (code, body) = curl_as(65534, "POST", &url("/quitquitquit")).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("runs as uid 65534, not as root"), "{body}");
    assert_eq!(a.shutdowns.load(Ordering::SeqCst), 0, "no shutdown for uid 65534");
    let (code, body) = curl_as(65534, "POST", &url("/logging?level=trace")).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(a.log.current(), "info", "the filter is unchanged");

    // Reads stay open, and the server keeps serving.
    assert_eq!(curl_as(65534, "GET", &url("/logging")).await, (200, "current log level is info\n".into()));
    assert_eq!(curl_as(65534, "GET", &url("/config_dump")).await.0, 200);

    assert_eq!(curl_as(0, "POST", &url("/logging?level=debug")).await.0, 200);
    assert_eq!(a.log.current(), "debug");
    let quit = fetch(a.addr, "POST", "/quitquitquit", &[]).await;
    assert_eq!((quit.status, quit.body.as_str()), (200, "shutdown now\n"));
    assert_eq!(a.shutdowns.load(Ordering::SeqCst), 1, "root's shutdown is honoured");
    stop(a.trigger, a.server).await;
}
