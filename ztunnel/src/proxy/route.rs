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
use crate::state::{Protocol, ProxyState, Service, Workload};

/// Istio's port for inbound HBONE.
pub const HBONE_PORT: u16 = 15008;

/// Where an outbound connection goes.
#[derive(Clone, Debug)]
pub struct Route {
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
pub enum Transport {
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
pub fn plan_outbound<R: Rng>(state: &ProxyState, dst: SocketAddr, rng: &mut R) -> Result<Route, RouteError> {
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
        return Ok(to_workload(workload, None, dst));
    }
    Ok(Route { workload: None, service: None, target: dst, transport: Transport::Direct })
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
