//! `istio.workload.Workload` -> [`Workload`] plus its service endpoints, and the gateway
//! address both workloads and services use.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use super::{Blame, Named, ResourceError, ip_from_bytes, known, port_from_u32};
use crate::state::{
    self, ApplicationTunnel, Endpoint, GatewayAddress, GatewayDestination, HealthStatus, Locality, NamespacedHostname,
    NetworkAddress, NetworkMode, Protocol, Spelling, TunnelProtocol, Workload,
};
use crate::types::WorkloadUid;
use crate::xds::proto::workload as pb;

/// Converts a workload; the endpoints are one per service in its `services` map.
pub(super) fn convert(r: Named<'_, pb::Workload>) -> Result<(Workload, Vec<Endpoint>), ResourceError> {
    let blame = Blame::new("Address", r.name, "workload.");
    let w = r.message;
    let mut ips = Vec::with_capacity(w.addresses.len());
    for (i, bytes) in w.addresses.iter().enumerate() {
        ips.push(ip_from_bytes(blame, format_args!("addresses[{i}]"), bytes)?);
    }
    let protocol = match known(blame, "tunnel_protocol", w.tunnel_protocol)? {
        pb::TunnelProtocol::Hbone => Protocol::Hbone,
        pb::TunnelProtocol::None => Protocol::Tcp,
    };
    let status = health(known(blame, "status", w.status)?);
    let network_mode = match known(blame, "network_mode", w.network_mode)? {
        pb::NetworkMode::Standard => NetworkMode::Standard,
        pb::NetworkMode::HostNetwork => NetworkMode::HostNetwork,
    };
    let workload_type: pb::WorkloadType = known(blame, "workload_type", w.workload_type)?;
    let waypoint = w.waypoint.map(|g| gateway(blame, "waypoint", g)).transpose()?;
    let network_gateway = w.network_gateway.map(|g| gateway(blame, "network_gateway", g)).transpose()?;
    let application_tunnel = w.application_tunnel.map(|t| application_tunnel(blame, t)).transpose()?;

    // Texts many workloads repeat come from the pool; the uid and name are this one's own.
    let mut pool = r.defaults.strings.lock().unwrap_or_else(PoisonError::into_inner);
    let mut text = |s: &str| pool.get(s);
    let uid = WorkloadUid::from(w.uid.as_str());
    let mut services = Vec::with_capacity(w.services.len());
    let mut endpoints = Vec::with_capacity(w.services.len());
    // Sorted, so the endpoint order (and any error) does not depend on map iteration order.
    let sorted: BTreeMap<&String, &pb::PortList> = w.services.iter().collect();
    for (key, ports) in sorted {
        let parsed: NamespacedHostname =
            key.parse().map_err(|e: String| blame.field(format_args!("services[{key:?}]"), e))?;
        let service_key = NamespacedHostname { namespace: text(&parsed.namespace), hostname: text(&parsed.hostname) };
        let mut port = BTreeMap::new();
        for (j, p) in ports.ports.iter().enumerate() {
            let service_port =
                port_from_u32(blame, format_args!("services[{key:?}].ports[{j}].service_port"), p.service_port)?;
            let target_port =
                port_from_u32(blame, format_args!("services[{key:?}].ports[{j}].target_port"), p.target_port)?;
            // istiod sends target 0 when the endpoint has no own mapping for that port; the
            // service's target port applies then, as it does for a port left out.
            if target_port != 0 {
                port.insert(service_port, target_port);
            }
        }
        services.push(service_key.clone());
        endpoints.push(Endpoint { workload_uid: uid.clone(), service_key, port: port.into(), status });
    }

    let locality = w.locality.unwrap_or_default();
    let workload = Workload {
        uid,
        name: w.name.into(),
        namespace: text(&w.namespace),
        service_account: text(state::service_account_or_default(Some(&w.service_account))),
        trust_domain: text(state::trust_domain_or(Some(&w.trust_domain), &r.defaults.trust_domain)),
        workload_ips: ips,
        node: text(&w.node),
        network: text(&w.network),
        protocol,
        status,
        cluster_id: text(&w.cluster_id),
        canonical_name: text(&w.canonical_name),
        canonical_revision: text(&w.canonical_revision),
        workload_name: text(&w.workload_name),
        workload_type: text(&workload_type.as_str_name().to_ascii_lowercase()),
        hostname: text(&w.hostname),
        network_mode,
        waypoint,
        network_gateway,
        native_tunnel: w.native_tunnel,
        application_tunnel,
        authorization_policies: w.authorization_policies.iter().map(|p| text(p)).collect(),
        locality: Locality {
            region: text(&locality.region),
            zone: text(&locality.zone),
            subzone: text(&locality.subzone),
        },
        services,
        capacity: w.capacity.unwrap_or(1),
    };
    drop(pool);
    let label = blame.label();
    state::check_workload(&label, &workload, Spelling::Xds).map_err(|e| blame.rejected(e))?;
    for ep in &endpoints {
        let field = format_args!("services[\"{}\"]", ep.service_key);
        state::check_port_map(&label, field, &ep.port).map_err(|e| blame.rejected(e))?;
    }
    Ok((workload, endpoints))
}

fn health(status: pb::WorkloadStatus) -> HealthStatus {
    match status {
        pb::WorkloadStatus::Healthy => HealthStatus::Healthy,
        pb::WorkloadStatus::Unhealthy => HealthStatus::Unhealthy,
    }
}

fn application_tunnel(blame: Blame<'_>, t: pb::ApplicationTunnel) -> Result<ApplicationTunnel, ResourceError> {
    let protocol = match known(blame, "application_tunnel.protocol", t.protocol)? {
        pb::application_tunnel::Protocol::None => TunnelProtocol::None,
        pb::application_tunnel::Protocol::Proxy => TunnelProtocol::Proxy,
    };
    let port = port_from_u32(blame, "application_tunnel.port", t.port)?;
    Ok(ApplicationTunnel { protocol, port: (port != 0).then_some(port) })
}

/// A waypoint or network gateway: a service name or a network address, and its HBONE port.
pub(super) fn gateway(blame: Blame<'_>, field: &str, g: pb::GatewayAddress) -> Result<GatewayAddress, ResourceError> {
    let destination = match g.destination {
        Some(pb::gateway_address::Destination::Hostname(h)) => {
            if h.namespace.is_empty() || h.hostname.is_empty() {
                return Err(
                    blame.field(format!("{field}.hostname"), "namespace and hostname must both be set".to_string())
                );
            }
            GatewayDestination::Hostname(NamespacedHostname::new(&h.namespace, &h.hostname))
        }
        Some(pb::gateway_address::Destination::Address(a)) => {
            let ip = ip_from_bytes(blame, format_args!("{field}.address.address"), &a.address)?;
            GatewayDestination::Address(NetworkAddress::new(&a.network, ip))
        }
        None => return Err(blame.field(format!("{field}.destination"), "neither hostname nor address is set")),
    };
    let hbone_mtls_port = port_from_u32(blame, format_args!("{field}.hbone_mtls_port"), g.hbone_mtls_port)?;
    Ok(GatewayAddress { destination, hbone_mtls_port })
}
