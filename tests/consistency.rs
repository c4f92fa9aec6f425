//! Read-your-writes against a private topology whose replicas lag (MASTER_DELAY): with
//! consistency = "session" a session always reads its own writes; with "eventual" it does not
//! (the proof that the test can fail); with "global" a session reads what another wrote.

mod common;

use common::opts;
use common::topology::{serialize, Topology};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};

const ITERATIONS: u32 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_read_their_writes_on_lagging_replicas() {
    let _one = serialize().await;
    let topo = Topology::start("consistency", 24350);
    let primary = topo.base;
    // Lagging replicas stay in rotation (max_replication_lag), and a read waits only briefly
    // for its GTID before the primary serves it.
    let w = topo.weiche(
        "[routing]\nmax_replication_lag = 60\nconsistency_wait = 0.01\n\n[monitor]\ninterval = 0.2\n",
    );
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    c.query_drop("CREATE TABLE r (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 1..=2 {
        topo.root(
            n,
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 1; START SLAVE",
        )
        .await;
    }

    // consistency = "session" (the default): every read sees the row just written; half of the
    // reads are prepared statements.
    let started = Instant::now();
    let mut on_primary = 0;
    for n in 1..=ITERATIONS {
        c.exec_drop("INSERT INTO r VALUES (?, ?)", (n, n))
            .await
            .unwrap();
        let row: Option<(u32, u16)> = if n % 2 == 0 {
            c.exec_first("SELECT v, @@port FROM r WHERE id = ?", (n,))
                .await
                .unwrap()
        } else {
            c.query_first(format!("SELECT v, @@port FROM r WHERE id = {n}"))
                .await
                .unwrap()
        };
        let (v, port) = row.unwrap_or_else(|| panic!("iteration {n}: stale read (row missing)"));
        assert_eq!(v, n);
        on_primary += u32::from(port == primary);
    }
    println!(
        "session: {ITERATIONS} writes+reads in {:?}, 0 stale, {on_primary} reads served by the primary",
        started.elapsed()
    );

    // consistency = "eventual": the same loop reads stale data.
    let mut stale = 0;
    for n in ITERATIONS + 1..=ITERATIONS + 200 {
        c.query_drop(format!("INSERT INTO r VALUES ({n}, {n})"))
            .await
            .unwrap();
        let row: Option<u32> = c
            .query_first(format!(
                "/* weiche:consistency=eventual */ SELECT v FROM r WHERE id = {n}"
            ))
            .await
            .unwrap();
        stale += u32::from(row.is_none());
    }
    println!("eventual: 200 writes+reads, {stale} stale");
    assert!(
        stale > 0,
        "eventual reads never stale: the lag injection did not work"
    );

    // consistency = "global": another session's committed write is visible.
    let mut reader = Conn::new(opts(&w.addr())).await.expect("connect");
    for n in ITERATIONS + 1000..ITERATIONS + 1100 {
        c.query_drop(format!("INSERT INTO r VALUES ({n}, {n})"))
            .await
            .unwrap();
        let row: Option<u32> = reader
            .query_first(format!(
                "/* weiche:consistency=global */ SELECT v FROM r WHERE id = {n}"
            ))
            .await
            .unwrap();
        assert_eq!(row, Some(n), "global read missed another session's write");
    }

    // Without lag, the waits succeed on the replicas: few reads need the primary.
    for n in 1..=2 {
        topo.root(
            n,
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE",
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut on_primary = 0;
    for n in ITERATIONS + 2000..ITERATIONS + 2200 {
        c.query_drop(format!("INSERT INTO r VALUES ({n}, {n})"))
            .await
            .unwrap();
        let row: Option<(u32, u16)> = c
            .query_first(format!("SELECT v, @@port FROM r WHERE id = {n}"))
            .await
            .unwrap();
        let (v, port) = row.expect("read-your-writes without lag");
        assert_eq!(v, n);
        on_primary += u32::from(port == primary);
    }
    println!("session without lag: 200 writes+reads, {on_primary} reads served by the primary");
}
