//! The result cache against the sandbox, through real clients, with both stores: a hit after a
//! miss (and a hit really is the cache: a write that bypasses Weiche stays hidden until the TTL
//! ends), invalidation by writes through Weiche (never stale over 1,000 iterations, also with
//! two Weiche instances sharing one memcached cluster), the classes that are never cached, and
//! memcached nodes killed or frozen under load without a client error.

mod common;

use common::memcached::Memcached;
use common::raw::{is_err, Raw};
use common::{admin_opts, admin_port, opts, primary, table, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};

const ADMIN: &str =
    "[admin]\naddress = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"admin-secret\"\n";

/// One SHOW CACHE value.
async fn stat(w: &Weiche, name: &str) -> String {
    let mut a = Conn::new(admin_opts(admin_port(w), "admin-secret"))
        .await
        .expect("admin login");
    let rows: Vec<(String, String)> = a.query("SHOW CACHE").await.expect("SHOW CACHE");
    a.disconnect().await.ok();
    rows.into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("SHOW CACHE has no {name}"))
}

async fn count(w: &Weiche, name: &str) -> u64 {
    stat(w, name).await.parse().expect("a number")
}

async fn explain(c: &mut Conn, sql: &str) -> String {
    let row: (String, String, String, String) = c
        .query_first(format!("EXPLAIN ROUTE {sql}"))
        .await
        .expect("EXPLAIN ROUTE")
        .expect("a row");
    row.3
}

async fn setup(c: &mut Conn, t: &str, rows: u32) {
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v INT NOT NULL)"
    ))
    .await
    .unwrap();
    let values: Vec<String> = (1..=rows).map(|i| format!("({i}, {})", i * 7)).collect();
    c.query_drop(format!("INSERT INTO {t} VALUES {}", values.join(", ")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_follows_a_miss_and_writes_through_weiche_invalidate() {
    let w = Weiche::start_config(ADMIN);
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    let t = table("cache_hit");
    setup(&mut c, &t, 1).await;
    let q = format!("/* weiche:cache ttl=2 */ SELECT v FROM {t} WHERE id = 1");
    let e = explain(&mut c, &q).await;
    assert_eq!(e, "cacheable (ttl 2 s, hint)");

    let v: u32 = c.query_first(&q).await.unwrap().unwrap();
    let filled = Instant::now();
    assert_eq!(v, 7);
    assert_eq!(count(&w, "misses").await, 1);
    assert_eq!(count(&w, "stores").await, 1);
    assert!(explain(&mut c, &q).await.starts_with("cache hit"));

    // A write that bypasses Weiche (straight to the primary): the cached result hides it until
    // its TTL ends. This is what proves that the answer came from the cache.
    let mut direct = Conn::new(opts(&primary())).await.expect("primary");
    direct
        .query_drop(format!("UPDATE {t} SET v = 20 WHERE id = 1"))
        .await
        .unwrap();
    let v: u32 = c.query_first(&q).await.unwrap().unwrap();
    assert_eq!(v, 7, "served from the cache");
    assert_eq!(count(&w, "hits").await, 1);
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(filled.elapsed())).await;
    let v: u32 = c.query_first(&q).await.unwrap().unwrap();
    assert_eq!(v, 20, "the TTL ended");

    // Cached again; a write through Weiche (from another session) invalidates at once.
    let v: u32 = c.query_first(&q).await.unwrap().unwrap();
    assert_eq!(v, 20);
    let mut other = Conn::new(opts(&w.addr())).await.expect("connect");
    other
        .query_drop(format!("UPDATE {t} SET v = 30 WHERE id = 1"))
        .await
        .unwrap();
    let v: u32 = c.query_first(&q).await.unwrap().unwrap();
    assert_eq!(v, 30, "a write through Weiche is never hidden");

    // Writes inside a transaction invalidate at COMMIT.
    other.query_drop("BEGIN").await.unwrap();
    other
        .query_drop(format!("UPDATE {t} SET v = 31 WHERE id = 1"))
        .await
        .unwrap();
    let v: u32 = c.query_first(&q).await.unwrap().unwrap();
    assert_eq!(v, 30, "not committed yet");
    other.query_drop("COMMIT").await.unwrap();
    let v: u32 = c.query_first(&q).await.unwrap().unwrap();
    assert_eq!(v, 31, "committed");

    // Prepared reads are cached too (keyed by their parameters).
    let p = format!("/* weiche:cache ttl=30 */ SELECT v FROM {t} WHERE id = ?");
    let hits = count(&w, "hits").await;
    for _ in 0..3 {
        let v: Option<u32> = c.exec_first(&p, (1,)).await.unwrap();
        assert_eq!(v, Some(31));
        let v: Option<u32> = c.exec_first(&p, (2,)).await.unwrap();
        assert_eq!(v, None);
    }
    assert_eq!(count(&w, "hits").await, hits + 4, "2 misses, then 4 hits");
    other
        .exec_drop(format!("UPDATE {t} SET v = ? WHERE id = ?"), (32, 1))
        .await
        .unwrap();
    let v: Option<u32> = c.exec_first(&p, (1,)).await.unwrap();
    assert_eq!(v, Some(32), "a prepared write invalidates");

    // FLUSH CACHE on the admin port.
    let _: Option<u32> = c.exec_first(&p, (1,)).await.unwrap();
    let misses = count(&w, "misses").await;
    let mut a = Conn::new(admin_opts(admin_port(&w), "admin-secret"))
        .await
        .unwrap();
    a.query_drop(format!("FLUSH CACHE weiche.{t}"))
        .await
        .unwrap();
    let _: Option<u32> = c.exec_first(&p, (1,)).await.unwrap();
    assert_eq!(count(&w, "misses").await, misses + 1, "flushed by table");
    a.query_drop("FLUSH CACHE").await.unwrap();
    let _: Option<u32> = c.exec_first(&p, (1,)).await.unwrap();
    assert_eq!(count(&w, "misses").await, misses + 2, "flushed");
    let bad = a.query_drop("FLUSH CACHE nodot").await;
    assert!(bad.is_err());
}

/// The one INT value of a binary result set's single row (header, null bitmap, value).
fn binary_int(packets: &[Vec<u8>]) -> i32 {
    let row = packets
        .iter()
        .find(|p| p.len() == 6 && p[0] == 0)
        .unwrap_or_else(|| panic!("no row in {packets:?}"));
    i32::from_le_bytes([row[2], row[3], row[4], row[5]])
}

/// libmariadb and mysqlnd send parameter types with a statement's first execute only. When that
/// execute is answered from the cache, the server statement never saw them: the next execute
/// that misses must carry them, or the server refuses it (ERR 1210).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_execute_answered_from_the_cache_still_gives_the_server_its_types() {
    let w = Weiche::start_primary_config(ADMIN);
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    let t = table("cache_types");
    setup(&mut c, &t, 3).await;
    let sql = format!("/* weiche:cache ttl=60 */ SELECT v FROM {t} WHERE id = ?");
    // The same client flavour fills the cache (the result's shape is part of the key).
    let mut filler = Raw::login(&w.addr(), &common::app_user(), &common::app_password(), 0).await;
    let (id, _) = filler.prepare(&sql).await;
    assert_eq!(
        binary_int(&filler.execute(id, &[1], true).await),
        7,
        "fills the cache"
    );
    let hits = count(&w, "hits").await;

    let mut r = Raw::login(&w.addr(), &common::app_user(), &common::app_password(), 0).await;
    let (id, params) = r.prepare(&sql).await;
    assert_eq!(params, 1);
    let first = r.execute(id, &[1], true).await;
    assert_eq!(binary_int(&first), 7, "the hit");
    assert_eq!(
        count(&w, "hits").await,
        hits + 1,
        "the first execute was a hit"
    );
    for (key, want) in [(2, 14), (3, 21), (1, 7)] {
        let next = r.execute(id, &[key], false).await;
        assert!(
            !is_err(&next[0]),
            "id {key}: {:?}",
            String::from_utf8_lossy(&next[0])
        );
        assert_eq!(binary_int(&next), want, "id {key}");
    }
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

/// Writes that hide behind another statement, in a string or in a comment, and writes committed
/// under autocommit=0, invalidate what they change like any other write through Weiche.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_write_invalidates() {
    let w = Weiche::start_primary_config(ADMIN);
    let mut reader = Conn::new(opts(&w.addr())).await.expect("connect");
    let mut writer = Conn::new(opts(&w.addr())).await.expect("connect");
    let t = table("cache_writes");
    setup(&mut writer, &t, 1).await;
    let read = format!("/* weiche:cache ttl=600 */ SELECT v FROM {t} WHERE id = 1");
    let bump = format!("UPDATE {t} SET v = v + 1 WHERE id = 1");
    let writes = [
        format!("SET STATEMENT max_statement_time = 10 FOR {bump}"),
        format!("ANALYZE {bump}"),
        format!("EXECUTE IMMEDIATE '{bump}'"),
        format!("PREPARE s FROM '{bump}'; EXECUTE s; DEALLOCATE PREPARE s"),
        format!("/*!50000 {bump} */"),
        format!("SET autocommit = 0; {bump}; COMMIT; SET autocommit = 1"),
        format!("BEGIN NOT ATOMIC {bump}; END"),
    ];
    let mut want: u32 = reader.query_first(&read).await.unwrap().unwrap();
    for sql in &writes {
        let hits = count(&w, "hits").await;
        let v: u32 = reader.query_first(&read).await.unwrap().unwrap();
        assert_eq!(v, want);
        assert_eq!(count(&w, "hits").await, hits + 1, "cached before: {sql}");
        writer
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        want += 1;
        let v: u32 = reader.query_first(&read).await.unwrap().unwrap();
        assert_eq!(v, want, "stale after: {sql}");
    }
    // autocommit=0, statement by statement: the COMMIT releases the bump.
    writer.query_drop("SET autocommit = 0").await.unwrap();
    let _: Option<u32> = reader.query_first(&read).await.unwrap();
    writer.query_drop(&bump).await.unwrap();
    writer.query_drop("COMMIT").await.unwrap();
    want += 1;
    let v: u32 = reader.query_first(&read).await.unwrap().unwrap();
    assert_eq!(v, want, "stale after a COMMIT under autocommit=0");
    writer.query_drop("SET autocommit = 1").await.unwrap();
    writer.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

/// An execute that binds values without ever sending their types crashes MariaDB 10.11
/// (signal 11 in Item_param::convert_str_value): Weiche answers it with the server's ERR 1210
/// itself, and the server stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_without_any_types_never_reaches_a_server() {
    let w = Weiche::start();
    let mut r = Raw::login(&w.addr(), &common::app_user(), &common::app_password(), 0).await;
    let (id, _) = r.prepare("SELECT ? + 1").await;
    let e = r.execute(id, &[1], false).await;
    assert!(is_err(&e[0]), "{e:?}");
    assert_eq!(u16::from_le_bytes([e[0][1], e[0][2]]), 1210);
    let ok = r.execute(id, &[41], true).await;
    assert!(!is_err(&ok[0]), "the session goes on: {ok:?}");
    let mut c = Conn::new(opts(&primary()))
        .await
        .expect("the primary is up");
    c.query_drop("DO 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_statements_are_never_cached() {
    let w = Weiche::start_config(ADMIN);
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    let t = table("cache_never");
    setup(&mut c, &t, 3).await;
    let hint = "/* weiche:cache ttl=60 */";
    for (sql, why) in [
        ("SELECT NOW(6)".to_string(), "non-deterministic"),
        ("SELECT RAND()".into(), "non-deterministic"),
        ("SELECT UUID()".into(), "non-deterministic"),
        ("SELECT CURRENT_USER()".into(), "non-deterministic"),
        (format!("SELECT v FROM {t} WHERE v > @x"), "@variable"),
        ("SELECT @@hostname".into(), "@@variable"),
        ("SELECT LAST_INSERT_ID()".into(), "non-deterministic"),
        ("SELECT FOUND_ROWS()".into(), "non-deterministic"),
        (format!("SELECT v FROM {t} FOR UPDATE"), "locking read"),
        (
            format!("SELECT v FROM {t} LOCK IN SHARE MODE"),
            "locking read",
        ),
        (format!("SELECT v INTO @y FROM {t} LIMIT 1"), "INTO"),
        (
            "SELECT * FROM information_schema.tables".into(),
            "system schema",
        ),
        ("SHOW TABLES".into(), "only SELECT"),
        ("SELECT 1; SELECT 2".into(), "multi-statement"),
    ] {
        let e = explain(&mut c, &format!("{hint} {sql}")).await;
        assert!(e.starts_with("not cached") && e.contains(why), "{sql}: {e}");
    }
    // And in fact: these answers change from call to call.
    for sql in ["SELECT NOW(6)", "SELECT RAND()", "SELECT UUID()"] {
        let a: String = c
            .query_first(format!("{hint} {sql}"))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let b: String = c
            .query_first(format!("{hint} {sql}"))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(a, b, "{sql} was served from the cache");
    }
    // Inside a transaction nothing is looked up or stored.
    let stores = count(&w, "stores").await;
    c.query_drop("BEGIN").await.unwrap();
    let q = format!("{hint} SELECT v FROM {t} WHERE id = 2");
    let e = explain(&mut c, &q).await;
    assert!(e.contains("pinned (transaction)"), "{e}");
    let v: u32 = c.query_first(&q).await.unwrap().unwrap();
    assert_eq!(v, 14);
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!(count(&w, "stores").await, stores);
    // Without a hint or rule, nothing is cached; with /* weiche:nocache */ neither.
    let e = explain(&mut c, &format!("SELECT v FROM {t}")).await;
    assert!(e.starts_with("not cached: no hint"), "{e}");
    let e = explain(&mut c, &format!("/* weiche:nocache */ SELECT v FROM {t}")).await;
    assert!(e.contains("nocache"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_rules_pick_statements_by_table() {
    let t = table("cache_rule");
    let w = Weiche::start_config(&format!(
        "{ADMIN}\n[[cache.rules]]\ntable = \"{t}\"\nttl = 30\n"
    ));
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    setup(&mut c, &t, 2).await;
    let q = format!("SELECT v FROM {t} WHERE id = 2");
    assert_eq!(
        explain(&mut c, &q).await,
        "cacheable (ttl 30 s, cache rule 1)"
    );
    for _ in 0..3 {
        let v: u32 = c.query_first(&q).await.unwrap().unwrap();
        assert_eq!(v, 14);
    }
    assert_eq!(count(&w, "hits").await, 2);
    assert_eq!(stat(&w, "cache rule 1").await, "2 hits, 1 misses");
}

/// A writer updates a row through one Weiche; readers on `readers` read it back through the
/// cache, twice each (the second read is normally a hit). Returns the stale reads seen.
async fn write_then_read(writer: &mut Conn, readers: &mut [Conn], t: &str, n: u32) -> u32 {
    let text = format!("/* weiche:cache ttl=60 */ SELECT v FROM {t} WHERE id = 1");
    let prepared = format!("/* weiche:cache ttl=60 */ SELECT v FROM {t} WHERE id = ?");
    let mut stale = 0;
    for i in 1..=n {
        if i % 2 == 0 {
            writer
                .exec_drop(format!("UPDATE {t} SET v = ? WHERE id = 1"), (i,))
                .await
                .unwrap();
        } else {
            writer
                .query_drop(format!("UPDATE {t} SET v = {i} WHERE id = 1"))
                .await
                .unwrap();
        }
        for r in readers.iter_mut() {
            for _ in 0..2 {
                let v: u32 = if i % 3 == 0 {
                    r.exec_first(&prepared, (1,)).await.unwrap().unwrap()
                } else {
                    r.query_first(&text).await.unwrap().unwrap()
                };
                if v != i {
                    stale += 1;
                    eprintln!("iteration {i}: read {v}");
                }
            }
        }
    }
    stale
}

const ITERATIONS: u32 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_cache_never_serves_a_result_older_than_a_write() {
    let w = Weiche::start_config(ADMIN);
    let mut writer = Conn::new(opts(&w.addr())).await.expect("connect");
    let t = table("cache_stale_e");
    setup(&mut writer, &t, 1).await;
    let mut readers = vec![Conn::new(opts(&w.addr())).await.expect("connect")];
    let started = Instant::now();
    let stale = write_then_read(&mut writer, &mut readers, &t, ITERATIONS).await;
    let hits = count(&w, "hits").await;
    println!(
        "embedded: {ITERATIONS} writes, {} reads in {:?}: {stale} stale, {hits} hits",
        ITERATIONS * 2,
        started.elapsed()
    );
    assert_eq!(stale, 0);
    assert!(hits >= u64::from(ITERATIONS) * 9 / 10, "{hits} hits");
}

fn memcached_config(nodes: &[&Memcached]) -> String {
    let servers: Vec<String> = nodes.iter().map(|m| format!("\"{}\"", m.addr())).collect();
    format!(
        "{ADMIN}\n[cache]\nservers = [{}]\ntimeout = 0.05\nretry_after = 0.3\n\
         secret = \"shared-by-both-instances\"\n",
        servers.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_memcached_never_serve_stale_results() {
    let (m1, m2) = (Memcached::start(), Memcached::start());
    let config = memcached_config(&[&m1, &m2]);
    let (w1, w2) = (Weiche::start_config(&config), Weiche::start_config(&config));
    let mut writer = Conn::new(opts(&w1.addr())).await.expect("connect");
    let t = table("cache_stale_m");
    setup(&mut writer, &t, 1).await;
    let mut readers = vec![
        Conn::new(opts(&w2.addr())).await.expect("connect"),
        Conn::new(opts(&w1.addr())).await.expect("connect"),
    ];
    let started = Instant::now();
    let stale = write_then_read(&mut writer, &mut readers, &t, ITERATIONS).await;
    let (h1, h2) = (count(&w1, "hits").await, count(&w2, "hits").await);
    println!(
        "memcached, two instances: {ITERATIONS} writes on instance 1, {} reads on each in {:?}: \
         {stale} stale, hits {h1} (instance 1) and {h2} (instance 2)",
        ITERATIONS * 2,
        started.elapsed()
    );
    assert_eq!(stale, 0);
    assert!(
        h2 >= u64::from(ITERATIONS) * 9 / 10,
        "{h2} hits on instance 2"
    );
    assert_eq!(stat(&w2, "store").await, "memcached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_nodes_that_die_or_hang_cost_no_client_errors() {
    let (mut m1, m2) = (Memcached::start(), Memcached::start());
    let w = Weiche::start_config(&memcached_config(&[&m1, &m2]));
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    let t = table("cache_fault");
    setup(&mut c, &t, 50).await;
    let stop = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for n in 0..4u32 {
        let (addr, t) = (w.addr(), t.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(opts(&addr)).await.expect("connect");
            let (mut ok, mut errors, mut wrong, mut slowest) = (0u32, 0u32, 0u32, Duration::ZERO);
            let mut id = n;
            while Instant::now() < stop {
                id = id % 50 + 1;
                let began = Instant::now();
                let q = format!("/* weiche:cache ttl=60 */ SELECT v FROM {t} WHERE id = {id}");
                match c.query_first::<u32, _>(q).await {
                    Ok(Some(v)) if v == id * 7 => ok += 1,
                    Ok(_) => wrong += 1,
                    Err(e) => {
                        errors += 1;
                        eprintln!("client error: {e}");
                    }
                }
                slowest = slowest.max(began.elapsed());
            }
            (ok, errors, wrong, slowest)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    m1.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    m1.restart();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    m2.signal("STOP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    m2.signal("CONT");
    let (mut ok, mut errors, mut wrong, mut slowest) = (0, 0, 0, Duration::ZERO);
    for task in tasks {
        let (o, e, w, s) = task.await.unwrap();
        (ok, errors, wrong, slowest) = (ok + o, errors + e, wrong + w, slowest.max(s));
    }
    let log = w.log_text();
    println!(
        "memcached faults under load: {ok} reads, {errors} client errors, {wrong} wrong, \
         slowest {slowest:?}; bypassed {}, hits {}",
        count(&w, "bypassed").await,
        count(&w, "hits").await
    );
    assert_eq!(errors, 0);
    assert_eq!(wrong, 0);
    assert!(log.contains(&format!("memcached {} failed", m1.addr())));
    assert!(log.contains(&format!("memcached {} failed", m2.addr())));
    assert!(log.contains(&format!("memcached {} is back", m1.addr())));
    assert!(count(&w, "bypassed").await > 0);
    // A frozen node holds a query for at most the cache timeout, not a TCP timeout.
    assert!(slowest < Duration::from_secs(1), "slowest read {slowest:?}");
}
