//! Replays Delta xDS responses into a [`SharedState`] through the ADS client's own store, with
//! no stream and no TLS in between, so benchmarks time exactly what the client does with a
//! response it has decoded: convert every resource, update the indexes, publish a snapshot.

use prost::Message;

use super::FakeResource;
use crate::state::SharedState;
use crate::xds::convert::Defaults;
use crate::xds::proto::discovery::{DeltaDiscoveryResponse, Resource};
use crate::xds::store::XdsStore;

/// Encodes one `DeltaDiscoveryResponse` of `type_url` as the bytes istiod puts on the wire:
/// `resources` at `version`, and removals of `removed` names.
pub fn encode_response(type_url: &str, resources: &[FakeResource], removed: &[String], version: &str) -> Vec<u8> {
    let resources = resources
        .iter()
        .map(|r| Resource {
            name: r.name.clone(),
            version: version.to_string(),
            resource: Some(prost_types::Any { type_url: r.type_url.to_string(), value: r.bytes.clone() }),
            ..Default::default()
        })
        .collect();
    let response = DeltaDiscoveryResponse {
        type_url: type_url.to_string(),
        resources,
        removed_resources: removed.to_vec(),
        nonce: version.to_string(),
        ..Default::default()
    };
    response.encode_to_vec()
}

/// A response decoded from its wire bytes, as the ADS client receives it from tonic.
pub struct DecodedResponse(DeltaDiscoveryResponse);

impl DecodedResponse {
    pub fn decode(bytes: &[u8]) -> Result<DecodedResponse, prost::DecodeError> {
        DeltaDiscoveryResponse::decode(bytes).map(DecodedResponse)
    }

    /// Resources carried (not counting removals).
    pub fn len(&self) -> usize {
        self.0.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.resources.is_empty() && self.0.removed_resources.is_empty()
    }
}

/// What a replayed response did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// The generation of the snapshot it published.
    pub generation: u64,
    /// Every rejected resource, as the NACK would describe it.
    pub rejected: Vec<String>,
}

/// The ADS client's store, fed responses directly.
pub struct ResponseReplay {
    store: XdsStore,
}

impl ResponseReplay {
    /// A store publishing into `state`; workloads without a trust domain get `trust_domain`.
    pub fn new(state: SharedState, trust_domain: &str) -> ResponseReplay {
        ResponseReplay { store: XdsStore::new(state, Defaults::new(trust_domain)) }
    }

    /// Applies `response` exactly as the client does; `None` for a type the client does not
    /// subscribe to.
    pub fn apply(&mut self, response: DecodedResponse) -> Option<Replayed> {
        let DeltaDiscoveryResponse { type_url, resources, removed_resources, .. } = response.0;
        let applied = self.store.apply(&type_url, resources, removed_resources)?;
        Some(Replayed {
            generation: applied.generation,
            rejected: applied.rejected.iter().map(ToString::to_string).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::ADDRESS_TYPE;
    use crate::xds::testing::{FakeResource, SyntheticMesh};

    #[test]
    fn replays_a_mesh_then_one_change_then_a_removal() {
        let mesh = SyntheticMesh::new(45);
        let state = SharedState::new("");
        let mut replay = ResponseReplay::new(state.clone(), "cluster.local");
        let wire = encode_response(ADDRESS_TYPE, &mesh.resources(), &[], "v1");
        let done = replay.apply(DecodedResponse::decode(&wire).unwrap()).unwrap();
        assert_eq!(done, Replayed { generation: 1, rejected: vec![] });
        let st = state.read();
        assert_eq!((st.workloads().count(), st.services().count()), (45, 3));
        let w = st.workload_by_ip(mesh.workload_ip(7, 0)).expect("workload 7 by IP");
        assert_eq!(w.identity().to_string(), format!("spiffe://cluster.local/ns/ns-0/sa/app-{}", mesh.service_of(7)));
        let svc = st.service_by_vip(mesh.service_vip(mesh.service_of(7))).expect("its service by VIP");
        assert_eq!(st.endpoints_for(&svc, 80).len(), 15, "every pod of the service is an endpoint");

        let moved = encode_response(ADDRESS_TYPE, &[mesh.workload(7, 1)], &[], "v2");
        assert_eq!(replay.apply(DecodedResponse::decode(&moved).unwrap()).unwrap().generation, 2);
        let st = state.read();
        assert!(st.workload_by_ip(mesh.workload_ip(7, 0)).is_none(), "the old IP must be gone");
        assert_eq!(st.workload_by_ip(mesh.workload_ip(7, 1)).map(|w| w.uid.clone()), Some(w.uid.clone()));

        let gone = encode_response(ADDRESS_TYPE, &[], &[w.uid.to_string()], "v3");
        replay.apply(DecodedResponse::decode(&gone).unwrap()).unwrap();
        let st = state.read();
        assert!(st.workload_by_uid(&w.uid).is_none());
        assert_eq!(st.endpoints_for(&svc, 80).len(), 14, "the removed pod is no longer an endpoint");
    }

    #[test]
    fn a_name_can_change_what_it_holds() {
        let mesh = SyntheticMesh::new(30);
        let state = SharedState::new("");
        let mut replay = ResponseReplay::new(state.clone(), "cluster.local");
        let mut send = |resources: &[FakeResource], removed: &[String]| {
            let wire = encode_response(ADDRESS_TYPE, resources, removed, "v");
            let done = replay.apply(DecodedResponse::decode(&wire).unwrap()).unwrap();
            assert!(done.rejected.is_empty(), "{:?}", done.rejected);
        };
        send(&mesh.resources(), &[]);
        let uid = state.read().workload_by_ip(mesh.workload_ip(3, 0)).unwrap().uid.clone();

        // The same workload under a name that is not its uid replaces the one named by uid.
        let mut renamed = mesh.workload(3, 1);
        renamed.name = "renamed".into();
        send(&[renamed], &[uid.to_string()]);
        let st = state.read();
        assert_eq!(st.workload_by_ip(mesh.workload_ip(3, 1)).map(|w| w.uid.clone()), Some(uid.clone()));
        assert!(st.workload_by_ip(mesh.workload_ip(3, 0)).is_none());

        // That name now holds a service: the workload goes, the service comes.
        let mut service = mesh.service(0);
        service.name = "renamed".into();
        send(&[service], &[]);
        assert!(state.read().workload_by_uid(&uid).is_none(), "the workload the name held must be gone");
        send(&[], &["renamed".to_string()]);
        let st = state.read();
        assert!(st.service_by_vip(mesh.service_vip(0)).is_some(), "still sent under its own name");
        assert_eq!(st.workloads().count(), 29);
    }
}
