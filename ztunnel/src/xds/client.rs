//! The Delta ADS client: one gRPC stream to istiod carrying both subscribed types.
//!
//! On each (re)connect it sends one initial request per type, with the node and, after the
//! first stream, `initial_resource_versions` naming every resource it holds, so istiod sends
//! only what changed. Each response is applied as one batch (one new state snapshot), then
//! ACKed with its nonce, or NACKed with the same nonce and an `error_detail` naming every
//! rejected resource, while the accepted ones of that response still apply. A failed or
//! ended stream is retried with exponential backoff; the state keeps serving meanwhile.
//! Each type's readiness guard drops when its first response has been applied.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use prost_types::value::Kind;
use prost_types::{Struct, Value};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::convert::Defaults;
use super::grpc::{Istiod, error_chain};
use super::proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use super::proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use super::proto::{core, google};
use super::store::{TYPES, XdsStore};
use super::{XdsError, XdsStatus};
use crate::config::{IstiodIdentity, XdsSettings};
use crate::readiness::{Ready, ReadyGuard};
use crate::state::SharedState;

/// gRPC status code INVALID_ARGUMENT, sent in NACKs.
const INVALID_ARGUMENT: i32 = 3;
/// Responses can be large (every workload of a big mesh).
const MAX_MESSAGE_BYTES: usize = 200 * 1024 * 1024;

/// Everything the ADS client needs.
#[derive(Clone, Debug)]
pub struct XdsClientConfig {
    pub settings: XdsSettings,
    pub identity: IstiodIdentity,
    pub cluster_id: String,
    pub node_name: String,
    pub trust_domain: String,
    /// First reconnect delay; doubles up to `max_backoff`, and resets once a stream delivers.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

pub struct XdsClient {
    istiod: Istiod,
    node: core::Node,
    store: XdsStore,
    pending: HashMap<&'static str, ReadyGuard>,
    synced: watch::Sender<bool>,
    status: watch::Sender<XdsStatus>,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl XdsClient {
    /// A client feeding `state`; registers one readiness task per subscribed type. The
    /// returned receiver turns `true` once every type's first response is applied.
    pub fn new(config: XdsClientConfig, state: SharedState, ready: &Ready) -> Result<XdsClient, XdsError> {
        let istiod = Istiod::new(
            &config.settings.address,
            &config.settings.root_ca,
            &config.identity.token_file,
            &config.cluster_id,
        )?;
        let pending = TYPES.iter().map(|t| (*t, ready.register(&format!("xds {t}")))).collect();
        let defaults = Defaults::new(&config.trust_domain);
        Ok(XdsClient {
            istiod,
            node: node(&config),
            store: XdsStore::new(state, defaults),
            pending,
            synced: watch::Sender::new(false),
            status: watch::Sender::new(XdsStatus::default()),
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff.max(config.initial_backoff),
        })
    }

    /// `true` once every subscribed type's first response has been applied.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Stream and ACK/NACK counters, for `/config_dump` and tests.
    pub fn status(&self) -> watch::Receiver<XdsStatus> {
        self.status.subscribe()
    }

    /// Streams until `stop` resolves, reconnecting with backoff.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut backoff = self.initial_backoff;
        loop {
            let mut delivered = false;
            let result = tokio::select! {
                _ = &mut stop => return,
                r = self.stream_once(&mut delivered) => r,
            };
            if delivered {
                backoff = self.initial_backoff;
            }
            let reason = match result {
                Ok(()) => format!("istiod {} closed the stream", self.istiod.address()),
                Err(e) => e.to_string(),
            };
            warn!(error = %reason, retry_in = ?backoff, "xds stream ended; the current config keeps serving");
            self.status.send_modify(|s| {
                s.connected = false;
                s.last_error = Some(reason);
            });
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.max_backoff);
        }
    }

    async fn stream_once(&mut self, delivered: &mut bool) -> Result<(), XdsError> {
        let channel = self.istiod.connect().await?;
        let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(TYPES.len() + 8);
        for type_url in TYPES {
            let versions = self.store.versions(type_url);
            debug!(type_url, known = versions.len(), "sending initial request");
            let initial = DeltaDiscoveryRequest {
                node: Some(self.node.clone()),
                type_url: type_url.to_string(),
                initial_resource_versions: versions,
                ..Default::default()
            };
            // The channel has room for every initial request.
            let _ = tx.try_send(initial);
        }
        let outbound = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let mut request = tonic::Request::new(outbound);
        self.istiod.authorize(&mut request)?;
        let address = self.istiod.address().to_string();
        let status_error = |s: tonic::Status| XdsError::Stream { address: address.clone(), reason: error_chain(&s) };
        let mut responses = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .delta_aggregated_resources(request)
            .await
            .map_err(status_error)?
            .into_inner();
        info!(address = %self.istiod.address(), "xds stream established");
        self.status.send_modify(|s| {
            s.connected = true;
            s.streams += 1;
        });
        while let Some(response) = responses.message().await.map_err(status_error)? {
            *delivered = true;
            let reply = self.handle(response);
            if tx.send(reply).await.is_err() {
                return Err(XdsError::Stream { address: address.clone(), reason: "request stream closed".into() });
            }
        }
        Ok(())
    }

    /// Applies one response and returns its ACK or NACK.
    fn handle(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let DeltaDiscoveryResponse { type_url, nonce, resources, removed_resources, .. } = response;
        let (updated, removed) = (resources.len(), removed_resources.len());
        let error = match self.store.apply(&type_url, resources, removed_resources) {
            None => Some(format!("unsupported type {type_url:?}: this client subscribes to {TYPES:?}")),
            Some(applied) => {
                info!(%type_url, updated, removed, rejected = applied.rejected.len(), generation = applied.generation, "applied xds response");
                if let Some((t, _)) = self.pending.remove_entry(type_url.as_str()) {
                    debug!(type_url = t, "first response applied");
                    if self.pending.is_empty() {
                        self.synced.send_replace(true);
                    }
                }
                let rejected: Vec<String> = applied.rejected.iter().map(ToString::to_string).collect();
                (!rejected.is_empty()).then(|| rejected.join("; "))
            }
        };
        self.status.send_modify(|s| match &error {
            None => s.acks += 1,
            Some(message) => {
                s.nacks += 1;
                s.last_nack = Some(message.clone());
            }
        });
        if let Some(message) = &error {
            warn!(%type_url, %nonce, error = %message, "sending NACK");
        }
        DeltaDiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail: error.map(|message| google::rpc::Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
            ..Default::default()
        }
    }
}

/// The node istiod sees: Istio ztunnel's id format and metadata keys.
fn node(config: &XdsClientConfig) -> core::Node {
    let id = &config.identity;
    let ns = &id.pod_namespace;
    let text = |v: &str| Value { kind: Some(Kind::StringValue(v.to_string())) };
    let fields = [
        ("NAME", id.pod_name.as_str()),
        ("NAMESPACE", ns.as_str()),
        ("INSTANCE_IPS", &id.instance_ip.to_string()),
        ("NODE_NAME", config.node_name.as_str()),
        ("CLUSTER_ID", config.cluster_id.as_str()),
        ("SERVICE_ACCOUNT", id.service_account.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), text(v)))
    .collect();
    core::Node {
        id: format!("ztunnel~{}~{}.{ns}~{ns}.svc.cluster.local", id.instance_ip, id.pod_name),
        metadata: Some(Struct { fields }),
        user_agent_name: "ztunnel".into(),
        ..Default::default()
    }
}
