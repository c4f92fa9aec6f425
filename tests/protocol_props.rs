//! Property tests: random byte streams fed to the framer, the response walker, the handshake
//! decoders, the lexer and classifier, the Lua packet decoders and the compressed protocol's
//! decoder never panic. They run the
//! fuzz targets' entry points (src/fuzz.rs), and every input a fuzzer found a crash with
//! (tests/data/fuzz/<target>/) stays a regression test.

use bytes::BytesMut;
use proptest::prelude::*;
use weiche::fuzz;
use weiche::protocol::packet::encode_packet;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    // The fuzz targets' entry points (src/fuzz.rs, scripts/fuzz), on random input in CI.
    #[test]
    fn framer_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzz::framer(&bytes);
    }

    #[test]
    fn framer_round_trips_large_packets(payload in proptest::collection::vec(any::<u8>(), 0..70000)) {
        fuzz::framer(&payload);
    }

    #[test]
    fn walker_never_panics(
        mode in any::<u8>(),
        packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..40),
    ) {
        // Well-framed packets, so that the walker gets far.
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&[mode]);
        for (i, p) in packets.iter().enumerate() {
            encode_packet(&mut bytes, i as u8, p);
        }
        fuzz::walker(&bytes);
    }

    #[test]
    fn walker_never_panics_on_raw_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        fuzz::walker(&bytes);
    }

    #[test]
    fn handshake_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzz::handshake(&bytes);
    }

    #[test]
    fn handshake_decoders_never_panic_on_near_logins(
        head in proptest::collection::vec(any::<u8>(), 32..33),
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // A fixed part with PROTOCOL_41 and the other flags random, then random fields.
        let mut bytes = head;
        bytes[1] |= 0x02;
        bytes.extend_from_slice(&rest);
        fuzz::handshake(&bytes);
    }

    #[test]
    fn lexer_and_classifier_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzz::sql(&bytes);
    }

    #[test]
    fn binlog_events_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz::binlog(&bytes);
    }

    #[test]
    fn decompressor_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzz::decompress(&bytes);
    }

    #[test]
    fn decompressor_on_well_formed_headers(
        mode in any::<u8>(),
        packets in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..200), 0usize..100_000), 1..4),
    ) {
        // Headers that frame their payload exactly, with any declared length: the payloads
        // are not valid zlib or zstd, or inflate to another length; either way an error.
        let mut wire = vec![mode];
        for (payload, declared) in &packets {
            let n = payload.len();
            wire.extend_from_slice(&[n as u8, (n >> 8) as u8, 0, 0]);
            wire.extend_from_slice(&[*declared as u8, (*declared >> 8) as u8, (*declared >> 16) as u8]);
            wire.extend_from_slice(payload);
        }
        fuzz::decompress(&wire);
    }

    #[test]
    fn lua_proto_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzz::lua_proto(&bytes);
    }

    #[test]
    fn classifier_sends_sql_like_text_somewhere(
        words in proptest::collection::vec(prop_oneof![
            Just("SELECT"), Just("FROM"), Just("t"), Just("'a;b'"), Just("/*! FOR UPDATE */"), Just("--"),
            Just("\n"), Just(";"), Just("@x"), Just(":="), Just("`x`"), Just("LAST_INSERT_ID("), Just(")"),
        ], 0..20),
    ) {
        let sql = words.join(" ");
        let c = weiche::sql::classify(sql.as_bytes());
        prop_assert!(!c.reason.is_empty());
    }
}

/// Inputs the fuzzers found crashes with (scripts/fuzz copies them here): each must now pass.
#[test]
fn fuzz_findings_stay_fixed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    for (name, run) in fuzz::TARGETS {
        let Ok(dir) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for f in dir.flatten() {
            let input = std::fs::read(f.path()).expect("read a fuzz finding");
            run(&input);
        }
    }
}
