//! The one way tests wait for something that happens eventually: poll a condition every
//! 100 ms until it holds or a deadline passes, then fail naming what never happened. A test
//! that must show something did *not* happen first waits for a positive sign that the
//! system has moved past the point where it would have (an ACK, later traffic arriving
//! elsewhere), never for a fixed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(100);

/// Waits until `condition` returns true; panics after `timeout` naming `what`.
pub async fn eventually<F: Future<Output = bool>>(what: &str, timeout: Duration, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `attempt` returns `Ok(value)` and returns the value; panics after `timeout`
/// naming `what` and the last `Err` (what was seen instead: a status, a log, metrics).
pub async fn until_ok<T, F: Future<Output = Result<T, String>>>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting until {what}; last seen:\n{seen}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// [`eventually`] for code outside a runtime (namespaced tests driving processes).
pub fn eventually_blocking(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        eventually("the third poll", Duration::from_secs(5), || async { calls.fetch_add(1, Ordering::Relaxed) >= 2 })
            .await;
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn until_ok_returns_the_value() {
        let calls = AtomicU32::new(0);
        let got = until_ok("the second poll", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            if n >= 1 { Ok(n) } else { Err(format!("poll {n}")) }
        })
        .await;
        assert_eq!(got, 1);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting until never; last seen:\nstill 42")]
    async fn until_ok_fails_showing_what_was_seen() {
        until_ok("never", Duration::from_millis(250), || async { Err::<(), _>("still 42".to_string()) }).await;
    }

    #[test]
    #[should_panic(expected = "waiting until never")]
    fn fails_naming_what_never_happened() {
        eventually_blocking("never", Duration::from_millis(250), || false);
    }
}
