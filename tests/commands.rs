//! Commands drivers rarely expose, byte for byte: the response Weiche relays must equal the
//! primary's (COM_FIELD_LIST, COM_STATISTICS' shape, cursors with COM_STMT_FETCH, prepared
//! statements with parameter and column definitions, COM_SET_OPTION), with and without
//! DEPRECATE_EOF. A ping after each exchange proves the response ended where the walker said.

mod common;

use common::raw::Raw;
use common::{app_password, app_user, primary, Weiche};
use weiche::protocol::constants::cap;

fn terminator(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 0xff_ffff
}

/// Run the same exchanges on one connection and return every payload received, with
/// connection-specific bytes (statement ids are per connection but deterministic) kept.
async fn exchanges(addr: &str, table: &str, deprecate_eof: bool) -> Vec<Vec<Vec<u8>>> {
    let extra = if deprecate_eof {
        cap::DEPRECATE_EOF | cap::MULTI_STATEMENTS
    } else {
        cap::MULTI_STATEMENTS
    };
    let mut r = Raw::login(addr, &app_user(), &app_password(), extra).await;
    assert_eq!(r.capabilities & cap::DEPRECATE_EOF != 0, deprecate_eof);
    let mut out = Vec::new();
    let eof_count = if deprecate_eof { 0 } else { 1 };

    // Setup with plain queries (OK packets).
    for sql in [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(20) COMMENT 'n')"),
        format!("INSERT INTO {table} VALUES (1,'a'),(2,'b'),(3,'c'),(4,'d'),(5,NULL)"),
    ] {
        let mut p = vec![3u8];
        p.extend_from_slice(sql.as_bytes());
        r.send(&p).await;
        out.push(vec![r.read().await.payload.to_vec()]);
    }

    // COM_FIELD_LIST: column definitions up to a terminator.
    let mut p = vec![4u8];
    p.extend_from_slice(table.as_bytes());
    p.push(0);
    r.send(&p).await;
    out.push(r.read_until(terminator).await);

    // COM_STATISTICS: one packet of text whose numbers change; compare its shape.
    r.send(&[9]).await;
    let stats = r.read().await.payload;
    assert!(
        stats.starts_with(b"Uptime: "),
        "{:?}",
        String::from_utf8_lossy(&stats)
    );
    out.push(vec![b"statistics".to_vec()]);

    // COM_SET_OPTION off and on again (one packet each).
    r.send(&[27, 1, 0]).await;
    out.push(vec![r.read().await.payload.to_vec()]);
    r.send(&[27, 0, 0]).await;
    out.push(vec![r.read().await.payload.to_vec()]);

    // A prepared statement with two parameters and two columns.
    let mut p = vec![22u8];
    p.extend_from_slice(
        format!("SELECT id, name FROM {table} WHERE id > ? AND id < ? ORDER BY id").as_bytes(),
    );
    r.send(&p).await;
    let ok = r.read().await.payload.to_vec();
    assert_eq!(
        ok[0],
        0,
        "prepare failed: {:?}",
        String::from_utf8_lossy(&ok)
    );
    let stmt = [ok[1], ok[2], ok[3], ok[4]];
    // Statement ids are the server's to choose; compare the rest.
    let mut masked = ok.clone();
    masked[1..5].fill(0);
    let mut prep = vec![masked];
    for _ in 0..(2 + eof_count) + (2 + eof_count) {
        prep.push(r.read().await.payload.to_vec());
    }
    out.push(prep);

    // Execute it with a read-only cursor: column definitions, then nothing until FETCH.
    let mut exec = vec![23u8];
    exec.extend_from_slice(&stmt);
    exec.push(1); // CURSOR_TYPE_READ_ONLY
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.push(0); // NULL bitmap for 2 params
    exec.push(1); // new params bound
    exec.extend_from_slice(&[8, 0, 8, 0]); // LONGLONG, LONGLONG
    exec.extend_from_slice(&0i64.to_le_bytes());
    exec.extend_from_slice(&10i64.to_le_bytes());
    r.send(&exec).await;
    let mut res = vec![r.read().await.payload.to_vec()];
    for _ in 0..2 {
        res.push(r.read().await.payload.to_vec());
    }
    // The cursor's terminator (an EOF, or an OK-with-0xFE under DEPRECATE_EOF).
    res.push(r.read().await.payload.to_vec());
    assert!(
        terminator(res.last().unwrap()),
        "cursor open ends with a terminator"
    );
    out.push(res);
    // Fetch two rows, then the rest.
    for n in [2u32, 100] {
        let mut f = vec![28u8];
        f.extend_from_slice(&stmt);
        f.extend_from_slice(&n.to_le_bytes());
        r.send(&f).await;
        out.push(r.read_until(terminator).await);
    }
    // COM_STMT_RESET and COM_STMT_CLOSE (which has no answer).
    let mut reset = vec![26u8];
    reset.extend_from_slice(&stmt);
    r.send(&reset).await;
    out.push(vec![r.read().await.payload.to_vec()]);
    let mut close = vec![25u8];
    close.extend_from_slice(&stmt);
    r.send(&close).await;

    // Multi-statement with a result set, an OK and an error at the end.
    let mut p = vec![3u8];
    p.extend_from_slice(format!("SELECT COUNT(*) FROM {table}; UPDATE {table} SET name = 'z' WHERE id = 5; SELECT nope FROM {table}").as_bytes());
    r.send(&p).await;
    let mut multi = vec![r.read().await.payload.to_vec()];
    for _ in 0..(1 + eof_count) {
        multi.push(r.read().await.payload.to_vec());
    }
    multi.extend(r.read_until(terminator).await); // row + end of first result
    multi.push(r.read().await.payload.to_vec()); // OK of the UPDATE
    multi.push(r.read().await.payload.to_vec()); // ERR
    assert_eq!(multi.last().unwrap()[0], 0xff);
    out.push(multi);

    // A ping answers at once: nothing of the earlier responses is left over.
    r.send(&[14]).await;
    out.push(vec![r.read().await.payload.to_vec()]);

    let mut p = vec![3u8];
    p.extend_from_slice(format!("DROP TABLE {table}").as_bytes());
    r.send(&p).await;
    r.read().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rare_commands_relay_byte_for_byte() {
    let w = Weiche::start();
    for deprecate_eof in [false, true] {
        // One table name for both runs (one after the other): column definitions carry it.
        let table = common::table("cmd");
        let direct = exchanges(&primary(), &table, deprecate_eof).await;
        let proxied = exchanges(&w.addr(), &table, deprecate_eof).await;
        assert_eq!(direct.len(), proxied.len());
        for (i, (d, p)) in direct.iter().zip(&proxied).enumerate() {
            assert_eq!(d, p, "exchange {i} (deprecate_eof={deprecate_eof})");
        }
    }
}
