//! Fuzz target `decompress`: see weiche::fuzz::decompress.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weiche::fuzz::decompress(data));
