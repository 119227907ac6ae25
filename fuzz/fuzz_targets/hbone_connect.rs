//! Arbitrary method, `:authority` and headers as an HBONE `CONNECT`: refused or accepted as
//! `CONNECT ip:port`, and no header lets an ordinary peer choose its client address.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ztunnel::fuzzing::hbone_connect(data));
