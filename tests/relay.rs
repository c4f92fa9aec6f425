//! Through Weiche with mysql_async (text and binary protocol): every result must equal what a
//! direct connection to the primary returns.

mod common;

use common::{opts, primary, Weiche};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use std::time::{Duration, Instant};

fn row_values(rows: Vec<Row>) -> Vec<Vec<Value>> {
    rows.into_iter().map(|r| r.unwrap()).collect()
}

fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

/// A workload touching every common type, in both protocols; returns what it read.
async fn workload(addr: &str, table: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut c = Conn::new(opts(addr)).await.expect("connect");
    c.query_drop(format!("DROP TABLE IF EXISTS {table}"))
        .await
        .unwrap();
    c.query_drop(format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, i INT, bu BIGINT UNSIGNED, d DECIMAL(20,6), f DOUBLE, \
         s VARCHAR(100) CHARACTER SET utf8mb4, b LONGBLOB, dt DATE, ts DATETIME(6), n INT NULL) ENGINE=InnoDB"
    ))
    .await
    .unwrap();
    let insert = format!("INSERT INTO {table} VALUES (?,?,?,?,?,?,?,?,?,?)");
    c.exec_drop(
        &insert,
        (
            1,
            -2147483648i32,
            u64::MAX,
            "12345678901234.567891",
            3.5f64,
            "Grüße, 東京 🚂",
            all_bytes(),
            Value::Date(2024, 2, 29, 0, 0, 0, 0),
            Value::Date(2024, 2, 29, 23, 59, 58, 123456),
            Value::NULL,
        ),
    )
    .await
    .unwrap();
    c.exec_drop(
        &insert,
        (
            2,
            7,
            0u64,
            "-0.000001",
            -1e300,
            "",
            Vec::<u8>::new(),
            "1970-01-01",
            "1970-01-01 00:00:00",
            5,
        ),
    )
    .await
    .unwrap();
    let text: Vec<Row> = c
        .query(format!("SELECT * FROM {table} ORDER BY id"))
        .await
        .unwrap();
    out.push(format!("text: {:?}", row_values(text)));
    let bin: Vec<Row> = c
        .exec(
            format!("SELECT * FROM {table} WHERE id >= ? ORDER BY id"),
            (1,),
        )
        .await
        .unwrap();
    out.push(format!("binary: {:?}", row_values(bin)));

    // A transaction that is rolled back.
    c.query_drop("BEGIN").await.unwrap();
    c.exec_drop(
        &insert,
        (
            3,
            1,
            1u64,
            "1",
            1.0,
            "x",
            vec![1u8],
            "2000-01-01",
            "2000-01-01 00:00:00",
            1,
        ),
    )
    .await
    .unwrap();
    let inside: Option<i64> = c
        .query_first(format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    let after: Option<i64> = c
        .query_first(format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap();
    out.push(format!("transaction: {inside:?} then {after:?}"));

    // Multi-statements and multi-results.
    let mut r = c.query_iter(format!("SELECT 1 AS a; UPDATE {table} SET i = i + 1 WHERE id = 2; SELECT s FROM {table} ORDER BY id")).await.unwrap();
    let mut sets = Vec::new();
    while !r.is_empty() {
        let rows: Vec<Row> = r.collect().await.unwrap();
        sets.push(format!(
            "{:?} affected {}",
            row_values(rows),
            r.affected_rows()
        ));
    }
    drop(r);
    out.push(format!("multi: {sets:?}"));

    // A 20 MB blob, more than one 16 MiB packet in each direction, in both protocols.
    let big: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    c.exec_drop(
        format!("UPDATE {table} SET b = ? WHERE id = 2"),
        (big.clone(),),
    )
    .await
    .unwrap();
    let back: Option<Vec<u8>> = c
        .exec_first(format!("SELECT b FROM {table} WHERE id = ?"), (2,))
        .await
        .unwrap();
    out.push(format!(
        "big blob binary equal: {}",
        back.as_deref() == Some(&big[..])
    ));
    let back: Option<Vec<u8>> = c
        .query_first(format!("SELECT b FROM {table} WHERE id = 2"))
        .await
        .unwrap();
    out.push(format!(
        "big blob text equal: {}",
        back.as_deref() == Some(&big[..])
    ));
    let len: Option<i64> = c
        .query_first(format!("SELECT LENGTH(b) FROM {table} WHERE id = 2"))
        .await
        .unwrap();
    out.push(format!("big blob length: {len:?}"));

    // Errors come back as errors, and the connection stays usable.
    let e = c
        .query_drop("SELECT * FROM no_such_table_here")
        .await
        .unwrap_err();
    out.push(format!("error: {e}"));
    let one: Option<i32> = c.query_first("SELECT 1").await.unwrap();
    out.push(format!("after error: {one:?}"));

    c.query_drop(format!("DROP TABLE {table}")).await.unwrap();
    c.disconnect().await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_through_weiche_equal_direct_results() {
    let w = Weiche::start();
    let direct = workload(&primary(), &common::table("relay_direct")).await;
    let proxied = workload(&w.addr(), &common::table("relay_weiche")).await;
    assert_eq!(direct.len(), proxied.len());
    for (d, p) in direct.iter().zip(&proxied) {
        assert_eq!(d, p);
    }
    assert!(
        proxied.iter().any(|l| l == "big blob binary equal: true"),
        "{proxied:?}"
    );
    assert!(
        proxied.iter().any(|l| l == "big blob text equal: true"),
        "{proxied:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_and_kill_connection_use_weiche_ids() {
    let w = Weiche::start();
    let mut sleeper = Conn::new(opts(&w.addr())).await.unwrap();
    let mut killer = Conn::new(opts(&w.addr())).await.unwrap();
    let id = sleeper.id();
    let started = Instant::now();
    let sleeping = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = sleeper.query_first("SELECT SLEEP(30)").await;
        (r.map_err(|e| e.to_string()), sleeper)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    killer.query_drop(format!("KILL QUERY {id}")).await.unwrap();
    let (r, sleeper) = sleeping.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "KILL QUERY did not interrupt the sleep"
    );
    // An interrupted SLEEP returns 1 (or the query fails with 1317, depending on timing).
    match r {
        Ok(v) => assert_eq!(v, Some(1)),
        Err(e) => assert!(e.contains("1317") || e.contains("interrupted"), "{e}"),
    }
    // The killed query's connection is still usable.
    let mut sleeper = sleeper;
    let one: Option<i32> = sleeper.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));

    // Weiche's ids lie above backend thread ids; KILL of a backend thread id (what
    // CONNECTION_ID() returns through a proxy) reaches the backend unchanged.
    assert!(id >= weiche::session::FIRST_CONNECTION_ID, "{id}");
    let backend_id: u64 = sleeper
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    assert!(backend_id < u64::from(weiche::session::FIRST_CONNECTION_ID));
    let started = Instant::now();
    let sleeping = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = sleeper.query_first("SELECT SLEEP(30)").await;
        (r.map_err(|e| e.to_string()), sleeper)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    killer
        .query_drop(format!("KILL QUERY {backend_id}"))
        .await
        .unwrap();
    let (r, mut sleeper) = sleeping.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "KILL QUERY by backend id did not interrupt"
    );
    assert!(
        matches!(&r, Ok(Some(1))) || r.as_ref().is_err_and(|e| e.contains("1317")),
        "{r:?}"
    );

    // An unknown id gets MariaDB's error.
    let e = killer
        .query_drop("KILL QUERY 4000000000")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1094"), "{e}");

    // KILL CONNECTION ends the other session.
    killer
        .query_drop(format!("KILL CONNECTION {id}"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sleeper.query_drop("SELECT 1").await.is_err());
    let one: Option<i32> = killer.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_and_reset_connection() {
    let w = Weiche::start();
    let mut c = Conn::new(opts(&w.addr())).await.unwrap();
    c.query_drop("SET @x = 42").await.unwrap();
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert!(who
        .unwrap()
        .starts_with(&format!("{}@", common::app_user())));
    c.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("root".into()))
            .with_pass(Some(String::new())),
    )
    .await
    .unwrap();
    let (who, x): (String, Option<i64>) = c
        .query_first("SELECT CURRENT_USER(), @x")
        .await
        .unwrap()
        .unwrap();
    assert!(who.starts_with("root@"), "{who}");
    assert_eq!(x, None, "change user must start a fresh session");
    c.query_drop("SET @y = 1").await.unwrap();
    assert!(c.reset().await.unwrap(), "COM_RESET_CONNECTION supported");
    let y: Option<Option<i64>> = c.query_first("SELECT @y").await.unwrap();
    assert_eq!(y, Some(None));

    // A wrong password on change user is refused like a wrong login.
    let e = c
        .change_user(
            mysql_async::ChangeUserOpts::default()
                .with_user(Some(common::app_user()))
                .with_pass(Some("wrong".into())),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1045") && e.contains("Access denied"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_local_infile_streams_a_20_mb_file() {
    let w = Weiche::start();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("infile-{}.tsv", w.port));
    let mut data = String::new();
    let mut i = 0u64;
    while data.len() < 20_000_000 {
        data.push_str(&format!("{i}\t{}\n", "x".repeat((i % 200) as usize)));
        i += 1;
    }
    std::fs::write(&file, &data).unwrap();
    let handler = mysql_async::WhiteListFsHandler::new(vec![file.clone()]);
    let mut builder = mysql_async::OptsBuilder::from_opts(opts(&w.addr()));
    builder = builder.local_infile_handler(Some(handler));
    let mut c = Conn::new(builder).await.unwrap();
    let t = common::table("infile");
    c.query_drop(format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, s TEXT)"))
        .await
        .unwrap();
    c.query_drop(format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE {t}",
        file.display()
    ))
    .await
    .unwrap();
    let (n, len): (i64, i64) = c
        .query_first(format!("SELECT COUNT(*), SUM(LENGTH(s)) FROM {t}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n as u64, i);
    let expected: u64 = (0..i).map(|k| k % 200).sum();
    assert_eq!(len as u64, expected);
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    let _ = std::fs::remove_file(file);
}
