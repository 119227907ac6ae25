//! Mesh state: the workloads, services and authorization policies this proxy knows, where they
//! come from (Istio's local config file, hot-reloaded), and fast lookups over them.
//!
//! Owns the data model (`workload`, `service`, `endpoints`, `port_map`, `address`), the local
//! config format and its validation (`local_format`, `validate`, `validate_policy`, `local`),
//! the bounded reading of the config file (`local_file`, `yaml_depth`),
//! the indexed snapshot (`store`) and its incremental changes (`store_update`, built on
//! `snapshot_map`, `ip_index` and `arc_list`), the pool of shared texts (`string_pool`), the
//! shared handle with change notification ([`SharedState`]) and the file watcher (`watch`).
//! Policies use the [`crate::policy`] model; this module decides which policies exist and which
//! a workload lists, while evaluating them is `policy`'s job. It must
//! not do network IO or certificates, and nothing outside it sees the file format types.
//!
//! Readers take a cheap snapshot (`Arc<ProxyState>`) and never hold a lock while working;
//! writers change a working copy and swap a clone of it in (cheap: the indexes share storage
//! with older snapshots, see `snapshot_map`), bumping a generation that subscribers see
//! through a `tokio::sync::watch` channel.

mod address;
mod arc_list;
mod capture;
pub mod capture_exclusions;
mod checks;
mod endpoints;
mod ip_index;
mod local;
mod local_file;
mod local_format;
mod port_map;
mod service;
mod snapshot_map;
mod store;
mod store_update;
mod string_pool;
mod validate;
mod validate_policy;
mod watch;
mod workload;
mod yaml_depth;

#[cfg(test)]
mod local_cases;
#[cfg(test)]
mod local_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod watch_tests;

use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;
use tokio::sync::watch as channel;

pub use address::{NamespacedHostname, NetworkAddress};
pub use capture::PodCapture;
pub use capture_exclusions::{AnnotationError, CaptureExclusions};
pub(crate) use checks::{Rejection, Spelling, check_port_map, check_service, check_workload};
pub use endpoints::Endpoints;
pub use local::{LocalConfig, LocalConfigError, Location, apply, load_local_config, parse_local_config};
pub use local_file::MAX_CONFIG_BYTES;
pub use port_map::PortMap;
pub use service::{
    Endpoint, IpFamily, LoadBalancer, LoadBalancerHealthPolicy, LoadBalancerMode, LoadBalancerScope, Service,
};
pub use store::ProxyState;
pub(crate) use string_pool::StringPool;
pub(crate) use validate::{service_account_or_default, trust_domain_or};
pub use watch::{CONFIG_SETTLE, watch_local_config};
pub use workload::{
    ApplicationTunnel, GatewayAddress, GatewayDestination, HealthStatus, Locality, NetworkMode, Protocol,
    TunnelProtocol, Workload,
};
pub use yaml_depth::MAX_FLOW_NESTING;

/// Outcome of the local config watcher's reload attempts, for tests and `/config_dump`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// Changes seen (content changed, or reading started/stopped failing).
    pub attempts: u64,
    /// Attempts that were applied.
    pub applied: u64,
    /// Attempts that were rejected; the previous config kept serving.
    pub rejected: u64,
    /// State generation produced by the last applied change (0 if none yet).
    pub generation: u64,
    /// Full error of the latest attempt, cleared when a later attempt succeeds.
    pub last_error: Option<String>,
}

struct Shared {
    current: RwLock<Arc<ProxyState>>,
    generation: channel::Sender<u64>,
    reload: channel::Sender<ReloadStatus>,
    network: Arc<str>,
}

/// Handle to the current [`ProxyState`], shared by every part of the proxy.
#[derive(Clone)]
pub struct SharedState {
    inner: Arc<Shared>,
}

impl SharedState {
    /// An empty state (generation 0) for a proxy in `local_network` ("" is the default
    /// network); plain IP and VIP lookups resolve within that network.
    pub fn new(local_network: &str) -> SharedState {
        SharedState {
            inner: Arc::new(Shared {
                current: RwLock::new(Arc::new(ProxyState::empty(local_network))),
                generation: channel::Sender::new(0),
                reload: channel::Sender::new(ReloadStatus::default()),
                network: local_network.into(),
            }),
        }
    }

    /// The current snapshot. Cheap (one `Arc` clone); it stays valid and unchanged while
    /// held, even if a newer snapshot is swapped in meanwhile.
    pub fn read(&self) -> Arc<ProxyState> {
        self.inner.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Swaps in `next` as the current snapshot with the next generation, notifies
    /// subscribers, and returns that generation.
    pub fn replace(&self, mut next: ProxyState) -> u64 {
        let mut current = self.inner.current.write().unwrap_or_else(PoisonError::into_inner);
        let generation = current.generation + 1;
        next.generation = generation;
        *current = Arc::new(next);
        // Sent under the lock so subscribers see generations in order.
        self.inner.generation.send_replace(generation);
        generation
    }

    pub fn generation(&self) -> u64 {
        *self.inner.generation.borrow()
    }

    /// Notified with the new generation after every [`Self::replace`].
    pub fn subscribe(&self) -> channel::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// The watcher's latest [`ReloadStatus`].
    pub fn reload_status(&self) -> channel::Receiver<ReloadStatus> {
        self.inner.reload.subscribe()
    }

    pub(crate) fn update_reload_status(&self, f: impl FnOnce(&mut ReloadStatus)) {
        self.inner.reload.send_modify(f);
    }

    pub fn local_network(&self) -> &str {
        &self.inner.network
    }

    /// Workloads, services (with endpoints) and policies of the current snapshot, plus the
    /// generation and the local config reload status.
    pub fn config_dump(&self) -> serde_json::Value {
        let st = self.read();
        let reload = self.inner.reload.borrow().clone();
        let mut workloads: Vec<&Workload> = st.workloads().map(Arc::as_ref).collect();
        workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
        let mut services: Vec<&Service> = st.services().map(Arc::as_ref).collect();
        services.sort_by(|a, b| (&a.namespace, &a.hostname).cmp(&(&b.namespace, &b.hostname)));
        let dump = ConfigDump {
            generation: st.generation(),
            workloads,
            services,
            policies: st.policies(),
            local_config: reload,
        };
        serde_json::to_value(&dump)
            .unwrap_or_else(|e| serde_json::json!({ "error": format!("cannot serialize state: {e}") }))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigDump<'a> {
    generation: u64,
    workloads: Vec<&'a Workload>,
    services: Vec<&'a Service>,
    policies: &'a crate::policy::PolicyStore,
    local_config: ReloadStatus,
}
