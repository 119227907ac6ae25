//! A pod: a network namespace bridged on its node, and a cgroup v2 directory.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use super::netns_path;
use super::process::{Placement, ProcGuard, RUN_TIMEOUT};
use super::topology::Shared;

/// One pod of a node. Cheap to clone; valid until the topology drops.
#[derive(Clone)]
pub struct Pod {
    shared: Arc<Shared>,
    node: String,
    name: String,
    netns: String,
    ip: Ipv4Addr,
    ip6: Ipv6Addr,
    cgroup: PathBuf,
}

impl Pod {
    pub(crate) fn new(
        shared: Arc<Shared>,
        node: &str,
        name: &str,
        netns: String,
        ip: Ipv4Addr,
        ip6: Ipv6Addr,
        cgroup: PathBuf,
    ) -> Pod {
        Pod { shared, node: node.to_string(), name: name.to_string(), netns, ip, ip6, cgroup }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the node the pod runs on.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// 10.x.n.k
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// fd00:x:n::k
    pub fn ip6(&self) -> Ipv6Addr {
        self.ip6
    }

    /// `zt<id>-<node>-<pod>`.
    pub fn netns_name(&self) -> &str {
        &self.netns
    }

    /// `/var/run/netns/zt<id>-<node>-<pod>`.
    pub fn netns_path(&self) -> PathBuf {
        netns_path(&self.netns)
    }

    /// `<cgroup2 mount>/ztunnel-test/<id>/<node>-<pod>`.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup
    }

    fn placement(&self) -> Placement<'_> {
        Placement { label: format!("pod {}", self.netns), netns: self.netns_path(), cgroup: Some(&self.cgroup) }
    }

    /// Starts `cmd` inside the pod's cgroup and namespace; returns once it is in both.
    pub fn spawn(&self, cmd: &[&str]) -> ProcGuard {
        self.placement().spawn(&self.shared, cmd)
    }

    /// Runs `cmd` inside the pod to completion (panics after 30 s).
    pub fn run(&self, cmd: &[&str]) -> Output {
        self.run_timeout(cmd, RUN_TIMEOUT)
    }

    /// Runs `cmd` inside the pod to completion (panics after `limit`).
    pub fn run_timeout(&self, cmd: &[&str], limit: Duration) -> Output {
        self.placement().run(&self.shared, cmd, limit)
    }

    /// Runs `cmd` inside the pod's network namespace but *not* its cgroup (it stays in the
    /// test's own cgroup), to completion (panics after `limit`).
    pub fn run_outside_cgroup_timeout(&self, cmd: &[&str], limit: Duration) -> Output {
        let placement = Placement {
            label: format!("pod {} (outside its cgroup)", self.netns),
            netns: self.netns_path(),
            cgroup: None,
        };
        placement.run(&self.shared, cmd, limit)
    }

    /// Deletes the pod's network namespace (its processes are killed first), as when a pod
    /// goes away while its cgroup may linger; the topology no longer removes it.
    pub fn delete_netns(&self) {
        self.shared
            .delete_netns(&self.netns)
            .unwrap_or_else(|e| panic!("deleting the namespace of pod {}: {e:#}", self.name));
    }

    /// `GET http://<addr><path>` with curl from inside the pod (so capture applies); (status, body).
    pub fn http_get(&self, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
        self.placement().http_get(&self.shared, addr, path)
    }
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod").field("netns", &self.netns).field("ip", &self.ip).field("ip6", &self.ip6).finish()
    }
}
