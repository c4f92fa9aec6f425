//! Entry points for the fuzzers (`fuzz/`, cargo-fuzz, run by `scripts/fuzz`) and for their
//! proptest twins in CI (`tests/protocol_props.rs`). Each takes arbitrary bytes, drives one
//! parser the way Weiche does with input from the network, and must never panic; the
//! invariants it checks panic when broken, which is what a fuzzer reports.

use crate::protocol::handshake::{AuthSwitch, ChangeUser, Greeting, HandshakeResponse};
use crate::protocol::packet::{decode_chunk, encode_packet};
use crate::protocol::track::{untracked_ok, TrackedOk};
use crate::protocol::{ErrPacket, Expect, Need, OkPacket, Walker};
use bytes::BytesMut;

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name (the names of fuzz/fuzz_targets/ and of tests/data/fuzz/).
pub const TARGETS: &[(&str, Target)] = &[
    ("framer", framer),
    ("walker", walker),
    ("handshake", handshake),
    ("sql", sql),
    ("lua_proto", lua_proto),
    ("binlog", binlog),
    ("decompress", decompress),
];

/// The compressed protocol's decoder, on a peer's bytes (the first byte picks zlib or zstd):
/// an error or at most the declared lengths of output, never a panic; and what Weiche
/// compresses decodes to what it was.
pub fn decompress(data: &[u8]) {
    use crate::protocol::compress::{decode_all, encode_all, Algorithm, HEADER_LEN, MAX_PAYLOAD};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let algorithm = if mode & 1 == 0 {
        Algorithm::Zlib {
            level: 1 + u32::from(mode >> 1) % 9,
        }
    } else {
        Algorithm::Zstd {
            level: 1 + i32::from(mode >> 1) % 9,
        }
    };
    if let Ok(plain) = decode_all(algorithm, rest) {
        let packets = rest.len() / HEADER_LEN;
        assert!(
            plain.len() <= packets * MAX_PAYLOAD,
            "more output than the headers declared"
        );
    }
    let wire = encode_all(algorithm, rest);
    let back = decode_all(algorithm, &wire).expect("Weiche's own packets decode");
    assert!(back == rest, "compressed data did not survive");
}

/// Binlog events from the primary (the cache's follower): any bytes give an event, an error
/// or a commit, never a panic.
pub fn binlog(data: &[u8]) {
    crate::cache::binlog::fuzz_events(data);
}

/// The framer: whatever the bytes, each decoded packet accounts for its bytes, and a packet
/// encoded from the input decodes to the same payload.
pub fn framer(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    while let Some(c) = decode_chunk(&mut buf) {
        consumed += 4 + c.payload.len();
    }
    assert_eq!(consumed + buf.len(), data.len(), "the framer lost bytes");
    let seq = data.first().copied().unwrap_or(0);
    let mut out = BytesMut::new();
    encode_packet(&mut out, seq, data);
    let mut payload = Vec::new();
    while let Some(c) = decode_chunk(&mut out) {
        payload.extend_from_slice(&c.payload);
    }
    assert_eq!(payload, data, "a packet did not survive framing");
}

/// The response walker fed a server's bytes through the framer, as the relay does. The first
/// byte says what response is expected and how (EOF or not, binary rows).
pub fn walker(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let expect = match mode % 5 {
        0 => Expect::Results,
        1 => Expect::Prepare,
        2 => Expect::FieldList,
        3 => Expect::Fetch,
        _ => Expect::OnePacket,
    };
    let mut w = Walker::new(expect, mode & 0x10 != 0, mode & 0x20 != 0);
    let mut buf = BytesMut::from(rest);
    while let Some(c) = decode_chunk(&mut buf) {
        if w.is_done() {
            break;
        }
        let p = &c.payload[..];
        let seen = match w.need(p.len(), p.first().copied()) {
            Need::Whole => p,
            Need::Skim => &p[..p.len().min(1)],
        };
        if w.packet(p.len(), seen).is_err() {
            break;
        }
    }
}

/// The connection phase's packets (greeting, login, SSL request, auth switch, change user) and
/// OK/ERR with session tracking. A login that decodes re-encodes to the same login.
pub fn handshake(data: &[u8]) {
    let caps = data
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let _ = Greeting::decode(data);
    let _ = HandshakeResponse::is_ssl_request(data);
    if let Ok(login) = HandshakeResponse::decode(data) {
        let mut again = BytesMut::new();
        login.encode(&mut again);
        let decoded = HandshakeResponse::decode(&again);
        assert!(decoded.is_ok(), "a login did not survive re-encoding");
    }
    let _ = ChangeUser::decode(data, caps);
    let _ = AuthSwitch::decode(data);
    let _ = OkPacket::decode(data);
    let _ = ErrPacket::decode(data);
    let _ = TrackedOk::decode(data);
    let _ = untracked_ok(data);
}

/// SQL as clients send it: the lexer (tokens in order, inside the text, never overlapping),
/// the classifier, digests, table names, KILL and the cache's view of a statement.
pub fn sql(data: &[u8]) {
    let tokens = crate::sql::lexer::tokenize(data);
    let mut at = 0;
    for t in &tokens {
        assert!(
            t.start >= at && t.end > t.start && t.end <= data.len(),
            "tokens out of order"
        );
        at = t.end;
    }
    let analysis = crate::sql::analyze(data);
    assert!(
        !analysis.class.reason.is_empty(),
        "a route without a reason"
    );
    let _ = crate::sql::digest::digest(data);
    let _ = crate::sql::digest::digest_hash_of(data, &tokens);
    let _ = crate::sql::tables::read_tables(data, &tokens);
    let _ = crate::sql::tables::written(data);
    let _ = crate::sql::kill::parse(data);
    let _ = crate::cache::policy::written_scopes(data, Some(b"db"));
    let caching = crate::config::Caching::default();
    let asker = crate::cache::policy::Asker {
        user: "u",
        schema: Some(b"db"),
    };
    let _ = crate::cache::policy::decide(&caching, data, asker);
}

thread_local! {
    static LUA: Option<(mlua::Lua, mlua::Table)> = {
        let lua = mlua::Lua::new();
        crate::script::proto::module(&lua).ok().map(|m| (lua, m))
    };
}

/// The `mysql.proto` decoders scripts call on packets: a malformed packet is a Lua error,
/// never a crash.
pub fn lua_proto(data: &[u8]) {
    LUA.with(|l| {
        let Some((lua, module)) = l else {
            return;
        };
        let Ok(s) = lua.create_string(data) else {
            return;
        };
        for name in crate::script::proto::DECODERS {
            if let Ok(f) = module.get::<mlua::Function>(*name) {
                let _ = f.call::<mlua::Value>(s.clone());
            }
        }
    });
}
