//! `[cache] mode = "auto"` against the sandbox: the reads an application repeats are cached
//! without a hint, a burst of one-off queries (new literals of a cached digest, new digests)
//! stores nothing and evicts none of the hot set, writes beside Weiche still reach the reads,
//! and SHOW QUERY DIGESTS says which digests are cached and what they saved.

mod common;

use common::binlog::*;
use common::{table, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::HashMap;

/// SHOW CACHE's counter `name` as a number.
async fn counter(admin: &mut Conn, name: &str) -> u64 {
    let v = show_cache(admin, name).await;
    v.parse()
        .unwrap_or_else(|_| panic!("SHOW CACHE {name} = {v} is not a number"))
}

/// Read `v` of each id through Weiche, checking every answer.
async fn read(c: &mut Conn, t: &str, ids: impl Iterator<Item = u32>) {
    for id in ids {
        let v: String = c
            .query_first(format!("SELECT v FROM {t} WHERE id = {id}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no row {id}"));
        assert_eq!(v, format!("row-{id}"));
    }
}

/// Wait until both replicas have what the primary has now (reads go to them).
async fn replicas_caught_up(primary: &mut Conn) {
    let pos: String = primary
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    for r in common::replicas() {
        let mut c = Conn::new(root_opts(&r)).await.expect("root on a replica");
        let waited: i64 = c
            .exec_first("SELECT MASTER_GTID_WAIT(?, 30)", (&pos,))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(waited, 0, "replica {r} did not reach {pos}");
    }
}

/// SHOW QUERY DIGESTS' row of the digest that starts with `prefix`, by column name.
async fn digest_row(admin: &mut Conn, prefix: &str) -> HashMap<String, String> {
    let rows: Vec<mysql_async::Row> = admin.query("SHOW QUERY DIGESTS").await.unwrap();
    for row in rows {
        let cols: Vec<String> = row
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
        let vals: Vec<Option<String>> = (0..cols.len()).map(|i| row.get(i).flatten()).collect();
        let map: HashMap<String, String> = cols
            .into_iter()
            .zip(vals.into_iter().map(Option::unwrap_or_default))
            .collect();
        if map["digest"].starts_with(prefix) {
            return map;
        }
    }
    panic!("no digest starting with {prefix}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_keeps_the_hot_set_through_a_burst_of_one_off_queries() {
    // A database of its own: another test's DDL in `weiche` may bump that whole schema.
    let db = table("weiche_auto");
    let t = format!("{db}.hot");
    // The smallest embedded store (1 MiB): the burst below would fill it several times over.
    let config = format!(
        "{ADMIN}\n[cache]\nmode = \"auto\"\nmemory = 1048576\n[cache.auto]\nmin_seen = 3\n\n{}",
        binlog_section("")
    );
    let w = Weiche::start_config(&config);
    let mut root = root_on_primary().await;
    root.query_drop(format!(
        "CREATE DATABASE {db}; \
         CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(40) NOT NULL); \
         INSERT INTO {t} SELECT seq, CONCAT('row-', seq) FROM {db}.seq_1_to_20000"
    ))
    .await
    .unwrap();
    let mut admins = [admin(&w).await];
    replicas_caught_up(&mut root).await;
    caught_up(&mut root, &mut admins).await;
    let [mut a] = admins;
    let mut c = Conn::new(root_opts(&w.addr()).db_name(Some(db.clone())))
        .await
        .expect("root through Weiche");

    // The hot set: 100 rows read over and over. The digest is admitted at its third sighting,
    // each key stored at its second miss.
    const HOT: u32 = 100;
    // A whole-cache bump from somebody else's DDL in the binlog (another test's) also makes the
    // hot set miss: up to three attempts, each with a burst of its own, must show one clean.
    let mut clean = false;
    for attempt in 0..3u32 {
        // Warm until a whole round is hits: on a loaded machine the follower may be behind for
        // a moment, and lookups then go to the database (binlog_held) without filling.
        let mut rounds = 0;
        loop {
            let hits = counter(&mut a, "hits").await;
            read(&mut c, &t, 1..=HOT).await;
            if counter(&mut a, "hits").await - hits == u64::from(HOT) {
                break;
            }
            rounds += 1;
            assert!(
                rounds < 30,
                "the hot set is not served from the cache after 30 rounds"
            );
        }

        // The burst: 4,000 rows read once each (one digest, new literals) and 1,000 new
        // digests.
        let (stores, first) = (
            counter(&mut a, "stores").await,
            counter(&mut a, "auto_first_misses_not_stored").await,
        );
        let from = 5_001 + attempt * 4_000;
        read(&mut c, &t, from..from + 4_000).await;
        for i in 0..1_000 {
            let v: String = c
                .query_first(format!("SELECT v AS c{attempt}_{i} FROM {t} WHERE id = 7"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(v, "row-7");
        }
        assert_eq!(
            counter(&mut a, "stores").await,
            stores,
            "one-off queries were stored"
        );
        assert_eq!(counter(&mut a, "evictions").await, 0);
        assert!(counter(&mut a, "auto_first_misses_not_stored").await - first >= 4_000);
        // Every hot row is still there: a hit, or (the follower behind for a moment) held.
        let (hits, misses, held) = (
            counter(&mut a, "hits").await,
            counter(&mut a, "misses").await,
            counter(&mut a, "binlog_held").await,
        );
        read(&mut c, &t, 1..=HOT).await;
        let (hits, misses, held) = (
            counter(&mut a, "hits").await - hits,
            counter(&mut a, "misses").await - misses,
            counter(&mut a, "binlog_held").await - held,
        );
        println!("after burst {attempt}: {hits} hits, {misses} misses, {held} held");
        if misses == 0 {
            assert_eq!(hits + held, u64::from(HOT));
            clean = true;
            break;
        }
    }
    assert!(clean, "after every burst part of the hot set missed");

    // A write beside Weiche reaches the next read, and the digest is shown as cached.
    root.query_drop(format!("UPDATE {t} SET v = 'changed' WHERE id = 1"))
        .await
        .unwrap();
    replicas_caught_up(&mut root).await;
    caught_up(&mut root, std::slice::from_mut(&mut a)).await;
    for _ in 0..3 {
        let v: String = c
            .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, "changed");
    }
    for _ in 0..5 {
        let one: u32 = c.query_first("SELECT 1").await.unwrap().unwrap();
        assert_eq!(one, 1);
    }
    let hot = digest_row(&mut a, &format!("SELECT v FROM {t} WHERE id = ?")).await;
    println!("hot digest: {hot:?}");
    assert_eq!(hot["cached"], "auto");
    assert!(hot["cache_share"].parse::<f64>().unwrap() > 0.0);
    assert!(hot["saved_ms"].parse::<f64>().unwrap() > 0.0);
    let plain = digest_row(&mut a, "SELECT ?").await;
    assert_eq!(
        plain["cached"], "",
        "a read of no table is not cached: {plain:?}"
    );
    let line = show_cache(&mut a, &format!("auto SELECT v FROM {t} WHERE id = ?")).await;
    println!("SHOW CACHE: {line}");
    assert!(line.contains("hits"), "{line}");
    root.query_drop(format!("DROP DATABASE {db}")).await.ok();
}
