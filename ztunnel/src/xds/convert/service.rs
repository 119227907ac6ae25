//! `istio.workload.Service` -> [`Service`] (without endpoints: those come from workloads).

use std::collections::BTreeMap;
use std::sync::PoisonError;

use super::workload::gateway;
use super::{Blame, Named, ResourceError, ip_from_bytes, known, port_from_u32};
use crate::state::{
    self, Endpoints, IpFamily, LoadBalancer, LoadBalancerHealthPolicy, LoadBalancerMode, LoadBalancerScope,
    NetworkAddress, Service, Spelling,
};
use crate::xds::proto::workload as pb;

impl TryFrom<Named<'_, pb::Service>> for Service {
    type Error = ResourceError;

    fn try_from(r: Named<'_, pb::Service>) -> Result<Service, ResourceError> {
        let blame = Blame::new("Address", r.name, "service.");
        let s = r.message;
        let mut vips = Vec::with_capacity(s.addresses.len());
        for (i, a) in s.addresses.iter().enumerate() {
            let ip = ip_from_bytes(blame, format_args!("addresses[{i}].address"), &a.address)?;
            vips.push(NetworkAddress {
                network: r.defaults.strings.lock().unwrap_or_else(PoisonError::into_inner).get(&a.network),
                address: ip,
            });
        }
        let mut ports = BTreeMap::new();
        for (i, p) in s.ports.iter().enumerate() {
            let service_port = port_from_u32(blame, format_args!("ports[{i}].service_port"), p.service_port)?;
            let target_port = port_from_u32(blame, format_args!("ports[{i}].target_port"), p.target_port)?;
            if ports.insert(service_port, target_port).is_some() {
                return Err(blame.field(format!("ports[{i}]"), format!("service port {service_port} is listed twice")));
            }
        }
        let waypoint = s.waypoint.map(|g| gateway(blame, "waypoint", g)).transpose()?;
        let load_balancer = s.load_balancing.map(|lb| load_balancer(blame, lb)).transpose()?;
        let ip_families = match known(blame, "ip_families", s.ip_families)? {
            pb::IpFamilies::Automatic => None,
            pb::IpFamilies::Ipv4Only => Some(IpFamily::IPv4),
            pb::IpFamilies::Ipv6Only => Some(IpFamily::IPv6),
            pb::IpFamilies::Dual => Some(IpFamily::Dual),
        };
        let mut pool = r.defaults.strings.lock().unwrap_or_else(PoisonError::into_inner);
        let service = Service {
            name: pool.get(&s.name),
            namespace: pool.get(&s.namespace),
            hostname: pool.get(&s.hostname),
            vips,
            ports,
            endpoints: Endpoints::default(),
            subject_alt_names: s.subject_alt_names.iter().map(|san| pool.get(san)).collect(),
            waypoint,
            load_balancer,
            ip_families,
        };
        drop(pool);
        state::check_service(&blame.label(), &service, Spelling::Xds).map_err(|e| blame.rejected(e))?;
        Ok(service)
    }
}

fn load_balancer(blame: Blame<'_>, lb: pb::LoadBalancing) -> Result<LoadBalancer, ResourceError> {
    use pb::load_balancing::{HealthPolicy, Mode, Scope};
    let mut routing_preferences = Vec::with_capacity(lb.routing_preference.len());
    for (i, &scope) in lb.routing_preference.iter().enumerate() {
        let field = format!("load_balancing.routing_preference[{i}]");
        routing_preferences.push(match known(blame, &field, scope)? {
            Scope::UnspecifiedScope => return Err(blame.field(field, "scope must be specified")),
            Scope::Region => LoadBalancerScope::Region,
            Scope::Zone => LoadBalancerScope::Zone,
            Scope::Subzone => LoadBalancerScope::Subzone,
            Scope::Node => LoadBalancerScope::Node,
            Scope::Cluster => LoadBalancerScope::Cluster,
            Scope::Network => LoadBalancerScope::Network,
        });
    }
    let mode = match known(blame, "load_balancing.mode", lb.mode)? {
        Mode::UnspecifiedMode => LoadBalancerMode::Standard,
        Mode::Strict => LoadBalancerMode::Strict,
        Mode::Failover => LoadBalancerMode::Failover,
        Mode::Passthrough => LoadBalancerMode::Passthrough,
    };
    let health_policy = match known(blame, "load_balancing.health_policy", lb.health_policy)? {
        HealthPolicy::OnlyHealthy => LoadBalancerHealthPolicy::OnlyHealthy,
        HealthPolicy::AllowAll => LoadBalancerHealthPolicy::AllowAll,
    };
    Ok(LoadBalancer { routing_preferences, mode, health_policy })
}
