//! Root-only tests of the committed eBPF object with aya 0.14, without ztunnel: here, every
//! program passes the verifier and every map pins by name and is re-adopted by a second load;
//! in `end_to_end`, the programs do their jobs on a pod built from a network namespace and a
//! cgroup. Without root they print why and pass.

mod end_to_end;
mod fixture;
mod sys;

use aya::maps::{HashMap, LpmTrie, MapData, SockHash};
use aya::programs::Program;
use aya::{Ebpf, EbpfLoader};
use std::net::Ipv4Addr;

use super::*;
use crate::capture::maps::{IpKey, NetnsCookie, OrigDst, PeerKey, PodConfig, PortKey, Present, SocketCookie};
use fixture::{Bpffs, running_as_root};

/// Loads the object with maps pinned in `bpffs`, then loads every program (the verifier runs).
fn load(bpffs: &Bpffs) -> Ebpf {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(bpffs.path())
        .load(OBJECT)
        .unwrap_or_else(|e| panic!("aya cannot load ebpf/ztunnel.bpf.o: {e}"));
    for (name, program) in ebpf.programs_mut() {
        let loaded = match program {
            Program::CgroupSockAddr(p) => p.load(),
            Program::SockOps(p) => p.load(),
            Program::SkLookup(p) => p.load(),
            other => panic!("program {name} has unexpected type {:?}", other.prog_type()),
        };
        loaded.unwrap_or_else(|e| panic!("the verifier rejected {name}: {e}\n{e:?}"));
    }
    ebpf
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> aya::maps::Map {
    ebpf.take_map(name).unwrap_or_else(|| panic!("map {name} missing from the object"))
}

#[test]
fn object_verifies_and_its_maps_pin_by_name_and_are_readopted() {
    if !running_as_root("object_verifies_and_its_maps_pin_by_name_and_are_readopted") {
        return;
    }
    let bpffs = Bpffs::mount().expect("cannot mount a test bpffs");
    let mut first = load(&bpffs);

    let mut programs: Vec<&str> = first.programs().map(|(name, _)| name).collect();
    let mut expected: Vec<&str> =
        CGROUP_PROGRAMS.iter().chain(&NETNS_PROGRAMS).chain(&HOST_PROGRAMS).copied().collect();
    programs.sort_unstable();
    expected.sort_unstable();
    assert_eq!(programs, expected, "programs in the object vs programs.rs");
    let mut maps: Vec<&str> = first.maps().map(|(name, _)| name).collect();
    let mut expected = MAPS.to_vec();
    maps.sort_unstable();
    expected.sort_unstable();
    assert_eq!(maps, expected, "maps in the object vs programs.rs");
    for name in MAPS {
        assert!(bpffs.path().join(name).exists(), "map {name} was not pinned by name in {}", bpffs.path().display());
    }

    // aya checks key and value sizes against each map's definition when it builds a typed
    // view, so these also prove the mirrors' sizes from the kernel's side.
    let mut pods = HashMap::<MapData, NetnsCookie, PodConfig>::try_from(take_map(&mut first, MAP_POD_CONFIG)).unwrap();
    HashMap::<MapData, SocketCookie, OrigDst>::try_from(take_map(&mut first, MAP_ORIG_DST_BY_COOKIE)).unwrap();
    HashMap::<MapData, PeerKey, OrigDst>::try_from(take_map(&mut first, MAP_ORIG_DST)).unwrap();
    SockHash::<MapData, IpKey>::try_from(take_map(&mut first, MAP_INBOUND_SOCKETS)).unwrap();
    HashMap::<MapData, PortKey, Present>::try_from(take_map(&mut first, MAP_EXCLUDED_PORTS)).unwrap();
    LpmTrie::<MapData, [u8; 4], Present>::try_from(take_map(&mut first, MAP_EXCLUDED_CIDRS4)).unwrap();
    LpmTrie::<MapData, [u8; 16], Present>::try_from(take_map(&mut first, MAP_EXCLUDED_CIDRS6)).unwrap();

    // A restarted loader finds the pinned maps and their contents.
    let config = PodConfig::new(Some(Ipv4Addr::new(10, 89, 0, 2)), None).with_ready(true);
    pods.insert(42, config, 0).unwrap();
    drop(pods);
    drop(first);
    let mut second = load(&bpffs);
    let pods = HashMap::<MapData, NetnsCookie, PodConfig>::try_from(take_map(&mut second, MAP_POD_CONFIG)).unwrap();
    assert_eq!(pods.get(&42, 0).ok(), Some(config), "a second load must re-adopt the pinned pod_config");
}
