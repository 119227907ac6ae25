//! Integration test harness: ztunnels on loopback "nodes", workloads on unique 127.x.y.z
//! addresses, real servers and clients.
//!
//! Every test gets its own /24 inside 127.0.0.0/8 (picked at random and checked free), so tests
//! run in parallel with fixed ports such as 15008. Everything a test starts lives in its tokio
//! runtime or in guards that clean up on drop.

pub mod capture_mesh;
pub mod counting;
pub mod envoy;
pub mod h2_flood;
pub mod kube_api;
pub mod local_config;
pub mod mesh;
pub mod net;
pub mod netns;
pub mod policies;
pub mod process;
pub mod wait;

pub use mesh::{Mesh, MeshNode, ServiceSpec, WorkloadSpec};
pub use net::{Subnet, echo_server, http_get, sha256_hex, socks5_connect};
