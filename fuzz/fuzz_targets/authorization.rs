//! Arbitrary bytes as an `istio.security.Authorization` resource: decoding and conversion
//! must return a value or an error naming the resource, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = ztunnel::xds::convert::check_authorization("fuzz", data) {
        assert!(e.to_string().starts_with("Authorization \"fuzz\""), "error must name the resource: {e}");
    }
});
