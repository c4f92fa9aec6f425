//! Fuzz target `walker`: see weiche::fuzz::walker.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weiche::fuzz::walker(data));
