use super::*;
use crate::protocol::packet::{encode_packet, Framed};
use crate::protocol::ProtocolError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ZLIB: Algorithm = Algorithm::Zlib { level: 6 };
const ZSTD: Algorithm = Algorithm::Zstd { level: 3 };

/// One compressed packet as a peer would send it.
fn packet(algorithm: Algorithm, seq: u8, data: &[u8], compress: bool) -> Vec<u8> {
    let mut body = Vec::new();
    let ulen = if compress {
        assert!(deflate(algorithm, data, &mut body) || data.is_empty());
        data.len()
    } else {
        body.extend_from_slice(data);
        0
    };
    let mut p = vec![0; HEADER_LEN];
    put_u24(&mut p[0..3], body.len());
    p[3] = seq;
    put_u24(&mut p[4..7], ulen);
    p.extend_from_slice(&body);
    p
}

fn text(n: usize) -> Vec<u8> {
    (0..n).map(|i| b"weiche compresses "[i % 18]).collect()
}

async fn read_all<S: AsyncRead + Unpin>(c: &mut Compressed<S>) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    c.read_to_end(&mut v).await?;
    Ok(v)
}

#[tokio::test]
async fn round_trip_through_both_ends() {
    for algorithm in [ZLIB, ZSTD] {
        for size in [0usize, 1, 49, 50, 1000, 70_000, MAX_PAYLOAD + 10] {
            let data = text(size);
            let (a, b) = tokio::io::duplex(1 << 16);
            let mut w = Compressed::new(a, algorithm);
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&sent).await.unwrap();
                w.flush().await.unwrap();
                let t = w.traffic;
                drop(w);
                t
            });
            let mut r = Compressed::new(b, algorithm);
            let got = read_all(&mut r).await.unwrap();
            let t = writer.await.unwrap();
            assert_eq!(got.len(), data.len(), "{algorithm:?} {size}");
            assert!(got == data, "{algorithm:?} {size}");
            assert_eq!(t.plain_out, size as u64);
            assert_eq!(r.traffic.plain_in, size as u64);
            assert_eq!(r.traffic.wire_in, t.wire_out);
            if size >= 1000 {
                assert!(t.wire_out < size as u64 / 4, "{algorithm:?} {size}: {t:?}");
            }
        }
    }
}

#[test]
fn short_runs_go_as_they_are() {
    let mut c = Compressed::new(tokio::io::empty(), ZLIB);
    c.encode(b"\x01\x00\x00\x00\x0e");
    assert_eq!(
        &c.out[..],
        b"\x05\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x0e"
    );
    // Data that does not shrink goes as it is too.
    let noise: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut c = Compressed::new(tokio::io::empty(), ZLIB);
    c.encode(&noise);
    assert_eq!(u24(&c.out[4..7]), 0);
    assert_eq!(&c.out[HEADER_LEN..], &noise[..]);
}

#[tokio::test]
async fn the_answer_continues_the_sequence_of_the_command() {
    // A command in compressed packets 0 and 1: the answer starts at 2, and the next command
    // (which restarts at 0) is answered from 1.
    let mut wire = packet(ZLIB, 0, &text(300), true);
    wire.extend(packet(ZLIB, 1, b"tail", false));
    let (mut peer, ours) = tokio::io::duplex(1 << 16);
    peer.write_all(&wire).await.unwrap();
    let mut c = Compressed::new(ours, ZLIB);
    let mut got = vec![0; 304];
    c.read_exact(&mut got).await.unwrap();
    c.write_all(b"answer").await.unwrap();
    c.write_all(b"more").await.unwrap();
    c.flush().await.unwrap();
    let mut head = [0u8; HEADER_LEN + 6 + HEADER_LEN + 4];
    peer.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 2);
    assert_eq!(head[HEADER_LEN + 6 + 3], 3);
    peer.write_all(&packet(ZLIB, 0, b"next", false))
        .await
        .unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).await.unwrap();
    c.write_all(b"ok").await.unwrap();
    c.flush().await.unwrap();
    let mut head = [0u8; HEADER_LEN + 2];
    peer.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 1);
}

#[tokio::test]
async fn packets_split_across_reads_and_framing_on_top() {
    // MySQL packets (one over 16 MiB) cut at odd places into compressed packets, fed a few
    // bytes at a time: the framing above reads them whole.
    for algorithm in [ZLIB, ZSTD] {
        let big = text(crate::protocol::constants::MAX_CHUNK + 100);
        let mut stream = bytes::BytesMut::new();
        encode_packet(&mut stream, 0, b"\x03SELECT 1");
        encode_packet(&mut stream, 0, &big);
        let mut wire = Vec::new();
        for (i, piece) in stream.chunks(1_000_003).enumerate() {
            wire.extend(packet(algorithm, i as u8, piece, i % 2 == 0));
        }
        let (mut peer, ours) = tokio::io::duplex(4096);
        let feeder = tokio::spawn(async move {
            for piece in wire.chunks(777) {
                peer.write_all(piece).await.unwrap();
            }
        });
        let mut f = Framed::new(Compressed::new(ours, algorithm));
        let p = f.read_packet(1 << 20).await.unwrap();
        assert_eq!(&p.payload[..], b"\x03SELECT 1");
        let p = f.read_packet(64 << 20).await.unwrap();
        assert!(p.payload == big);
        feeder.await.unwrap();
        assert!(matches!(
            f.read_packet(100).await,
            Err(ProtocolError::Closed)
        ));
    }
}

#[tokio::test]
async fn a_compression_bomb_is_an_error_not_memory() {
    for algorithm in [ZLIB, ZSTD] {
        // 16 MiB of zeros declared as 100 bytes.
        let mut body = Vec::new();
        assert!(deflate(algorithm, &vec![0u8; MAX_PAYLOAD], &mut body));
        let mut wire = vec![0; HEADER_LEN];
        put_u24(&mut wire[0..3], body.len());
        put_u24(&mut wire[4..7], 100);
        wire.extend_from_slice(&body);
        let mut c = Compressed::new(&wire[..], algorithm);
        let e = read_all(&mut c).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{algorithm:?}: {e}");
        assert!(e.to_string().contains("inflates to more"), "{e}");
    }
}

#[tokio::test]
async fn corrupt_short_and_truncated_packets_are_errors() {
    for algorithm in [ZLIB, ZSTD] {
        // Declares more than it inflates to.
        let mut p = packet(algorithm, 0, &text(500), true);
        put_u24(&mut p[4..7], 600);
        let e = read_all(&mut Compressed::new(&p[..], algorithm))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // Garbage where the compressed bytes should be.
        let mut p = packet(algorithm, 0, &text(500), true);
        for b in &mut p[HEADER_LEN..] {
            *b ^= 0x5a;
        }
        let e = read_all(&mut Compressed::new(&p[..], algorithm))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // Closed in the middle of a packet.
        let p = packet(algorithm, 0, &text(500), true);
        let e = read_all(&mut Compressed::new(&p[..p.len() - 3], algorithm))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
}

#[tokio::test]
async fn a_header_announcing_16_mib_holds_no_16_mib() {
    let mut wire = vec![0xff, 0xff, 0xff, 0, 0, 0, 0];
    wire.extend_from_slice(b"only this");
    let mut c = Compressed::new(&wire[..], ZLIB);
    assert!(read_all(&mut c).await.is_err());
    assert!(c.raw.len() <= 2 * FIRST_READ, "{}", c.raw.len());
}

#[test]
fn towards_a_server_each_command_restarts_the_sequence() {
    let mut c = Compressed::to_server(tokio::io::empty(), ZLIB);
    let mut cmds = bytes::BytesMut::new();
    encode_packet(&mut cmds, 0, b"\x03SELECT 1");
    encode_packet(&mut cmds, 0, b"\x02weiche");
    c.encode(&cmds);
    assert_eq!(c.out[3], 0);
    // A command without an answer (COM_STMT_CLOSE), then another: 0 again.
    c.encode(b"\x05\x00\x00\x00\x19\x01\x00\x00\x00");
    let second = c.out.len();
    c.encode(b"\x01\x00\x00\x00\x0e");
    assert_eq!(c.out[second + 3], 0);
    // LOAD DATA LOCAL: the file's packets continue the exchange, past a wrap to 0.
    let mut c = Compressed::to_server(tokio::io::empty(), ZLIB);
    c.seq = 2;
    let mut seqs = Vec::new();
    for seq in 2..=257u32 {
        let at = c.out.len();
        c.encode(&[1, 0, 0, seq as u8, b'x']);
        seqs.push(c.out[at + 3]);
    }
    assert_eq!(seqs, (2..=257u32).map(|s| s as u8).collect::<Vec<_>>());
    // A header cut between two writes is followed.
    let mut c = Compressed::to_server(tokio::io::empty(), ZLIB);
    c.seq = 5;
    c.encode(&[3, 0]);
    c.encode(&[0, 0, b'a', b'b', b'c']);
    let at = c.out.len();
    c.encode(b"\x01\x00\x00\x00\x0e");
    assert_eq!(c.out[at + 3], 0);
}
