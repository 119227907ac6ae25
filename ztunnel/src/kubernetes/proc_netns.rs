//! Finding a running pod's network namespace through the host's `/proc`.
//!
//! A pod that was running before the node agent started (or whose plugin event was missed)
//! is found by its addresses: every process under the proc root (`/proc`, or `/host/proc`
//! when ztunnel runs in a container with the host's `/proc` mounted there) is grouped by the
//! inode of its network namespace, each namespace is visited once, and its local addresses are
//! read from inside it (`<pid>/net/fib_trie` for IPv4, `<pid>/net/if_inet6` for IPv6, which
//! show the namespace of that process). The namespace holding every one of the pod's addresses
//! is the pod's, and it must be the only one: when two namespaces hold them (a pod that added
//! another pod's address to its own interface, a leftover namespace), the search fails rather
//! than guess, since enrolling the wrong one would leave the real pod uncaptured while it
//! looked enrolled. The host's own namespace (the one of pid 1 under the proc root, and ztunnel's own,
//! which is the host's) is never chosen, whatever addresses it holds.
//!
//! The path handed out is `<proc root>/<pid>/ns/net` of the namespace's oldest process (the
//! lowest pid), which in a Kubernetes sandbox is its pause process: the one that lives as long
//! as the sandbox. Capture opens the path once when it enrolls the pod and keeps the namespace
//! open from then on, so the pause process exiting later does not disturb a served pod. The
//! path is also remembered in the enrollment record: after a ztunnel restart a pod whose pause
//! process is gone is treated as gone (released), which is what its sandbox being torn down
//! means.
//!
//! This module only reads `/proc`; it never enters a namespace.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the host's `/proc` is, unless configured otherwise.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// Failures of the search, naming the proc root or the addresses looked for.
#[derive(Debug, thiserror::Error)]
pub enum ProcNetnsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no network namespace under {proc_root} (other than the host's) holds any of {ips:?}")]
    NotFound { proc_root: String, ips: Vec<IpAddr> },
    #[error(
        "more than one network namespace under {proc_root} holds {ips:?} ({paths:?}); not guessing which is the pod's"
    )]
    Ambiguous { proc_root: String, ips: Vec<IpAddr>, paths: Vec<String> },
    #[error("no process under {proc_root} is in the network namespace {netns}")]
    NoProcess { proc_root: String, netns: String },
    #[error("the pod has no address to look for")]
    NoAddress,
}

/// A network namespace found under the proc root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundNetns {
    /// `<proc root>/<pid>/ns/net`.
    pub path: PathBuf,
    /// The namespace's oldest process.
    pub pid: u32,
    /// The namespace's inode (what identifies it).
    pub inode: u64,
}

/// Pids under `proc_root`, lowest first.
fn pids(proc_root: &Path) -> Result<Vec<u32>, ProcNetnsError> {
    let entries = std::fs::read_dir(proc_root)
        .map_err(|source| ProcNetnsError::Read { path: proc_root.display().to_string(), source })?;
    let mut pids: Vec<u32> =
        entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The inode of `pid`'s network namespace; `None` when the process is gone or hidden.
fn netns_inode(proc_root: &Path, pid: u32) -> Option<u64> {
    std::fs::metadata(proc_root.join(pid.to_string()).join("ns/net")).ok().map(|m| m.ino())
}

/// The inodes of the host's network namespace: pid 1's under the proc root and ztunnel's own
/// (it runs in the host's, with `hostNetwork`). Either may be unreadable (pid 1's without
/// `CAP_SYS_PTRACE`), but not both.
fn host_inodes(proc_root: &Path) -> Result<Vec<u64>, ProcNetnsError> {
    let mut inodes = Vec::new();
    let mut last_error = None;
    for path in [proc_root.join("1/ns/net"), proc_root.join("self/ns/net")] {
        match std::fs::metadata(&path) {
            Ok(m) => inodes.push(m.ino()),
            Err(source) => last_error = Some(ProcNetnsError::Read { path: path.display().to_string(), source }),
        }
    }
    match last_error {
        Some(e) if inodes.is_empty() => Err(e),
        _ => Ok(inodes),
    }
}

/// Finds the one network namespace (not the host's) that holds all of `ips`.
pub fn find_pod_netns(proc_root: &Path, ips: &[IpAddr]) -> Result<FoundNetns, ProcNetnsError> {
    if ips.is_empty() {
        return Err(ProcNetnsError::NoAddress);
    }
    let mut visited: HashSet<u64> = host_inodes(proc_root)?.into_iter().collect();
    let mut found: Vec<FoundNetns> = Vec::new();
    for pid in pids(proc_root)? {
        let Some(inode) = netns_inode(proc_root, pid) else { continue };
        if !visited.insert(inode) {
            continue;
        }
        let net = proc_root.join(pid.to_string()).join("net");
        let local = local_addresses(&net);
        if ips.iter().all(|ip| local.contains(&ip.to_canonical())) {
            found.push(FoundNetns { path: proc_root.join(pid.to_string()).join("ns/net"), pid, inode });
        }
    }
    let proc_root_text = || proc_root.display().to_string();
    match found.len() {
        0 => Err(ProcNetnsError::NotFound { proc_root: proc_root_text(), ips: ips.to_vec() }),
        1 => Ok(found.remove(0)),
        _ => Err(ProcNetnsError::Ambiguous {
            proc_root: proc_root_text(),
            ips: ips.to_vec(),
            paths: found.iter().map(|f| f.path.display().to_string()).collect(),
        }),
    }
}

/// The oldest process (lowest pid) under `proc_root` in the network namespace at `netns`.
pub fn process_in_netns(proc_root: &Path, netns: &Path) -> Result<u32, ProcNetnsError> {
    let wanted = std::fs::metadata(netns)
        .map_err(|source| ProcNetnsError::Read { path: netns.display().to_string(), source })?
        .ino();
    pids(proc_root)?.into_iter().find(|&pid| netns_inode(proc_root, pid) == Some(wanted)).ok_or_else(|| {
        ProcNetnsError::NoProcess { proc_root: proc_root.display().to_string(), netns: netns.display().to_string() }
    })
}

/// The cgroup v2 path of `pid` (the `0::` line of `<pid>/cgroup`), relative to the cgroup2
/// root as the process sees it.
pub fn cgroup_of(proc_root: &Path, pid: u32) -> Result<PathBuf, ProcNetnsError> {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    let text = std::fs::read_to_string(&path)
        .map_err(|source| ProcNetnsError::Read { path: path.display().to_string(), source })?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(|p| PathBuf::from(p.trim_start_matches('/'))).ok_or_else(
        || ProcNetnsError::Read {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no cgroup v2 (0::) line"),
        },
    )
}

/// The addresses local to the namespace whose `net` directory is `net` (missing files read
/// as no addresses: a process that exits meanwhile is simply skipped).
fn local_addresses(net: &Path) -> HashSet<IpAddr> {
    let mut found = HashSet::new();
    if let Ok(text) = std::fs::read_to_string(net.join("fib_trie")) {
        found.extend(parse_fib_trie_locals(&text).into_iter().map(IpAddr::V4));
    }
    if let Ok(text) = std::fs::read_to_string(net.join("if_inet6")) {
        found.extend(parse_if_inet6(&text).into_iter().map(IpAddr::V6));
    }
    found
}

/// The IPv4 addresses `fib_trie` lists as `/32 host LOCAL` (the namespace's own addresses).
pub(crate) fn parse_fib_trie_locals(text: &str) -> Vec<Ipv4Addr> {
    let mut last: Option<Ipv4Addr> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Some(addr) = line.contains("|--").then(|| trimmed.parse::<Ipv4Addr>().ok()).flatten() {
            last = Some(addr);
        } else if trimmed.starts_with("/32 host LOCAL")
            && let Some(addr) = last
            && !out.contains(&addr)
        {
            out.push(addr);
        }
    }
    out
}

/// The IPv6 addresses of `if_inet6` (32 hex digits first on each line).
pub(crate) fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok().filter(|_| hex.len() == 32))
        .map(Ipv6Addr::from)
        .collect()
}

#[cfg(test)]
#[path = "proc_netns_tests.rs"]
mod tests;
