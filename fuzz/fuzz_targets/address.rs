//! Arbitrary bytes as an `istio.workload.Address` resource: decoding and conversion must
//! return a value or an error naming the resource, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = ztunnel::xds::convert::check_address("fuzz", data, "cluster.local") {
        assert!(e.to_string().starts_with("Address \"fuzz\""), "error must name the resource: {e}");
    }
});
