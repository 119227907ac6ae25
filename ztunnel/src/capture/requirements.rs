//! What eBPF capture needs from the kernel, checked before anything is loaded.
//!
//! [`check`] asks a [`Probe`] about every [`Feature`] and fails with one error that names each
//! missing feature and the Linux release that added it, instead of a late, cryptic failure in
//! the middle of loading or attaching (or, worse, a program that loads but never runs). The
//! real probe, [`KernelProbe`], asks the running kernel: mount table and sysfs for cgroup v2
//! and BTF, and trivial program loads (through aya's feature probes and one raw load for an
//! attach type aya cannot probe) for program types, attach types, helpers and map types.
//! Tests pass a fake probe to check the reporting.

use std::fmt;
use std::path::Path;

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported};

use super::{mounts, sys};

/// The oldest Linux release that has every [`Feature`] (sk_lookup and `bpf_sk_assign` from it).
pub(crate) const MINIMUM_KERNEL: &str = "5.9";

/// One kernel capability capture relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Cgroup2,
    KernelBtf,
    CgroupSockAddr,
    SockOps,
    GetpeernameHooks,
    SkLookup,
    SkAssign,
    NetnsCookie,
    SocketCookie,
    LpmTrie,
    SockHash,
}

impl Feature {
    pub const ALL: [Feature; 11] = [
        Feature::Cgroup2,
        Feature::KernelBtf,
        Feature::CgroupSockAddr,
        Feature::SockOps,
        Feature::GetpeernameHooks,
        Feature::SkLookup,
        Feature::SkAssign,
        Feature::NetnsCookie,
        Feature::SocketCookie,
        Feature::LpmTrie,
        Feature::SockHash,
    ];

    /// What it is and what capture uses it for.
    pub fn description(self) -> &'static str {
        match self {
            Feature::Cgroup2 => "a mounted cgroup v2 hierarchy (pods' cgroups carry the capture programs)",
            Feature::KernelBtf => "kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)",
            Feature::CgroupSockAddr => "cgroup sock_addr programs (connect4/6 and bind4/6 redirection)",
            Feature::SockOps => "sockops programs (recording the original destination)",
            Feature::GetpeernameHooks => "cgroup getpeername4/6 attach points (applications see the real peer)",
            Feature::SkLookup => "sk_lookup programs (inbound capture to port 15006)",
            Feature::SkAssign => "the bpf_sk_assign helper in sk_lookup programs",
            Feature::NetnsCookie => "the bpf_get_netns_cookie helper in sock_addr programs (finding the pod)",
            Feature::SocketCookie => "the bpf_get_socket_cookie helper in sock_addr programs",
            Feature::LpmTrie => "LPM trie maps (excluded networks)",
            Feature::SockHash => "SOCKHASH maps (the pods' 15006 sockets)",
        }
    }

    /// The Linux release that added it.
    pub fn added_in(self) -> &'static str {
        match self {
            Feature::Cgroup2 => "4.5",
            Feature::KernelBtf => "5.4",
            Feature::CgroupSockAddr => "4.17",
            Feature::SockOps => "4.13",
            Feature::GetpeernameHooks => "5.8",
            Feature::SkLookup | Feature::SkAssign => "5.9",
            Feature::NetnsCookie => "5.7",
            Feature::SocketCookie => "4.19",
            Feature::LpmTrie => "4.11",
            Feature::SockHash => "4.18",
        }
    }
}

/// The answer of a probe that could not decide.
pub(crate) type ProbeError = String;

/// Asks whether the kernel has a feature.
pub(crate) trait Probe {
    fn supports(&self, feature: Feature) -> Result<bool, ProbeError>;
}

/// One feature the kernel lacks, or could not be asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub feature: Feature,
    /// Why the probe could not tell (permissions, an unexpected error), if it failed.
    pub probe_error: Option<ProbeError>,
}

/// Everything capture needs and the kernel does not offer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct MissingFeatures(pub Vec<Missing>);

impl fmt::Display for MissingFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "eBPF capture cannot run on this kernel (it needs Linux {MINIMUM_KERNEL} or later, probed as root or \
             with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN); missing: "
        )?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} (Linux {})", m.feature.description(), m.feature.added_in())?;
            if let Some(e) = &m.probe_error {
                write!(f, " [probe failed: {e}]")?;
            }
        }
        Ok(())
    }
}

/// Asks `probe` about every feature; fails naming all that are missing. A probe that cannot
/// decide counts as missing (fail closed: capture would not work reliably).
pub(crate) fn check(probe: &dyn Probe) -> Result<(), MissingFeatures> {
    let missing: Vec<Missing> = Feature::ALL
        .into_iter()
        .filter_map(|feature| match probe.supports(feature) {
            Ok(true) => None,
            Ok(false) => Some(Missing { feature, probe_error: None }),
            Err(e) => Some(Missing { feature, probe_error: Some(e) }),
        })
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(MissingFeatures(missing)) }
}

/// The running kernel.
pub(crate) struct KernelProbe;

impl Probe for KernelProbe {
    fn supports(&self, feature: Feature) -> Result<bool, ProbeError> {
        let program = |t: ProgramType| is_program_supported(t).map_err(|e| e.to_string());
        let helper = |t: ProgramType, h: BpfHelper| is_helper_supported(t, h).map_err(|e| e.to_string());
        let map = |t: MapType| is_map_supported(t).map_err(|e| e.to_string());
        match feature {
            Feature::Cgroup2 => Ok(mounts::cgroup2_root().is_ok()),
            Feature::KernelBtf => Ok(Path::new("/sys/kernel/btf/vmlinux").exists()),
            Feature::CgroupSockAddr => program(ProgramType::CgroupSockAddr),
            Feature::SockOps => program(ProgramType::SockOps),
            Feature::GetpeernameHooks => {
                let load = |attach| sys::loads_trivial_program(sys::PROG_TYPE_CGROUP_SOCK_ADDR, attach);
                Ok(load(sys::ATTACH_INET4_GETPEERNAME).map_err(|e| e.to_string())?
                    && load(sys::ATTACH_INET6_GETPEERNAME).map_err(|e| e.to_string())?)
            }
            Feature::SkLookup => program(ProgramType::SkLookup),
            Feature::SkAssign => helper(ProgramType::SkLookup, BpfHelper::BPF_FUNC_sk_assign),
            Feature::NetnsCookie => helper(ProgramType::CgroupSockAddr, BpfHelper::BPF_FUNC_get_netns_cookie),
            Feature::SocketCookie => helper(ProgramType::CgroupSockAddr, BpfHelper::BPF_FUNC_get_socket_cookie),
            Feature::LpmTrie => map(MapType::LpmTrie),
            Feature::SockHash => map(MapType::SockHash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers from a table: features in `missing` are absent, `broken` fails to probe.
    struct FakeProbe {
        missing: Vec<Feature>,
        broken: Option<Feature>,
    }

    impl Probe for FakeProbe {
        fn supports(&self, feature: Feature) -> Result<bool, ProbeError> {
            if self.broken == Some(feature) {
                return Err("bpf(BPF_PROG_LOAD): Operation not permitted".into());
            }
            Ok(!self.missing.contains(&feature))
        }
    }

    #[test]
    fn reports_every_missing_feature_with_the_kernel_that_added_it() {
        let probe = FakeProbe {
            missing: vec![Feature::Cgroup2, Feature::SkAssign, Feature::GetpeernameHooks],
            broken: Some(Feature::KernelBtf),
        };
        let err = check(&probe).expect_err("a kernel without sk_assign must be refused");
        let features: Vec<Feature> = err.0.iter().map(|m| m.feature).collect();
        assert_eq!(
            features,
            [Feature::Cgroup2, Feature::KernelBtf, Feature::GetpeernameHooks, Feature::SkAssign],
            "every missing feature, in a stable order"
        );
        let text = err.to_string();
        for expected in [
            "needs Linux 5.9 or later",
            "a mounted cgroup v2 hierarchy",
            "kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF) (Linux 5.4) [probe failed: bpf(BPF_PROG_LOAD): Operation not permitted]",
            "cgroup getpeername4/6 attach points (applications see the real peer) (Linux 5.8)",
            "the bpf_sk_assign helper in sk_lookup programs (Linux 5.9)",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text:?}");
        }
        assert!(!text.contains("sockops"), "present features are not reported: {text}");
    }

    #[test]
    fn a_complete_kernel_passes() {
        assert_eq!(check(&FakeProbe { missing: vec![], broken: None }), Ok(()));
    }

    #[test]
    fn this_machines_kernel_has_everything_capture_needs() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping this_machines_kernel_has_everything_capture_needs: needs root (program loads)");
            return;
        }
        check(&KernelProbe).unwrap_or_else(|e| panic!("the real probe must pass on this machine: {e}"));
    }
}
