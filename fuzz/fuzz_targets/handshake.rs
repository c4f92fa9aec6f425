//! Fuzz target `handshake`: see weiche::fuzz::handshake.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weiche::fuzz::handshake(data));
