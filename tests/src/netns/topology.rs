//! A topology: its id, the registry of everything it created, building nodes, and removing it
//! all again when the [`Topology`] drops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;

use super::command::{self, ip, ip_batch, sysctl_in};
use super::naming::{AddressPlan, TEST_DIR, TopologyId, check_name, ifname};
use super::node::Node;
use super::{cgroup, netns_path, sweep};

/// Nodes and pods made of network namespaces and cgroups, owned by one test. Dropping it kills
/// the processes it started and removes its namespaces, cgroups and registered bpffs
/// directories, also when the test panics.
pub struct Topology {
    shared: Arc<Shared>,
}

/// What nodes, pods and process guards share with their topology.
pub(crate) struct Shared {
    pub(crate) id: TopologyId,
    pub(crate) test: String,
    pub(crate) plan: AddressPlan,
    pub(crate) cgroup_mount: PathBuf,
    /// `<cgroup2>/ztunnel-test/<id>`: the parent of every pod cgroup; exists from `new` on and
    /// reserves the id.
    pub(crate) cgroup_dir: PathBuf,
    pub(crate) bpf_dir: PathBuf,
    /// Serialises building, so node indexes and routes stay consistent.
    setup: Mutex<()>,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    removed: bool,
    /// Namespaces in creation order.
    netns: Vec<String>,
    bpf_dirs: Vec<PathBuf>,
    /// Running children (token -> process group), killed before anything else is removed.
    procs: BTreeMap<u64, u32>,
    next_token: u64,
    /// Node names by index - 1.
    nodes: Vec<String>,
    /// Pods per node name.
    pods: BTreeMap<String, Vec<String>>,
}

static NEXT_SEQ: AtomicU32 = AtomicU32::new(0);

impl Topology {
    /// Sweeps stale objects of dead owners, then reserves a fresh id for `test_name`.
    pub fn new(test_name: &str) -> Topology {
        for removed in sweep::sweep_stale() {
            eprintln!("swept stale {removed}");
        }
        let cgroup_mount = cgroup::cgroup2_mount().unwrap_or_else(|e| panic!("topology for {test_name}: {e:#}"));
        let bpf_root = cgroup::bpffs_mount().unwrap_or_else(|| PathBuf::from("/sys/fs/bpf")).join(TEST_DIR);
        let (id, cgroup_dir) = reserve_id(&cgroup_mount.join(TEST_DIR), &bpf_root)
            .unwrap_or_else(|e| panic!("topology for {test_name}: reserving an id: {e:#}"));
        let plan = AddressPlan::for_id(id);
        eprintln!(
            "topology {id} for {test_name}: namespaces {}*, pods in 10.{x}.<node>.0/24 and fd00:{x}:<node>::/64",
            id.netns_prefix(),
            x = plan.x()
        );
        Topology {
            shared: Arc::new(Shared {
                id,
                test: test_name.to_string(),
                plan,
                cgroup_mount,
                cgroup_dir,
                bpf_dir: bpf_root.join(id.to_string()),
                setup: Mutex::new(()),
                registry: Mutex::default(),
            }),
        }
    }

    pub fn id(&self) -> TopologyId {
        self.shared.id
    }

    pub fn plan(&self) -> AddressPlan {
        self.shared.plan
    }

    /// `<cgroup2 mount>/ztunnel-test/<id>`, the parent of the pods' cgroups.
    pub fn cgroup_dir(&self) -> &Path {
        &self.shared.cgroup_dir
    }

    /// `<bpffs>/ztunnel-test/<id>`: a place for this topology's pins (not created here);
    /// removed at drop, and by the sweeper once the owner is gone.
    pub fn bpf_dir(&self) -> &Path {
        &self.shared.bpf_dir
    }

    /// Creates `<cgroup_dir>/<name>`, a cgroup of this topology that is no pod's (for example
    /// one standing in for a node's kubelet); removed with the topology.
    pub fn add_cgroup(&self, name: &str) -> PathBuf {
        check_name("cgroup", name).unwrap_or_else(|e| panic!("topology {}: {e}", self.shared.id));
        let dir = self.shared.cgroup_dir.join(name);
        cgroup::create_dir_all(&dir).unwrap_or_else(|e| panic!("topology {}: {e:#}", self.shared.id));
        dir
    }

    /// Removes `path` (recursively) when the topology drops.
    pub fn register_bpf_dir(&self, path: impl Into<PathBuf>) {
        self.shared.registry().bpf_dirs.push(path.into());
    }

    /// Adds node `name`: namespace `zt<id>-<name>` with a bridge `br0` for its pods, forwarding
    /// on, a veth `fab0` into the fabric, and routes to and from every other node's pods.
    pub fn add_node(&self, name: &str) -> Node {
        let shared = &self.shared;
        let _setup = shared.setup_lock();
        let index = shared
            .build_node(name)
            .unwrap_or_else(|e| panic!("topology {} ({}): adding node {name}: {e:#}", shared.id, shared.test));
        Node::new(shared.clone(), name, index)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.shared.remove_all();
    }
}

/// Picks the next `<pid>t<seq>` whose cgroup directory can be created fresh (mkdir is the
/// lock) and that has no namespaces or bpffs directory left from an earlier process with the
/// same pid.
fn reserve_id(cgroup_base: &Path, bpf_root: &Path) -> anyhow::Result<(TopologyId, PathBuf)> {
    let pid = std::process::id();
    for _ in 0..1000 {
        let id = TopologyId::new(pid, NEXT_SEQ.fetch_add(1, Ordering::Relaxed));
        cgroup::create_dir_all(cgroup_base)?;
        let dir = cgroup_base.join(id.to_string());
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // Taken, or the parent was removed by a concurrent cleanup: try the next one.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotFound) => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
        let prefix = id.netns_prefix();
        if sweep::netns_names().iter().any(|n| n.starts_with(&prefix)) || bpf_root.join(id.to_string()).exists() {
            let _ = std::fs::remove_dir(&dir);
            continue;
        }
        return Ok((id, dir));
    }
    anyhow::bail!("no free topology id for pid {pid} after 1000 tries")
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere must not stop cleanup, so a poisoned lock is still used.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn setup_lock(&self) -> MutexGuard<'_, ()> {
        self.setup.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_live(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.registry().removed, "topology {} has already been removed", self.id);
        Ok(())
    }

    /// Creates a namespace and registers it for removal.
    pub(crate) fn add_netns(&self, name: &str) -> anyhow::Result<()> {
        self.check_live()?;
        ip(&["netns", "add", name])?;
        self.registry().netns.push(name.to_string());
        Ok(())
    }

    /// Deletes a namespace this topology created (as when a pod goes away) and forgets it.
    pub(crate) fn delete_netns(&self, name: &str) -> anyhow::Result<()> {
        command::kill_pids(&command::netns_pids(name));
        ip(&["netns", "del", name])?;
        self.registry().netns.retain(|n| n != name);
        Ok(())
    }

    /// Records a pod name on a node; fails if taken.
    pub(crate) fn claim_pod(&self, node: &str, pod: &str) -> anyhow::Result<u8> {
        let mut reg = self.registry();
        let pods = reg.pods.entry(node.to_string()).or_default();
        anyhow::ensure!(!pods.iter().any(|p| p == pod), "node {node} already has a pod {pod}");
        // Pod k gets host address k; .1 is the node's bridge.
        let index = u8::try_from(pods.len() + 2).ok().filter(|&k| k < 255).context("too many pods on one node")?;
        pods.push(pod.to_string());
        Ok(index)
    }

    pub(crate) fn register_proc(&self, pgid: u32) -> u64 {
        let mut reg = self.registry();
        reg.next_token += 1;
        let token = reg.next_token;
        reg.procs.insert(token, pgid);
        token
    }

    /// `try_wait` for a registered child. Reaping frees its pid (and so its group id) for
    /// reuse, so it happens under the registry lock and unregisters the child at once:
    /// `remove_all` never signals a group id that may belong to someone else by then.
    pub(crate) fn try_reap(&self, token: u64, child: &mut Child) -> std::io::Result<Option<ExitStatus>> {
        let mut reg = self.registry();
        let status = child.try_wait()?;
        if status.is_some() {
            reg.procs.remove(&token);
        }
        Ok(status)
    }

    /// SIGKILLs a registered child's process group if the child has not been reaped, and
    /// unregisters it; the caller reaps it afterwards.
    pub(crate) fn kill_proc(&self, token: u64, child: &mut Child) {
        let mut reg = self.registry();
        if reg.procs.remove(&token).is_some() {
            // Not reaped yet, so the group id is still this child's.
            command::signal_group(child.id(), "KILL");
            let _ = child.kill();
        }
    }

    fn build_node(&self, name: &str) -> anyhow::Result<u8> {
        check_name("node", name).map_err(anyhow::Error::msg)?;
        self.check_live()?;
        let (index, others) = {
            let reg = self.registry();
            anyhow::ensure!(!reg.nodes.iter().any(|n| n == name), "node {name} already exists");
            let index = u8::try_from(reg.nodes.len() + 1).ok().filter(|&n| n < 255).context("too many nodes")?;
            (index, reg.nodes.clone())
        };
        let (id, plan) = (self.id, self.plan);
        let fabric = id.fabric_netns();
        if index == 1 {
            self.add_netns(&fabric)?;
            ip_batch(&fabric, &["link set lo up".into(), "link add br0 type bridge".into(), "link set br0 up".into()])?;
        }
        let node_ns = id.node_netns(name);
        self.add_netns(&node_ns)?;
        sysctl_in(
            &netns_path(&node_ns),
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        let fabric_if = ifname('n', index, name);
        ip_batch(
            &fabric,
            &[
                format!("link add {fabric_if} type veth peer name fab0 netns {node_ns}"),
                format!("link set {fabric_if} master br0"),
                format!("link set {fabric_if} up"),
            ],
        )?;
        let mut lines = vec![
            "link set lo up".to_string(),
            "link add br0 type bridge".into(),
            format!("addr add {}/24 dev br0", plan.gateway_v4(index)),
            format!("addr add {}/64 dev br0 nodad", plan.gateway_v6(index)),
            "link set br0 up".into(),
            format!("addr add {}/24 dev fab0", plan.fabric_v4(index)),
            format!("addr add {}/64 dev fab0 nodad", plan.fabric_v6(index)),
            "link set fab0 up".into(),
        ];
        for (i, other) in others.iter().enumerate() {
            let other_index = i as u8 + 1;
            lines.extend(routes_to(plan, other_index));
            ip_batch(&id.node_netns(other), &routes_to(plan, index))?;
        }
        ip_batch(&node_ns, &lines)?;
        self.registry().nodes.push(name.to_string());
        Ok(index)
    }

    /// Kills the processes, then removes namespaces, cgroups and bpffs directories. Runs once;
    /// failures are printed, never raised (this runs in `drop`, maybe while unwinding).
    fn remove_all(&self) {
        let (netns, bpf_dirs) = {
            let mut reg = self.registry();
            if reg.removed {
                return;
            }
            reg.removed = true;
            // Processes first: our own unreaped children by group (under the lock, see
            // `try_reap`), then anything else left in our namespaces (daemons that left the
            // group). Pods' cgroups are emptied with `cgroup.kill` as they are removed.
            for pgid in reg.procs.values() {
                command::signal_group(*pgid, "KILL");
            }
            (std::mem::take(&mut reg.netns), std::mem::take(&mut reg.bpf_dirs))
        };
        let mut failures = Vec::new();
        for ns in &netns {
            command::kill_pids(&command::netns_pids(ns));
        }
        for ns in netns.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                failures.push(format!("{e:#}"));
            }
        }
        if let Err(e) = cgroup::kill_and_remove(&self.cgroup_dir) {
            failures.push(format!("{e:#}"));
        }
        cgroup::remove_if_empty(&self.cgroup_mount.join(TEST_DIR));
        for dir in bpf_dirs.iter().chain([&self.bpf_dir]) {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failures.push(format!("removing bpffs directory {}: {e}", dir.display())),
            }
        }
        if let Some(parent) = self.bpf_dir.parent() {
            cgroup::remove_if_empty(parent);
        }
        for failure in failures {
            eprintln!("cleanup of topology {} ({}): {failure}", self.id, self.test);
        }
    }
}

/// `ip` route lines that send node `to`'s pod subnets over the fabric.
fn routes_to(plan: AddressPlan, to: u8) -> Vec<String> {
    vec![
        format!("route add {} via {}", plan.pod_subnet_v4(to), plan.fabric_v4(to)),
        format!("route add {} via {}", plan.pod_subnet_v6(to), plan.fabric_v6(to)),
    ]
}
