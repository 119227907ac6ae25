//! Layout and conversion tests for the map mirrors.
//!
//! The layout test reads the C layouts from the BTF inside the committed object
//! (`programs::OBJECT`), which is exactly what the kernel sees. That chain is closed at both
//! ends: `cargo xtask ebpf --check` proves the object was built from the current header, and
//! this test proves the Rust types match the object. It needs no tool at test time (no clang,
//! no bpftool), so it runs everywhere `cargo test` does.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use super::*;
use crate::capture::programs::OBJECT;

/// A C struct as BTF describes it: total size and byte offset of each member.
#[derive(Debug)]
struct BtfStruct {
    size: usize,
    members: HashMap<String, usize>,
}

/// Every named struct in the object's `.BTF` section.
fn btf_structs(object: &[u8]) -> HashMap<String, BtfStruct> {
    let btf = elf_section(object, ".BTF").expect("the eBPF object has no .BTF section (built without -g?)");
    parse_btf_structs(btf)
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn u64_at(b: &[u8], at: usize) -> usize {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize
}

/// The bytes of a section of a little-endian ELF64 file.
fn elf_section<'a>(elf: &'a [u8], wanted: &str) -> Option<&'a [u8]> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!((elf[4], elf[5]), (2, 1), "expected a little-endian ELF64 object (bpfel)");
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(elf, 0x28), u16_at(elf, 0x3a), u16_at(elf, 0x3c), u16_at(elf, 0x3e));
    let header = |i: usize| &elf[shoff + i * shentsize..shoff + (i + 1) * shentsize];
    let body = |h: &[u8]| &elf[u64_at(h, 0x18)..u64_at(h, 0x18) + u64_at(h, 0x20)];
    let names = body(header(shstrndx));
    (0..shnum).map(header).find(|h| c_str(names, u32_at(h, 0)) == wanted).map(body)
}

fn c_str(strings: &[u8], at: usize) -> &str {
    let end = strings[at..].iter().position(|&b| b == 0).map_or(strings.len(), |n| at + n);
    std::str::from_utf8(&strings[at..end]).unwrap()
}

/// Walks the BTF type section (format: Documentation/bpf/btf.rst) and keeps the structs.
fn parse_btf_structs(btf: &[u8]) -> HashMap<String, BtfStruct> {
    const KIND_STRUCT: usize = 4;
    assert_eq!(u16_at(btf, 0), 0xeb9f, "bad BTF magic");
    let hdr_len = u32_at(btf, 4);
    let (type_off, type_len, str_off) = (u32_at(btf, 8), u32_at(btf, 12), u32_at(btf, 16));
    let types = &btf[hdr_len + type_off..hdr_len + type_off + type_len];
    let strings = &btf[hdr_len + str_off..];

    let mut structs = HashMap::new();
    let mut at = 0;
    while at < types.len() {
        let (name_off, info, size) = (u32_at(types, at), u32_at(types, at + 4), u32_at(types, at + 8));
        let (vlen, kind, kind_flag) = (info & 0xffff, (info >> 24) & 0x1f, info >> 31);
        at += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
            3 => 12,                   // ARRAY
            4 | 5 => 12 * vlen,        // STRUCT, UNION
            6 | 13 => 8 * vlen,        // ENUM, FUNC_PROTO
            15 | 19 => 12 * vlen,      // DATASEC, ENUM64
            2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            other => panic!("unknown BTF kind {other}"),
        };
        if kind == KIND_STRUCT && name_off != 0 {
            let members = (0..vlen)
                .map(|i| {
                    let m = at + 12 * i;
                    let bits = u32_at(types, m + 8);
                    let bit_offset = if kind_flag == 1 { bits & 0xff_ffff } else { bits };
                    assert_eq!(bit_offset % 8, 0, "bitfields are not part of the map contract");
                    (c_str(strings, u32_at(types, m)).to_string(), bit_offset / 8)
                })
                .collect();
            structs.insert(c_str(strings, name_off).to_string(), BtfStruct { size, members });
        }
        at += extra;
    }
    structs
}

/// Asserts that a Rust mirror has the C struct's size and, member by member, its offsets.
macro_rules! assert_layout {
    ($structs:expr, $c_name:literal, $rust:ty, { $($field:ident),+ $(,)? }) => {{
        let c = $structs.get($c_name).unwrap_or_else(|| panic!("struct {} is not in the object's BTF", $c_name));
        assert_eq!(size_of::<$rust>(), c.size, "size of {} vs C struct {}", stringify!($rust), $c_name);
        let mut expected: Vec<&str> = c.members.keys().map(String::as_str).collect();
        let mut mirrored = vec![$(stringify!($field)),+];
        expected.sort_unstable();
        mirrored.sort_unstable();
        assert_eq!(mirrored, expected, "fields of {} vs C struct {}", stringify!($rust), $c_name);
        $(
            assert_eq!(
                offset_of!($rust, $field),
                c.members[stringify!($field)],
                "offset of {}.{} vs C struct {}",
                stringify!($rust),
                stringify!($field),
                $c_name,
            );
        )+
    }};
}

#[test]
fn mirrors_match_the_c_layouts_in_the_committed_object() {
    let structs = btf_structs(OBJECT);
    assert_layout!(structs, "pod_config", PodConfig, { ip4, ip6, flags });
    assert_layout!(structs, "orig_dst", OrigDst, { ip, port, family });
    assert_layout!(structs, "peer_key", PeerKey, { ip, port, family });
    assert_layout!(structs, "ip_key", IpKey, { ip, family });
    assert_layout!(structs, "conn_key", ConnKey, { src, dst, src_port, dst_port, family });
    assert_layout!(structs, "ztunnel_config", ZtunnelConfig, { socket_mark });
    // Private fields are checked through their own module's layout test.
    exclusion_keys::tests::assert_layouts(&|name| structs.get(name).map(|s| (s.size, s.members.clone())));
}

#[test]
fn btf_parser_sees_the_map_definitions() {
    // Guards the parser itself: the anonymous map-definition structs are skipped, and a
    // struct with known members parses with the offsets the header documents.
    let structs = btf_structs(OBJECT);
    let pod = &structs["pod_config"];
    assert_eq!((pod.size, pod.members["ip4"], pod.members["ip6"], pod.members["flags"]), (24, 0, 4, 20));
}

#[test]
fn orig_dst_stores_network_order_and_round_trips() {
    let v4: SocketAddr = "10.1.2.3:8080".parse().unwrap();
    let dst = OrigDst::from(v4);
    assert_eq!(&dst.ip[..4], &[10, 1, 2, 3]);
    assert_eq!(&dst.ip[4..], &[0; 12]);
    assert_eq!(dst.port.to_ne_bytes(), 8080u16.to_be_bytes(), "port must be in network order");
    assert_eq!(dst.family, FAMILY_V4);
    assert_eq!(SocketAddr::try_from(dst), Ok(v4));

    let v6: SocketAddr = "[fd00::7]:443".parse().unwrap();
    let dst = OrigDst::from(v6);
    assert_eq!((dst.family, dst.ip[0], dst.ip[15]), (FAMILY_V6, 0xfd, 7));
    assert_eq!(SocketAddr::try_from(dst), Ok(v6));

    let bad = OrigDst { family: 99, ..dst };
    assert_eq!(SocketAddr::try_from(bad), Err(UnknownFamily(99)));
}

#[test]
fn peer_key_stores_host_order_port_and_folds_mapped_ipv4() {
    let peer: SocketAddr = "10.0.0.5:40000".parse().unwrap();
    let key = PeerKey::from(peer);
    assert_eq!(key.port, 40000, "port must be in host order");
    assert_eq!((&key.ip[..4], key.family), (&[10, 0, 0, 5][..], FAMILY_V4));
    assert_eq!(SocketAddr::try_from(key), Ok(peer));

    let mapped: SocketAddr = "[::ffff:10.0.0.5]:40000".parse().unwrap();
    assert_eq!(PeerKey::from(mapped), key, "a dual-stack listener's view of an IPv4 peer");
}

#[test]
fn ip_key_round_trips() {
    for ip in ["10.9.8.7", "fd00::1"] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(IpAddr::try_from(IpKey::from(ip)), Ok(ip));
    }
    assert_eq!(IpKey::from("10.9.8.7".parse::<IpAddr>().unwrap()).family, 2);
}

#[test]
fn pod_config_flags() {
    let ip4: Ipv4Addr = "10.1.1.1".parse().unwrap();
    let pod = PodConfig::new(Some(ip4), None);
    assert_eq!((pod.ip4(), pod.ip6(), pod.is_ready()), (Some(ip4), None, false));
    assert_eq!(pod.ip4, [10, 1, 1, 1], "network order");
    let ready = pod.with_ready(true);
    assert_eq!(ready.flags(), PodConfig::READY | PodConfig::HAS_V4);
    assert_eq!(ready.with_ready(false), pod);
}

#[test]
fn pod_cidr_keys_clear_host_bits_and_reject_long_prefixes() {
    let key = PodCidr4Key::new(7, "10.1.2.3".parse().unwrap(), 16).unwrap();
    assert_eq!(key.network(), ("10.1.0.0".parse().unwrap(), 16));
    assert_eq!(key.netns(), 7);
    assert_eq!(PodCidr4Key::new(7, Ipv4Addr::UNSPECIFIED, 33), Err(InvalidPrefix { prefix: 33, max: 32 }));
    let lpm: aya::maps::lpm_trie::Key<[u8; 12]> =
        PodCidr4Key::new(7, "192.168.7.9".parse().unwrap(), 24).unwrap().to_lpm();
    assert_eq!(lpm.prefix_len(), 64 + 24, "the netns cookie is part of the prefix");
    assert_eq!(&lpm.data()[8..], &[192, 168, 7, 0]);
    assert_eq!(PodCidr4Key::from_lpm(&lpm).network(), ("192.168.7.0".parse().unwrap(), 24));

    let key = PodCidr6Key::new(9, "fd00:1:2::9".parse().unwrap(), 32).unwrap();
    assert_eq!((key.network(), key.netns()), (("fd00:1::".parse().unwrap(), 32), 9));
    assert_eq!(PodCidr6Key::new(9, Ipv6Addr::UNSPECIFIED, 129), Err(InvalidPrefix { prefix: 129, max: 128 }));
    assert_eq!(key.to_lpm::<24>().prefix_len(), 64 + 32);

    // Prefixes that end inside a byte, and the extremes.
    let cases4 = [(13, "10.248.0.0"), (0, "0.0.0.0"), (32, "10.255.255.255"), (1, "0.0.0.0")];
    for (prefix, want) in cases4 {
        let key = PodCidr4Key::new(1, "10.255.255.255".parse().unwrap(), prefix).unwrap();
        assert_eq!(key.network(), (want.parse().unwrap(), prefix), "/{prefix}");
    }
    let key = PodCidr6Key::new(1, "ffff:ffff::ffff".parse().unwrap(), 127).unwrap();
    assert_eq!(key.network(), ("ffff:ffff::fffe".parse().unwrap(), 127));
    let key = PodCidr6Key::new(1, "ffff:ffff::ffff".parse().unwrap(), 20).unwrap();
    assert_eq!(key.network(), ("ffff:f000::".parse().unwrap(), 20));
}
