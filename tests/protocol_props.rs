//! Property tests: random byte streams fed to the framer, the response walker, the decoders,
//! the lexer and the classifier never panic.

use bytes::BytesMut;
use proptest::prelude::*;
use weiche::protocol::handshake::{ChangeUser, Greeting, HandshakeResponse};
use weiche::protocol::packet::{decode_chunk, encode_packet};
use weiche::protocol::{ErrPacket, Expect, Need, OkPacket, Walker};

fn expects() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Results),
        Just(Expect::Prepare),
        Just(Expect::FieldList),
        Just(Expect::Fetch),
        Just(Expect::OnePacket),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn framer_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let before = buf.len();
        let mut consumed = 0;
        while let Some(c) = decode_chunk(&mut buf) {
            consumed += 4 + c.payload.len();
        }
        prop_assert_eq!(consumed + buf.len(), before);
    }

    #[test]
    fn framer_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..70000), seq in any::<u8>()) {
        let mut buf = BytesMut::new();
        encode_packet(&mut buf, seq, &payload);
        let c = decode_chunk(&mut buf).unwrap();
        prop_assert_eq!(&c.payload[..], &payload[..]);
        prop_assert_eq!(c.seq, seq);
    }

    #[test]
    fn walker_never_panics(
        expect in expects(),
        deprecate_eof in any::<bool>(),
        binary in any::<bool>(),
        packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..40),
    ) {
        let mut w = Walker::new(expect, deprecate_eof, binary);
        for p in &packets {
            if w.is_done() {
                break;
            }
            let seen = match w.need(p.len(), p.first().copied()) {
                Need::Whole => &p[..],
                Need::Skim => &p[..p.len().min(1)],
            };
            if w.packet(p.len(), seen).is_err() {
                break;
            }
        }
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), caps in any::<u32>()) {
        let _ = Greeting::decode(&bytes);
        let _ = HandshakeResponse::decode(&bytes);
        let _ = ChangeUser::decode(&bytes, caps);
        let _ = OkPacket::decode(&bytes);
        let _ = ErrPacket::decode(&bytes);
        let _ = weiche::sql::kill::parse(&bytes);
    }

    #[test]
    fn lexer_and_classifier_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let tokens = weiche::sql::lexer::tokenize(&bytes);
        // Tokens are in order, inside the input, and never overlap.
        let mut at = 0;
        for t in &tokens {
            prop_assert!(t.start >= at && t.end > t.start && t.end <= bytes.len());
            at = t.end;
        }
        let _ = weiche::sql::classify(&bytes);
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
