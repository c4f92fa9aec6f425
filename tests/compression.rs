//! The compressed protocol through Weiche, against the sandbox primary: a zlib client
//! (mysql_async) with Weiche's backend connections compressed too (large results, a 20 MB blob
//! each way, prepared statements, a cache hit sent compressed); a zstd client at the level it
//! asked for, and zlib chosen when a client offers both (and the metrics that count them); and
//! a compression bomb, which gets its session an ERR and closes only that session. The real client programs on the compressed
//! protocol are in tests/clients.rs (`compressed_*`).

mod common;

use bytes::BytesMut;
use common::{app_password, app_user, http_get, listening_port, opts, primary, table, Weiche};
use mysql_async::prelude::*;
use mysql_async::{Compression, Conn, Opts, OptsBuilder};
use tokio::net::TcpStream;
use weiche::protocol::auth;
use weiche::protocol::compress::{deflate, Algorithm, HEADER_LEN};
use weiche::protocol::constants::cap;
use weiche::protocol::handshake::{Greeting, HandshakeResponse};
use weiche::protocol::Framed;
use weiche::tls::Stream;

const ADMIN: &str =
    "[admin]\naddress = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"admin-secret\"\n";

fn compressed(addr: &str) -> Opts {
    OptsBuilder::from_opts(opts(addr))
        .compression(Some(Compression::default()))
        .into()
}

async fn compression_status(c: &mut Conn) -> String {
    let row: Option<(String, String)> = c
        .query_first("SHOW STATUS LIKE 'Compression'")
        .await
        .expect("SHOW STATUS");
    row.expect("a row").1
}

async fn cache_hits(w: &Weiche) -> u64 {
    let mut a = common::binlog::admin(w).await;
    let hits = common::binlog::show_cache(&mut a, "hits").await;
    hits.parse().expect("SHOW CACHE hits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zlib_client_through_a_compressed_backend_gets_what_a_direct_one_gets() {
    let w = Weiche::start_primary_compressed(ADMIN);
    let mut direct = Conn::new(opts(&primary())).await.expect("direct");
    let mut c = Conn::new(compressed(&w.addr()))
        .await
        .expect("through Weiche");
    assert_eq!(compression_status(&mut c).await, "ON");
    let mut plain = Conn::new(opts(&w.addr())).await.expect("uncompressed");
    assert_eq!(compression_status(&mut plain).await, "OFF");

    // A large result (many compressed packets, rows across their boundaries).
    let big = "SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 300) AS s FROM seq_1_to_200000";
    let want: Vec<(u64, String)> = direct.query(big).await.expect("direct rows");
    let got: Vec<(u64, String)> = c.query(big).await.expect("rows through Weiche");
    assert_eq!(got.len(), 200_000);
    assert!(got == want, "the rows differ");

    // A 20 MB blob each way: more than one 16 MiB packet inside the compressed stream.
    let t = table("compress_blob");
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB)"))
        .await
        .unwrap();
    let blob: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    c.exec_drop(format!("INSERT INTO {t} VALUES (1, ?)"), (blob.clone(),))
        .await
        .expect("insert the blob (prepared)");
    c.query_drop(format!("INSERT INTO {t} SELECT 2, b FROM {t} WHERE id = 1"))
        .await
        .unwrap();
    let back: Option<Vec<u8>> = c
        .query_first(format!("SELECT b FROM {t} WHERE id = 2"))
        .await
        .unwrap();
    assert!(
        back.as_deref() == Some(&blob[..]),
        "the blob came back changed"
    );
    let direct_len: Option<u64> = direct
        .query_first(format!("SELECT LENGTH(b) FROM {t} WHERE id = 1"))
        .await
        .unwrap();
    assert_eq!(direct_len, Some(blob.len() as u64));

    // A cache hit goes to a compressed client compressed, and is the same answer.
    let q = "/* weiche:cache ttl=60 */ SELECT seq, seq * 3 FROM seq_1_to_5000";
    let first: Vec<(u64, u64)> = c.query(q).await.unwrap();
    let hits = cache_hits(&w).await;
    let second: Vec<(u64, u64)> = c.query(q).await.unwrap();
    assert_eq!(cache_hits(&w).await, hits + 1, "the second read was a hit");
    assert_eq!(first, second);
    let third: Vec<(u64, u64)> = plain.query(q).await.unwrap();
    assert_eq!(first, third, "an uncompressed client gets the same hit");

    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

/// A raw login asking for `caps` (COMPRESS, ZSTD_COMPRESSION_ALGORITHM) and `level`, switched
/// to `algorithm` after the OK, as a MySQL 8.0.18+ client does.
async fn raw_login(addr: &str, caps: u32, level: u8, algorithm: Algorithm) -> Framed<Stream> {
    let mut f = Framed::new(Stream::from(TcpStream::connect(addr).await.unwrap()));
    let g = Greeting::decode(&f.read_packet(1 << 16).await.unwrap().payload).unwrap();
    assert_eq!(g.capabilities & caps, caps, "Weiche offers {caps:#x}");
    let login = HandshakeResponse {
        capabilities: (common::raw::BASE_CAPS | caps | cap::DEPRECATE_EOF) & g.capabilities,
        mariadb_caps: 0,
        max_packet: 1 << 24,
        charset: 45,
        username: app_user().into_bytes(),
        auth_response: auth::native_response(&auth::stage1(app_password().as_bytes()), &g.scramble)
            .to_vec(),
        database: Some(b"weiche".to_vec()),
        auth_plugin: Some(auth::NATIVE_PASSWORD.to_vec()),
        connect_attrs: None,
        zstd_level: (caps & cap::ZSTD_COMPRESSION_ALGORITHM != 0).then_some(level),
    };
    let mut buf = BytesMut::new();
    login.encode(&mut buf);
    f.send(1, &buf).await.unwrap();
    let ok = f.read_packet(1 << 16).await.unwrap();
    assert_eq!(ok.payload.first(), Some(&0), "login: {:?}", ok.payload);
    f.io.compress(algorithm, true);
    f
}

/// Run a text query; the number of rows and the last row's payload.
async fn rows(f: &mut Framed<Stream>, sql: &str) -> (usize, Vec<u8>) {
    let mut p = vec![3u8];
    p.extend_from_slice(sql.as_bytes());
    f.send(0, &p).await.unwrap();
    let cols = f.read_packet(1 << 24).await.expect("column count");
    assert_ne!(
        cols.payload[0],
        0xff,
        "{:?}",
        String::from_utf8_lossy(&cols.payload)
    );
    for _ in 0..cols.payload[0] {
        f.read_packet(1 << 24).await.expect("column definition");
    }
    let mut n = 0;
    let mut last = Vec::new();
    loop {
        let p = f.read_packet(1 << 24).await.expect("row");
        if p.payload[0] == 0xfe && p.payload.len() < 0xff_ffff {
            return (n, last);
        }
        n += 1;
        last = p.payload.to_vec();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_client_gets_zstd_and_one_offering_both_gets_zlib() {
    let w = Weiche::start_primary_config("[http]\naddress = \"127.0.0.1:0\"\n");
    let sql = "SELECT seq, REPEAT('z', seq % 100) FROM seq_1_to_50000";
    // Decoding with zstd succeeds only if Weiche sends zstd.
    let mut z = raw_login(
        &w.addr(),
        cap::ZSTD_COMPRESSION_ALGORITHM,
        7,
        Algorithm::Zstd { level: 7 },
    )
    .await;
    let (n, last) = rows(&mut z, sql).await;
    assert_eq!(n, 50_000);
    assert_eq!(&last[..6], b"\x0550000");
    let (_, status) = rows(&mut z, "SHOW STATUS LIKE 'Compression'").await;
    assert!(status.ends_with(b"\x02ON"), "{status:?}");
    // Both offered: zlib, as MySQL servers choose.
    let mut both = raw_login(
        &w.addr(),
        cap::COMPRESS | cap::ZSTD_COMPRESSION_ALGORITHM,
        3,
        Algorithm::Zlib { level: 6 },
    )
    .await;
    let (n, _) = rows(&mut both, sql).await;
    assert_eq!(n, 50_000);

    // The metrics count the sessions by algorithm and, once they end, their bytes.
    drop(z);
    drop(both);
    let http = listening_port(&w, "http interface listening");
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http_get(http, "/metrics").1;
        if !metrics.contains("form=\"wire\"} 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
    };
    assert_eq!(
        value("weiche_compressed_sessions_total{algorithm=\"zstd\"}"),
        1
    );
    assert_eq!(
        value("weiche_compressed_sessions_total{algorithm=\"zlib\"}"),
        1
    );
    let wire = value("weiche_compressed_bytes_total{direction=\"sent\",form=\"wire\"}");
    let plain = value("weiche_compressed_bytes_total{direction=\"sent\",form=\"plain\"}");
    assert!(
        plain > 2 * 1_000_000 && wire * 4 < plain,
        "sent {plain} bytes, {wire} on the wire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compression_bomb_gets_an_error_and_closes_only_its_session() {
    let w = Weiche::start_primary_config("");
    let mut other = Conn::new(compressed(&w.addr()))
        .await
        .expect("another client");
    let mut f = raw_login(&w.addr(), cap::COMPRESS, 0, Algorithm::Zlib { level: 6 }).await;
    // 16 MiB - 1 of zeros, declared as 1,000 bytes.
    let algorithm = Algorithm::Zlib { level: 6 };
    let mut body = Vec::new();
    assert!(deflate(algorithm, &vec![0u8; 0xff_ffff], &mut body));
    let mut wire = vec![0u8; HEADER_LEN];
    wire[..3].copy_from_slice(&(body.len() as u32).to_le_bytes()[..3]);
    wire[4..7].copy_from_slice(&1000u32.to_le_bytes()[..3]);
    wire.extend_from_slice(&body);
    let Stream::Compressed(c) = &mut f.io else {
        panic!("not compressed")
    };
    let Stream::Tcp(tcp) = &mut c.inner else {
        panic!("not TCP")
    };
    use tokio::io::AsyncWriteExt;
    tcp.write_all(&wire).await.unwrap();
    let err = f
        .read_packet(1 << 16)
        .await
        .expect("an ERR before the close");
    assert_eq!(err.payload[0], 0xff);
    let text = String::from_utf8_lossy(&err.payload).into_owned();
    assert!(text.contains("inflates to more"), "{text}");
    assert!(f.read_packet(1 << 16).await.is_err(), "then the close");
    assert!(w.log_text().contains("bad packet from client"), "logged");
    // The other session goes on.
    let one: Option<u32> = other.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}
