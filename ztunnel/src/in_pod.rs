//! The numbers ztunnel uses inside every captured pod's network namespace, shared by the
//! kernel side (`capture`), the pod proxy (`proxy`) and enrollment (`pods`).
//!
//! Ports, Istio's numbers: 15001 receives the pod's redirected outbound connections, 15006
//! inbound plaintext (assigned by `sk_lookup`), 15008 inbound HBONE; 15008 is also where any
//! HBONE workload is reached.
//!
//! Marks: every socket ztunnel opens in a pod's namespace carries a mark, so the capture
//! programs (attached at a parent cgroup of every pod) can tell it from the pod's own: the
//! configured `--socket-mark` for listeners and dials, [`REPLY_MARK`] for transparent dials to
//! the pod's application. The pod's reply routing matches `REPLY_MARK/REPLY_MASK`, so the
//! socket mark must differ from the reply mark under that mask ([`clashes_with_reply_mark`]).
//!
//! The eBPF programs compile in the same numbers (`ebpf/include/ztunnel_maps.h`); a test
//! checks that both sides agree.

/// Outbound capture listener: the pod's connections are redirected here.
pub(crate) const OUTBOUND_PORT: u16 = 15001;
/// Inbound plaintext listener (the `sk_lookup` target).
pub(crate) const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// Inbound HBONE (mTLS + HTTP/2 `CONNECT`).
pub const HBONE_PORT: u16 = 15008;

/// Mark of ztunnel's transparent dials to applications and of the applications' answers
/// (Istio's in-pod connection mark).
pub(crate) const REPLY_MARK: u32 = 0x111;
/// The bits of a mark the pod's reply rule compares (`fwmark REPLY_MARK/REPLY_MASK`).
pub(crate) const REPLY_MASK: u32 = 0xfff;

/// True when sockets marked `socket_mark` would be taken for transparent dials: the pod's
/// reply rule would route their packets back to ztunnel.
pub(crate) const fn clashes_with_reply_mark(socket_mark: u32) -> bool {
    socket_mark & REPLY_MASK == REPLY_MARK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `#define NAME value` in the header the eBPF programs are built with.
    fn c_define(name: &str) -> u32 {
        let header = include_str!("../../ebpf/include/ztunnel_maps.h");
        let line = header
            .lines()
            .find_map(|l| l.strip_prefix("#define ")?.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("ztunnel_maps.h defines no {name}"));
        let value = line.split_whitespace().next().unwrap_or_default();
        let parsed = match value.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => value.parse(),
        };
        parsed.unwrap_or_else(|e| panic!("ztunnel_maps.h: {name} is {value:?}, not a number: {e}"))
    }

    #[test]
    fn the_ebpf_programs_use_the_same_ports() {
        let port = |name| u16::try_from(c_define(name)).expect("a port fits 16 bits");
        assert_eq!(port("ZTUNNEL_OUTBOUND_PORT"), OUTBOUND_PORT, "outbound port differs from the C header");
        assert_eq!(port("ZTUNNEL_INBOUND_PORT"), INBOUND_PLAINTEXT_PORT, "inbound port differs from the C header");
        assert_eq!(port("ZTUNNEL_HBONE_PORT"), HBONE_PORT, "hbone port differs from the C header");
    }

    #[test]
    fn the_ebpf_programs_know_the_reply_mark() {
        assert_eq!(c_define("ZTUNNEL_REPLY_MARK"), REPLY_MARK, "reply mark differs from the C header");
    }

    #[test]
    fn marks_equal_to_the_reply_mark_under_its_mask_clash() {
        assert!(clashes_with_reply_mark(REPLY_MARK));
        assert!(clashes_with_reply_mark(0x7111), "only the masked bits count");
        assert!(!clashes_with_reply_mark(0x539), "the default socket mark must not clash");
    }
}
