//! Newtypes shared across layers for values that are easy to confuse.
//!
//! A connection on the data path carries two addresses of the same Rust type and a workload
//! named by a string: the address the client originally dialled ([`OrigDst`]), the client's own
//! address ([`ClientAddr`]), and the uid of a workload ([`WorkloadUid`]). Each is its own type,
//! so passing one where another is expected does not compile. They are built at the edges
//! (accepted sockets, the capture map, config parsing, xDS conversion, the control socket) and
//! unwrapped only where a socket call or a log line needs the raw value.
//!
//! All three serialize exactly as the value they wrap.
//!
//! ```compile_fail
//! use ztunnel::types::{ClientAddr, OrigDst};
//! fn route(_client: ClientAddr, _dst: OrigDst) {}
//! let client = ClientAddr("10.0.0.1:40000".parse().unwrap());
//! let dst = OrigDst("10.0.0.2:80".parse().unwrap());
//! route(dst, client); // swapped: does not compile
//! ```
//!
//! ```compile_fail
//! use ztunnel::types::WorkloadUid;
//! fn lookup(_uid: &WorkloadUid) {}
//! lookup(&String::from("c//v1/Pod/shop/web")); // a bare string is not a uid
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The address and port a client originally connected to, before capture or a tunnel
/// delivered the connection to ztunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrigDst(pub SocketAddr);

/// The address of the client of a connection: the socket's peer, or the client a trusted
/// waypoint vouches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientAddr(pub SocketAddr);

macro_rules! socket_addr_newtype {
    ($name:ident) => {
        impl $name {
            /// The wrapped address.
            pub fn addr(self) -> SocketAddr {
                self.0
            }

            pub fn ip(self) -> IpAddr {
                self.0.ip()
            }

            pub fn port(self) -> u16 {
                self.0.port()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$name> for SocketAddr {
            fn from(value: $name) -> SocketAddr {
                value.0
            }
        }
    };
}

socket_addr_newtype!(OrigDst);
socket_addr_newtype!(ClientAddr);

/// The uid of a workload (Istio's `Workload.uid`, e.g. `cluster1//v1/Pod/shop/web-1`).
/// Cheap to clone (shared).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkloadUid(Arc<str>);

impl WorkloadUid {
    pub fn new(uid: impl Into<Arc<str>>) -> WorkloadUid {
        WorkloadUid(uid.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for WorkloadUid {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for WorkloadUid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for WorkloadUid {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkloadUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for WorkloadUid {
    fn from(uid: &str) -> WorkloadUid {
        WorkloadUid(uid.into())
    }
}

impl From<String> for WorkloadUid {
    fn from(uid: String) -> WorkloadUid {
        WorkloadUid(uid.into())
    }
}

impl PartialEq<str> for WorkloadUid {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for WorkloadUid {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialize_as_the_wrapped_value() {
        let dst = OrigDst("10.0.0.2:80".parse().unwrap());
        let client = ClientAddr("[fd00::1]:40000".parse().unwrap());
        let uid = WorkloadUid::from("c//v1/Pod/shop/web-1");
        assert_eq!(serde_json::to_string(&dst).unwrap(), r#""10.0.0.2:80""#);
        assert_eq!(serde_json::to_string(&client).unwrap(), r#""[fd00::1]:40000""#);
        assert_eq!(serde_json::to_string(&uid).unwrap(), r#""c//v1/Pod/shop/web-1""#);
        assert_eq!(serde_json::from_str::<WorkloadUid>(r#""c//v1/Pod/shop/web-1""#).unwrap(), uid);
        assert_eq!(
            (dst.to_string(), client.to_string(), uid.to_string()),
            ("10.0.0.2:80".to_string(), "[fd00::1]:40000".to_string(), "c//v1/Pod/shop/web-1".to_string())
        );
    }

    #[test]
    fn a_uid_is_found_in_maps_by_its_text() {
        let mut map = std::collections::HashMap::new();
        map.insert(WorkloadUid::from("u1"), 1);
        assert_eq!(map.get("u1"), Some(&1));
    }
}
