//! The fake istiod's Delta ADS service: holds resources by type and name with versions,
//! answers each stream's initial requests (honouring `initial_resource_versions`), pushes
//! changes to every open stream, and records every request it receives.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::Stream;
use prost_types::Any;
use tokio::sync::{mpsc, watch};

use super::FakeResource;
use crate::xds::proto::discovery::aggregated_discovery_service_server::AggregatedDiscoveryService;
use crate::xds::proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};

type Reply = Result<DeltaDiscoveryResponse, tonic::Status>;

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Counts streams from 1 across restarts.
    pub stream: u64,
    pub type_url: String,
    pub node_id: Option<String>,
    /// Node metadata string fields.
    pub metadata: BTreeMap<String, String>,
    pub initial_resource_versions: BTreeMap<String, String>,
    /// Empty for initial requests; the nonce ACKed or NACKed otherwise.
    pub response_nonce: String,
    /// The NACK's error detail.
    pub error: Option<String>,
    pub authorization: Option<String>,
    pub cluster_id: Option<String>,
}

impl RecordedRequest {
    pub fn is_ack_of(&self, nonce: &str) -> bool {
        self.response_nonce == nonce && self.error.is_none()
    }
    pub fn is_nack_of(&self, nonce: &str) -> bool {
        self.response_nonce == nonce && self.error.is_some()
    }
}

#[derive(Default)]
pub(super) struct AdsInner {
    /// type -> name -> (version, bytes)
    resources: BTreeMap<String, BTreeMap<String, (String, Vec<u8>)>>,
    streams: HashMap<u64, mpsc::UnboundedSender<Reply>>,
    next_stream: u64,
    next_version: u64,
    next_nonce: u64,
    pub(super) refuse: bool,
}

pub(super) struct FakeAds {
    pub(super) inner: Mutex<AdsInner>,
    pub(super) requests: watch::Sender<Vec<RecordedRequest>>,
    /// While true, streams' first requests are recorded but not answered (a slow istiod).
    pub(super) hold: watch::Sender<bool>,
}

impl FakeAds {
    pub(super) fn new() -> FakeAds {
        FakeAds {
            inner: Mutex::new(AdsInner::default()),
            requests: watch::Sender::new(Vec::new()),
            hold: watch::Sender::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, AdsInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `resources` (new versions) and removes `removed` of `type_url`, then sends one
    /// response per affected type to every open stream. Returns the nonces used.
    pub(super) fn change(&self, resources: Vec<FakeResource>, removed: &[(&str, &str)]) -> Vec<String> {
        let mut inner = self.lock();
        let mut by_type: BTreeMap<String, (Vec<Resource>, Vec<String>)> = BTreeMap::new();
        for r in resources {
            inner.next_version += 1;
            let version = format!("v{}", inner.next_version);
            let entry = by_type.entry(r.type_url.to_string()).or_default();
            entry.0.push(resource(r.type_url, &r.name, &version, &r.bytes));
            inner.resources.entry(r.type_url.to_string()).or_default().insert(r.name, (version, r.bytes));
        }
        for (type_url, name) in removed {
            if let Some(m) = inner.resources.get_mut(*type_url) {
                m.remove(*name);
            }
            by_type.entry(type_url.to_string()).or_default().1.push(name.to_string());
        }
        let mut nonces = Vec::new();
        for (type_url, (resources, removed)) in by_type {
            inner.next_nonce += 1;
            let nonce = format!("n{}", inner.next_nonce);
            let response = DeltaDiscoveryResponse {
                type_url,
                resources,
                removed_resources: removed,
                nonce: nonce.clone(),
                ..Default::default()
            };
            inner.streams.retain(|_, tx| tx.send(Ok(response.clone())).is_ok());
            nonces.push(nonce);
        }
        nonces
    }

    /// Ends every open stream with `UNAVAILABLE`, as a restarting istiod does.
    pub(super) fn end_streams(&self, why: &str) {
        for (_, tx) in self.lock().streams.drain() {
            let _ = tx.send(Err(tonic::Status::unavailable(why.to_string())));
        }
    }

    /// The answer to a stream's first request of a type: every resource whose version the
    /// client does not already have, and removals of names it has that are gone.
    fn initial_response(&self, request: &DeltaDiscoveryRequest) -> DeltaDiscoveryResponse {
        let mut inner = self.lock();
        let known = &request.initial_resource_versions;
        let current = inner.resources.get(&request.type_url).cloned().unwrap_or_default();
        let resources = current
            .iter()
            .filter(|(name, (version, _))| known.get(*name) != Some(version))
            .map(|(name, (version, bytes))| resource(&request.type_url, name, version, bytes))
            .collect();
        let removed_resources = known.keys().filter(|name| !current.contains_key(*name)).cloned().collect();
        inner.next_nonce += 1;
        DeltaDiscoveryResponse {
            type_url: request.type_url.clone(),
            resources,
            removed_resources,
            nonce: format!("n{}", inner.next_nonce),
            ..Default::default()
        }
    }
}

fn resource(type_url: &str, name: &str, version: &str, bytes: &[u8]) -> Resource {
    Resource {
        name: name.to_string(),
        version: version.to_string(),
        resource: Some(Any { type_url: type_url.to_string(), value: bytes.to_vec() }),
        ..Default::default()
    }
}

fn text(request: &tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>, key: &str) -> Option<String> {
    request.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Arc<FakeAds> {
    type DeltaAggregatedResourcesStream = Pin<Box<dyn Stream<Item = Reply> + Send>>;

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        let (authorization, cluster_id) = (text(&request, "authorization"), text(&request, "clusterid"));
        let (tx, rx) = mpsc::unbounded_channel::<Reply>();
        let stream = {
            let mut inner = self.lock();
            if inner.refuse {
                return Err(tonic::Status::unavailable("fake istiod refuses streams"));
            }
            inner.next_stream += 1;
            let id = inner.next_stream;
            inner.streams.insert(id, tx.clone());
            id
        };
        let mut incoming = request.into_inner();
        let ads = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = incoming.message().await {
                let node = req.node.as_ref();
                let metadata = node
                    .and_then(|n| n.metadata.as_ref())
                    .map(|m| {
                        m.fields
                            .iter()
                            .filter_map(|(k, v)| match &v.kind {
                                Some(prost_types::value::Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let recorded = RecordedRequest {
                    stream,
                    type_url: req.type_url.clone(),
                    node_id: node.map(|n| n.id.clone()),
                    metadata,
                    initial_resource_versions: req.initial_resource_versions.clone().into_iter().collect(),
                    response_nonce: req.response_nonce.clone(),
                    error: req.error_detail.as_ref().map(|s| s.message.clone()),
                    authorization: authorization.clone(),
                    cluster_id: cluster_id.clone(),
                };
                ads.requests.send_modify(|r| r.push(recorded));
                if req.response_nonce.is_empty() {
                    let mut hold = ads.hold.subscribe();
                    if hold.wait_for(|held| !*held).await.is_err() {
                        break;
                    }
                    let _ = tx.send(Ok(ads.initial_response(&req)));
                }
            }
            ads.lock().streams.remove(&stream);
        });
        let out = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        Ok(tonic::Response::new(Box::pin(out)))
    }
}
