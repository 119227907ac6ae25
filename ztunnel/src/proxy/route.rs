//! Outbound route planning: where does a connection from a local workload go?
//!
//! Pure over state (no sockets): a destination that is a service VIP goes to one of the
//! service's healthy endpoints (weighted random); a workload IP goes to that workload; any
//! other address is passed through as plain TCP. Workloads that speak HBONE are reached through
//! a tunnel to `<workload ip>:15008` with `:authority` = `<workload ip>:<target port>`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rand::Rng;

use crate::identity::Identity;
use crate::in_pod::HBONE_PORT;
use crate::state::{Protocol, ProxyState, Service, Workload};
use crate::types::OrigDst;

/// Where an outbound connection goes.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// The workload that will receive the connection, if the destination is meshed state.
    pub workload: Option<Arc<Workload>>,
    /// The service the client addressed, when it connected to a VIP.
    pub service: Option<Arc<Service>>,
    /// Final destination address: the workload's IP and the target port.
    pub target: SocketAddr,
    pub transport: Transport,
}

/// How bytes reach [`Route::target`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// An HBONE tunnel to `gateway` (the workload's 15008) expecting the peer's identity.
    Hbone { gateway: SocketAddr, identity: Identity },
    /// Plain TCP to the target: the destination is not meshed (or speaks TCP only).
    Direct,
}

/// Why no route could be planned; the client asked for something that cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("service {service} does not declare port {port}")]
    UnknownServicePort { service: String, port: u16 },
    #[error("service {service} has no healthy endpoint for port {port}")]
    NoHealthyEndpoint { service: String, port: u16 },
    #[error("destination workload {workload} has no address")]
    NoAddress { workload: String },
}

/// Plans the route for a connection to `dst`.
pub(crate) fn plan_outbound<R: Rng>(state: &ProxyState, dst: OrigDst, rng: &mut R) -> Result<Route, RouteError> {
    if let Some(service) = state.service_by_vip(dst.ip()) {
        let key = format!("{}/{}", service.namespace, service.hostname);
        if !service.ports.contains_key(&dst.port()) {
            return Err(RouteError::UnknownServicePort { service: key, port: dst.port() });
        }
        let (workload, target_port) = state
            .pick_endpoint(&service, dst.port(), rng)
            .ok_or(RouteError::NoHealthyEndpoint { service: key, port: dst.port() })?;
        let ip = address_of(&workload, dst.ip())?;
        return Ok(to_workload(workload, Some(service), SocketAddr::new(ip, target_port)));
    }
    if let Some(workload) = state.workload_by_ip(dst.ip()) {
        return Ok(to_workload(workload, None, dst.addr()));
    }
    Ok(Route { workload: None, service: None, target: dst.addr(), transport: Transport::Direct })
}

/// The workload's address in the client's IP family when it has one.
fn address_of(workload: &Workload, like: IpAddr) -> Result<IpAddr, RouteError> {
    workload
        .workload_ips
        .iter()
        .find(|ip| ip.is_ipv4() == like.is_ipv4())
        .or(workload.workload_ips.first())
        .copied()
        .ok_or_else(|| RouteError::NoAddress { workload: workload.uid.to_string() })
}

fn to_workload(workload: Arc<Workload>, service: Option<Arc<Service>>, target: SocketAddr) -> Route {
    let transport = match workload.protocol {
        Protocol::Hbone => {
            Transport::Hbone { gateway: SocketAddr::new(target.ip(), HBONE_PORT), identity: workload.identity() }
        }
        Protocol::Tcp => Transport::Direct,
    };
    Route { workload: Some(workload), service, target, transport }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::state::{SharedState, apply, parse_local_config};

    const CONFIG: &str = r#"
workloads:
- uid: c//v1/Pod/default/web-1
  name: web-1
  namespace: default
  serviceAccount: web
  workloadIps: ["10.0.0.1"]
  protocol: HBONE
  node: n2
  services: {"default/web.default.svc.cluster.local": {80: 8080}}
- uid: c//v1/Pod/default/web-2
  name: web-2
  namespace: default
  serviceAccount: web
  workloadIps: ["10.0.0.2"]
  protocol: HBONE
  node: n2
  status: Unhealthy
  services: {"default/web.default.svc.cluster.local": {80: 8080}}
- uid: c//v1/Pod/legacy/db
  name: db
  namespace: legacy
  workloadIps: ["10.0.0.3"]
  protocol: TCP
  node: n2
- uid: c//v1/Pod/default/idle
  name: idle
  namespace: default
  workloadIps: ["10.0.0.4"]
  protocol: HBONE
  node: n2
services:
- name: web
  namespace: default
  hostname: web.default.svc.cluster.local
  vips: ["/10.96.0.1"]
  ports: {80: 8080, 443: 8443}
- name: empty
  namespace: default
  hostname: empty.default.svc.cluster.local
  vips: ["/10.96.0.2"]
  ports: {80: 80}
"#;

    fn state() -> SharedState {
        let state = SharedState::new("");
        apply(&state, parse_local_config(CONFIG.as_bytes(), "route-test.yaml", "cluster.local").unwrap());
        state
    }

    fn plan(dst: &str) -> Result<Route, RouteError> {
        let state = state();
        let dst = OrigDst(dst.parse().unwrap());
        plan_outbound(&state.read(), dst, &mut StdRng::seed_from_u64(7))
    }

    fn hbone(gateway: &str, sa: &str) -> Transport {
        Transport::Hbone { gateway: gateway.parse().unwrap(), identity: Identity::new("cluster.local", "default", sa) }
    }

    #[test]
    fn routes() {
        // (destination, expected target, expected transport, expected service)
        let cases: &[(&str, &str, Transport, Option<&str>)] = &[
            // VIP: the only healthy endpoint, service port mapped to the endpoint's target port.
            ("10.96.0.1:80", "10.0.0.1:8080", hbone("10.0.0.1:15008", "web"), Some("web")),
            // Workload IP: that workload, the port unchanged.
            ("10.0.0.1:9090", "10.0.0.1:9090", hbone("10.0.0.1:15008", "web"), None),
            // Unhealthy workloads are still reachable by their own address.
            ("10.0.0.2:8080", "10.0.0.2:8080", hbone("10.0.0.2:15008", "web"), None),
            // TCP-only workloads are dialled directly.
            ("10.0.0.3:5432", "10.0.0.3:5432", Transport::Direct, None),
            // Unknown destinations pass through.
            ("192.0.2.9:443", "192.0.2.9:443", Transport::Direct, None),
        ];
        for (dst, target, transport, service) in cases {
            let route = plan(dst).unwrap_or_else(|e| panic!("{dst}: {e}"));
            assert_eq!(route.target, target.parse::<SocketAddr>().unwrap(), "{dst} target");
            assert_eq!(&route.transport, transport, "{dst} transport");
            assert_eq!(route.service.as_ref().map(|s| &*s.name), *service, "{dst} service");
        }
    }

    #[test]
    fn unservable_service_requests_are_errors() {
        assert_eq!(
            plan("10.96.0.1:81").unwrap_err(),
            RouteError::UnknownServicePort { service: "default/web.default.svc.cluster.local".into(), port: 81 }
        );
        assert_eq!(
            plan("10.96.0.2:80").unwrap_err(),
            RouteError::NoHealthyEndpoint { service: "default/empty.default.svc.cluster.local".into(), port: 80 }
        );
        // The endpoint maps only port 80; 443 has a service target but the endpoint does not serve it
        // through its own map, so the service's target port applies.
        let route = plan("10.96.0.1:443").unwrap();
        assert_eq!(route.target, "10.0.0.1:8443".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn vip_traffic_spreads_over_healthy_endpoints_only() {
        let mut config = CONFIG.replace("  status: Unhealthy\n", "");
        config.push('\n');
        let state = SharedState::new("");
        apply(&state, parse_local_config(config.as_bytes(), "spread.yaml", "cluster.local").unwrap());
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let route = plan_outbound(&state.read(), OrigDst("10.96.0.1:80".parse().unwrap()), &mut rng).unwrap();
            seen.insert(route.target);
        }
        let want: std::collections::BTreeSet<SocketAddr> =
            ["10.0.0.1:8080", "10.0.0.2:8080"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(seen, want, "both healthy endpoints must be picked");
    }
}
