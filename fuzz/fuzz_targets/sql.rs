//! Fuzz target `sql`: see weiche::fuzz::sql.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weiche::fuzz::sql(data));
