//! Invalidation from the primary's binlog ([cache.binlog]) against the sandbox: writes that never
//! pass through Weiche (a direct client, a trigger, a stored procedure, an event, LOAD DATA)
//! are never hidden by a hit once the binlog has them, with two instances sharing memcached;
//! and a cut stream (the dump thread killed, the primary killed and restarted, a replica
//! promoted) never yields a stale hit.

mod common;

use common::binlog::*;
use common::memcached::Memcached;
use common::topology::{serialize, Topology};
use common::{app_password, app_user, primary, table, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_bypass_weiche_are_never_hidden_by_a_hit() {
    let (m1, m2) = (Memcached::start(), Memcached::start());
    let t = table("binlog_w");
    let config = format!(
        "{ADMIN}\n[cache]\nservers = [\"{}\", \"{}\"]\nsecret = \"shared-by-both-instances\"\n\
         [[cache.rules]]\ntable = \"{t}\"\nttl = 300\n\n{}",
        m1.addr(),
        m2.addr(),
        binlog_section("")
    );
    let (w1, w2) = (Weiche::start_config(&config), Weiche::start_config(&config));
    let mut root = root_on_primary().await;
    root.query_drop("SET GLOBAL event_scheduler = ON")
        .await
        .unwrap();
    let mut d = Conn::new(direct(&primary())).await.expect("direct");
    // Triggers and routines need SUPER with binary logging on: root makes them.
    root.query_drop(format!(
        "USE weiche; \
         CREATE TABLE {t} (id INT PRIMARY KEY, v INT NOT NULL); INSERT INTO {t} VALUES (1, 0); \
         CREATE TABLE {t}_src (n INT NOT NULL); \
         CREATE TRIGGER {t}_tr AFTER INSERT ON {t}_src FOR EACH ROW \
           UPDATE {t} SET v = NEW.n WHERE id = 1; \
         CREATE PROCEDURE {t}_set(n INT) UPDATE {t} SET v = n WHERE id = 1"
    ))
    .await
    .unwrap();
    let file = std::env::temp_dir().join(format!("{t}.tsv"));
    let mut readers = Vec::new();
    for w in [&w1, &w2] {
        readers.push(Conn::new(common::opts(&w.addr())).await.expect("connect"));
    }
    let mut admins = vec![admin(&w1).await, admin(&w2).await];
    let text = format!("SELECT v FROM {t} WHERE id = 1");
    let prepared = format!("SELECT v FROM {t} WHERE id = ?");
    let mut stale = 0;
    let mut delays = Vec::new();
    const ITERATIONS: u32 = 1000;
    for i in 1..=ITERATIONS {
        match i % 4 {
            0 => d
                .query_drop(format!("UPDATE {t} SET v = {i} WHERE id = 1"))
                .await
                .unwrap(),
            1 => d
                .query_drop(format!("INSERT INTO {t}_src VALUES ({i})"))
                .await
                .unwrap(),
            2 => d.query_drop(format!("CALL {t}_set({i})")).await.unwrap(),
            _ => {
                std::fs::write(&file, format!("1\t{i}\n")).unwrap();
                let out = common::mariadb_cli(
                    &primary(),
                    &app_user(),
                    &app_password(),
                    &["--local-infile=1", "weiche"],
                    &format!(
                        "LOAD DATA LOCAL INFILE '{}' REPLACE INTO TABLE {t}",
                        file.display()
                    ),
                );
                assert!(out.status.success(), "{out:?}");
            }
        }
        delays.push(caught_up(&mut d, &mut admins).await);
        for r in readers.iter_mut() {
            for n in 0..2 {
                let v: u32 = if (i + n) % 3 == 0 {
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
    // Events run on the server's own schedule (whole seconds): a few of them.
    for i in ITERATIONS + 1..=ITERATIONS + 3 {
        d.query_drop(format!(
            "CREATE EVENT {t}_ev ON SCHEDULE AT CURRENT_TIMESTAMP ON COMPLETION NOT PRESERVE \
             DO UPDATE {t} SET v = {i} WHERE id = 1"
        ))
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v: u32 = d.query_first(&text).await.unwrap().unwrap();
            if v == i {
                break;
            }
            assert!(Instant::now() < deadline, "the event did not run");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        caught_up(&mut d, &mut admins).await;
        for r in readers.iter_mut() {
            let v: u32 = r.query_first(&text).await.unwrap().unwrap();
            let again: u32 = r.query_first(&text).await.unwrap().unwrap();
            if v != i || again != i {
                stale += 1;
                eprintln!("event {i}: read {v}, {again}");
            }
        }
        d.query_drop(format!("DROP EVENT IF EXISTS {t}_ev"))
            .await
            .unwrap();
    }
    delays.sort();
    let hits = [
        show_cache(&mut admins[0], "hits").await,
        show_cache(&mut admins[1], "hits").await,
    ];
    println!(
        "binlog invalidation, two instances on memcached: {ITERATIONS} writes beside Weiche \
         (UPDATE, trigger, procedure, LOAD DATA) and 3 events: {stale} stale reads; hits {} and \
         {}; commit to both followers caught up: p50 {:?}, p99 {:?}",
        hits[0],
        hits[1],
        delays[delays.len() / 2],
        delays[delays.len() * 99 / 100]
    );
    d.query_drop(format!("DROP TABLE {t}, {t}_src; DROP PROCEDURE {t}_set"))
        .await
        .ok();
    let _ = std::fs::remove_file(&file);
    assert_eq!(stale, 0);
    for h in hits {
        let h: u32 = h.parse().unwrap();
        // Instance 1 fills; where its two reads differ (text and prepared) both miss.
        assert!(h >= ITERATIONS / 4, "{h} hits: the cache did not serve");
    }
}

/// Write `v` straight on server `n`, wait past max_lag, and read through Weiche twice (the
/// second read is a hit when the stream is healthy): stale reads seen.
async fn round(topo: &Topology, n: u16, w: &mut Conn, t: &str, v: u32, wait: Duration) -> u32 {
    let mut d = Conn::new(direct(&topo.addr(n))).await.expect("direct");
    d.query_drop(format!("UPDATE {t} SET v = {v} WHERE id = 1"))
        .await
        .unwrap();
    d.disconnect().await.ok();
    tokio::time::sleep(wait).await;
    let mut stale = 0;
    for _ in 0..2 {
        let got: u32 = w
            .query_first(format!("SELECT v FROM {t} WHERE id = 1"))
            .await
            .unwrap()
            .unwrap();
        if got != v {
            eprintln!("wrote {v} on server {n}, read {got}");
            stale += 1;
        }
    }
    stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_never_yields_a_stale_hit() {
    let _one = serialize().await;
    let topo = Topology::start("binlog", 24370);
    let t = "bl";
    // An account of Weiche's own, so that killing its dump threads leaves the replicas' alone.
    topo.root(
        0,
        "CREATE USER 'weiche_bl'@'127.0.0.1' IDENTIFIED BY 'bl-secret'; \
         GRANT REPLICATION SLAVE ON *.* TO 'weiche_bl'@'127.0.0.1'",
    )
    .await;
    let w = topo.weiche(&format!(
        "{ADMIN}[monitor]\ninterval = 0.2\ntimeout = 0.5\n[routing]\nconsistency = \"global\"\n\
         [[cache.rules]]\ntable = \"{t}\"\nttl = 300\n\n{}",
        binlog_as(
            "weiche_bl",
            "bl-secret",
            "max_lag = 0.3\ncheck_interval = 0.05\n"
        )
    ));
    let mut c = Conn::new(common::opts(&w.addr())).await.expect("connect");
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v INT NOT NULL); INSERT INTO {t} VALUES (1, 0)"
    ))
    .await
    .unwrap();
    let wait = Duration::from_millis(450);
    let mut stale = 0;
    let mut v = 0;
    for _ in 0..3 {
        v += 1;
        stale += round(&topo, 0, &mut c, t, v, wait).await;
    }
    // The dump thread killed on the primary: Weiche resumes from the last GTID it saw.
    for _ in 0..3 {
        topo.root(
            0,
            "BEGIN NOT ATOMIC FOR r IN (SELECT ID FROM information_schema.PROCESSLIST \
             WHERE COMMAND LIKE 'Binlog Dump%' AND USER = 'weiche_bl') DO KILL r.ID; END FOR; END",
        )
        .await;
        v += 1;
        stale += round(&topo, 0, &mut c, t, v, wait).await;
    }
    let mut a = admin(&w).await;
    assert!(
        show_cache(&mut a, "binlog_reconnects")
            .await
            .parse::<u32>()
            .unwrap()
            >= 3
    );
    // The primary killed and restarted.
    let mark = w.log_mark();
    topo.kill(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(show_cache(&mut a, "binlog_serving_hits").await, "no");
    topo.restart_missing();
    w.wait_log_after(
        mark,
        &format!("binlog: following {}", topo.addr(0)),
        Duration::from_secs(20),
    )
    .await
    .expect("following the restarted primary");
    for _ in 0..3 {
        v += 1;
        stale += round(&topo, 0, &mut c, t, v, wait).await;
    }
    // A replica promoted: the old primary read-only, replica 1 stops replicating and writes.
    let mark = w.log_mark();
    topo.root(0, "SET GLOBAL read_only = 1").await;
    topo.root(1, "STOP SLAVE; SET GLOBAL read_only = 0").await;
    w.wait_log_after(
        mark,
        &format!("binlog: following {}", topo.addr(1)),
        Duration::from_secs(10),
    )
    .await
    .expect("following the new primary");
    for _ in 0..3 {
        v += 1;
        stale += round(&topo, 1, &mut c, t, v, wait).await;
    }
    let hits: u32 = show_cache(&mut a, "hits").await.parse().unwrap();
    println!("binlog stream cut: {v} writes beside Weiche, {stale} stale reads, {hits} hits");
    assert_eq!(stale, 0);
    assert!(hits >= 6, "{hits} hits: the cache did not serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascades_and_views_are_invalidated_with_their_tables() {
    let t = table("binlog_fk");
    let config = format!(
        "{ADMIN}\n[[cache.rules]]\ntable = \"{t}_child\"\nttl = 300\n\
         [[cache.rules]]\ntable = \"{t}_view\"\nttl = 300\n\n{}",
        binlog_section("")
    );
    let w = Weiche::start_config(&config);
    let mut root = root_on_primary().await;
    // Sandboxes made before the grant was part of scripts/sandbox.
    root.query_drop("GRANT SHOW VIEW ON *.* TO 'monitor'@'%', 'monitor'@'127.0.0.1'")
        .await
        .unwrap();
    let mut d = Conn::new(direct(&primary())).await.expect("direct");
    d.query_drop(format!(
        "CREATE TABLE {t}_parent (id INT PRIMARY KEY) ENGINE=InnoDB; \
         CREATE TABLE {t}_child (id INT PRIMARY KEY, p INT, \
           FOREIGN KEY (p) REFERENCES {t}_parent (id) ON DELETE CASCADE) ENGINE=InnoDB; \
         CREATE VIEW {t}_view AS SELECT COUNT(*) AS n FROM {t}_child"
    ))
    .await
    .unwrap();
    let ddl: String = d
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    d.query_drop(format!(
        "INSERT INTO {t}_parent VALUES (1), (2); INSERT INTO {t}_child VALUES (1, 1), (2, 2)"
    ))
    .await
    .unwrap();
    let mut a = admin(&w).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !covers(&show_cache(&mut a, "binlog_catalog_position").await, &ddl) {
        assert!(
            Instant::now() < deadline,
            "the catalog never had the foreign key and view"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = Conn::new(common::opts(&w.addr())).await.expect("connect");
    let child = format!("SELECT COUNT(*) FROM {t}_child");
    let view = format!("SELECT n FROM {t}_view");
    for expected in [2u32, 1, 0] {
        if expected < 2 {
            d.query_drop(format!(
                "DELETE FROM {t}_parent WHERE id = {}",
                expected + 1
            ))
            .await
            .unwrap();
            caught_up(&mut d, std::slice::from_mut(&mut a)).await;
        }
        // Read until both are answered from the cache (the settle bump, or a write of another
        // test in the schema, may retire a fresh entry once): every answer must be right.
        let before: u32 = show_cache(&mut a, "hits").await.parse().unwrap();
        for attempt in 0.. {
            for q in [&child, &view] {
                let n: u32 = c.query_first(q).await.unwrap().unwrap();
                assert_eq!(n, expected, "{q} after the cascade");
            }
            let hits: u32 = show_cache(&mut a, "hits").await.parse().unwrap();
            if hits >= before + 2 {
                break;
            }
            assert!(
                attempt < 100,
                "{} hits: the cache did not serve",
                hits - before
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Writes through Weiche reach cascades and views too.
    c.query_drop(format!(
        "INSERT INTO {t}_parent VALUES (3); INSERT INTO {t}_child VALUES (3, 3)"
    ))
    .await
    .unwrap();
    let n: u32 = c.query_first(&view).await.unwrap().unwrap();
    assert_eq!(n, 1);
    c.query_drop(format!("DELETE FROM {t}_parent WHERE id = 3"))
        .await
        .unwrap();
    let n: u32 = c.query_first(&view).await.unwrap().unwrap();
    assert_eq!(n, 0, "a cascade through Weiche");
    d.query_drop(format!(
        "DROP VIEW {t}_view; DROP TABLE {t}_child, {t}_parent"
    ))
    .await
    .ok();
}
