//! Arbitrary bytes as a SOCKS5 client's greeting and request: a destination read exactly
//! where the protocol puts it, or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ztunnel::fuzzing::socks5_handshake(data));
