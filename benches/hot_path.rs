//! Micro benchmarks of the per-statement work on the query path: the lexer and classifier (a
//! statement of a known shape, and a new one), the framing of one packet, a response walked
//! packet by packet, the routing decision, and the result cache's decision and key. Run with
//! `cargo bench`; numbers in docs/benchmarks.md.

use bytes::BytesMut;
use clap::Parser;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;
use weiche::backend::BackendTable;
use weiche::cache::{decide, Asker, KeyInput, Verdict};
use weiche::config::{Cli, LoadedConfig};
use weiche::protocol::packet::{decode_chunk, encode_packet};
use weiche::protocol::{Expect, Walker};
use weiche::route::{self, Held, Request, Writes};
use weiche::sql::analyze;

const POINT: &[u8] = b"SELECT c FROM sbtest1 WHERE id=50123";
const HINTED: &[u8] = b"/* weiche:cache ttl=60 */ SELECT c FROM sbtest1 WHERE id=50123";
const UPDATE: &[u8] = b"UPDATE sbtest1 SET k=k+1 WHERE id=4711";

fn config() -> weiche::config::Config {
    let cli = Cli::try_parse_from([
        "weiche",
        "-b",
        "127.0.0.1:13306",
        "-r",
        "127.0.0.1:13307,127.0.0.1:13308",
        "--user",
        "app:secret",
    ])
    .expect("flags");
    LoadedConfig::load(cli).expect("config").config
}

fn sql(c: &mut Criterion) {
    c.bench_function("analyze point select", |b| {
        b.iter(|| analyze(black_box(POINT)))
    });
    c.bench_function("analyze update", |b| b.iter(|| analyze(black_box(UPDATE))));
    // Statements of the same shape as POINT but another table each: more shapes than a worker
    // remembers, in a cycle, so every one is analyzed (the memo's miss path, its insert included).
    let shapes: Vec<Vec<u8>> = (0..4096)
        .map(|i| format!("SELECT c FROM sbtest{i} WHERE id=50123").into_bytes())
        .collect();
    let mut next = shapes.iter().cycle();
    c.bench_function("analyze a new shape (memo miss)", |b| {
        b.iter(|| analyze(black_box(next.next().map_or(POINT, Vec::as_slice))))
    });
    c.bench_function("digest hash", |b| {
        b.iter(|| weiche::sql::digest::digest_hash(black_box(POINT)))
    });
}

fn framing(c: &mut Criterion) {
    let mut wire = BytesMut::new();
    let payload = [7u8; 200];
    c.bench_function("frame and unframe a 200-byte packet", |b| {
        b.iter(|| {
            encode_packet(&mut wire, 1, black_box(&payload));
            black_box(decode_chunk(&mut wire))
        })
    });
    // A point select's result: column count, one column definition, EOF, one row, EOF.
    let packets: Vec<Vec<u8>> = vec![
        vec![1],
        b"\x03def\x06weiche\x07sbtest1\x07sbtest1\x01c\x01c\x0c\x08\x00\x78\x00\x00\x00\xfe\x01\x10\x00\x00\x00".to_vec(),
        vec![0xfe, 0, 0, 2, 0],
        [&[120u8][..], &[b'x'; 120][..]].concat(),
        vec![0xfe, 0, 0, 2, 0],
    ];
    c.bench_function("walk a one-row result", |b| {
        b.iter(|| {
            let mut w = Walker::new(Expect::Results, false, false);
            for p in &packets {
                let _ = w.need(p.len(), p.first().copied());
                let _ = black_box(w.packet(p.len(), p));
            }
            w.is_done()
        })
    });
}

fn routing(c: &mut Criterion) {
    let config = config();
    let table = BackendTable::new(&config);
    let analysis = analyze(POINT);
    let writes = Writes::default();
    c.bench_function("route a read", |b| {
        b.iter(|| {
            let request = Request {
                analysis: &analysis,
                text: POINT,
                user: "app",
                schema: Some(b"weiche"),
                held: Held::Free,
                script_backend: None,
                writes: &writes,
                avoid: None,
                last: None,
            };
            black_box(route::decide(&config, &table, request))
        })
    });
}

fn cache(c: &mut Criterion) {
    let config = config();
    let asker = Asker {
        user: "app",
        schema: Some(b"weiche"),
    };
    c.bench_function("cache decision for a hinted read", |b| {
        b.iter(|| decide(&config.cache, black_box(HINTED), asker))
    });
    let Verdict::Cacheable(_) = decide(&config.cache, HINTED, asker) else {
        panic!("cacheable")
    };
    let vars = BTreeMap::new();
    c.bench_function("cache key", |b| {
        b.iter(|| {
            KeyInput {
                user: "app",
                identity: 1,
                schema: Some(b"weiche"),
                shaping: 0x200,
                charset: 45,
                vars: &vars,
                statement: black_box(HINTED),
                params: b"",
            }
            .key()
        })
    });
}

criterion_group!(benches, sql, framing, routing, cache);
criterion_main!(benches);
