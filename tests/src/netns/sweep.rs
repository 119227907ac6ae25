//! Removes what crashed runs left behind: namespaces `zt<id>-*`, cgroup directories
//! `ztunnel-test/<id>` and bpffs directories `ztunnel-test/<id>` whose owning process (the pid
//! in the id) is gone. Objects of live owners, and names that do not parse as ours, are never
//! touched, so concurrent test processes can all sweep safely.

use std::path::{Path, PathBuf};

use super::command::{ip, kill_pids, netns_pids};
use super::naming::{TEST_DIR, TopologyId};
use super::{cgroup, netns_path};

/// Where `ip netns add` keeps named namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// Removes stale objects of dead owners; returns a line for each object removed.
pub fn sweep_stale() -> Vec<String> {
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let mut removed = sweep_netns(&alive);
    removed.extend(sweep_dirs(&test_dirs(), &alive));
    removed
}

/// Everything of topology `id` that still exists (empty once it has been cleaned up).
pub fn leftovers(id: TopologyId) -> Vec<String> {
    let prefix = id.netns_prefix();
    let mut found: Vec<String> =
        netns_names().into_iter().filter(|n| n.starts_with(&prefix)).map(|n| format!("netns {n}")).collect();
    for dir in test_dirs() {
        let dir = dir.join(id.to_string());
        if dir.exists() {
            found.push(format!("directory {}", dir.display()));
        }
    }
    found
}

/// Names of all named network namespaces.
pub fn netns_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()
}

/// `<cgroup2>/ztunnel-test` and `<bpffs>/ztunnel-test`, for the filesystems that are mounted.
fn test_dirs() -> Vec<PathBuf> {
    let cgroup = cgroup::cgroup2_mount().ok();
    cgroup.into_iter().chain(cgroup::bpffs_mount()).map(|m| m.join(TEST_DIR)).collect()
}

fn sweep_netns(alive: &dyn Fn(u32) -> bool) -> Vec<String> {
    let mut removed = Vec::new();
    for name in netns_names() {
        let Some(id) = TopologyId::from_netns_name(&name) else { continue };
        if alive(id.pid()) {
            continue;
        }
        // Orphaned daemons (a crashed test's ztunnel) still run in it: kill them first.
        kill_pids(&netns_pids(&name));
        match ip(&["netns", "del", &name]) {
            Ok(()) => removed.push(format!("netns {name} (owner pid {} gone)", id.pid())),
            // A concurrent sweeper may have been first.
            Err(_) if !netns_path(&name).exists() => {}
            Err(e) => eprintln!("sweeping netns {name}: {e:#}"),
        }
    }
    removed
}

/// Sweeps `<root>/<id>` for each root (cgroup trees are emptied with `cgroup.kill` first).
fn sweep_dirs(roots: &[PathBuf], alive: &dyn Fn(u32) -> bool) -> Vec<String> {
    let mut removed = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(TopologyId::parse) else { continue };
            if alive(id.pid()) {
                continue;
            }
            let dir = entry.path();
            let result = if is_cgroup(&dir) {
                cgroup::kill_and_remove(&dir)
            } else {
                std::fs::remove_dir_all(&dir).or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(anyhow::Error::new(e).context(format!("removing {}", dir.display()))),
                })
            };
            match result {
                Ok(()) => removed.push(format!("directory {} (owner pid {} gone)", dir.display(), id.pid())),
                Err(e) => eprintln!("sweeping {}: {e:#}", dir.display()),
            }
        }
        cgroup::remove_if_empty(root);
    }
    removed
}

fn is_cgroup(dir: &Path) -> bool {
    dir.join("cgroup.procs").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_owners_directories_go_and_live_or_foreign_ones_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(TEST_DIR);
        let dead = root.join("101t0");
        let live = root.join("202t3");
        let foreign = root.join("not-ours");
        for dir in [dead.join("node-a/pins"), live.join("node-a"), foreign.clone()] {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dead.join("node-a/pins/map"), b"pinned").unwrap();
        let removed = sweep_dirs(&[root.clone(), tmp.path().join("missing")], &|pid| pid == 202);
        assert_eq!(removed.len(), 1, "expected only 101t0 removed, got {removed:?}");
        assert!(removed[0].contains("101t0") && removed[0].contains("owner pid 101 gone"), "got {removed:?}");
        assert!(!dead.exists() && live.exists() && foreign.exists());
    }

    #[test]
    fn an_emptied_root_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(TEST_DIR);
        std::fs::create_dir_all(root.join("7t1")).unwrap();
        let removed = sweep_dirs(std::slice::from_ref(&root), &|_| false);
        assert_eq!(removed.len(), 1, "got {removed:?}");
        assert!(!root.exists(), "{} should be removed once empty", root.display());
    }
}
