//! Composition root: builds every component from a [`ProxyConfig`], binds the listeners, and
//! runs until told to stop; then drains.
//!
//! Startup order: CA and certificate manager (local CA, or istiod's CA client), config source
//! (a local file: a bad file stops startup with the error, then a watcher; or istiod's xDS
//! client), listeners and servers. Readiness turns green once the config is applied (for xDS:
//! the first response of each type), the certificates of this node's workloads are issued and
//! every listener the config needs is up (captured pods' listeners included). With capture, pods
//! an earlier process enrolled stay captured and refusing until the config source has synced.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::capture::CaptureSettings;
use crate::config::{CaSource, ProxyConfig};
use crate::drain::{self, DrainTrigger, DrainWatch};
use crate::hbone::{H2Settings, HbonePool, PoolConfig, PoolStats};
use crate::identity::{CertManager, CertificateSource, LocalCa};
use crate::kubernetes::{
    self,
    agent::{AgentSettings, NodeAgent},
    agent_metrics::AgentMetrics,
};
use crate::metrics::Metrics;
use crate::pods::{Pods, PodsSettings};
use crate::proxy::{self, ForceClose, ForceCloseTrigger, PoolKey, ProxyInputs, ProxySettings};
use crate::readiness::Ready;
use crate::state::{self, SharedState};
use crate::telemetry::LogHandle;
use crate::xds::{IstioCa, XdsClient, XdsClientConfig, XdsError, XdsStatus};

/// First xDS reconnect delay (doubling up to [`XDS_MAX_BACKOFF`]), as Istio's ztunnel.
const XDS_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const XDS_MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("local CA: {0}")]
    Ca(#[from] crate::identity::CaError),
    #[error(transparent)]
    Config(#[from] state::LocalConfigError),
    #[error("loading the local config stopped: {0}")]
    ConfigLoad(String),
    #[error("eBPF capture: {0}")]
    Capture(#[from] crate::pods::PodsError),
    #[error(transparent)]
    Control(#[from] crate::pods::control::ControlError),
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes::watch::WatchError),
    #[error(transparent)]
    PluginEvents(#[from] crate::kubernetes::plugin_events::PluginEventError),
    #[error("istiod: {0}")]
    Istiod(#[from] XdsError),
    #[error("no config source: neither a local config file nor an xDS address is configured")]
    NoConfigSource,
    #[error("cannot listen for {what} on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Addresses the servers actually bound (ports resolved when configured as 0).
#[derive(Clone, Copy, Debug)]
pub struct BoundAddrs {
    pub socks5: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub readiness: SocketAddr,
}

/// A started proxy.
pub struct Running {
    pub addrs: BoundAddrs,
    pub state: SharedState,
    pub ready: Ready,
    pool: HbonePool<PoolKey>,
    drain: DrainTrigger,
    force_close: ForceCloseTrigger,
    tasks: JoinSet<()>,
    deadline: Duration,
    quit: Arc<tokio::sync::Notify>,
}

impl Running {
    /// HBONE pool counters (tunnels opened, open, streams).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Waits until SIGTERM/SIGINT or `/quitquitquit`, then drains.
    pub async fn run_until_signal(self) {
        let quit = self.quit.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("interrupt received, draining"),
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => info!("SIGTERM received, draining"),
            _ = quit.notified() => info!("shutdown requested through admin, draining"),
        }
        self.shutdown().await;
    }

    /// Stops accepting, lets live connections run until they end or the drain deadline
    /// passes, then stops everything.
    pub async fn shutdown(mut self) {
        let outcome = self.drain.drain(self.deadline).await;
        info!(?outcome, "drain finished");
        // Connections still open past the deadline are closed now (and logged as such).
        self.force_close.fire();
        tokio::task::yield_now().await;
        self.tasks.shutdown().await;
    }
}

/// Builds and starts every component.
pub async fn start(config: ProxyConfig, log: LogHandle) -> Result<Running, AppError> {
    crate::tls::install_crypto_provider();
    let source: Arc<dyn CertificateSource> = match &config.ca {
        CaSource::Files { cert, key } => Arc::new(LocalCa::from_pem_files(cert, key)?.with_validity(config.cert_ttl)),
        CaSource::StateDir(dir) => {
            Arc::new(LocalCa::load_or_generate(dir, &config.trust_domain)?.with_validity(config.cert_ttl))
        }
        CaSource::Istiod(ca) => Arc::new(IstioCa::new(ca, &config.istiod, &config.cluster_id, config.cert_ttl)?),
    };
    let certs = CertManager::new(source);

    let state = SharedState::new(&config.network);
    if let Some(file) = &config.config_file {
        // Reading and parsing block: keep them off the runtime's workers.
        let (file, trust_domain, target) = (file.clone(), config.trust_domain.clone(), state.clone());
        tokio::task::spawn_blocking(move || {
            state::load_local_config(&file, &trust_domain).map(|initial| state::apply(&target, initial))
        })
        .await
        .map_err(|e| AppError::ConfigLoad(e.to_string()))??;
    }

    let ready = Ready::new();
    let xds = match (&config.config_file, &config.xds) {
        (Some(_), _) => None,
        (None, Some(settings)) => Some(XdsClient::new(
            XdsClientConfig {
                settings: settings.clone(),
                identity: config.istiod.clone(),
                cluster_id: config.cluster_id.clone(),
                node_name: config.node.clone(),
                trust_domain: config.trust_domain.clone(),
                initial_backoff: XDS_INITIAL_BACKOFF,
                max_backoff: XDS_MAX_BACKOFF,
            },
            state.clone(),
            &ready,
        )?),
        (None, None) => return Err(AppError::NoConfigSource),
    };
    let (drain, watch) = drain::new();
    let (force_close, force_close_signal) = ForceClose::new();
    let mut metrics = Metrics::new();
    let agent_metrics = config.kubernetes.as_ref().map(|_| AgentMetrics::register(metrics.registry_mut()));
    let metrics = Arc::new(metrics);
    let settings = Arc::new(ProxySettings {
        node: config.node.clone(),
        cluster_id: config.cluster_id.clone(),
        connect_timeout: config.connect_timeout,
        socket_mark: config.socket_mark,
        h2: H2Settings { handshake_timeout: config.hbone_handshake_timeout, ..H2Settings::default() },
    });
    let pool = HbonePool::new(PoolConfig {
        max_streams_per_connection: config.pool_max_streams,
        idle_timeout: config.pool_idle_timeout,
        h2: settings.h2.clone(),
        ..PoolConfig::default()
    });
    let inputs = ProxyInputs {
        settings,
        state: state.clone(),
        certs: certs.clone(),
        metrics: metrics.clone(),
        connection_metrics: proxy::ConnectionMetricsCache::new(metrics.clone(), &config.cluster_id),
        pool: pool.clone(),
        drain: watch.clone(),
        force_close: force_close_signal,
        admitted: proxy::AdmittedConnections::new(),
    };

    let bind = |what: &'static str, addr: SocketAddr| {
        proxy::socket::listen(addr).map_err(|source| AppError::Listen { what, addr, source })
    };
    let socks5 = config.socks5_addr.map(|a| bind("socks5", a)).transpose()?;
    let admin = bind("admin", config.admin_addr)?;
    let metrics_listener = bind("metrics", config.metrics_addr)?;
    let readiness = bind("readiness", config.readiness_addr)?;
    let local = |l: &tokio::net::TcpListener| l.local_addr().expect("bound listener has an address");
    let addrs = BoundAddrs {
        socks5: socks5.as_ref().map(local),
        admin: local(&admin),
        metrics: local(&metrics_listener),
        readiness: local(&readiness),
    };

    let mut tasks = JoinSet::new();
    let quit = Arc::new(tokio::sync::Notify::new());
    let (synced, xds_status) = match (xds, &config.config_file) {
        (Some(client), _) => {
            let (synced, status) = (client.synced(), client.status());
            tasks.spawn(client.run(stop_on(watch.clone())));
            (synced, Some(status))
        }
        (None, file) => {
            if let Some(file) = file {
                tasks.spawn(state::watch_local_config(
                    file.clone(),
                    state.clone(),
                    config.trust_domain.clone(),
                    config.config_poll_interval,
                    state::CONFIG_SETTLE,
                    stop_on(watch.clone()),
                ));
            }
            (tokio::sync::watch::channel(true).1, None)
        }
    };
    let listeners_ready = ready.register("workload certificates and listeners");
    let capture_synced = synced.clone();
    tasks.spawn(proxy::listeners::run(inputs.clone(), listeners_ready, config.capture.is_none(), synced));
    tasks.spawn(proxy::admitted::reevaluate_on_change(state.clone(), inputs.admitted.clone(), metrics.clone()));
    let mut agent = None;
    if let Some(capture_config) = &config.capture {
        let capture = start_capture(capture_config, &inputs, &config.node, &ready, capture_synced, &mut tasks).await?;
        if let (Some(kubernetes), Some(metrics)) = (&config.kubernetes, agent_metrics) {
            agent = Some(start_node_agent(kubernetes, capture, &config.node, metrics, &inputs, &mut tasks).await?);
        }
    }
    if let Some(listener) = socks5 {
        let own = [addrs.socks5, Some(addrs.admin), Some(addrs.metrics), Some(addrs.readiness)];
        tasks.spawn(proxy::socks5::serve(listener, inputs.clone(), own.into_iter().flatten().collect()));
    }
    tasks.spawn(crate::admin::serve_metrics(metrics_listener, metrics.clone(), watch.clone()));
    tasks.spawn(crate::admin::serve_readiness(readiness, ready.clone(), watch.clone()));
    let dump_state = state.clone();
    let dump_certs = certs.clone();
    let dump_pool = pool.clone();
    let quit_admin = quit.clone();
    tasks.spawn(crate::admin::serve_admin(
        admin,
        crate::admin::AdminInputs {
            log,
            config_dump: Arc::new(move || {
                let mut dump = config_dump(&dump_state, &dump_certs, &dump_pool, xds_status.as_ref());
                if let (Some(agent), Some(map)) = (&agent, dump.as_object_mut()) {
                    map.insert("kubernetesPods".into(), serde_json::to_value(agent.dump()).unwrap_or_default());
                }
                dump
            }),
            drain: watch.clone(),
            shutdown: Arc::new(move || quit_admin.notify_one()),
        },
    ));
    drop(watch);
    info!(node = %config.node, ?addrs, "ztunnel started");
    Ok(Running { addrs, state, ready, pool, drain, force_close, tasks, deadline: config.drain_deadline, quit })
}

/// Starts eBPF capture, its control socket, the keeper that serves captured pods once the
/// config source has synced (`synced`), and the loop that keeps config-enrolled pods in step
/// with the config file.
async fn start_capture(
    config: &crate::config::CaptureConfig,
    inputs: &ProxyInputs,
    node: &str,
    ready: &Ready,
    mut synced: tokio::sync::watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<Arc<Pods>, AppError> {
    let settings = PodsSettings {
        capture: CaptureSettings {
            pin_dir: config.pin_dir.clone(),
            capture_cgroup: config.capture_cgroup.clone(),
            kubelet_cgroup: config.kubelet_cgroup.clone(),
        },
        records_dir: config.records_dir.clone(),
    };
    // Re-adopted pods stay captured and refusing until the keeper serves them.
    let capture = Pods::start(settings, inputs.clone(), ready).await?;
    tasks.spawn(capture.clone().keep_serving(synced.clone(), inputs.drain.clone()));
    let listener = crate::pods::control::bind(&config.control_socket)?;
    tasks.spawn(crate::pods::control::serve(listener, capture.clone(), inputs.drain.clone()));
    let guard = ready.register("capture of configured pods");
    let (state, drain, node) = (inputs.state.clone(), inputs.drain.clone(), node.to_string());
    let config_capture = capture.clone();
    tasks.spawn(async move {
        let capture = config_capture;
        let mut generations = state.subscribe();
        let mut guard = Some(guard);
        // The config's capture blocks are only complete once the source has synced: before
        // that, an empty state must not unenroll anything.
        tokio::select! {
            _ = synced.wait_for(|s| *s) => {}
            _ = drain.signaled() => return,
        }
        loop {
            let wanted = state.read().captures_on_node(&node);
            capture.reconcile_config(&wanted).await;
            guard.take();
            tokio::select! {
                changed = generations.changed() => if changed.is_err() { return },
                _ = drain.signaled() => return,
            }
        }
    });
    Ok(capture)
}

/// Starts the Kubernetes node agent over `capture`: its watches and rounds, and the
/// plugin-event socket.
async fn start_node_agent(
    config: &crate::config::KubernetesConfig,
    capture: Arc<Pods>,
    node: &str,
    metrics: AgentMetrics,
    inputs: &ProxyInputs,
    tasks: &mut JoinSet<()>,
) -> Result<Arc<NodeAgent<Arc<Pods>>>, AppError> {
    let client = kubernetes::watch::client(config.kubeconfig.as_deref()).await?;
    let settings = AgentSettings {
        node: node.to_string(),
        cluster_id: config.cluster_id.clone(),
        scope: config.scope.clone(),
        proc_root: config.proc_root.clone(),
    };
    let agent = Arc::new(NodeAgent::new(settings, capture, client, metrics));
    let stores = kubernetes::watch::Stores::new();
    let target = Arc::new(kubernetes::PluginEventTarget { agent: agent.clone(), pods: stores.pods.clone() });
    let listener = kubernetes::plugin_events::bind(&config.plugin_event_socket)?;
    tasks.spawn(kubernetes::plugin_events::serve(listener, target, inputs.drain.clone()));
    tasks.spawn(kubernetes::watch::run(agent.clone(), stores, inputs.drain.clone()));
    info!(socket = %config.plugin_event_socket.display(), "Kubernetes node agent started");
    Ok(agent)
}

/// Resolves when the drain starts (the watch is released then, so it never delays the drain).
async fn stop_on(watch: DrainWatch) {
    watch.signaled().await;
}

fn config_dump(
    state: &SharedState,
    certs: &CertManager,
    pool: &HbonePool<PoolKey>,
    xds: Option<&tokio::sync::watch::Receiver<XdsStatus>>,
) -> serde_json::Value {
    let mut dump = state.config_dump();
    if let Some(map) = dump.as_object_mut() {
        map.insert(
            "certificates".into(),
            serde_json::to_value(certs.dump()).unwrap_or_else(|e| {
                warn!(error = %e, "cannot serialize certificates for config_dump");
                serde_json::Value::Null
            }),
        );
        map.insert("hbonePool".into(), serde_json::to_value(pool.stats()).unwrap_or_default());
        if let Some(xds) = xds {
            map.insert("xds".into(), serde_json::to_value(&*xds.borrow()).unwrap_or_default());
        }
    }
    dump
}
