//! Fuzz target `framer`: see weiche::fuzz::framer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weiche::fuzz::framer(data));
