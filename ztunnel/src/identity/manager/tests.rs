//! Certificate manager behaviour under paused Tokio time: caching, single-flight issuance,
//! renewal at half-life, serving through CA outages with backoff, forget, readiness, dump.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use super::*;

const VALIDITY: Duration = Duration::from_secs(3600);
const GATE_OPEN: usize = 1_000;

/// Issues from a real local CA, counting calls; can be made to fail or to wait for a gate.
struct FakeSource {
    ca: LocalCa,
    calls: AtomicUsize,
    failing: AtomicBool,
    gate: Semaphore,
    /// Issue for this identity instead of the requested one (a misbehaving CA).
    substitute: Option<Identity>,
}

impl FakeSource {
    fn new(gate_open: bool) -> Arc<FakeSource> {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/identity/testdata");
        let ca = LocalCa::from_pem_files(&testdata.join("ec-root-cert.pem"), &testdata.join("ec-root-key.pem"))
            .expect("test root loads");
        Arc::new(FakeSource {
            ca,
            calls: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            gate: Semaphore::new(if gate_open { GATE_OPEN } else { 0 }),
            substitute: None,
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl CertificateSource for FakeSource {
    fn issue(&self, id: &Identity) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, CaError>> + Send + '_>> {
        let id = self.substitute.clone().unwrap_or_else(|| id.clone());
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let permit = self.gate.acquire().await.expect("gate never closes");
            drop(permit);
            if self.failing.load(Ordering::SeqCst) {
                return Err(CaError::Unavailable { reason: "test CA is down".to_string() });
            }
            self.ca.issue(&id, VALIDITY)
        })
    }
}

fn id(sa: &str) -> Identity {
    Identity::new("cluster.local", "default", sa)
}

/// Lets spawned tasks run without letting paused time auto-advance (bounded).
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_fetches_share_one_issuance_and_then_the_cache() {
    let source = FakeSource::new(false);
    let manager = CertManager::new(source.clone());
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.fetch(&id("web")).await })
        })
        .collect();
    settle().await;
    assert_eq!(source.calls(), 1, "20 concurrent fetches must start one issuance");

    source.gate.add_permits(GATE_OPEN);
    let mut certs = Vec::new();
    for waiter in waiters {
        certs.push(waiter.await.expect("task").expect("certificate"));
    }
    assert!(certs.iter().all(|c| Arc::ptr_eq(c, &certs[0])), "all callers get the same cert");
    let cached = manager.fetch(&id("web")).await.expect("cached");
    assert!(Arc::ptr_eq(&cached, &certs[0]), "later fetches hit the cache");
    assert_eq!(source.calls(), 1);

    let other = manager.fetch(&id("api")).await.expect("second identity");
    assert_eq!(other.identity, id("api"));
    assert_eq!(source.calls(), 2, "each identity has its own certificate");
}

#[tokio::test(start_paused = true)]
async fn renews_at_half_life_without_disturbing_holders_of_the_old_cert() {
    let source = FakeSource::new(true);
    let manager = CertManager::new(source.clone());
    let first = manager.fetch(&id("web")).await.expect("first");
    // Lifetime is 1 h plus the 1 min backdate, so the half-life is 29.5 min from issuance.
    tokio::time::advance(Duration::from_secs(25 * 60)).await;
    settle().await;
    assert_eq!(source.calls(), 1, "no renewal before half-life");
    assert!(Arc::ptr_eq(&first, &manager.fetch(&id("web")).await.expect("cached")));

    tokio::time::advance(Duration::from_secs(5 * 60)).await;
    settle().await;
    assert_eq!(source.calls(), 2, "renewed at half-life");
    let second = manager.fetch(&id("web")).await.expect("renewed");
    assert!(!Arc::ptr_eq(&first, &second), "renewal swaps the cached certificate");
    assert_ne!(first.serial(), second.serial());
    first.server_config().expect("the old certificate stays usable for its holders");

    tokio::time::advance(Duration::from_secs(30 * 60)).await;
    settle().await;
    assert_eq!(source.calls(), 3, "renewal keeps going");
}

#[tokio::test(start_paused = true)]
async fn serves_the_valid_cert_while_renewal_fails_with_backoff() {
    let source = FakeSource::new(true);
    let manager = CertManager::new(source.clone());
    manager.prefetch(&id("web"));
    let first = manager.fetch(&id("web")).await.expect("first");
    source.set_failing(true);

    tokio::time::advance(Duration::from_secs(30 * 60)).await;
    settle().await;
    assert_eq!(source.calls(), 2, "renewal attempted at half-life");
    let served = manager.fetch(&id("web")).await.expect("old cert still valid");
    assert!(Arc::ptr_eq(&first, &served), "keeps serving the previous certificate");
    assert_eq!(manager.dump()[0].state, "Available");
    assert!(manager.all_ready());

    // Backoff doubles: retry after 1 s, then 2 s.
    for (advance, calls) in [(1, 3), (1, 3), (1, 4), (3, 4), (1, 5)] {
        tokio::time::advance(Duration::from_secs(advance)).await;
        settle().await;
        assert_eq!(source.calls(), calls, "calls after advancing {advance}s more");
    }

    // Past expiry the failure surfaces.
    tokio::time::advance(Duration::from_secs(31 * 60)).await;
    settle().await;
    let err = manager.fetch(&id("web")).await.expect_err("expired and CA down");
    assert!(
        err.to_string().contains("no certificate for spiffe://cluster.local/ns/default/sa/web")
            && err.to_string().contains("test CA is down"),
        "got {err}"
    );
    assert!(manager.dump()[0].state.starts_with("Unavailable: "), "{:?}", manager.dump());
    assert!(!manager.all_ready());

    source.set_failing(false);
    tokio::time::advance(DEFAULT_MAX_BACKOFF).await;
    settle().await;
    let recovered = manager.fetch(&id("web")).await.expect("recovered");
    assert!(!Arc::ptr_eq(&first, &recovered));
    assert!(manager.all_ready());
}

#[tokio::test(start_paused = true)]
async fn first_issuance_failure_is_returned_then_retried() {
    let source = FakeSource::new(true);
    source.set_failing(true);
    let manager = CertManager::new(source.clone());
    let err = manager.fetch(&id("web")).await.expect_err("CA down");
    assert!(err.to_string().contains("test CA is down"), "got {err}");
    source.set_failing(false);
    tokio::time::advance(DEFAULT_INITIAL_BACKOFF).await;
    settle().await;
    manager.fetch(&id("web")).await.expect("retried after backoff");
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn forget_stops_renewal_and_releases_waiters() {
    let source = FakeSource::new(true);
    let manager = CertManager::new(source.clone());
    manager.fetch(&id("web")).await.expect("issued");
    manager.forget(&id("web"));
    assert!(manager.dump().is_empty() && manager.identities().is_empty());
    tokio::time::advance(Duration::from_secs(3 * 3600)).await;
    settle().await;
    assert_eq!(source.calls(), 1, "a forgotten identity is not renewed");

    let gated = FakeSource::new(false);
    let manager = CertManager::new(gated.clone());
    let waiter = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.fetch(&id("api")).await })
    };
    settle().await;
    manager.forget(&id("api"));
    let err = waiter.await.expect("task").expect_err("forgotten while waiting");
    assert!(matches!(err, CertError::Forgotten { .. }), "got {err:?}");
}

#[tokio::test(start_paused = true)]
async fn readiness_waits_for_every_prefetched_identity() {
    let source = FakeSource::new(false);
    let manager = CertManager::new(source.clone());
    assert!(manager.all_ready(), "nothing prefetched yet");
    manager.prefetch(&id("a"));
    manager.prefetch(&id("b"));
    settle().await;
    assert!(!manager.all_ready());
    let states: Vec<_> = manager.dump().into_iter().map(|d| d.state).collect();
    assert_eq!(states, ["Initializing", "Initializing"]);

    source.gate.add_permits(GATE_OPEN);
    tokio::time::timeout(Duration::from_secs(5), manager.wait_ready())
        .await
        .expect("ready once both certificates are issued");
    assert!(manager.all_ready());
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn dump_matches_the_certificate_in_istio_format() {
    let source = FakeSource::new(true);
    let manager = CertManager::new(source.clone());
    let cert = manager.fetch(&id("web")).await.expect("issued");
    let dump = manager.dump();
    assert_eq!(dump.len(), 1);
    let entry = &dump[0];
    assert_eq!(entry.identity, "spiffe://cluster.local/ns/default/sa/web");
    assert_eq!(entry.state, "Available");
    assert_eq!(entry.cert_chain.len(), 1);
    assert_eq!(entry.root_certs.len(), 1);
    let leaf = &entry.cert_chain[0];
    assert_eq!(leaf.serial_number, cert.serial());
    assert_eq!(leaf.pem, crate::tls::base64(cert.chain_pem().as_bytes()));
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).expect("after epoch").as_secs() as i64;
    assert_eq!(leaf.valid_from, dump::rfc3339(unix(cert.not_before)));
    assert_eq!(leaf.expiration_time, dump::rfc3339(unix(cert.not_after)));
    assert_eq!(entry.root_certs[0].expiration_time, "2100-01-01T00:00:00Z");

    let json = serde_json::to_value(entry).expect("serializes");
    for key in ["identity", "state", "certChain", "rootCerts"] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    for key in ["pem", "serialNumber", "validFrom", "expirationTime"] {
        assert!(json["certChain"][0].get(key).is_some(), "missing {key} in {json}");
    }
}

#[tokio::test(start_paused = true)]
async fn certificate_for_another_identity_is_rejected() {
    let mut source = FakeSource::new(true);
    Arc::get_mut(&mut source).expect("unique").substitute = Some(id("someone-else"));
    let manager = CertManager::new(source);
    let err = manager.fetch(&id("web")).await.expect_err("wrong identity");
    assert!(
        err.to_string().contains("returned a certificate for spiffe://cluster.local/ns/default/sa/someone-else"),
        "got {err}"
    );
}
