//! Shutdown coordination as guard objects.
//!
//! [`new`] returns one [`DrainTrigger`] and one [`DrainWatch`]. Every task that must finish its
//! work before the process exits holds a clone of the watch; it learns that shutdown started
//! through [`DrainWatch::signaled`] and releases the drain by dropping its clone. The trigger
//! signals every watch and then waits, up to a deadline, for all clones to be dropped.
//!
//! This module owns only the signalling; it must not know which servers or proxies take part,
//! and it never cancels work itself: whatever is still running at the deadline is the
//! caller's to abandon (typically by exiting the process).

use std::time::Duration;

use tokio::sync::watch;

/// How holders of a [`DrainWatch`] should stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainMode {
    /// Stop accepting new work, let work in flight finish, then drop the watch.
    Graceful,
    /// Stop now; work in flight may be cut off. Also reported when the trigger was dropped
    /// without draining, since nobody is left waiting for a graceful finish.
    Immediate,
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DrainOutcome {
    /// Every watch was dropped before the deadline.
    Complete,
    /// The deadline passed while this many watches were still held.
    DeadlineExceeded { outstanding: usize },
}

/// Starts a drain; see [`DrainTrigger::drain`]. Not `Clone`: there is one owner of shutdown.
#[derive(Debug)]
pub(crate) struct DrainTrigger {
    signal: watch::Sender<Option<DrainMode>>,
}

/// Held by every task that takes part in shutdown; cheap to clone. A drain does not complete
/// while any clone is alive, so a task must drop its watch once it has finished its work.
#[derive(Clone, Debug)]
pub struct DrainWatch {
    signal: watch::Receiver<Option<DrainMode>>,
}

/// A connected trigger and watch.
pub(crate) fn new() -> (DrainTrigger, DrainWatch) {
    let (signal, rx) = watch::channel(None);
    (DrainTrigger { signal }, DrainWatch { signal: rx })
}

impl DrainTrigger {
    /// Signals a graceful drain, then waits until every watch is dropped or `deadline` passes.
    pub(crate) async fn drain(self, deadline: Duration) -> DrainOutcome {
        self.drain_with(DrainMode::Graceful, deadline).await
    }

    /// Signals a drain of the given mode, then waits until every watch is dropped or
    /// `deadline` passes (measured with `tokio::time`).
    pub(crate) async fn drain_with(self, mode: DrainMode, deadline: Duration) -> DrainOutcome {
        self.signal.send_replace(Some(mode));
        match tokio::time::timeout(deadline, self.signal.closed()).await {
            Ok(()) => DrainOutcome::Complete,
            Err(_elapsed) => DrainOutcome::DeadlineExceeded { outstanding: self.signal.receiver_count() },
        }
    }

    #[cfg(test)]
    /// Number of watches currently held.
    pub(crate) fn watchers(&self) -> usize {
        self.signal.receiver_count()
    }
}

impl DrainWatch {
    /// Resolves once a drain has started, with its mode. Resolves at once if it already has,
    /// and with [`DrainMode::Immediate`] if the trigger was dropped without draining.
    pub async fn signaled(&self) -> DrainMode {
        // A private receiver lets `&self` wait; it is dropped when this future completes.
        let mut rx = self.signal.clone();
        let mode = match rx.wait_for(Option::is_some).await {
            Ok(mode) => *mode,
            Err(_trigger_dropped) => None,
        };
        mode.unwrap_or(DrainMode::Immediate)
    }

    /// The mode of a drain already started, without waiting.
    pub fn draining(&self) -> Option<DrainMode> {
        *self.signal.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_outstanding_watch() {
        let (trigger, watch) = new();
        let held = watch.clone();
        drop(watch);
        let worker = tokio::spawn(async move {
            let mode = held.signaled().await;
            // Simulated in-flight work that finishes well before the deadline.
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(held);
            mode
        });
        let start = tokio::time::Instant::now();
        let outcome = trigger.drain(Duration::from_secs(10)).await;
        assert_eq!(outcome, DrainOutcome::Complete, "drain should complete");
        assert_eq!(start.elapsed(), Duration::from_secs(3), "drain should end exactly when the last watch is dropped");
        assert_eq!(worker.await.unwrap(), DrainMode::Graceful);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_at_deadline() {
        let (trigger, watch) = new();
        let _stuck = watch.clone();
        let start = tokio::time::Instant::now();
        let outcome = trigger.drain(Duration::from_secs(5)).await;
        assert_eq!(outcome, DrainOutcome::DeadlineExceeded { outstanding: 2 }, "two watches were never dropped");
        assert_eq!(start.elapsed(), Duration::from_secs(5), "waited past the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_with_no_watches_completes_at_once() {
        let (trigger, watch) = new();
        drop(watch);
        assert_eq!(trigger.watchers(), 0);
        let start = tokio::time::Instant::now();
        assert_eq!(trigger.drain(Duration::from_secs(5)).await, DrainOutcome::Complete);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn signaled_reports_mode_and_stays_signaled() {
        let (trigger, watch) = new();
        assert_eq!(watch.draining(), None, "not draining before the trigger fires");
        let observer = watch.clone();
        let drain = tokio::spawn(trigger.drain_with(DrainMode::Immediate, Duration::from_secs(30)));
        assert_eq!(observer.signaled().await, DrainMode::Immediate);
        // A second wait on the same watch resolves immediately.
        assert_eq!(observer.signaled().await, DrainMode::Immediate);
        assert_eq!(observer.draining(), Some(DrainMode::Immediate));
        drop(observer);
        drop(watch);
        assert_eq!(drain.await.unwrap(), DrainOutcome::Complete);
    }

    #[tokio::test]
    async fn dropped_trigger_signals_immediate() {
        let (trigger, watch) = new();
        drop(trigger);
        assert_eq!(watch.signaled().await, DrainMode::Immediate);
    }

    #[tokio::test(start_paused = true)]
    async fn signaled_is_pending_until_drain() {
        let (_trigger, watch) = new();
        let waited = tokio::time::timeout(Duration::from_secs(60), watch.signaled()).await;
        assert!(waited.is_err(), "signaled resolved without a drain: {waited:?}");
    }
}
