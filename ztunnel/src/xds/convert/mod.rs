//! `TryFrom` conversions from the xDS protos into `state` types, with the checks the local
//! config file gets (shared through `state`) plus the wire-level ones: address byte lengths,
//! port ranges, known enum values, required oneofs.
//!
//! A failed conversion is a [`ResourceError`] naming the resource and the field in the
//! proto's own spelling (`Address "uid-1": addresses[0]: ...`), which goes back to istiod in
//! the NACK. Conversions are pure: no IO, no shared state.

mod authorization;
mod service;
mod wire;
mod workload;

#[cfg(test)]
mod authorization_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

use prost::Message;

use super::proto::workload as pb;
use crate::state::{Endpoint, Rejection, Service, StringPool, Workload};

pub(crate) use authorization::Policy;

/// Settings the conversion fills defaults from, and the pool of texts converted resources share.
#[derive(Debug)]
pub(crate) struct Defaults {
    /// Trust domain of workloads that name none (istiod elides the mesh default).
    pub(crate) trust_domain: Arc<str>,
    /// Locked once per resource; only the xDS store's task converts.
    pub(crate) strings: Mutex<StringPool>,
}

impl Defaults {
    pub(crate) fn new(trust_domain: &str) -> Defaults {
        Defaults { trust_domain: trust_domain.into(), strings: Mutex::new(StringPool::default()) }
    }

    /// Drops pooled texts no resource uses any more.
    pub(crate) fn prune_strings(&self) {
        self.strings.lock().unwrap_or_else(PoisonError::into_inner).prune();
    }
}

/// A resource as it arrives: its xDS name next to its decoded message.
pub(crate) struct Named<'a, T> {
    pub(crate) name: &'a str,
    pub(crate) message: T,
    pub(crate) defaults: &'a Defaults,
}

/// One `istio.workload.Address`, converted.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AddressEntry {
    /// A workload, and its endpoint in each service it declares.
    Workload { workload: Arc<Workload>, endpoints: Vec<Endpoint> },
    /// A service; its endpoints come from the workloads that name it.
    Service(Service),
}

/// Why one resource was rejected; the rest of its response still applies.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ResourceError {
    /// `Address` or `Authorization`.
    pub kind: &'static str,
    /// The resource's xDS name.
    pub name: String,
    /// The field at fault, in the proto's spelling (`addresses[1]`), if known.
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for ResourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: ", self.kind, self.name)?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Builds errors for one resource; `prefix` is prepended to field names (`workload.`).
#[derive(Clone, Copy)]
pub(super) struct Blame<'a> {
    kind: &'static str,
    name: &'a str,
    prefix: &'a str,
}

impl<'a> Blame<'a> {
    pub(super) fn new(kind: &'static str, name: &'a str, prefix: &'a str) -> Blame<'a> {
        Blame { kind, name, prefix }
    }

    pub(super) fn field(&self, field: impl fmt::Display, reason: impl Into<String>) -> ResourceError {
        ResourceError {
            kind: self.kind,
            name: self.name.to_string(),
            field: Some(format!("{}{field}", self.prefix)),
            reason: reason.into(),
        }
    }

    pub(super) fn whole(&self, reason: impl Into<String>) -> ResourceError {
        ResourceError { kind: self.kind, name: self.name.to_string(), field: None, reason: reason.into() }
    }

    /// A shared `state` check's rejection, with the field put under this resource.
    pub(super) fn rejected(&self, r: Rejection) -> ResourceError {
        match r.field {
            Some(field) => self.field(field, r.reason),
            None => self.whole(r.reason),
        }
    }

    /// The label `state` checks put in their rejections (replaced by [`Self::rejected`]).
    pub(super) fn label(&self) -> String {
        format!("{} {:?}", self.kind, self.name)
    }
}

/// A raw address: 4 bytes for IPv4, 16 for IPv6. Field names are `Display` so that callers
/// can pass `format_args!`, formatted only for an error.
pub(super) fn ip_from_bytes(blame: Blame<'_>, field: impl fmt::Display, bytes: &[u8]) -> Result<IpAddr, ResourceError> {
    match bytes.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap_or_default()))),
        16 => Ok(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap_or_default()))),
        n => Err(blame.field(field, format!("expected 4 (IPv4) or 16 (IPv6) address bytes, got {n}"))),
    }
}

/// A port carried as `uint32`: must fit 16 bits (0 is left to the caller's rules).
pub(super) fn port_from_u32(blame: Blame<'_>, field: impl fmt::Display, port: u32) -> Result<u16, ResourceError> {
    u16::try_from(port).map_err(|_| blame.field(field, format!("port {port} is out of range (0..65535)")))
}

/// A proto3 enum value this build knows, or an error naming the value.
pub(super) fn known<E: TryFrom<i32>>(blame: Blame<'_>, field: &str, value: i32) -> Result<E, ResourceError> {
    E::try_from(value).map_err(|_| blame.field(field, format!("unknown enum value {value}")))
}

/// Decodes and converts one `istio.workload.Address` message. Used by the client and by the
/// fuzz targets, which feed it arbitrary bytes.
pub fn check_address(name: &str, bytes: &[u8], trust_domain: &str) -> Result<(), ResourceError> {
    let defaults = Defaults::new(trust_domain);
    let message = pb::Address::decode(bytes).map_err(|e| ResourceError {
        kind: "Address",
        name: name.into(),
        field: None,
        reason: format!("cannot decode: {e}"),
    })?;
    AddressEntry::try_from(Named { name, message, defaults: &defaults }).map(|_| ())
}

/// Decodes and converts one `istio.security.Authorization` message (see [`check_address`]).
pub fn check_authorization(name: &str, bytes: &[u8]) -> Result<(), ResourceError> {
    let defaults = Defaults::new("");
    Policy::try_from(Named { name, message: bytes, defaults: &defaults }).map(|_| ())
}

impl TryFrom<Named<'_, pb::Address>> for AddressEntry {
    type Error = ResourceError;

    fn try_from(r: Named<'_, pb::Address>) -> Result<AddressEntry, ResourceError> {
        match r.message.r#type {
            Some(pb::address::Type::Workload(w)) => {
                let (workload, endpoints) =
                    workload::convert(Named { name: r.name, message: w, defaults: r.defaults })?;
                Ok(AddressEntry::Workload { workload: Arc::new(workload), endpoints })
            }
            Some(pb::address::Type::Service(s)) => {
                let service = Service::try_from(Named { name: r.name, message: s, defaults: r.defaults })?;
                Ok(AddressEntry::Service(service))
            }
            None => Err(Blame::new("Address", r.name, "").field("type", "neither workload nor service is set")),
        }
    }
}
