//! Keeping enrolled pods served: re-adoption after a restart, and the loop that brings held
//! pods' listeners up (with backoff) and notices served pods that lost a listener.
//!
//! A held pod is captured and refusing (`POD_READY` clear). It is served once the config
//! source has synced and state has its workload. While a held pod's workload is known but its
//! listeners are missing, it holds a readiness guard, so `/healthz/ready` answers 503.
//!
//! Re-adoption identifies a pod's namespace by the cookie in its record, not by its path. A
//! pod is released as gone when its namespace is destroyed: the kernel then detaches the pod's
//! `sk_lookup` link, which is how ztunnel sees it whatever the path. A recorded path that holds
//! no namespace, or another one, proves nothing (paths move: a bind mount redone, a
//! `/proc/PID` path whose process changed): the pod stays captured and held, without a
//! namespace worker, until a source enrolls it again with a namespace whose cookie matches
//! (then it is served) or unenrolls it. While ztunnel runs, a served pod whose namespace path
//! disappears is released (its own sockets keep the namespace alive, so that is how a deleted
//! pod shows).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::records::{EnrollRecord, pod_key};
use super::{EnrolledPod, Pods, PodsError, Serving, io_err};
use crate::capture::netns::NetnsWorker;
use crate::capture::sockets::current_netns_cookie;
use crate::drain::DrainWatch;
use crate::readiness::ReadyGuard;
use crate::types::WorkloadUid;

/// First retry delay after a pod's listeners failed to start; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// The keeper looks at every pod at least this often (lost listeners, namespaces gone).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// When to try a held pod's listeners again.
#[derive(Debug)]
pub(super) struct Backoff {
    due: Instant,
    next_delay: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { due: Instant::now(), next_delay: FIRST_RETRY }
    }

    fn is_due(&self, now: Instant) -> bool {
        now >= self.due
    }

    /// Records a failure at `now`; returns the delay until the next try.
    fn failed(&mut self, now: Instant) -> Duration {
        let delay = self.next_delay;
        self.due = now + delay;
        self.next_delay = (delay * 2).min(MAX_RETRY);
        delay
    }
}

/// A held pod's retry state and readiness guard.
pub(super) struct Held {
    backoff: Backoff,
    /// Present while the pod's workload is known (or not yet synced) and it is not served.
    not_ready: Option<ReadyGuard>,
}

impl Pods {
    /// A new held state for the pod `uid`, holding readiness down.
    pub(super) fn held(&self, uid: &WorkloadUid) -> Held {
        Held { backoff: Backoff::new(), not_ready: Some(self.not_ready(uid)) }
    }

    fn not_ready(&self, uid: &WorkloadUid) -> ReadyGuard {
        self.ready.register(&format!("listeners of captured pod {uid}"))
    }

    /// After a restart, before any config has arrived: pods whose namespace is destroyed are
    /// released; every other recorded pod stays captured, refusing, and held for the keeper
    /// (without a worker when its path does not hold its namespace). Links without a record
    /// are removed.
    pub(super) async fn readopt(&self) {
        let mut pods = self.pods.lock().await;
        for mut record in self.records.load_all() {
            let uid = record.uid.clone();
            if self.loaded.pod_netns_alive(&pod_key(&uid)) == Some(false) {
                info!(uid = uid.as_str(), netns = %record.netns.display(), "releasing a captured pod whose namespace is gone");
                if let Err(e) = self.tear_down(&record) {
                    warn!(uid = uid.as_str(), error = %e, "cleaning up a pod that is gone");
                }
                continue;
            }
            let worker = self.worker_if_same_netns(&record).await;
            if worker.is_none() {
                warn!(
                    uid = uid.as_str(),
                    netns = %record.netns.display(),
                    "the recorded path does not hold the captured pod's namespace; its traffic is refused until a \
                     source enrolls it again or unenrolls it"
                );
            }
            if record.ips.is_empty() {
                // A record from before addresses were kept: the pinned entry has them.
                if let Some(ips) = self.loaded.pod_ips(record.netns_cookie) {
                    record.ips = ips;
                }
            }
            if let Err(e) = self.set_pod_ready(&record, false) {
                warn!(uid = uid.as_str(), error = %e, "cannot mark a re-adopted pod as refusing");
            }
            if worker.is_some()
                && !self.loaded.pod_has_link(&pod_key(&uid))
                && let Err(e) = self.reattach(&record)
            {
                warn!(uid = uid.as_str(), error = %e, "cannot attach capture to a re-adopted pod");
            }
            info!(uid = uid.as_str(), "captured pod kept refusing until its config is synced");
            pods.insert(
                uid.clone(),
                EnrolledPod {
                    record,
                    worker,
                    exclusions: None,
                    readopted: true,
                    serving: Serving::Held(self.held(&uid)),
                },
            );
        }
        let known: Vec<String> = pods.keys().map(|uid| pod_key(uid)).collect();
        for orphan in self.loaded.pinned_pods().into_iter().filter(|k| !known.contains(k)) {
            if let Err(e) = self.loaded.detach_pod(&orphan) {
                warn!(pod = orphan, error = %e, "cannot remove links of an unknown pod");
            }
        }
    }

    /// A worker inside the record's namespace path, if that path holds the recorded namespace
    /// (records without a cookie accept whatever it holds).
    async fn worker_if_same_netns(&self, record: &EnrollRecord) -> Option<Arc<NetnsWorker>> {
        let worker = Arc::new(NetnsWorker::start(&record.netns).ok()?);
        let cookie = worker.run(current_netns_cookie).await.ok()?.ok()?;
        (record.netns_cookie == 0 || cookie == record.netns_cookie).then_some(worker)
    }

    fn reattach(&self, record: &EnrollRecord) -> Result<(), PodsError> {
        let netns = std::fs::File::open(&record.netns).map_err(io_err("opening netns", &record.netns))?;
        self.loaded.attach_pod(&pod_key(&record.uid), &netns).map_err(|e| PodsError::Capture(e.into()))
    }

    /// Serves held pods once `synced` is true, retrying failures with backoff; re-holds a served
    /// pod that lost a listener; releases held pods that are gone. Runs until the drain.
    pub async fn keep_serving(self: Arc<Self>, mut synced: watch::Receiver<bool>, drain: DrainWatch) {
        let mut generations = self.inputs.state.subscribe();
        loop {
            let is_synced = *synced.borrow_and_update();
            let next = self.tend(is_synced, &drain).await;
            let wake_at = next.map_or(Instant::now() + CHECK_INTERVAL, |at| at.min(Instant::now() + CHECK_INTERVAL));
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { return },
                // A closed channel means the source is gone; its last value stays valid.
                Ok(()) = synced.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = drain.signaled() => return,
            }
        }
    }

    /// One pass over the pods; returns when the next retry is due, if any.
    async fn tend(&self, synced: bool, drain: &DrainWatch) -> Option<Instant> {
        let mut pods = self.pods.lock().await;
        let mut next: Option<Instant> = None;
        let mut gone = Vec::new();
        for (uid, pod) in pods.iter_mut() {
            let EnrolledPod { record, worker, serving, .. } = pod;
            if let Serving::Up(proxy) = serving {
                // Accept loops end on drain; only outside one is a stopped loop a lost listener.
                if drain.signaled().now_or_never().is_some() || !proxy.has_stopped() {
                    continue;
                }
                warn!(
                    uid = uid.as_str(),
                    "a listener of a captured pod stopped; refusing its traffic until new ones are up"
                );
                *serving = Serving::Held(self.held(uid));
                if let Err(e) = self.set_pod_ready(record, false) {
                    warn!(uid = uid.as_str(), error = %e, "cannot mark the pod as refusing");
                }
            }
            let Serving::Held(held) = serving else { continue };
            if worker.is_none() {
                // Waiting for its source; released only if its namespace is destroyed. Not a
                // listener ztunnel can bring up by itself, so it does not hold readiness once
                // the config has synced.
                if self.loaded.pod_netns_alive(&pod_key(uid)) == Some(false) {
                    gone.push(uid.clone());
                } else if synced && held.not_ready.take().is_some() {
                    warn!(
                        uid = uid.as_str(),
                        netns = %record.netns.display(),
                        "captured pod held until a source enrolls it again with its namespace; its traffic is refused"
                    );
                }
                continue;
            }
            if record.is_gone() {
                gone.push(uid.clone());
                continue;
            }
            let now = Instant::now();
            if !synced {
                continue;
            }
            if !held.backoff.is_due(now) {
                next = Some(next.map_or(held.backoff.due, |n| n.min(held.backoff.due)));
                continue;
            }
            match self.serve_pod(record, worker).await {
                Ok(proxy) => {
                    info!(uid = uid.as_str(), "captured pod served: its listeners are up");
                    *serving = Serving::Up(proxy);
                }
                Err(PodsError::UnknownWorkload { .. } | PodsError::NoAddress { .. }) => {
                    // Not a listener the config needs: keep refusing, but do not hold readiness.
                    if held.not_ready.take().is_some() {
                        warn!(
                            uid = uid.as_str(),
                            "synced config has no workload address for this captured pod; its traffic is refused \
                             until the workload appears or the pod is unenrolled"
                        );
                    }
                }
                Err(e) => {
                    let delay = held.backoff.failed(now);
                    held.not_ready.get_or_insert_with(|| self.not_ready(uid));
                    warn!(uid = uid.as_str(), error = %e, retry_in = ?delay, "cannot start a captured pod's listeners; its traffic is refused");
                    next = Some(next.map_or(held.backoff.due, |n| n.min(held.backoff.due)));
                }
            }
        }
        for uid in gone {
            if let Some(pod) = pods.remove(&uid) {
                info!(uid = uid.as_str(), netns = %pod.record.netns.display(), "releasing a captured pod that is gone");
                if let Err(e) = self.tear_down(&pod.record) {
                    warn!(uid = uid.as_str(), error = %e, "cleaning up a pod that is gone");
                }
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let now = Instant::now();
        assert!(backoff.is_due(now), "a new backoff tries at once");
        let delays: Vec<Duration> = (0..8).map(|_| backoff.failed(now)).collect();
        assert_eq!(delays[0], FIRST_RETRY);
        assert_eq!(delays[1], FIRST_RETRY * 2);
        assert_eq!(*delays.last().unwrap(), MAX_RETRY, "delays: {delays:?}");
        assert!(!backoff.is_due(now));
        assert!(backoff.is_due(now + MAX_RETRY));
    }
}
