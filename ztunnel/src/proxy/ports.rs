//! ztunnel's ports, Istio's numbers, the same in every captured pod's network namespace:
//! 15001 receives the pod's redirected outbound connections, 15006 inbound plaintext
//! (assigned by `sk_lookup`), 15008 inbound HBONE; 15008 is also where any HBONE workload is
//! reached.
//!
//! The eBPF programs compile in the same numbers (`ebpf/include/ztunnel_maps.h`); a test
//! checks that both sides agree.

/// Outbound capture listener: the pod's connections are redirected here.
pub(crate) const OUTBOUND_PORT: u16 = 15001;
/// Inbound plaintext listener (the `sk_lookup` target).
pub(crate) const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// Inbound HBONE (mTLS + HTTP/2 `CONNECT`).
pub const HBONE_PORT: u16 = 15008;

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `#define NAME value` in the header the eBPF programs are built with.
    fn c_define(name: &str) -> u16 {
        let header = include_str!("../../../ebpf/include/ztunnel_maps.h");
        let line = header
            .lines()
            .find_map(|l| l.strip_prefix("#define ")?.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("ztunnel_maps.h defines no {name}"));
        let value = line.split_whitespace().next().unwrap_or_default();
        value.parse().unwrap_or_else(|e| panic!("ztunnel_maps.h: {name} is {value:?}, not a port: {e}"))
    }

    #[test]
    fn the_ebpf_programs_use_the_same_ports() {
        assert_eq!(c_define("ZTUNNEL_OUTBOUND_PORT"), OUTBOUND_PORT, "outbound port differs from the C header");
        assert_eq!(c_define("ZTUNNEL_INBOUND_PORT"), INBOUND_PLAINTEXT_PORT, "inbound port differs from the C header");
        assert_eq!(c_define("ZTUNNEL_HBONE_PORT"), HBONE_PORT, "hbone port differs from the C header");
    }
}
