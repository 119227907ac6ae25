//! Arbitrary bytes as a control socket client's stream: bounded line framing that agrees
//! with a plain split, and requests or error answers that round-trip, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ztunnel::fuzzing::control_stream(data));
