//! Read/write splitting against the sandbox (a primary and two GTID replicas): each statement
//! class lands where it must (seen through SELECT @@server_id), reads spread by weight, pins
//! hold and end, and EXPLAIN ROUTE tells why.

mod common;

use common::{opts, primary, replicas, table, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::HashMap;

/// server_id of each sandbox backend, asked directly.
async fn server_ids() -> (u32, Vec<u32>) {
    let mut ids = Vec::new();
    for addr in std::iter::once(primary()).chain(replicas()) {
        let mut c = Conn::new(opts(&addr)).await.expect("connect directly");
        let id: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
        ids.push(id);
        c.disconnect().await.unwrap();
    }
    (ids[0], ids[1..].to_vec())
}

async fn server_of(c: &mut Conn, sql: &str) -> u32 {
    c.query_first::<u32, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_lands_where_it_must() {
    let (primary_id, replica_ids) = server_ids().await;
    // Without the read-your-writes window, so that reads right after writes show the split.
    let w = Weiche::start_config("[routing]\nread_your_writes_window = 0\n");
    let t = table("split_route");
    let mut c = Conn::new(opts(&w.addr()))
        .await
        .expect("connect through weiche");
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"
    ))
    .await
    .unwrap();
    c.query_drop(format!("INSERT INTO {t} (v) VALUES (1), (2)"))
        .await
        .unwrap();
    // Let the replicas apply the table before reading it there.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let replica = |id: u32| replica_ids.contains(&id);
    assert!(replica(server_of(&mut c, "SELECT @@server_id").await));
    assert!(replica(
        server_of(&mut c, &format!("SELECT @@server_id FROM {t} LIMIT 1")).await
    ));
    for sql in [
        format!("SELECT @@server_id FROM {t} LIMIT 1 FOR UPDATE"),
        format!("SELECT @@server_id FROM {t} LIMIT 1 LOCK IN SHARE MODE"),
        "SELECT @@server_id + LAST_INSERT_ID() * 0".to_string(),
        "SELECT @@server_id + IFNULL(IS_USED_LOCK('weiche-none'), 0)".to_string(),
        "SELECT @@server_id + ROW_COUNT() * 0".to_string(),
        "/* weiche:primary */ SELECT @@server_id".to_string(),
        "SELECT @@server_id -- maxscale route to master".to_string(),
        "SELECT @@server_id + @@identity * 0".to_string(),
    ] {
        assert_eq!(server_of(&mut c, &sql).await, primary_id, "{sql}");
    }
    assert!(replica(
        server_of(&mut c, "/* weiche:replica */ SELECT @@server_id").await
    ));

    // A transaction pins the session to the primary until COMMIT.
    c.query_drop("BEGIN").await.unwrap();
    assert_eq!(server_of(&mut c, "SELECT @@server_id").await, primary_id);
    c.query_drop(format!("INSERT INTO {t} (v) VALUES (3)"))
        .await
        .unwrap();
    assert_eq!(server_of(&mut c, "SELECT @@server_id").await, primary_id);
    c.query_drop("COMMIT").await.unwrap();
    assert!(replica(server_of(&mut c, "SELECT @@server_id").await));

    // autocommit=0 pins until it is back on.
    c.query_drop("SET autocommit = 0").await.unwrap();
    assert_eq!(server_of(&mut c, "SELECT @@server_id").await, primary_id);
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!(server_of(&mut c, "SELECT @@server_id").await, primary_id);
    c.query_drop("SET autocommit = 1").await.unwrap();
    assert!(replica(server_of(&mut c, "SELECT @@server_id").await));

    // A read-only transaction runs on one replica throughout.
    c.query_drop("START TRANSACTION READ ONLY").await.unwrap();
    let first = server_of(&mut c, "SELECT @@server_id").await;
    assert!(replica(first));
    for _ in 0..5 {
        assert_eq!(server_of(&mut c, "SELECT @@server_id").await, first);
    }
    c.query_drop("COMMIT").await.unwrap();

    // A temporary table pins to its server until dropped.
    c.query_drop("CREATE TEMPORARY TABLE tmp_split (a INT)")
        .await
        .unwrap();
    assert_eq!(server_of(&mut c, "SELECT @@server_id").await, primary_id);
    let n: u32 = c
        .query_first("SELECT COUNT(*) FROM tmp_split")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    c.query_drop("DROP TEMPORARY TABLE tmp_split")
        .await
        .unwrap();
    assert!(replica(server_of(&mut c, "SELECT @@server_id").await));

    // GET_LOCK pins until RELEASE_LOCK.
    let got: u32 = c
        .query_first("SELECT GET_LOCK('weiche-split', 1)")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, 1);
    assert_eq!(server_of(&mut c, "SELECT @@server_id").await, primary_id);
    c.query_drop("SELECT RELEASE_LOCK('weiche-split')")
        .await
        .unwrap();
    assert!(replica(server_of(&mut c, "SELECT @@server_id").await));

    // EXPLAIN ROUTE answers with target, reason and pins.
    let row: (String, String, String, String) = c
        .query_first(format!("EXPLAIN ROUTE SELECT * FROM {t} FOR UPDATE"))
        .await
        .unwrap()
        .unwrap();
    assert!(row.0.starts_with("primary"), "{row:?}");
    assert!(row.1.contains("FOR UPDATE"), "{row:?}");
    let row: (String, String, String, String) = c
        .query_first("EXPLAIN ROUTE SELECT 1")
        .await
        .unwrap()
        .unwrap();
    assert!(row.0.starts_with("replica"), "{row:?}");
    c.query_drop("BEGIN").await.unwrap();
    let row: (String, String, String, String) = c
        .query_first("EXPLAIN ROUTE SELECT 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.2, "transaction", "{row:?}");
    c.query_drop("ROLLBACK").await.unwrap();

    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_over_replicas_by_weight() {
    let (_, replica_ids) = server_ids().await;
    // The first replica has weight 2, the second 1. Sessions spread by weight; a session's
    // reads stay on its replica while the replicas are equally loaded (here, idle).
    let w = Weiche::start_config("");
    let mut count: HashMap<u32, usize> = HashMap::new();
    for _ in 0..300 {
        let mut c = Conn::new(opts(&w.addr()))
            .await
            .expect("connect through weiche");
        let mut mine = Vec::new();
        for _ in 0..3 {
            mine.push(server_of(&mut c, "SELECT @@server_id").await);
        }
        assert!(
            mine.iter().all(|&s| s == mine[0]),
            "one session, one replica: {mine:?}"
        );
        *count.entry(mine[0]).or_default() += mine.len();
        c.disconnect().await.unwrap();
    }
    let a = count.get(&replica_ids[0]).copied().unwrap_or(0);
    let b = count.get(&replica_ids[1]).copied().unwrap_or(0);
    assert_eq!(a + b, 900, "{count:?}");
    assert!((540..=660).contains(&a), "weights 2:1, got {count:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_follows_the_session() {
    let (primary_id, _) = server_ids().await;
    let w = Weiche::start_config("[routing]\nread_your_writes_window = 0\n");
    let mut c = Conn::new(opts(&w.addr()))
        .await
        .expect("connect through weiche");
    c.query_drop("SET time_zone = '+05:30', sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    // Reads go to replicas, on connections brought to the session's state.
    for _ in 0..6 {
        let (tz, mode, id): (String, String, u32) = c
            .query_first("SELECT @@time_zone, @@sql_mode, @@server_id")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((tz.as_str(), mode.as_str()), ("+05:30", "ANSI_QUOTES"));
        assert_ne!(id, primary_id);
    }
    c.query_drop("USE test").await.unwrap();
    let db: String = c.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(db, "test");
    c.query_drop("USE weiche").await.unwrap();

    // LAST_INSERT_ID() survives a read on another server in between.
    let t = table("split_state");
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"
    ))
    .await
    .unwrap();
    c.query_drop(format!("INSERT INTO {t} (v) VALUES (7)"))
        .await
        .unwrap();
    let _: Option<u32> = c.query_first("SELECT 1").await.unwrap();
    let _: Option<u32> = c.query_first("SELECT 2").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let id: u64 = c
        .query_first("SELECT LAST_INSERT_ID()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, 1);

    // Another client on the same pooled connections never sees this session's state.
    let mut other = Conn::new(opts(&w.addr())).await.expect("second client");
    for _ in 0..6 {
        let (tz, mode): (String, String) = other
            .query_first("SELECT @@time_zone, @@sql_mode")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tz, "SYSTEM");
        assert_ne!(mode, "ANSI_QUOTES");
    }
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    c.disconnect().await.unwrap();
    other.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_move_between_connections() {
    let w = Weiche::start_config("[routing]\nread_your_writes_window = 0\n");
    let t = table("split_ps");
    let mut setup = Conn::new(opts(&primary())).await.unwrap();
    setup
        .query_drop(format!(
            "CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(20))"
        ))
        .await
        .unwrap();
    setup
        .query_drop(format!(
            "INSERT INTO {t} SELECT seq, CONCAT('n', seq) FROM seq_1_to_100"
        ))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut tasks = Vec::new();
    for k in 0..8u32 {
        let addr = w.addr();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(opts(&addr)).await.unwrap();
            let stmt = c
                .prep(format!("SELECT id, name FROM {t} WHERE id = ?"))
                .await
                .unwrap();
            let mut sum = 0u64;
            for i in 0..250u32 {
                let id = (i * 7 + k) % 100 + 1;
                let row: Option<(u32, String)> = c.exec_first(&stmt, (id,)).await.unwrap();
                let (rid, name) = row.expect("row");
                assert_eq!(name, format!("n{rid}"));
                sum += u64::from(rid);
            }
            c.close(stmt).await.unwrap();
            c.disconnect().await.unwrap();
            sum
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let expected: u64 = (0..8u32)
        .flat_map(|k| (0..250u32).map(move |i| u64::from((i * 7 + k) % 100 + 1)))
        .sum();
    assert_eq!(total, expected);
    setup.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}
