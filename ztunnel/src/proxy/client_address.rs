//! Who the client of an inbound HBONE stream is, for policy (`sourceIps`), attribution
//! (metrics, access log) and the app dial.
//!
//! The answer is the HBONE connection's peer address: outbound tunnels are dialled from inside
//! the source pod's network namespace, so the peer address is the source pod's own, and the
//! kernel vouches for it. The `forwarded: for=` request header is written by the client and
//! proves nothing: an ordinary peer holding any mesh certificate could name an address that a
//! policy allows. It is believed only from the destination's waypoint, whose identity the
//! mTLS handshake proved and which forwards traffic on behalf of the real client (a waypoint
//! terminates the client's tunnel and opens its own, so its peer address is its own).
//!
//! Pure over state: no IO.

use std::net::SocketAddr;

use http::HeaderMap;

use crate::hbone;
use crate::identity::Identity;
use crate::state::{GatewayAddress, GatewayDestination, ProxyState, Service, Workload};

/// A parameter of the `forwarded` header (`for`, `host`), unquoted; the first element only.
pub(crate) fn forwarded_param<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(hbone::FORWARDED)?.to_str().ok()?;
    let first = value.split(',').next()?;
    first
        .split(';')
        .find_map(|part| {
            let (key, value) = part.trim().split_once('=')?;
            key.trim().eq_ignore_ascii_case(name).then_some(value.trim())
        })
        .map(|v| v.trim_matches('"'))
}

/// The client address of a stream that arrived from `peer` (the HBONE connection's peer
/// address) proven to be `peer_id`, for `destination` (addressed as `service`, if known).
pub(crate) fn client_address(
    state: &ProxyState,
    peer: SocketAddr,
    peer_id: &Identity,
    destination: &Workload,
    service: Option<&Service>,
    headers: &HeaderMap,
) -> SocketAddr {
    if !is_waypoint_of(state, peer_id, destination, service) {
        return peer;
    }
    forwarded_param(headers, "for").and_then(|v| v.parse().ok()).unwrap_or(peer)
}

/// Whether `peer_id` is the identity of a workload that serves as the waypoint of
/// `destination` or of the service it was addressed as.
pub(crate) fn is_waypoint_of(
    state: &ProxyState,
    peer_id: &Identity,
    destination: &Workload,
    service: Option<&Service>,
) -> bool {
    let waypoints = destination.waypoint.iter().chain(service.and_then(|s| s.waypoint.as_ref()));
    waypoints.into_iter().any(|gateway| gateway_has_identity(state, gateway, peer_id))
}

/// Whether a workload behind `gateway` (an address, or a service's endpoints) has `id`.
fn gateway_has_identity(state: &ProxyState, gateway: &GatewayAddress, id: &Identity) -> bool {
    match &gateway.destination {
        GatewayDestination::Address(address) => {
            if let Some(w) = state.workload_by_address(&address.network, address.address) {
                return w.identity() == *id;
            }
            state
                .service_by_address(&address.network, address.address)
                .is_some_and(|s| service_has_identity(state, &s, id))
        }
        GatewayDestination::Hostname(host) => {
            state.service_by_host(&host.namespace, &host.hostname).is_some_and(|s| service_has_identity(state, &s, id))
        }
    }
}

fn service_has_identity(state: &ProxyState, service: &Service, id: &Identity) -> bool {
    service.endpoints.keys().filter_map(|uid| state.workload_by_uid(uid)).any(|w| w.identity() == *id)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::state::parse_local_config;

    const CONFIG: &str = r#"
workloads:
- uid: c//v1/Pod/shop/web
  name: web
  namespace: shop
  serviceAccount: web
  workloadIps: ["10.0.0.2"]
  node: node-b
  protocol: HBONE
  waypoint: {destination: "/10.0.0.9", hboneMtlsPort: 15008}
- uid: c//v1/Pod/shop/db
  name: db
  namespace: shop
  serviceAccount: db
  workloadIps: ["10.0.0.3"]
  node: node-b
  protocol: HBONE
  services: {"shop/db.shop.svc.cluster.local": {5432: 5432}}
- uid: c//v1/Pod/shop/waypoint
  name: waypoint
  namespace: shop
  serviceAccount: waypoint
  workloadIps: ["10.0.0.9"]
  node: node-a
  protocol: HBONE
  services: {"shop/waypoint.shop.svc.cluster.local": {15008: 15008}}
services:
- name: db
  namespace: shop
  hostname: db.shop.svc.cluster.local
  vips: ["/10.96.0.3"]
  ports: {5432: 5432}
  waypoint: {destination: "shop/waypoint.shop.svc.cluster.local", hboneMtlsPort: 15008}
- name: waypoint
  namespace: shop
  hostname: waypoint.shop.svc.cluster.local
  vips: ["/10.96.0.9"]
  ports: {15008: 15008}
"#;

    fn state() -> ProxyState {
        let cfg = parse_local_config(CONFIG.as_bytes(), "mesh.yaml", "cluster.local").expect("test config is valid");
        let shared = crate::state::SharedState::new("");
        crate::state::apply(&shared, cfg);
        ProxyState::clone(&shared.read())
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(hbone::FORWARDED, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn id(ns: &str, sa: &str) -> Identity {
        Identity::new("cluster.local", ns, sa)
    }

    #[test]
    fn forwarded_params_are_read_from_the_first_element() {
        let h = forwarded("for=\"10.1.2.3:4000\";host=web.shop.svc.cluster.local, for=1.1.1.1:1");
        assert_eq!(forwarded_param(&h, "for"), Some("10.1.2.3:4000"));
        assert_eq!(forwarded_param(&h, "host"), Some("web.shop.svc.cluster.local"));
        assert_eq!(forwarded_param(&forwarded("For=\"[::1]:80\""), "for"), Some("[::1]:80"));
        assert_eq!(forwarded_param(&forwarded("proto=http"), "for"), None);
        assert_eq!(forwarded_param(&HeaderMap::new(), "for"), None);
    }

    #[test]
    fn an_ordinary_peer_cannot_choose_its_source_address() {
        let state = state();
        let web = state.workload_by_ip("10.0.0.2".parse().unwrap()).unwrap();
        let peer: SocketAddr = "10.0.0.50:41000".parse().unwrap();
        let forged = forwarded("for=\"10.0.0.3:5000\"");
        // A mesh identity that is not the destination's waypoint: the header is ignored.
        assert_eq!(client_address(&state, peer, &id("lab", "sleep"), &web, None, &forged), peer);
        // The destination's own identity, or one of the same namespace, earns nothing either.
        assert_eq!(client_address(&state, peer, &id("shop", "web"), &web, None, &forged), peer);
        assert_eq!(client_address(&state, peer, &id("shop", "db"), &web, None, &forged), peer);
    }

    #[test]
    fn the_destinations_waypoint_may_forward_the_client_address() {
        let state = state();
        let web = state.workload_by_ip("10.0.0.2".parse().unwrap()).unwrap();
        let peer: SocketAddr = "10.0.0.9:41000".parse().unwrap();
        let waypoint = id("shop", "waypoint");
        let h = forwarded("for=\"10.0.0.3:5000\"");
        assert_eq!(client_address(&state, peer, &waypoint, &web, None, &h), "10.0.0.3:5000".parse().unwrap());
        // Without a usable header, the peer address stands.
        assert_eq!(client_address(&state, peer, &waypoint, &web, None, &forwarded("for=unknown")), peer);
        assert_eq!(client_address(&state, peer, &waypoint, &web, None, &HeaderMap::new()), peer);
    }

    #[test]
    fn a_service_waypoint_given_by_hostname_is_resolved_through_its_endpoints() {
        let state = state();
        let db = state.workload_by_ip("10.0.0.3".parse().unwrap()).unwrap();
        let service = state.service_by_host("shop", "db.shop.svc.cluster.local").unwrap();
        let waypoint = id("shop", "waypoint");
        assert!(is_waypoint_of(&state, &waypoint, &db, Some(&service)));
        assert!(!is_waypoint_of(&state, &waypoint, &db, None), "db itself names no waypoint");
        assert!(!is_waypoint_of(&state, &id("shop", "web"), &db, Some(&service)));
    }
}
