//! Code generated at build time from `ztunnel/proto` (see `build.rs`). Only `xds` and its
//! conversions use these types; everything else sees `state` and `identity` types.
//!
//! Modules mirror the protobuf packages because generated code refers to other packages by
//! relative paths (`super::super::...`).

#![allow(clippy::all, clippy::pedantic, rust_2018_idioms, unreachable_pub)]

pub(crate) mod istio {
    pub(crate) mod workload {
        tonic::include_proto!("istio.workload");
    }
    pub(crate) mod security {
        tonic::include_proto!("istio.security");
    }
    pub(crate) mod v1 {
        pub(crate) mod auth {
            tonic::include_proto!("istio.v1.auth");
        }
    }
}

pub(crate) mod envoy {
    pub(crate) mod config {
        pub(crate) mod core {
            pub(crate) mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub(crate) mod service {
        pub(crate) mod discovery {
            pub(crate) mod v3 {
                tonic::include_proto!("envoy.service.discovery.v3");
            }
        }
    }
}

pub(crate) mod google {
    pub(crate) mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub(crate) use envoy::config::core::v3 as core;
pub(crate) use envoy::service::discovery::v3 as discovery;
pub(crate) use istio::security;
pub(crate) use istio::v1::auth as ca;
pub(crate) use istio::workload;
