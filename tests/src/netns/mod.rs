//! Namespaced test topologies: "nodes" and "pods" made of network namespaces, veth pairs,
//! bridges and cgroup v2 directories on one machine, for tests that need real capture.
//!
//! ```text
//!  fabric netns zt<id>-fabric: br0 ── n1-node-a ┐      ┌ n2-node-b ── (same br0)
//!                                               │      │
//!  node netns zt<id>-node-a:  fab0 172.y.0.1    ┘      └ fab0 172.y.0.2   (zt<id>-node-b)
//!                             br0  10.x.1.1                br0  10.x.2.1
//!                              └ p2-web ── eth0 10.x.1.2  (pod netns zt<id>-node-a-web,
//!                                                          cgroup ztunnel-test/<id>/node-a-web)
//! ```
//!
//! Every node routes the other nodes' pod subnets via their fabric addresses; pods default-route
//! via their node's bridge address, which is also how they reach the node itself. Nothing is
//! created in the host namespace, so interface names only have to be unique per namespace.
//!
//! Processes run in pods by joining the pod's cgroup and then `nsenter --net` (not
//! `ip netns exec`, which remounts /sys and hides cgroup2). All calls block; from async code use
//! `spawn_blocking`. Everything needs root: tests call [`require_root`] first.
//!
//! Cleanup: dropping the [`Topology`] (also while a test panics) kills its processes, deletes
//! its namespaces, cgroups and registered bpffs directories. Objects of crashed runs are
//! removed by [`sweep_stale`], which [`Topology::new`] runs first.

mod cgroup;
mod command;
mod naming;
mod node;
mod pod;
mod process;
mod sweep;
mod topology;

use std::path::PathBuf;

pub use cgroup::{bpffs_mount, cgroup2_mount};
pub use naming::{AddressPlan, NETNS_PREFIX, TEST_DIR, TopologyId};
pub use node::Node;
pub use pod::Pod;
pub use process::{ProcGuard, RUN_TIMEOUT};
pub use sweep::{leftovers, netns_names, sweep_stale};
pub use topology::Topology;

/// `/var/run/netns/<name>`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

/// True when running as root; otherwise records the test as skipped (a failure under CI, see
/// [`ztunnel::test_skip`]) and returns false.
pub fn require_root(test: &str) -> bool {
    ztunnel::test_skip::require_root(test, "network namespaces, cgroups, eBPF")
}

/// The `testapp` binary of this crate (built by cargo before integration tests run; from
/// elsewhere, e.g. xtask, build it first with `cargo build -p ztunnel-tests --bin testapp`).
pub fn testapp_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable path");
    // target/<profile>/deps/<test binary> or target/<profile>/<binary>
    let mut dir = exe.parent().expect("executable directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("testapp")
}
