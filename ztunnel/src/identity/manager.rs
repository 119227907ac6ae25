//! Workload certificate cache: one certificate per identity, issued once however many callers
//! ask at the same time, renewed in the background at half of its validity.
//!
//! Each identity the manager knows has one worker task that issues, then sleeps until the
//! half-life and issues again; on failure it retries with exponential backoff while the
//! previous certificate, if still valid, keeps being served. Renewal swaps the cached
//! `Arc<WorkloadCertificate>`; connections holding the old one are unaffected.
//!
//! Validity is measured on the Tokio clock (the wall-clock time left on a certificate is turned
//! into a Tokio deadline when it is installed), so tests drive renewal and expiry with
//! `tokio::time::pause`/`advance`. The manager does not know where certificates come from:
//! that is a [`CertificateSource`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::Identity;
use super::ca::{CaError, LocalCa};
use super::dump::{self, CertificateDump};
use crate::tls::WorkloadCertificate;

/// First retry delay after a failed issuance; doubles up to [`DEFAULT_MAX_BACKOFF`].
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Floor on the time between two issuances, so a source handing out already half-expired
/// certificates cannot make a worker spin.
const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(1);

/// Where certificates come from: the local CA ([`LocalCa`]) or istiod's certificate service
/// (`xds::ca_client`).
pub trait CertificateSource: Send + Sync + 'static {
    fn issue(&self, id: &Identity) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, CaError>> + Send + '_>>;
}

/// The local CA issues synchronously, with the validity set by [`LocalCa::with_validity`].
impl CertificateSource for LocalCa {
    fn issue(&self, id: &Identity) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, CaError>> + Send + '_>> {
        let result = LocalCa::issue(self, id, self.validity());
        Box::pin(std::future::ready(result))
    }
}

/// Why no certificate could be handed out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    #[error("no certificate for {identity}: {source}")]
    Issue {
        identity: Identity,
        #[source]
        source: Arc<CaError>,
    },
    #[error("certificate for {identity} was forgotten while a caller waited for it")]
    Forgotten { identity: Identity },
}

/// Shared handle; see the module docs. Create with [`CertManager::new`].
pub struct CertManager {
    this: Weak<CertManager>,
    source: Arc<dyn CertificateSource>,
    initial_backoff: Duration,
    max_backoff: Duration,
    entries: Mutex<HashMap<Identity, Entry>>,
    /// Bumped on every change of any entry; readiness waiters watch it.
    changes: watch::Sender<u64>,
}

struct Entry {
    current: Option<Installed>,
    last_error: Option<CertError>,
    /// Counts toward readiness.
    prefetched: bool,
    worker: AbortHandle,
    /// Bumped after every issuance attempt; `fetch` callers wait on it. Dropping the entry
    /// drops the sender, which wakes them.
    attempts: watch::Sender<u64>,
}

#[derive(Clone)]
struct Installed {
    cert: Arc<WorkloadCertificate>,
    expires_at: Instant,
}

enum State {
    Available(Arc<WorkloadCertificate>),
    Unavailable(CertError),
    Initializing,
}

impl Entry {
    fn state(&self, now: Instant) -> State {
        match (&self.current, &self.last_error) {
            (Some(c), _) if now < c.expires_at => State::Available(c.cert.clone()),
            (_, Some(e)) => State::Unavailable(e.clone()),
            _ => State::Initializing,
        }
    }
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager").field("identities", &self.lock().len()).finish_non_exhaustive()
    }
}

impl CertManager {
    pub fn new(source: Arc<dyn CertificateSource>) -> Arc<CertManager> {
        CertManager::with_backoff(source, DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF)
    }

    /// Like [`CertManager::new`] with explicit retry delays after failed issuance.
    pub fn with_backoff(
        source: Arc<dyn CertificateSource>,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> Arc<CertManager> {
        Arc::new_cyclic(|this| CertManager {
            this: this.clone(),
            source,
            initial_backoff,
            max_backoff: max_backoff.max(initial_backoff),
            entries: Mutex::new(HashMap::new()),
            changes: watch::Sender::new(0),
        })
    }

    /// Cached certificate for `id`. When there is none (or it expired), waits for the
    /// identity's single in-flight issuance, starting it (and background renewal) if needed.
    /// If the last attempt failed and no valid certificate is left, returns that failure at
    /// once; the worker keeps retrying with backoff.
    pub async fn fetch(&self, id: &Identity) -> Result<Arc<WorkloadCertificate>, CertError> {
        loop {
            let mut attempts = {
                let mut entries = self.lock();
                let entry = self.entry_or_start(&mut entries, id);
                match entry.state(Instant::now()) {
                    State::Available(cert) => return Ok(cert),
                    State::Unavailable(err) => return Err(err),
                    State::Initializing => entry.attempts.subscribe(),
                }
            };
            if attempts.changed().await.is_err() {
                return Err(CertError::Forgotten { identity: id.clone() });
            }
        }
    }

    /// Starts issuing for `id` in the background and keeps renewing it; `id` then counts
    /// toward [`CertManager::all_ready`]. Must be called within a Tokio runtime.
    pub fn prefetch(&self, id: &Identity) {
        let mut entries = self.lock();
        let entry = self.entry_or_start(&mut entries, id);
        if !entry.prefetched {
            entry.prefetched = true;
            drop(entries);
            self.changes.send_modify(|v| *v += 1);
        }
    }

    /// Stops renewing `id` and drops its cached certificate. Callers waiting in `fetch` get
    /// [`CertError::Forgotten`]; connections already using the certificate are unaffected.
    pub fn forget(&self, id: &Identity) {
        let removed = self.lock().remove(id);
        if let Some(entry) = removed {
            entry.worker.abort();
            self.changes.send_modify(|v| *v += 1);
        }
    }

    /// Identities the manager currently knows.
    pub fn identities(&self) -> Vec<Identity> {
        let mut ids: Vec<Identity> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// For `/config_dump`: every known identity with its state and certificates, sorted.
    pub fn dump(&self) -> Vec<CertificateDump> {
        let now = Instant::now();
        let mut out: Vec<CertificateDump> = self
            .lock()
            .iter()
            .map(|(id, entry)| match entry.state(now) {
                State::Available(cert) => dump::available(&cert),
                State::Unavailable(err) => dump::without_certificate(id.to_string(), format!("Unavailable: {err}")),
                State::Initializing => dump::without_certificate(id.to_string(), "Initializing".to_string()),
            })
            .collect();
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        out
    }

    /// True when every prefetched identity has a valid certificate (vacuously true if none).
    pub fn all_ready(&self) -> bool {
        let now = Instant::now();
        self.lock().values().filter(|e| e.prefetched).all(|e| matches!(e.state(now), State::Available(_)))
    }

    /// Returns once [`CertManager::all_ready`] holds (at once if it already does).
    pub async fn wait_ready(&self) {
        let mut changes = self.changes.subscribe();
        while !self.all_ready() {
            // The sender lives as long as `self`, so this cannot fail while we borrow it.
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Identity, Entry>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entry_or_start<'a>(&self, entries: &'a mut HashMap<Identity, Entry>, id: &Identity) -> &'a mut Entry {
        entries.entry(id.clone()).or_insert_with(|| {
            let worker = tokio::spawn(run_worker(
                self.this.clone(),
                self.source.clone(),
                id.clone(),
                self.initial_backoff,
                self.max_backoff,
            ));
            Entry {
                current: None,
                last_error: None,
                prefetched: false,
                worker: worker.abort_handle(),
                attempts: watch::Sender::new(0),
            }
        })
    }

    /// Caches a fresh certificate; returns when to renew it.
    fn install(&self, id: &Identity, cert: WorkloadCertificate) -> Instant {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let left = cert.not_after.duration_since(wall_now).unwrap_or_default();
        let half_life = cert.not_before + cert.lifetime() / 2;
        let until_renewal = half_life.duration_since(wall_now).unwrap_or_default();
        let renew_at = now + until_renewal.max(MIN_RENEWAL_INTERVAL);
        tracing::debug!(identity = %id, serial = cert.serial(), "installed workload certificate");
        self.update(id, |entry| {
            entry.current = Some(Installed { cert: Arc::new(cert), expires_at: now + left });
            entry.last_error = None;
        });
        renew_at
    }

    fn record_failure(&self, id: &Identity, error: CaError, retry_in: Duration) {
        let serving = self.lock().get(id).is_some_and(|e| matches!(e.state(Instant::now()), State::Available(_)));
        tracing::warn!(
            identity = %id, error = %error, retry_in = ?retry_in, still_serving_previous = serving,
            "workload certificate issuance failed"
        );
        let error = CertError::Issue { identity: id.clone(), source: Arc::new(error) };
        self.update(id, |entry| entry.last_error = Some(error));
    }

    fn update(&self, id: &Identity, change: impl FnOnce(&mut Entry)) {
        let mut entries = self.lock();
        // A forgotten identity has no entry; its worker is being aborted.
        let Some(entry) = entries.get_mut(id) else {
            return;
        };
        change(entry);
        entry.attempts.send_modify(|v| *v += 1);
        drop(entries);
        self.changes.send_modify(|v| *v += 1);
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        let entries = self.entries.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        for entry in entries.values() {
            entry.worker.abort();
        }
    }
}

/// Issue, install, sleep to the half-life, repeat; on failure back off exponentially.
async fn run_worker(
    manager: Weak<CertManager>,
    source: Arc<dyn CertificateSource>,
    id: Identity,
    initial_backoff: Duration,
    max_backoff: Duration,
) {
    let mut backoff = initial_backoff;
    loop {
        let result = match source.issue(&id).await {
            Ok(cert) if cert.identity != id => {
                Err(CaError::WrongIdentity { requested: id.clone(), got: cert.identity.clone() })
            }
            other => other,
        };
        let Some(manager) = manager.upgrade() else {
            return;
        };
        let next = match result {
            Ok(cert) => {
                backoff = initial_backoff;
                manager.install(&id, cert)
            }
            Err(error) => {
                let wait = backoff;
                backoff = (backoff * 2).min(max_backoff);
                manager.record_failure(&id, error, wait);
                Instant::now() + wait
            }
        };
        drop(manager);
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests;
