//! Checks on one workload or service that need nothing else from where it came from. The
//! local config file (`validate`) and the xDS conversions both run them, so both sources
//! reject the same things with the same words; only the spelling of field names differs
//! (camelCase in the file, the proto's snake_case over xDS), see [`Spelling`].
//!
//! Cross-entry checks (duplicate uids, addresses, references) are not here: the file checks
//! them itself, and over xDS each resource stands alone.

use super::service::Service;
use super::workload::{GatewayAddress, Workload};

/// Why an entry was rejected: which entry (`workloads[1] (uid "a")`, `Address "uid"`), which
/// field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) entry: Option<String>,
    pub(crate) field: Option<String>,
    pub(crate) reason: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(entry) = &self.entry {
            write!(f, "{entry}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// How field names are written in the source being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spelling {
    /// Istio's local config file: camelCase.
    Local,
    /// The xDS protos: snake_case, and the proto's own field names.
    Xds,
}

impl Spelling {
    fn pick(self, local: &'static str, xds: &'static str) -> &'static str {
        match self {
            Spelling::Local => local,
            Spelling::Xds => xds,
        }
    }
    pub(crate) fn workload_ips(self) -> &'static str {
        self.pick("workloadIps", "addresses")
    }
    pub(crate) fn service_account(self) -> &'static str {
        self.pick("serviceAccount", "service_account")
    }
    pub(crate) fn trust_domain(self) -> &'static str {
        self.pick("trustDomain", "trust_domain")
    }
    pub(crate) fn network_gateway(self) -> &'static str {
        self.pick("networkGateway", "network_gateway")
    }
    fn hbone_port(self) -> &'static str {
        self.pick("hboneMtlsPort", "hbone_mtls_port")
    }
    fn application_tunnel_port(self) -> &'static str {
        self.pick("applicationTunnel.port", "application_tunnel.port")
    }
}

pub(crate) fn reject(entry: &str, field: impl Into<String>, reason: impl Into<String>) -> Rejection {
    Rejection { entry: Some(entry.to_string()), field: Some(field.into()), reason: reason.into() }
}

/// Fields that become path segments of a SPIFFE id must not contain `/`.
pub(crate) fn no_slash(entry: &str, field: &str, value: &str) -> Result<(), Rejection> {
    if value.contains('/') {
        return Err(reject(
            entry,
            field,
            format!("{value:?} must not contain '/' (it is part of the SPIFFE identity)"),
        ));
    }
    Ok(())
}

pub(crate) fn check_port(entry: &str, field: &str, what: &str, port: u16) -> Result<(), Rejection> {
    if port == 0 {
        return Err(reject(entry, field, format!("{what} must be in 1..65535, got 0")));
    }
    Ok(())
}

/// An endpoint port map: every service port and target port must be 1..65535. The field
/// name is only formatted for an error (this runs for every endpoint of every workload).
pub(crate) fn check_port_map<'a>(
    entry: &str,
    field: impl std::fmt::Display,
    ports: impl IntoIterator<Item = (&'a u16, &'a u16)>,
) -> Result<(), Rejection> {
    for (&service_port, &target_port) in ports {
        if service_port == 0 || target_port == 0 {
            let field = field.to_string();
            check_port(entry, &field, "service port", service_port)?;
            check_port(entry, &field, &format!("target port of service port {service_port}"), target_port)?;
        }
    }
    Ok(())
}

fn check_gateway(entry: &str, field: &str, gw: &Option<GatewayAddress>, spelling: Spelling) -> Result<(), Rejection> {
    match gw {
        Some(gw) => check_port(entry, &format!("{field}.{}", spelling.hbone_port()), "port", gw.hbone_mtls_port),
        None => Ok(()),
    }
}

fn non_empty(entry: &str, field: &str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(reject(entry, field, "must not be empty"));
    }
    Ok(())
}

/// A workload on its own: uid, name and namespace set; identity parts without `/`; no IP
/// listed twice; gateway and tunnel ports in range.
pub(crate) fn check_workload(entry: &str, w: &Workload, spelling: Spelling) -> Result<(), Rejection> {
    non_empty(entry, "uid", &w.uid)?;
    non_empty(entry, "name", &w.name)?;
    non_empty(entry, "namespace", &w.namespace)?;
    no_slash(entry, "namespace", &w.namespace)?;
    no_slash(entry, spelling.service_account(), &w.service_account)?;
    no_slash(entry, spelling.trust_domain(), &w.trust_domain)?;
    for (j, ip) in w.workload_ips.iter().enumerate() {
        if w.workload_ips[..j].contains(ip) {
            return Err(reject(entry, format!("{}[{j}]", spelling.workload_ips()), format!("{ip} is listed twice")));
        }
    }
    check_gateway(entry, "waypoint", &w.waypoint, spelling)?;
    check_gateway(entry, spelling.network_gateway(), &w.network_gateway, spelling)?;
    if let Some(port) = w.application_tunnel.as_ref().and_then(|t| t.port) {
        check_port(entry, spelling.application_tunnel_port(), "port", port)?;
    }
    Ok(())
}

/// A service on its own: name, namespace and hostname set, hostname without `/`, service
/// ports and the waypoint port in range, endpoint port maps in range. A target port of 0 is
/// Istio's "unspecified" (each endpoint supplies its own), so only service ports are checked.
pub(crate) fn check_service(entry: &str, s: &Service, spelling: Spelling) -> Result<(), Rejection> {
    non_empty(entry, "name", &s.name)?;
    non_empty(entry, "namespace", &s.namespace)?;
    non_empty(entry, "hostname", &s.hostname)?;
    if s.hostname.contains('/') {
        return Err(reject(entry, "hostname", "must not contain '/'"));
    }
    for &port in s.ports.keys() {
        check_port(entry, &format!("ports[{port}]"), "service port", port)?;
    }
    check_gateway(entry, "waypoint", &s.waypoint, spelling)?;
    for (uid, ep) in &s.endpoints {
        check_port_map(entry, format_args!("endpoints[{uid:?}].port"), &ep.port)?;
    }
    Ok(())
}
