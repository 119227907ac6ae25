//! Loading the capture programs with aya, pinning maps and links, attaching the cgroup
//! programs once at the capture cgroup and `sk_lookup` to each pod's network namespace.
//!
//! Maps are pinned by name under `<pin dir>/maps` and re-adopted by the next load, so a
//! restarted ztunnel sees the same pod table. The cgroup programs (connect, bind, getpeername,
//! sockops) are attached at one parent cgroup of every pod (the cgroup2 root by default) and
//! pinned under `<pin dir>/cgroup/<program>`; they act only in network namespaces with a
//! `pod_config` entry. Each load attaches them afresh before unpinning the previous ones, so
//! capture never has a gap across a restart (the same program running twice is harmless: a
//! redirected connect is left alone by the second copy). Each pod's `sk_lookup` link is pinned
//! under `<pin dir>/links/<pod key>/<program>`: it keeps inbound capture while ztunnel is down,
//! and it tells whether the pod's namespace still exists ([`Loaded::pod_netns_alive`]).
//! Removing a pin detaches its program. The host program that records the kubelet's
//! connections is pinned as `<pin dir>/host/<program>`.
//!
//! Every load writes the configured socket mark into the pinned `ztunnel_config` map before
//! any pod is attached: the programs read the mark from there, so programs that stayed
//! attached across a restart follow a changed `--socket-mark` at once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::{Array, HashMap as BpfHashMap, LpmTrie, MapData, SockHash};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SkLookup, SockOps};
use aya::{Ebpf, EbpfLoader};

use tracing::info;

use super::exclusions::ExclusionMaps;
use super::maps::{ConnKey, IpKey, OrigDst, PeerKey, PodConfig, ZtunnelConfig};
use super::programs;

/// Failures loading or attaching programs, or touching maps.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the capture object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("program {0} is missing from the capture object")]
    MissingProgram(&'static str),
    #[error("map {name}: {reason}")]
    Map { name: &'static str, reason: String },
    #[error("pinning {path}: {reason}")]
    Pin { path: String, reason: String },
}

/// The sock_addr programs attached at the capture cgroup (sockops is attached separately).
const CGROUP_PROGRAMS: [&str; 6] = [
    programs::CONNECT4,
    programs::CONNECT6,
    programs::GETPEERNAME4,
    programs::GETPEERNAME6,
    programs::BIND4,
    programs::BIND6,
];

/// Maps earlier versions pinned and this one no longer defines.
const RETIRED_MAPS: [&str; 3] = ["excluded_ports", "excluded_cidrs4", "excluded_cidrs6"];

/// The loaded programs and their maps.
pub(crate) struct Loaded {
    ebpf: Mutex<Ebpf>,
    pub pod_config: Mutex<BpfHashMap<MapData, u64, PodConfig>>,
    pub orig_dst: Mutex<BpfHashMap<MapData, PeerKey, OrigDst>>,
    pub inbound_sockets: Mutex<SockHash<MapData, IpKey>>,
    /// ztunnel's transparent dials to apps while they connect (`sk_lookup` lets them through).
    pub inbound_dials: Mutex<BpfHashMap<MapData, ConnKey, u8>>,
    /// Index 0: the host network namespace's cookie, for `host_sockops`.
    host_netns: Mutex<Array<MapData, u64>>,
    pub exclusions: Mutex<ExclusionMaps>,
    links_dir: PathBuf,
    host_dir: PathBuf,
    cgroup_dir: PathBuf,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |e| LoadError::Map { name, reason: e.to_string() }
}

impl Loaded {
    /// Loads the object (re-adopting maps pinned under `pin_dir/maps`) and every program, and
    /// tells the programs ztunnel's `socket_mark` (`None`: ztunnel marks nothing).
    pub(crate) fn load(pin_dir: &Path, socket_mark: Option<u32>) -> Result<Loaded, LoadError> {
        let maps_dir = pin_dir.join("maps");
        let links_dir = pin_dir.join("links");
        let host_dir = pin_dir.join("host");
        let cgroup_dir = pin_dir.join("cgroup");
        for dir in [&maps_dir, &links_dir, &host_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| LoadError::Pin { path: dir.display().to_string(), reason: e.to_string() })?;
        }
        // Global exclusion maps of earlier versions, replaced by the per-pod ones; no program
        // reads them any more, so their pins are only clutter.
        for retired in RETIRED_MAPS {
            let _ = std::fs::remove_file(maps_dir.join(retired));
        }
        let mut ebpf = EbpfLoader::new().default_map_pin_directory(&maps_dir).load(programs::OBJECT)?;
        for name in CGROUP_PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(|source| LoadError::Program { name, source })?;
        }
        let sockops: &mut SockOps = program(&mut ebpf, programs::SOCKOPS)?;
        sockops.load().map_err(|source| LoadError::Program { name: programs::SOCKOPS, source })?;
        let host_sockops: &mut SockOps = program(&mut ebpf, programs::HOST_SOCKOPS)?;
        host_sockops.load().map_err(|source| LoadError::Program { name: programs::HOST_SOCKOPS, source })?;
        let lookup: &mut SkLookup = program(&mut ebpf, programs::SK_LOOKUP)?;
        lookup.load().map_err(|source| LoadError::Program { name: programs::SK_LOOKUP, source })?;

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(LoadError::Map { name, reason: "missing from the capture object".into() })
        };
        let pod_config = BpfHashMap::try_from(take(&mut ebpf, programs::MAP_POD_CONFIG)?)
            .map_err(map_err(programs::MAP_POD_CONFIG))?;
        let orig_dst =
            BpfHashMap::try_from(take(&mut ebpf, programs::MAP_ORIG_DST)?).map_err(map_err(programs::MAP_ORIG_DST))?;
        let inbound_sockets = SockHash::try_from(take(&mut ebpf, programs::MAP_INBOUND_SOCKETS)?)
            .map_err(map_err(programs::MAP_INBOUND_SOCKETS))?;
        let host_netns =
            Array::try_from(take(&mut ebpf, programs::MAP_HOST_NETNS)?).map_err(map_err(programs::MAP_HOST_NETNS))?;
        let inbound_dials = BpfHashMap::try_from(take(&mut ebpf, programs::MAP_INBOUND_DIALS)?)
            .map_err(map_err(programs::MAP_INBOUND_DIALS))?;
        let mut config: Array<MapData, ZtunnelConfig> = Array::try_from(take(&mut ebpf, programs::MAP_ZTUNNEL_CONFIG)?)
            .map_err(map_err(programs::MAP_ZTUNNEL_CONFIG))?;
        let wanted = ZtunnelConfig { socket_mark: socket_mark.unwrap_or(0) };
        let previous = config.get(&0, 0).map_err(map_err(programs::MAP_ZTUNNEL_CONFIG))?;
        if previous != wanted && previous != ZtunnelConfig::default() {
            info!(
                old = format_args!("{:#x}", previous.socket_mark),
                new = format_args!("{:#x}", wanted.socket_mark),
                "socket mark changed since the last start; attached programs use the new one"
            );
        }
        config.set(0, wanted, 0).map_err(map_err(programs::MAP_ZTUNNEL_CONFIG))?;
        let exclusions = ExclusionMaps {
            ports: BpfHashMap::try_from(take(&mut ebpf, programs::MAP_POD_EXCLUDED_PORTS)?)
                .map_err(map_err(programs::MAP_POD_EXCLUDED_PORTS))?,
            cidrs4: LpmTrie::try_from(take(&mut ebpf, programs::MAP_POD_EXCLUDED_CIDRS4)?)
                .map_err(map_err(programs::MAP_POD_EXCLUDED_CIDRS4))?,
            cidrs6: LpmTrie::try_from(take(&mut ebpf, programs::MAP_POD_EXCLUDED_CIDRS6)?)
                .map_err(map_err(programs::MAP_POD_EXCLUDED_CIDRS6))?,
            inbound: BpfHashMap::try_from(take(&mut ebpf, programs::MAP_POD_INBOUND_EXCLUSIONS)?)
                .map_err(map_err(programs::MAP_POD_INBOUND_EXCLUSIONS))?,
        };
        Ok(Loaded {
            ebpf: Mutex::new(ebpf),
            pod_config: Mutex::new(pod_config),
            orig_dst: Mutex::new(orig_dst),
            inbound_sockets: Mutex::new(inbound_sockets),
            host_netns: Mutex::new(host_netns),
            inbound_dials: Mutex::new(inbound_dials),
            exclusions: Mutex::new(exclusions),
            links_dir,
            host_dir,
            cgroup_dir,
        })
    }

    /// Where the links of the pod with key `pod_key` are pinned.
    pub(crate) fn pod_links_dir(&self, pod_key: &str) -> PathBuf {
        self.links_dir.join(pod_key)
    }

    /// Pod keys that have pinned links (enrolled before, possibly by an earlier process).
    pub(crate) fn pinned_pods(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.links_dir) else { return Vec::new() };
        entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()
    }

    /// Attaches the cgroup programs at `cgroup` (a parent of every pod's), pinned under
    /// `<pin dir>/cgroup`, replacing what an earlier load attached there only once the new
    /// links are in place.
    pub(crate) fn attach_capture_cgroup(&self, cgroup: &File) -> Result<(), LoadError> {
        // bpffs refuses names with a dot.
        let fresh = self.cgroup_dir.with_file_name("cgroup-next");
        detach_dir(&fresh)?;
        std::fs::create_dir_all(&fresh)
            .map_err(|e| LoadError::Pin { path: fresh.display().to_string(), reason: e.to_string() })?;
        if let Err(e) = self.attach_cgroup_programs(&fresh, cgroup) {
            let _ = detach_dir(&fresh);
            return Err(e);
        }
        detach_dir(&self.cgroup_dir)?;
        std::fs::rename(&fresh, &self.cgroup_dir)
            .map_err(|e| LoadError::Pin { path: self.cgroup_dir.display().to_string(), reason: e.to_string() })
    }

    fn attach_cgroup_programs(&self, dir: &Path, cgroup: &File) -> Result<(), LoadError> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        for name in CGROUP_PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            let id =
                prog.attach(cgroup, CgroupAttachMode::Single).map_err(|source| LoadError::Program { name, source })?;
            let link = prog.take_link(id).map_err(|source| LoadError::Program { name, source })?;
            let link =
                FdLink::try_from(link).map_err(|e| LoadError::Pin { path: name.into(), reason: e.to_string() })?;
            pin(link, &dir.join(name))?;
        }
        let name = programs::SOCKOPS;
        let prog: &mut SockOps = program(&mut ebpf, name)?;
        let id = prog.attach(cgroup, CgroupAttachMode::Single).map_err(|source| LoadError::Program { name, source })?;
        let link = prog.take_link(id).map_err(|source| LoadError::Program { name, source })?;
        let link = FdLink::try_from(link).map_err(|e| LoadError::Pin { path: name.into(), reason: e.to_string() })?;
        pin(link, &dir.join(name))
    }

    /// Attaches `sk_lookup` to the pod's `netns`, pinning the link. On failure nothing new
    /// stays, and links pinned earlier are kept (they may be all that captures the pod).
    pub(crate) fn attach_pod(&self, pod_key: &str, netns: &File) -> Result<(), LoadError> {
        let dir = self.pod_links_dir(pod_key);
        std::fs::create_dir_all(&dir)
            .map_err(|e| LoadError::Pin { path: dir.display().to_string(), reason: e.to_string() })?;
        let result = self.attach_netns_programs(&dir, netns);
        if result.is_err() {
            // Removes the directory only if this call left it empty.
            let _ = std::fs::remove_dir(&dir);
        }
        result
    }

    /// Whether the pod has a pinned `sk_lookup` link.
    pub(crate) fn pod_has_link(&self, pod_key: &str) -> bool {
        self.pod_links_dir(pod_key).join(programs::SK_LOOKUP).exists()
    }

    fn attach_netns_programs(&self, dir: &Path, netns: &File) -> Result<(), LoadError> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let name = programs::SK_LOOKUP;
        let prog: &mut SkLookup = program(&mut ebpf, name)?;
        let id = prog.attach(netns).map_err(|source| LoadError::Program { name, source })?;
        let link = prog.take_link(id).map_err(|source| LoadError::Program { name, source })?;
        pin(FdLink::from(link), &dir.join(name))
    }

    /// Whether the network namespace the pod's pinned `sk_lookup` link is attached to still
    /// exists: the kernel detaches a namespace's links when it is destroyed, whatever path it
    /// was known by. `None` when the pod has no such link (or it cannot be read).
    pub(crate) fn pod_netns_alive(&self, pod_key: &str) -> Option<bool> {
        let link = super::sys::bpf_obj_get(&self.pod_links_dir(pod_key).join(programs::SK_LOOKUP)).ok()?;
        let fdinfo =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", std::os::fd::AsRawFd::as_raw_fd(&link))).ok()?;
        let inode = fdinfo.lines().find_map(|l| l.strip_prefix("netns_ino:"))?.trim().parse::<u64>().ok()?;
        Some(inode != 0)
    }

    /// Lets the host's connections from `cgroup` (the kubelet's) reach enrolled pods' apps:
    /// records `host_netns` as the namespace whose sockets count, and attaches `host_sockops`
    /// to `cgroup` (as a link, so it runs together with the capture programs above or below it),
    /// replacing an earlier attachment. `None` removes the exemption.
    pub(crate) fn set_host_probes(&self, host_netns: u64, cgroup: Option<&File>) -> Result<(), LoadError> {
        let path = self.host_dir.join(programs::HOST_SOCKOPS);
        if let Ok(old) = PinnedLink::from_pin(&path) {
            old.unpin().map_err(|e| LoadError::Pin { path: path.display().to_string(), reason: e.to_string() })?;
        }
        let Some(cgroup) = cgroup else {
            return Ok(());
        };
        self.host_netns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(0, host_netns, 0)
            .map_err(map_err(programs::MAP_HOST_NETNS))?;
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let name = programs::HOST_SOCKOPS;
        let prog: &mut SockOps = program(&mut ebpf, name)?;
        let id = prog.attach(cgroup, CgroupAttachMode::Single).map_err(|source| LoadError::Program { name, source })?;
        let link = prog.take_link(id).map_err(|source| LoadError::Program { name, source })?;
        let link = FdLink::try_from(link).map_err(|e| LoadError::Pin { path: name.into(), reason: e.to_string() })?;
        pin(link, &path)
    }

    /// Detaches every program of a pod by removing its pinned links.
    pub(crate) fn detach_pod(&self, pod_key: &str) -> Result<(), LoadError> {
        detach_dir(&self.pod_links_dir(pod_key))
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(LoadError::MissingProgram(name))?;
    prog.try_into().map_err(|source| LoadError::Program { name, source })
}

fn pin(link: FdLink, path: &Path) -> Result<(), LoadError> {
    let pinned =
        link.pin(path).map_err(|e| LoadError::Pin { path: path.display().to_string(), reason: e.to_string() })?;
    // The pin keeps the link (and the attachment) alive; our handle is not needed.
    drop(pinned);
    Ok(())
}

/// Unpins every link in `dir` (detaching its program) and removes the directory.
fn detach_dir(dir: &Path) -> Result<(), LoadError> {
    let pin_err = |e: &dyn std::fmt::Display| LoadError::Pin { path: dir.display().to_string(), reason: e.to_string() };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(pin_err(&e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match PinnedLink::from_pin(&path) {
            Ok(link) => drop(link.unpin().map_err(|e| pin_err(&e))?),
            Err(_) => std::fs::remove_file(&path).map_err(|e| pin_err(&e))?,
        }
    }
    std::fs::remove_dir(dir).map_err(|e| pin_err(&e))
}
