//! The process's file-descriptor budget: how running out of descriptors degrades service
//! instead of wedging it. It owns the open-file limit, the reserve kept from proxy traffic,
//! and what an accept loop does when accept fails for want of a descriptor. It knows nothing
//! of the listeners that use it.
//!
//! - **Limit.** At start the soft `RLIMIT_NOFILE` is raised to the hard limit
//!   ([`raise_open_file_limit`]): a dense node's proxy holds two or more descriptors per
//!   connection, and the usual soft default of 1024 is far too low for that.
//! - **Reserve.** The kernel always hands out the lowest free descriptor number, so a new
//!   descriptor numbered `n` means every number below `n` was taken. Proxy traffic (accepted
//!   clients and the dials made for them) gives up any descriptor that lands within the top
//!   [`reserve_for`] numbers below the soft limit ([`check_reserve`]): the client is reset, the
//!   dial fails. Proxy traffic thus never holds a descriptor of the reserve, which stays free
//!   for the readiness, metrics and admin servers, istiod, and capture, so health checks keep
//!   answering while the proxy refuses new connections. The check costs one `getrlimit` per
//!   descriptor; nothing is counted or scanned.
//! - **Spare.** When accept itself fails with `EMFILE` or `ENFILE` (the reserve is used up
//!   too, or the whole system is out), the waiting client would sit in the listen backlog
//!   until it gives up. The process keeps one spare descriptor open for that case: the
//!   failing loop closes the spare, accepts the waiting client into the freed number, closes
//!   it at once (the client sees its connection end) and opens the spare again
//!   ([`after_accept_error`]). When even that fails the loop pauses [`ACCEPT_BACKOFF`] before
//!   the next accept, so it never spins.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::net::TcpStream;
use tracing::{debug, warn};

/// Most descriptors kept from proxy traffic.
const RESERVE_MAX: u64 = 64;
/// Pause of an accept loop after an accept error it could not shed.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning about refused connections per this interval (counts are summed).
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Where the kernel caps an unlimited hard limit.
const NR_OPEN: &str = "/proc/sys/fs/nr_open";

/// Why the open-file limit could not be raised.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("raising the open-file limit (RLIMIT_NOFILE) from {soft} to {target}: {source}")]
    Raise {
        soft: u64,
        target: u64,
        #[source]
        source: io::Error,
    },
    #[error("descriptor {fd} is within the {reserve} kept below the open-file limit {limit} for health and control")]
    InReserve { fd: u64, reserve: u64, limit: u64 },
}

/// The soft open-file limit before and after [`raise_open_file_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (an unlimited hard limit is capped at
/// the kernel's `fs.nr_open`). Never lowers it.
pub fn raise_open_file_limit() -> Result<OpenFileLimit, DescriptorError> {
    let limits = getrlimit(Resource::Nofile);
    let nr_open = || std::fs::read_to_string(NR_OPEN).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let hard = match limits.maximum {
        Some(hard) => hard,
        None => nr_open().unwrap_or(1 << 20),
    };
    let soft = limits.current.unwrap_or(hard);
    if soft >= hard {
        return Ok(OpenFileLimit { before: soft, now: soft, hard });
    }
    setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: limits.maximum })
        .map_err(|e| DescriptorError::Raise { soft, target: hard, source: e.into() })?;
    Ok(OpenFileLimit { before: soft, now: hard, hard })
}

/// How many descriptors below a soft limit of `limit` proxy traffic leaves alone.
pub(crate) fn reserve_for(limit: u64) -> u64 {
    (limit / 4).min(RESERVE_MAX)
}

/// Whether descriptor number `fd` is within the reserve below a soft limit of `limit`.
fn reserved(fd: u64, limit: u64) -> bool {
    fd >= limit.saturating_sub(reserve_for(limit))
}

/// Fails if `fd`, just allocated for proxy traffic, is one of the reserved descriptors (so the
/// process has fewer than the reserve left): proxy traffic must then give it up.
pub(crate) fn check_reserve(fd: &impl AsFd) -> Result<(), DescriptorError> {
    let Some(limit) = getrlimit(Resource::Nofile).current else { return Ok(()) };
    let number = u64::try_from(fd.as_fd().as_raw_fd()).unwrap_or(0);
    if reserved(number, limit) {
        return Err(DescriptorError::InReserve { fd: number, reserve: reserve_for(limit), limit });
    }
    Ok(())
}

/// Resets an accepted client that cannot be served (no graceful close: nothing was read).
pub(crate) fn refuse(stream: TcpStream, what: &'static str, why: &DescriptorError) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
    note_refusal(what, why);
}

static SPARE: Mutex<Option<File>> = Mutex::new(None);

/// Opens the spare descriptor if it is not held (called when an accept loop starts, and
/// after each use).
pub(crate) fn reserve_spare() {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    if spare.is_none() {
        *spare = File::open("/dev/null").ok();
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Handles a failed accept: when the process is out of descriptors, sheds one waiting client
/// through the spare descriptor (it is accepted and closed at once); otherwise, or when that
/// does not work, pauses [`ACCEPT_BACKOFF`]. `accept` is the listener's accept.
pub(crate) async fn after_accept_error<T, F, Fut>(what: &'static str, error: &io::Error, accept: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    if !out_of_descriptors(error) {
        warn!(listener = what, %error, "accept failed");
        tokio::time::sleep(ACCEPT_BACKOFF).await;
        return;
    }
    let released = SPARE.lock().unwrap_or_else(|e| e.into_inner()).take().is_some();
    // Polled once: the listener is known to have a client waiting.
    let shed = released.then(|| accept().now_or_never()).flatten();
    // The client's descriptor is closed first, so the spare can take its number back.
    let pause = match shed {
        Some(Ok(client)) => {
            drop(client);
            note_refusal(what, error);
            false
        }
        // Nothing was waiting after all: the next accept waits for a client.
        None if released => false,
        _ => {
            note_refusal(what, error);
            true
        }
    };
    reserve_spare();
    if pause {
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// Counts a refused connection; warns at most once per [`WARN_INTERVAL`].
fn note_refusal(what: &'static str, why: &dyn std::fmt::Display) {
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static LAST_WARNING: Mutex<Option<Instant>> = Mutex::new(None);
    let refused = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    let mut last = LAST_WARNING.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_some_and(|at| at.elapsed() < WARN_INTERVAL) {
        debug!(listener = what, reason = %why, "connection refused: out of descriptors");
        return;
    }
    *last = Some(Instant::now());
    REFUSED.store(0, Ordering::Relaxed);
    warn!(listener = what, reason = %why, refused, "refusing connections: out of file descriptors");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_the_top_of_the_descriptor_table() {
        let cases = [
            // (limit, reserve, last number proxy traffic may keep)
            (512, 64, 447),
            (1024, 64, 959),
            (1_048_576, 64, 1_048_511),
            (128, 32, 95),
            (8, 2, 5),
        ];
        for (limit, reserve, last_usable) in cases {
            assert_eq!(reserve_for(limit), reserve, "reserve at {limit}");
            assert!(!reserved(last_usable, limit), "{last_usable} is usable at {limit}");
            assert!(reserved(last_usable + 1, limit), "{} is reserved at {limit}", last_usable + 1);
            assert!(reserved(limit + 10, limit), "past the limit is reserved");
        }
    }

    #[test]
    fn raising_twice_is_a_no_op_the_second_time() {
        // Whatever the test process's limits, a second raise finds soft == hard.
        let first = raise_open_file_limit().expect("raising to the hard limit is always allowed");
        assert_eq!(first.now, first.hard);
        let second = raise_open_file_limit().expect("second raise");
        assert_eq!(second, OpenFileLimit { before: first.now, now: first.now, hard: first.hard });
    }

    /// Set in the child process of [`accept_sheds_a_waiting_client_when_out_of_descriptors`].
    const SHED_CHILD: &str = "ZTUNNEL_TEST_SHED_CHILD";

    /// Runs the test below again in a child process with 64 descriptors (so exhausting them
    /// does not disturb the tests running in parallel here) and checks that it passed.
    #[test]
    fn accept_sheds_a_waiting_client_when_out_of_descriptors() {
        if std::env::var_os(SHED_CHILD).is_some() {
            return shed_in_child();
        }
        let exe = std::env::current_exe().expect("test executable");
        let name = "descriptors::tests::accept_sheds_a_waiting_client_when_out_of_descriptors";
        let output = std::process::Command::new("prlimit")
            .arg("--nofile=64:64")
            .arg("--")
            .arg(exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(SHED_CHILD, "1")
            .output()
            .expect("run prlimit (util-linux)");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && text.contains("1 passed"), "child test failed:\n{text}");
    }

    fn shed_in_child() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // The client's socket exists before the table fills; connecting needs no descriptor.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            reserve_spare();
            let mut filler = Vec::new();
            for _ in 0..64 {
                match File::open("/dev/null") {
                    Ok(f) => filler.push(f),
                    Err(e) => {
                        assert!(out_of_descriptors(&e), "filling the table: {e}");
                        break;
                    }
                }
            }
            let mut client = socket.connect(addr).await.expect("the kernel completes the handshake");
            let error = listener.accept().await.map(drop).expect_err("no descriptor left to accept into");
            assert!(out_of_descriptors(&error), "accept failed with {error}");
            let started = Instant::now();
            after_accept_error("test", &error, || listener.accept()).await;
            assert!(started.elapsed() < ACCEPT_BACKOFF, "a client was shed, so there was no pause");
            let mut buf = [0u8; 1];
            let read =
                tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut client, &mut buf));
            match read.await {
                Ok(Ok(0)) | Ok(Err(_)) => {}
                other => panic!("the waiting client must be closed, got {other:?}"),
            }
            assert!(SPARE.lock().unwrap().is_some(), "the spare is held again");
            // With nothing waiting and no spare to spend, the loop pauses instead of spinning.
            let spare = SPARE.lock().unwrap().take();
            drop(filler.pop());
            let _refill = File::open("/dev/null").unwrap();
            drop(spare);
            let _refill_spare = File::open("/dev/null").unwrap();
            let started = Instant::now();
            let still_out = File::open("/dev/null").expect_err("the table is full again");
            after_accept_error("test", &still_out, || std::future::ready(Ok::<(), io::Error>(()))).await;
            assert!(started.elapsed() >= ACCEPT_BACKOFF, "without a spare the loop pauses");
        });
    }

    #[test]
    fn low_descriptors_are_not_in_the_reserve() {
        let file = File::open("/dev/null").unwrap();
        assert!(check_reserve(&file).is_ok(), "a fresh test process is far from its limit");
    }
}
