//! MariaDB's extended capabilities through Weiche, compared with a direct connection: column
//! definitions with extended type information (a JSON column says "json"), and
//! COM_STMT_BULK_EXECUTE (many rows of parameters in one command, NULL indicators, the affected
//! rows summed in one OK).

mod common;

use common::raw::{is_eof, Raw};
use common::{app_password, app_user, primary, table, Weiche};
use weiche::protocol::constants::mariadb_cap;

/// The column definitions of a text result (no DEPRECATE_EOF): the packets between the column
/// count and the first EOF.
fn columns(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    packets[1..]
        .iter()
        .take_while(|p| !is_eof(p))
        .cloned()
        .collect()
}

/// The extended-type block of a column definition (after the six names).
fn extended_info(def: &[u8]) -> Vec<u8> {
    let mut at = 0;
    let lenenc = |at: &mut usize| -> Vec<u8> {
        let n = def[*at] as usize;
        assert!(n < 0xfb, "short names only");
        let v = def[*at + 1..*at + 1 + n].to_vec();
        *at += 1 + n;
        v
    };
    for _ in 0..6 {
        lenenc(&mut at);
    }
    let ext = lenenc(&mut at);
    assert_eq!(def[at], 0x0c, "the fixed fields follow the extended block");
    ext
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_metadata_reaches_the_client_as_from_the_server() {
    let w = Weiche::start();
    let t = table("extmeta");
    let mut setup = Raw::login(&primary(), &app_user(), &app_password(), 0).await;
    setup
        .query(&format!("CREATE TABLE {t} (j JSON, i INT)"))
        .await;
    setup
        .query(&format!("INSERT INTO {t} VALUES ('[1]', 1)"))
        .await;
    let mut seen = Vec::new();
    for addr in [primary(), w.addr()] {
        let mut c = Raw::login_mariadb(
            &addr,
            &app_user(),
            &app_password(),
            0,
            mariadb_cap::EXTENDED_METADATA,
        )
        .await;
        assert_ne!(
            c.mariadb_caps & mariadb_cap::EXTENDED_METADATA,
            0,
            "{addr} offers extended metadata"
        );
        let r = c.query(&format!("SELECT j, i FROM {t}")).await;
        let defs = columns(&r);
        assert_eq!(defs.len(), 2, "{addr}: {r:?}");
        // Entry 1 (the format), "json": JSON is a LONGTEXT in the json format.
        assert_eq!(extended_info(&defs[0]), b"\x01\x04json", "{addr}");
        assert_eq!(extended_info(&defs[1]), b"", "{addr}");
        seen.push(r);
        // What Weiche answers itself has the block too (empty), so the client can read it.
        if addr == w.addr() {
            let r = c.query("EXPLAIN ROUTE SELECT 1").await;
            for d in columns(&r) {
                assert_eq!(extended_info(&d), b"");
            }
        }
    }
    assert_eq!(
        seen[0], seen[1],
        "the same packets direct and through Weiche"
    );
    // A client that does not ask gets plain column definitions.
    let mut plain = Raw::login(&w.addr(), &app_user(), &app_password(), 0).await;
    let r = plain.query(&format!("SELECT j FROM {t}")).await;
    assert_eq!(r[1][r[1].len() - 13], 0x0c, "no extended block: {:?}", r[1]);
    setup.query(&format!("DROP TABLE {t}")).await;
}

/// COM_STMT_BULK_EXECUTE of statement `id` with (LONGLONG, VARCHAR) rows; `None` is a NULL
/// indicator. The response's packets.
async fn bulk(c: &mut Raw, id: u32, rows: &[(i64, Option<&str>)], send_types: bool) -> Vec<u8> {
    let mut p = vec![0xfau8];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&(if send_types { 128u16 } else { 0 }).to_le_bytes());
    if send_types {
        p.extend_from_slice(&[8, 0, 0xfd, 0]);
    }
    for (n, v) in rows {
        p.push(0);
        p.extend_from_slice(&n.to_le_bytes());
        match v {
            Some(v) => {
                p.push(0);
                p.push(v.len() as u8);
                p.extend_from_slice(v.as_bytes());
            }
            None => p.push(1),
        }
    }
    c.send(&p).await;
    c.read().await.payload.to_vec()
}

/// Affected rows of an OK packet.
fn affected(ok: &[u8]) -> u64 {
    assert_eq!(ok[0], 0, "OK expected: {:?}", String::from_utf8_lossy(ok));
    assert!(ok[1] < 0xfb);
    u64::from(ok[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_execute_writes_every_row_in_one_command() {
    let w = Weiche::start();
    for addr in [primary(), w.addr()] {
        let t = table("bulk");
        let mut c = Raw::login_mariadb(
            &addr,
            &app_user(),
            &app_password(),
            0,
            mariadb_cap::STMT_BULK_OPERATIONS,
        )
        .await;
        assert_ne!(c.mariadb_caps & mariadb_cap::STMT_BULK_OPERATIONS, 0);
        c.query(&format!(
            "CREATE TABLE {t} (id BIGINT PRIMARY KEY, v VARCHAR(10))"
        ))
        .await;
        let (id, params) = c.prepare(&format!("INSERT INTO {t} VALUES (?, ?)")).await;
        assert_eq!(params, 2);
        let rows = [(1, Some("one")), (2, None), (3, Some("three"))];
        assert_eq!(affected(&bulk(&mut c, id, &rows, true).await), 3, "{addr}");
        // The next bulk relies on the types sent before, as libmariadb's do.
        let more = [(4, Some("four")), (5, Some("five"))];
        assert_eq!(affected(&bulk(&mut c, id, &more, false).await), 2, "{addr}");
        let r = c
            .query(&format!(
                "SELECT COUNT(*), COUNT(v), SUM(id) FROM {t} WHERE v IS NULL OR v <> ''"
            ))
            .await;
        let row = &r[5];
        assert_eq!(&row[..], b"\x015\x014\x0215", "{addr}: {r:?}");
        c.query(&format!("DROP TABLE {t}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_execute_without_the_capability_is_refused() {
    let w = Weiche::start();
    let mut c = Raw::login(&w.addr(), &app_user(), &app_password(), 0).await;
    let (id, _) = c.prepare("DO ?").await;
    let mut p = vec![0xfau8];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&128u16.to_le_bytes());
    p.extend_from_slice(&[8, 0, 0]);
    p.extend_from_slice(&1i64.to_le_bytes());
    c.send(&p).await;
    let e = c.read().await.payload.to_vec();
    assert_eq!(e[0], 0xff, "{e:?}");
    assert_eq!(u16::from_le_bytes([e[1], e[2]]), 1047);
    // The session goes on.
    assert_eq!(c.query("DO 1").await[0][0], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_direct_names_the_statement_prepared_last() {
    // libmariadb's mariadb_stmt_execute_direct: COM_STMT_PREPARE and COM_STMT_EXECUTE with id
    // 0xFFFFFFFF, sent back to back without waiting.
    let w = Weiche::start();
    for addr in [primary(), w.addr()] {
        let mut c = Raw::login_mariadb(
            &addr,
            &app_user(),
            &app_password(),
            0,
            mariadb_cap::STMT_BULK_OPERATIONS,
        )
        .await;
        let mut prepare = vec![0x16u8];
        prepare.extend_from_slice(b"SELECT ? + 1");
        let mut execute = vec![0x17u8];
        execute.extend_from_slice(&u32::MAX.to_le_bytes());
        execute.push(0);
        execute.extend_from_slice(&1u32.to_le_bytes());
        execute.extend_from_slice(&[0, 1, 8, 0]);
        execute.extend_from_slice(&41i64.to_le_bytes());
        c.f.queue(0, &prepare);
        c.f.queue(0, &execute);
        c.f.flush().await.unwrap();
        let ok = c.read().await.payload;
        assert_eq!(ok[0], 0, "{addr}: prepare: {ok:?}");
        c.read_until(is_eof).await; // the parameter
        c.read_until(is_eof).await; // the column
        let r = c.read_until(is_eof).await; // column count, definition, EOF
        assert_eq!(r[0], b"\x01", "{addr}: {r:?}");
        let rows = c.read_until(is_eof).await;
        assert_eq!(rows.len(), 2, "{addr}: one row: {rows:?}");
        assert_eq!(
            &rows[0][rows[0].len() - 8..],
            &42i64.to_le_bytes(),
            "{addr}"
        );
        // The id keeps naming it for the next execute.
        c.send(&execute).await;
        let again = c.read_until(is_eof).await;
        assert_eq!(again[0], b"\x01", "{addr}: {again:?}");
        let rows = c.read_until(is_eof).await;
        assert_eq!(
            &rows[0][rows[0].len() - 8..],
            &42i64.to_le_bytes(),
            "{addr}"
        );
    }
}
