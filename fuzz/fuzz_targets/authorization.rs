//! Arbitrary bytes as an `istio.security.Authorization` resource: decoding and conversion
//! must return a value or an error naming the resource, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ztunnel::fuzzing::xds_authorization(data));
