//! Arbitrary bytes as the local config file: a config that applies and dumps, or an error
//! naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ztunnel::fuzzing::local_config(data));
