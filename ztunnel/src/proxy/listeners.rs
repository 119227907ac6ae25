//! Keeps one inbound HBONE listener per address of each HBONE workload on this node, and the
//! certificates of those workloads prefetched, in step with state.
//!
//! A ztunnel in the host network namespace cannot own `0.0.0.0:15008` for every workload
//! (another node's ztunnel may share the host in tests), so it binds `<workload ip>:15008`;
//! the listener's address then says which workload, and which certificate, a connection is for.
//! Listeners of workloads that leave stop accepting; their live connections finish. A listener
//! that cannot be bound (the address is taken) or that stopped is retried with backoff, and
//! readiness is not reached while one is missing.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use super::socket::Dialer;
use super::{ProxyInputs, inbound, socket};
use crate::identity::Identity;
use crate::readiness::ReadyGuard;
use crate::state::Protocol;

/// First retry of a listener that could not be bound; doubles up to [`MAX_BIND_RETRY`].
const FIRST_BIND_RETRY: Duration = Duration::from_millis(100);
const MAX_BIND_RETRY: Duration = Duration::from_secs(5);
/// How often running listeners are checked while nothing else happens.
const LISTENER_CHECK: Duration = Duration::from_secs(1);

/// What this node should serve: inbound addresses and identities.
fn desired(inputs: &ProxyInputs) -> (BTreeSet<IpAddr>, BTreeSet<Identity>) {
    let state = inputs.state.read();
    let mut ips = BTreeSet::new();
    let mut identities = BTreeSet::new();
    for w in state.workloads_on_node(&inputs.settings.node) {
        if w.protocol == Protocol::Hbone {
            ips.extend(w.workload_ips.iter().copied());
            identities.insert(w.identity());
        }
    }
    (ips, identities)
}

/// Reconciles listeners and certificates whenever state changes, until the drain starts.
/// `ready` is dropped once the config source has delivered its first config (`synced` is
/// true) and a reconcile after that has bound every listener and fetched certificates. With
/// `host_listeners` false (eBPF capture: pods have their own 15008), only certificates are
/// managed here.
pub(crate) async fn run(
    inputs: ProxyInputs,
    ready: ReadyGuard,
    host_listeners: bool,
    mut synced: watch::Receiver<bool>,
) {
    let mut generations = inputs.state.subscribe();
    let mut running: HashMap<IpAddr, JoinHandle<()>> = HashMap::new();
    let mut identities: BTreeSet<Identity> = BTreeSet::new();
    let mut ready = Some(ready);
    let mut bind_delay = FIRST_BIND_RETRY;
    loop {
        let (mut want_ips, want_ids) = desired(&inputs);
        if !host_listeners {
            want_ips.clear();
        }
        running.retain(|ip, task| {
            let keep = want_ips.contains(ip) && !task.is_finished();
            if !keep {
                info!(%ip, "stopping inbound hbone listener");
                task.abort();
            }
            keep
        });
        let mut missing = false;
        for ip in &want_ips {
            if running.contains_key(ip) {
                continue;
            }
            let addr = SocketAddr::new(*ip, super::HBONE_PORT);
            match socket::listen(addr) {
                Ok(listener) => {
                    info!(%addr, "inbound hbone listener started");
                    let app_dialer = Dialer::host(inputs.settings.socket_mark, inputs.settings.connect_timeout);
                    running.insert(*ip, tokio::spawn(inbound::serve(listener, inputs.clone(), app_dialer)));
                }
                Err(e) => {
                    error!(%addr, error = %e, retry_in = ?bind_delay, "cannot listen for inbound hbone");
                    missing = true;
                }
            }
        }
        let now = tokio::time::Instant::now();
        let mut retry = (!running.is_empty()).then(|| now + LISTENER_CHECK);
        if missing {
            retry = Some(now + bind_delay);
            bind_delay = (bind_delay * 2).min(MAX_BIND_RETRY);
        } else {
            bind_delay = FIRST_BIND_RETRY;
        }
        for gone in identities.difference(&want_ids) {
            inputs.certs.forget(gone);
        }
        for new in want_ids.difference(&identities) {
            inputs.certs.prefetch(new);
        }
        identities = want_ids;
        // Ready only once every listener is up and every local workload has a certificate.
        if ready.is_some() && !missing && *synced.borrow_and_update() {
            let fetches = identities.iter().map(|id| inputs.certs.fetch(id));
            let mut all_issued = true;
            for (id, result) in identities.iter().zip(futures_util::future::join_all(fetches).await) {
                if let Err(e) = result {
                    error!(identity = %id, error = %e, "cannot get certificate; not ready yet");
                    all_issued = false;
                }
            }
            if all_issued {
                ready = None;
            } else {
                let at = tokio::time::Instant::now() + Duration::from_secs(1);
                retry = Some(retry.map_or(at, |r| r.min(at)));
            }
        }
        tokio::select! {
            changed = generations.changed() => if changed.is_err() { break },
            // A closed channel means the source is gone; its last value stays valid.
            Ok(()) = synced.changed(), if ready.is_some() => {}
            _ = async { match retry { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {}
            _ = inputs.drain.signaled() => break,
        }
    }
    for (_, task) in running {
        task.abort();
    }
}
