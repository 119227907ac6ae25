//! The control socket over real unix sockets, with a fake handler in place of capture: line
//! limits, timeouts, the connection cap and the socket directory's permissions.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::*;
use crate::drain::{self, DrainOutcome, DrainTrigger};

/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// Answers `pods` with an empty list and everything else with `ok`, counting requests.
#[derive(Default)]
struct FakeHandler {
    requests: AtomicUsize,
}

impl ControlHandler for FakeHandler {
    async fn answer(&self, _request: ControlRequest) -> ControlResponse {
        self.requests.fetch_add(1, Ordering::SeqCst);
        ControlResponse { ok: true, ..Default::default() }
    }
}

struct Daemon {
    path: PathBuf,
    handler: Arc<FakeHandler>,
    trigger: DrainTrigger,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn daemon() -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run").join("control.sock");
    let listener = bind(&path).expect("bind the control socket");
    let handler = Arc::new(FakeHandler::default());
    let (trigger, watch) = drain::new();
    let server = tokio::spawn(serve(listener, handler.clone(), watch));
    Daemon { path, handler, trigger, server, _dir: dir }
}

impl Daemon {
    async fn stop(self) {
        assert_eq!(self.trigger.drain(WAIT).await, DrainOutcome::Complete);
        tokio::time::timeout(WAIT, self.server).await.expect("control server stops on drain").unwrap();
    }

    async fn pods(&self) -> ControlResponse {
        tokio::time::timeout(WAIT, request(&self.path, &ControlRequest::Pods))
            .await
            .expect("control answer in time")
            .expect("control request")
    }
}

/// Reads everything the daemon sends until it closes (a reset after the data counts as a
/// close), bounded by `limit`.
async fn read_until_closed(read: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the daemon did not close the connection; it sent {:?}", String::from_utf8_lossy(&got));
    String::from_utf8(got).expect("utf-8 answer")
}

#[tokio::test]
async fn requests_are_answered_line_by_line() {
    let d = daemon().await;
    assert_eq!(d.pods().await, ControlResponse { ok: true, ..Default::default() });

    let stream = UnixStream::connect(&d.path).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(b"{\"op\":\"pods\"}\r\nnot json\n{\"op\":\"unenroll\",\"uid\":\"a\"}").await.unwrap();
    write.shutdown().await.unwrap();
    let mut lines = BufReader::new(read).lines();
    let mut answers = Vec::new();
    while let Some(line) = tokio::time::timeout(WAIT, lines.next_line()).await.expect("answers in time").unwrap() {
        answers.push(serde_json::from_str::<ControlResponse>(&line).expect("each answer is one JSON line"));
    }
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers[0].ok && answers[2].ok, "{answers:?}");
    assert!(answers[1].error.as_deref().is_some_and(|e| e.starts_with("bad request: ")), "{answers:?}");
    assert_eq!(d.handler.requests.load(Ordering::SeqCst), 3, "pods twice and the unterminated last line");
    d.stop().await;
}

/// 16 MiB without a newline: the daemon reads about the limit, answers an error and closes,
/// instead of buffering everything while it waits for the end of the line.
#[tokio::test]
async fn an_endless_line_is_cut_off_at_the_limit() {
    const SENT: usize = 16 * 1024 * 1024;
    let d = daemon().await;
    let stream = UnixStream::connect(&d.path).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0;
        while written < SENT {
            match write.write(&chunk).await {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        written
    });
    let answer = read_until_closed(&mut read, WAIT).await;
    let response: ControlResponse = serde_json::from_str(answer.trim_end()).expect("one JSON answer");
    assert_eq!(response.error.as_deref(), Some("control request line longer than 65536 bytes"), "{answer}");
    let written = tokio::time::timeout(WAIT, writer).await.expect("the writer is stopped by the close").unwrap();
    // The limit, one read, and what the socket buffers hold; far below what was offered.
    assert!(written < 2 * 1024 * 1024, "the daemon took {written} of {SENT} bytes");
    assert_eq!(d.handler.requests.load(Ordering::SeqCst), 0);
    assert!(d.pods().await.ok, "the daemon keeps serving");
    d.stop().await;
}

/// A client that starts a line and never finishes it is answered an error and closed.
#[tokio::test(start_paused = true)]
async fn an_unfinished_line_times_out() {
    let d = daemon().await;
    let stream = UnixStream::connect(&d.path).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(b"{\"op\":").await.unwrap();
    // Paused time: the wait advances the clock past the daemon's line timeout.
    let answer = read_until_closed(&mut read, 3 * LINE_TIMEOUT).await;
    let response: ControlResponse = serde_json::from_str(answer.trim_end()).expect("one JSON answer");
    assert_eq!(response.error, Some(format!("control request line not complete within {LINE_TIMEOUT:?}")));
    drop(write);
    d.stop().await;
}

/// With every slot held by idle clients, one more connection is answered an error at once;
/// the daemon serves again once the slots are free.
#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let d = daemon().await;
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(UnixStream::connect(&d.path).await.unwrap());
    }
    let mut extra = UnixStream::connect(&d.path).await.unwrap();
    extra.write_all(b"{\"op\":\"pods\"}\n").await.unwrap();
    let answer = read_until_closed(&mut extra, WAIT).await;
    let response: ControlResponse = serde_json::from_str(answer.trim_end()).expect("one JSON answer");
    assert_eq!(
        response.error,
        Some(format!("ztunnel is already serving {MAX_CONNECTIONS} control connections; try again"))
    );
    assert_eq!(d.handler.requests.load(Ordering::SeqCst), 0, "the refused request was not handled");

    drop(idle);
    let mut served = false;
    for _ in 0..100 {
        if d.pods().await.ok {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the daemon serves again once the idle clients are gone");
    d.stop().await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

/// Set by [`socket_directory_is_0700_under_umask_0`] for the child it runs.
const CHILD_DIR_ENV: &str = "ZTUNNEL_TEST_CONTROL_SOCKET_DIR";

/// The child half of [`socket_directory_is_0700_under_umask_0`]: runs in its own process
/// (the umask is per process) and does nothing unless that test started it.
#[tokio::test]
#[ignore = "run by socket_directory_is_0700_under_umask_0 in a child process"]
async fn bind_in_child_process() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else { return };
    let dir = PathBuf::from(dir);
    // Shows the parent that the umask really was 0 here: a plain file gets 0666.
    std::fs::write(dir.join("umask-probe"), b"").unwrap();
    bind(&dir.join("run/ztunnel/control.sock")).expect("bind under umask 0");
}

#[test]
fn socket_directory_is_0700_under_umask_0() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" \"$@\""])
        .arg(&exe)
        .args(["--exact", "pods::control::tests::bind_in_child_process", "--ignored", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run the test binary under umask 0");
    assert!(status.success(), "child bind failed: {status}");
    assert_eq!(mode(&dir.path().join("umask-probe")), 0o666, "the child ran with umask 0");
    for created in ["run", "run/ztunnel"] {
        assert_eq!(mode(&dir.path().join(created)), 0o700, "{created} created under umask 0");
    }
    assert_eq!(mode(&dir.path().join("run/ztunnel/control.sock")), 0o600, "the socket under umask 0");
}

#[tokio::test]
async fn a_directory_others_may_write_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = bind(&shared.join("control.sock")).expect_err("a world-writable directory must be refused");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("control socket directory {} is not safe: its mode 0777", shared.display())),
        "{text}"
    );
    assert_eq!(mode(&shared), 0o777, "an existing directory's mode is not changed");
    assert!(!shared.join("control.sock").exists());

    // Readable by others but writable only by its owner (like /run): used as it is.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _listener = bind(&shared.join("control.sock")).expect("an owner-only-writable directory is fine");
    assert_eq!(mode(&shared), 0o755);
    assert_eq!(mode(&shared.join("control.sock")), 0o600);
}

#[tokio::test]
async fn a_directory_of_another_user_is_refused() {
    if !crate::test_skip::require_root("a_directory_of_another_user_is_refused", "to give a directory to another user")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let error = bind(&theirs.join("control.sock")).expect_err("another user's directory must be refused");
    assert_eq!(
        error.to_string(),
        format!(
            "control socket directory {} is not safe: it belongs to uid 65534, not to root or to ztunnel's uid 0",
            theirs.display()
        )
    );
}

#[test]
fn enroll_requests_carry_addresses_and_an_older_clients_cgroup_is_ignored() {
    let request = parse_request(br#"{"op":"enroll","uid":"u","netns":"/n","ips":["10.0.0.7","fd00::7"]}"#)
        .unwrap_or_else(|e| panic!("an enroll request with addresses must parse: {e:?}"));
    let ControlRequest::Enroll { uid, netns, ips, cgroup } = request else { panic!("expected enroll: {request:?}") };
    assert_eq!((uid.as_str(), netns.as_path()), ("u", Path::new("/n")));
    assert_eq!(ips, ["10.0.0.7".parse::<std::net::IpAddr>().unwrap(), "fd00::7".parse().unwrap()]);
    assert_eq!(cgroup, None);
    let older = parse_request(br#"{"op":"enroll","uid":"u","netns":"/n","cgroup":"/sys/fs/cgroup/u"}"#)
        .unwrap_or_else(|e| panic!("an older client's request must still parse: {e:?}"));
    let ControlRequest::Enroll { ips, cgroup, .. } = older else { panic!("expected enroll") };
    assert!(ips.is_empty());
    assert_eq!(cgroup, Some(PathBuf::from("/sys/fs/cgroup/u")), "kept only to warn that it is ignored");
    let sent = serde_json::to_string(&ControlRequest::Enroll {
        uid: "u".into(),
        netns: "/n".into(),
        ips: Vec::new(),
        cgroup: None,
    })
    .unwrap();
    assert_eq!(sent, r#"{"op":"enroll","uid":"u","netns":"/n"}"#, "no cgroup and no empty addresses are sent");
    let bad = parse_request(br#"{"op":"enroll","uid":"u","netns":"/n","ips":["not-an-ip"]}"#)
        .expect_err("a bad address must be refused");
    assert!(bad.error.unwrap_or_default().contains("bad request"), "the answer says why");
}
