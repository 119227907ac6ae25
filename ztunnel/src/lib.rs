//! ztunnel: a per-node Layer-4 proxy for ambient service meshes.
//!
//! Modules form layers (see ARCHITECTURE.md at the repository root); a module imports only
//! from lower layers.
//!
//! 0. `accept_loop`, [`config`], [`types`], `in_pod` (ports and marks inside a pod's namespace), `drain`,
//!    `readiness`, [`telemetry`], [`metrics`], [`descriptors`]
//! 1. [`identity`] (SPIFFE ids), [`tls`] (rustls configs, SAN verification), [`policy`] (pure
//!    authorization evaluation)
//! 2. [`state`] (workloads, services, policies; lookups), [`identity`] certificate manager and local CA
//! 3. [`hbone`] (HTTP/2 CONNECT client, server, pool; knows nothing of state)
//! 4. [`proxy`] (SOCKS5, per-pod listeners, outbound, inbound, copy), [`capture`] (eBPF, the kernel
//!    side: programs, maps, links, sockets in a pod's namespace; never imports `proxy`), `admin`
//! 5. [`pods`] (a pod's enrollment: the pod table, serving, keeper, records, control socket)
//! 6. [`kubernetes`] (Kubernetes enrollment: rules, the CNI plugin's events)
//! 7. [`app`] (composition root)
//!
//! The public surface is chosen, not accidental (`unreachable_pub` is on): what the binary,
//! the integration tests, the benchmarks and the fuzz targets use. `admin`, `drain`,
//! `readiness`, the unsafe wrappers (`capture::sys`, the map mirrors, the loader) and the
//! proxy's and hbone's internals are crate-private; the layers above reach them through the
//! re-exports of each module's `mod.rs`.

pub(crate) mod accept_loop;
pub(crate) mod admin;
pub mod app;
pub mod capture;
pub mod config;
pub mod descriptors;
pub(crate) mod drain;
/// Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature; never in the binary).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod hbone;
pub mod identity;
pub(crate) mod in_pod;
pub mod kubernetes;
pub mod metrics;
pub mod pods;
pub mod policy;
pub mod proxy;
pub(crate) mod readiness;
pub mod state;
pub mod telemetry;
/// How tests that cannot run here say so (the `testing` feature; never in the binary).
#[cfg(any(test, feature = "testing"))]
pub mod test_skip;
pub mod tls;
pub mod types;
pub mod xds;
