//! Read-your-writes across instances and connections (routing.shared_read_your_writes), on a
//! private topology whose replicas lag by a second (MASTER_DELAY): each iteration writes through
//! instance A on a new connection and reads through instance B on another new connection, as
//! two PHP requests behind a load balancer do. With the setting, every read sees its write;
//! without it (instance C), reads through C are stale (the proof that the test can fail).

mod common;

use common::opts;
use common::topology::{serialize, Topology};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};

const ITERATIONS: u32 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_is_read_through_another() {
    let _one = serialize().await;
    let topo = Topology::start("sharedryw", 24380);
    let memcached = format!("127.0.0.1:{}", topo.base + 3);
    let shared = format!(
        "[routing]\nmax_replication_lag = 60\nconsistency_wait = 0.01\nshared_read_your_writes = true\n\n\
         [monitor]\ninterval = 0.2\n\n\
         [cache]\nservers = [\"{memcached}\"]\nsecret = \"sharedryw-secret-of-the-fleet\"\n"
    );
    let (a, b) = (topo.weiche(&shared), topo.weiche(&shared));
    let c = topo.weiche(&shared.replace("shared_read_your_writes = true", ""));
    let mut setup = Conn::new(opts(&a.addr())).await.expect("connect");
    setup
        .query_drop("CREATE TABLE s (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    setup.disconnect().await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 1..=2 {
        topo.root(
            n,
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 1; START SLAVE",
        )
        .await;
    }

    let started = Instant::now();
    let mut on_primary = 0;
    for n in 1..=ITERATIONS {
        let mut w = Conn::new(opts(&a.addr())).await.expect("connect to a");
        w.query_drop(format!("INSERT INTO s VALUES ({n}, {n})"))
            .await
            .unwrap();
        w.disconnect().await.ok();
        let mut r = Conn::new(opts(&b.addr())).await.expect("connect to b");
        let row: Option<(u32, u16)> = if n % 2 == 0 {
            r.exec_first("SELECT v, @@port FROM s WHERE id = ?", (n,))
                .await
                .unwrap()
        } else {
            r.query_first(format!("SELECT v, @@port FROM s WHERE id = {n}"))
                .await
                .unwrap()
        };
        r.disconnect().await.ok();
        let (v, port) = row.unwrap_or_else(|| panic!("iteration {n}: stale read through b"));
        assert_eq!(v, n);
        on_primary += u32::from(port == topo.base);
    }
    println!(
        "shared read-your-writes: {ITERATIONS} writes through a and reads through b, each on a new \
         connection, in {:?}: 0 stale, {on_primary} reads served by the primary",
        started.elapsed()
    );

    // Without the setting, instance C does not know of A's writes: its reads go to the
    // lagging replicas.
    let mut stale = 0;
    for n in ITERATIONS + 1..=ITERATIONS + 100 {
        let mut w = Conn::new(opts(&a.addr())).await.expect("connect to a");
        w.query_drop(format!("INSERT INTO s VALUES ({n}, {n})"))
            .await
            .unwrap();
        w.disconnect().await.ok();
        let mut r = Conn::new(opts(&c.addr())).await.expect("connect to c");
        let row: Option<u32> = r
            .query_first(format!("SELECT v FROM s WHERE id = {n}"))
            .await
            .unwrap();
        r.disconnect().await.ok();
        stale += u32::from(row.is_none());
    }
    println!("without it: 100 writes through a, reads through c: {stale} stale");
    assert!(stale > 50, "only {stale} of 100 reads through c were stale");
}
