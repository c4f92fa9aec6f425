//! Fuzz target `binlog`: see weiche::fuzz::binlog.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weiche::fuzz::binlog(data));
