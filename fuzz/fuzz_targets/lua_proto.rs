//! Fuzz target `lua_proto`: see weiche::fuzz::lua_proto.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weiche::fuzz::lua_proto(data));
