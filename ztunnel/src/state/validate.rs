//! Checks a parsed local config file and turns it into workloads and services.
//!
//! Everything syntax-level (types, enum spellings, IP and VIP syntax, unknown keys) was already
//! rejected by serde with a line number; this module checks what needs the whole file: required
//! fields, defaults, duplicates, cross-references and port ranges. It names the entry and field
//! of the first problem found. It does no IO and builds no indexes. Policies, namespaces and
//! the `mtls` shorthand are checked in `validate_policy`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::Arc;

use super::address::NamespacedHostname;
use super::capture::PodCapture;
use super::capture_exclusions::CaptureExclusions;
pub(super) use super::checks::Rejection;
use super::checks::{Spelling, check_port_map, check_service, check_workload, no_slash, reject};
use super::endpoints::Endpoints;
use super::local_format::{LocalConfigFile, ServiceEntry, WorkloadEntry};
use super::service::{Endpoint, Service};
use super::validate_policy::{apply_mtls, check_namespaces, check_policies};
use super::workload::{NetworkMode, Workload};
use crate::policy::Authorization;
use crate::types::WorkloadUid;

pub(super) struct Validated {
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    pub policies: Vec<Authorization>,
    /// Problems that do not reject the file (such as listed policies it does not define).
    pub warnings: Vec<String>,
    pub captures: Vec<PodCapture>,
}

/// `workloads[3] (uid "x")`, falling back to the name, then to the bare index.
pub(super) fn workload_label(index: usize, uid: Option<&str>, name: Option<&str>) -> String {
    match (uid.filter(|s| !s.is_empty()), name.filter(|s| !s.is_empty())) {
        (Some(uid), _) => format!("workloads[{index}] (uid {uid:?})"),
        (None, Some(name)) => format!("workloads[{index}] (name {name:?})"),
        (None, None) => format!("workloads[{index}]"),
    }
}

/// `services[1] (host "default/example.com")`, falling back to the name, then the bare index.
pub(super) fn service_label(
    index: usize,
    namespace: Option<&str>,
    hostname: Option<&str>,
    name: Option<&str>,
) -> String {
    let ns = namespace.filter(|s| !s.is_empty());
    match (ns, hostname.filter(|s| !s.is_empty()), name) {
        (Some(ns), Some(host), _) => format!("services[{index}] (host \"{ns}/{host}\")"),
        (_, _, Some(name)) if !name.is_empty() => format!("services[{index}] (name {name:?})"),
        _ => format!("services[{index}]"),
    }
}

pub(super) fn validate(mut file: LocalConfigFile, default_trust_domain: &str) -> Result<Validated, Rejection> {
    let mut services = check_services(&file.services)?;
    let keys: HashMap<NamespacedHostname, usize> = services.iter().enumerate().map(|(i, s)| (s.key(), i)).collect();
    let mut workloads = check_workloads(&file.workloads, &keys, default_trust_domain)?;
    add_endpoints(&file, &mut workloads, &mut services)?;
    let (captures, ignored) = check_captures(&file.workloads)?;
    let mut policies = std::mem::take(&mut file.policies);
    check_policies(&policies)?;
    let namespaces = check_namespaces(&file.namespaces)?;
    let mut warnings = apply_mtls(&file.workloads, &mut workloads, &namespaces, &mut policies);
    warnings.extend(ignored);
    Ok(Validated { workloads, services, policies, warnings, captures })
}

/// Capture blocks: an absolute namespace path, and the workload must name its node. A
/// `cgroup` is ignored with a warning (returned second).
fn check_captures(entries: &[WorkloadEntry]) -> Result<(Vec<PodCapture>, Vec<String>), Rejection> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (i, w) in entries.iter().enumerate() {
        let Some(capture) = &w.capture else { continue };
        let label = workload_label(i, w.uid.as_deref(), w.name.as_deref());
        if !capture.netns.starts_with('/') {
            return Err(reject(&label, "capture.netns", format!("{:?} must be an absolute path", capture.netns)));
        }
        if capture.cgroup.is_some() {
            warnings.push(format!(
                "{label}: capture.cgroup is ignored (a pod is captured by its network namespace); remove the field"
            ));
        }
        if w.node.is_empty() {
            return Err(reject(&label, "node", "a workload with a capture block must name its node"));
        }
        let pod = format!("{}/{}", w.namespace.as_deref().unwrap_or_default(), w.name.as_deref().unwrap_or_default());
        let exclusions = CaptureExclusions::from_annotations(&pod, &capture.annotations)
            .map_err(|e| reject(&label, "capture.annotations", e.to_string()))?;
        out.push(PodCapture {
            uid: w.uid.as_deref().unwrap_or_default().into(),
            node: w.node.as_str().into(),
            netns: capture.netns.clone().into(),
            exclusions,
        });
    }
    Ok((out, warnings))
}

/// A required, non-empty string field.
pub(super) fn required<'a>(entry: &str, field: &str, value: &'a Option<String>) -> Result<&'a str, Rejection> {
    match value.as_deref() {
        None => Err(reject(entry, field, "missing required field")),
        Some("") => Err(reject(entry, field, "must not be empty")),
        Some(v) => Ok(v),
    }
}

/// Istio's default when a workload names no service account.
pub(crate) fn service_account_or_default(service_account: Option<&str>) -> &str {
    match service_account {
        None | Some("") => "default",
        Some(sa) => sa,
    }
}

/// A workload's trust domain, or the mesh's when it names none (Istio elides the default).
pub(crate) fn trust_domain_or<'a>(trust_domain: Option<&'a str>, default: &'a str) -> &'a str {
    match trust_domain {
        None | Some("") => default,
        Some(td) => td,
    }
}

fn check_services(entries: &[ServiceEntry]) -> Result<Vec<Service>, Rejection> {
    let mut by_key: HashMap<NamespacedHostname, String> = HashMap::new();
    let mut vips: HashMap<(Arc<str>, IpAddr), String> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, s) in entries.iter().enumerate() {
        let label = service_label(i, s.namespace.as_deref(), s.hostname.as_deref(), s.name.as_deref());
        let name = required(&label, "name", &s.name)?;
        let namespace = required(&label, "namespace", &s.namespace)?;
        let hostname = required(&label, "hostname", &s.hostname)?;
        if hostname.contains('/') {
            return Err(reject(&label, "hostname", "must not contain '/'"));
        }
        let key = NamespacedHostname::new(namespace, hostname);
        match by_key.entry(key.clone()) {
            Entry::Occupied(first) => {
                return Err(reject(
                    &label,
                    "hostname",
                    format!("hostname {hostname:?} is already used in namespace {namespace:?} by {}", first.get()),
                ));
            }
            Entry::Vacant(v) => {
                v.insert(label.clone());
            }
        }
        for (j, vip) in s.vips.iter().enumerate() {
            match vips.entry((vip.network.clone(), vip.address)) {
                Entry::Occupied(first) => {
                    return Err(reject(
                        &label,
                        format!("vips[{j}]"),
                        format!("VIP \"{vip}\" is already used by {}", first.get()),
                    ));
                }
                Entry::Vacant(v) => {
                    v.insert(label.clone());
                }
            }
        }
        let service = Service {
            name: name.into(),
            namespace: key.namespace.clone(),
            hostname: key.hostname.clone(),
            vips: s.vips.clone(),
            ports: s.ports.clone(),
            endpoints: Endpoints::default(),
            subject_alt_names: s.subject_alt_names.iter().map(|s| s.as_str().into()).collect(),
            waypoint: s.waypoint.clone(),
            load_balancer: s.load_balancer.clone(),
            ip_families: s.ip_families,
        };
        check_service(&label, &service, Spelling::Local)?;
        out.push(service);
    }
    Ok(out)
}

fn check_workloads(
    entries: &[WorkloadEntry],
    services: &HashMap<NamespacedHostname, usize>,
    default_trust_domain: &str,
) -> Result<Vec<Workload>, Rejection> {
    let mut uids: HashMap<&str, String> = HashMap::new();
    let mut addresses: HashMap<(&str, IpAddr), String> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, w) in entries.iter().enumerate() {
        let label = workload_label(i, w.uid.as_deref(), w.name.as_deref());
        let uid = required(&label, "uid", &w.uid)?;
        let name = required(&label, "name", &w.name)?;
        let namespace = required(&label, "namespace", &w.namespace)?;
        no_slash(&label, "namespace", namespace)?;
        let service_account = service_account_or_default(w.service_account.as_deref());
        let trust_domain = trust_domain_or(w.trust_domain.as_deref(), default_trust_domain);
        if let Some(first) = uids.insert(uid, label.clone()) {
            return Err(reject(&label, "uid", format!("duplicate uid {uid:?}, already used by {first}")));
        }
        for (j, ip) in w.workload_ips.iter().enumerate() {
            let ip = ip.0;
            if w.workload_ips[..j].iter().any(|prev| prev.0 == ip) {
                // Reported by check_workload below, which names the field.
                break;
            }
            // Host-network workloads share their node's IP and are not found by address.
            if w.network_mode == NetworkMode::HostNetwork {
                continue;
            }
            match addresses.entry((w.network.as_str(), ip)) {
                Entry::Occupied(first) => {
                    return Err(reject(
                        &label,
                        format!("workloadIps[{j}]"),
                        format!("address {ip} in network {:?} is already used by {}", w.network, first.get()),
                    ));
                }
                Entry::Vacant(v) => {
                    v.insert(label.clone());
                }
            }
        }
        let mut member_of = Vec::with_capacity(w.services.len());
        for (key, ports) in &w.services {
            let field = format!("services[{key:?}]");
            let svc: NamespacedHostname = key.parse().map_err(|e| reject(&label, &field, e))?;
            if !services.contains_key(&svc) {
                return Err(reject(
                    &label,
                    &field,
                    format!(
                        "no service with namespace {:?} and hostname {:?} in this file",
                        &*svc.namespace, &*svc.hostname
                    ),
                ));
            }
            check_port_map(&label, &field, ports)?;
            member_of.push(svc);
        }
        let workload = Workload {
            uid: uid.into(),
            name: name.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
            trust_domain: trust_domain.into(),
            workload_ips: w.workload_ips.iter().map(|ip| ip.0).collect(),
            node: w.node.as_str().into(),
            network: w.network.as_str().into(),
            protocol: w.protocol,
            status: w.status,
            cluster_id: w.cluster_id.as_str().into(),
            canonical_name: w.canonical_name.as_str().into(),
            canonical_revision: w.canonical_revision.as_str().into(),
            workload_name: w.workload_name.as_str().into(),
            workload_type: w.workload_type.as_str().into(),
            hostname: w.hostname.as_str().into(),
            network_mode: w.network_mode,
            waypoint: w.waypoint.clone(),
            network_gateway: w.network_gateway.clone(),
            native_tunnel: w.native_tunnel,
            application_tunnel: w.application_tunnel.clone(),
            authorization_policies: w.authorization_policies.iter().map(|p| p.as_str().into()).collect(),
            locality: w.locality.clone(),
            services: member_of,
            capacity: w.capacity,
        };
        check_workload(&label, &workload, Spelling::Local)?;
        out.push(workload);
    }
    Ok(out)
}

/// Endpoints declared on services first, then the ones workloads declare (which win for the
/// same uid, as in Istio where workload endpoints are merged into the service last). A
/// workload lists every service it ends up an endpoint of, including those that declare it.
fn add_endpoints(
    file: &LocalConfigFile,
    workloads: &mut [Workload],
    services: &mut [Service],
) -> Result<(), Rejection> {
    let by_uid: HashMap<WorkloadUid, usize> = workloads.iter().enumerate().map(|(i, w)| (w.uid.clone(), i)).collect();
    for (i, (entry, svc)) in file.services.iter().zip(services.iter_mut()).enumerate() {
        let label = service_label(i, Some(&svc.namespace), Some(&svc.hostname), None);
        for (key, ep) in &entry.endpoints {
            let field = format!("endpoints[{key:?}]");
            let Some(&w) = by_uid.get(ep.workload_uid.as_str()) else {
                return Err(reject(
                    &label,
                    format!("{field}.workloadUid"),
                    format!("no workload with uid {:?} in this file", ep.workload_uid),
                ));
            };
            check_port_map(&label, format_args!("{field}.port"), &ep.port)?;
            let uid = workloads[w].uid.clone();
            svc.endpoints.insert(Endpoint {
                workload_uid: uid,
                service_key: svc.key(),
                port: (&ep.port).into(),
                status: ep.status,
            });
            if !workloads[w].services.contains(&svc.key()) {
                workloads[w].services.push(svc.key());
            }
        }
    }
    let index: HashMap<NamespacedHostname, usize> = services.iter().enumerate().map(|(i, s)| (s.key(), i)).collect();
    for (w, entry) in workloads.iter().zip(&file.workloads) {
        for (key, ports) in &entry.services {
            // check_workloads verified every reference, so nothing is skipped here.
            let Some(key) = key.parse::<NamespacedHostname>().ok() else {
                continue;
            };
            let Some(&i) = index.get(&key) else {
                continue;
            };
            services[i].endpoints.insert(Endpoint {
                workload_uid: w.uid.clone(),
                service_key: key,
                port: ports.into(),
                status: w.status,
            });
        }
    }
    Ok(())
}
