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

    #[test]
    #[should_panic(expected = "waiting until never")]
    fn fails_naming_what_never_happened() {
        eventually_blocking("never", Duration::from_millis(250), || false);
    }
}
