//! The backend monitor and read consistency against private topologies (`common::topology`):
//! replicas whose replication stops, that die, hang or come back; a primary that is demoted,
//! a second writable server, a primary that dies mid-transaction; read-your-writes with lagging
//! replicas. Each test prints what it measured (detection and return times, read counts).

mod common;

use common::topology::{serialize, Topology};
use common::{opts, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// From `then` to the log line's own timestamp.
fn since(then: SystemTime, logged: Option<SystemTime>) -> Duration {
    logged
        .and_then(|l| l.duration_since(then).ok())
        .unwrap_or_default()
}

async fn port_of(c: &mut Conn, sql: &str) -> u16 {
    c.query_first::<u16, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row")
}

/// Readers that run `SELECT @@port` in a loop through Weiche (half of them as a prepared
/// statement), noting each answer (or error) with when it started and how long it took.
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Read>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Clone)]
struct Read {
    start: Instant,
    took: Duration,
    port: Result<u16, String>,
}

impl Load {
    async fn start(w: &Weiche, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (stop, log, addr) = (stop.clone(), log.clone(), w.addr());
            let mut c = Conn::new(opts(&addr))
                .await
                .expect("connect through weiche");
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let r = c.query_first::<u16, _>("SELECT @@port").await;
                    let port = match r {
                        Ok(Some(p)) => Ok(p),
                        Ok(None) => Err("no row".to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    let failed = port.is_err();
                    log.lock().unwrap().push(Read {
                        start,
                        took: start.elapsed(),
                        port,
                    });
                    if failed {
                        // The session may be gone: start a new one.
                        if let Ok(n) = Conn::new(opts(&addr)).await {
                            c = n;
                        }
                    }
                }
            }));
        }
        Load { stop, log, tasks }
    }

    fn reads(&self) -> Vec<Read> {
        self.log.lock().unwrap().clone()
    }

    async fn wait_for_port(&self, port: u16, since: Instant, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.start >= since && r.port == Ok(port))
                .map(|r| r.start + r.took)
                .min();
            if found.is_some() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    async fn finish(self) -> Vec<Read> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("reader");
        }
        self.log.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_sql_thread_stops_leaves_the_rotation_and_returns() {
    let _one = serialize().await;
    let topo = Topology::start("sqlthread", 24310);
    let (a, b) = (topo.base + 1, topo.base + 2);
    // The default interval (0.5 s): "back within two intervals" is measured against it.
    let w = topo.weiche("");
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    c.query_drop("CREATE TABLE mon (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();

    let stopped = SystemTime::now();
    topo.root(1, "STOP SLAVE SQL_THREAD").await;
    let lagging = format!("127.0.0.1:{a}: up -> lagging (SQL thread stopped)");
    w.wait_log(&lagging, Duration::from_secs(5))
        .await
        .expect("replica A marked lagging");
    c.query_drop("INSERT INTO mon VALUES (1, 1)").await.unwrap();
    for _ in 0..40 {
        assert_eq!(
            port_of(&mut c, "SELECT @@port").await,
            b,
            "a read went to A"
        );
    }

    topo.root(1, "START SLAVE SQL_THREAD").await;
    let started = Instant::now();
    loop {
        // A new session each time: one session's reads stay where they are for a while
        // (route::AFFINITY); where new sessions go shows the rotation.
        let mut probe = Conn::new(opts(&w.addr())).await.expect("connect");
        let at = port_of(
            &mut probe,
            "/* weiche:consistency=eventual */ SELECT @@port",
        )
        .await;
        let _ = probe.disconnect().await;
        if at == a {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "A not back in the rotation within two monitor intervals (1 s)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "SQL thread stopped -> out of rotation in {:?}; started -> back in {:?}",
        since(stopped, w.log_time(0, &lagging)),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_costs_no_reads_and_rejoins() {
    let _one = serialize().await;
    let topo = Topology::start("killed", 24320);
    let a = topo.base + 1;
    let w = topo.weiche("[monitor]\ninterval = 0.2\ntimeout = 0.5\n");
    let load = Load::start(&w, 50).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let killed = SystemTime::now();
    topo.kill(1);
    let went_down = format!("127.0.0.1:{a}: up -> down");
    let down = w
        .wait_log(&went_down, Duration::from_secs(5))
        .await
        .expect("A marked down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reads = load.reads();
    let errors: Vec<&Read> = reads.iter().filter(|r| r.port.is_err()).collect();
    let in_flight_at_kill = 50;
    assert!(
        errors.len() <= in_flight_at_kill,
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let late: Vec<&&Read> = errors.iter().filter(|r| r.start > down).collect();
    assert!(late.is_empty(), "errors after A was down: {late:?}");

    let restarting = Instant::now();
    let restarting_at = SystemTime::now();
    topo.restart_missing();
    let restarted = restarting.elapsed();
    let back = load
        .wait_for_port(a, restarting, Duration::from_secs(15))
        .await
        .expect("A serves reads again after its restart");
    let came_up = format!("127.0.0.1:{a}: down -> up");
    w.wait_log(&came_up, Duration::from_secs(1))
        .await
        .expect("A logged back up");
    let reads = load.finish().await;
    let total = reads.len();
    let errors = reads.iter().filter(|r| r.port.is_err()).count();
    println!(
        "SIGKILL -> down in {:?}; restart begun -> up in {:?}, serving reads in {:?} \
         (the restart itself took {:?}); {total} reads, {errors} errors",
        since(killed, w.log_time(0, &went_down)),
        since(restarting_at, w.log_time(0, &came_up)),
        back.saturating_duration_since(restarting),
        restarted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_is_skipped_within_the_monitor_timeout() {
    let _one = serialize().await;
    let topo = Topology::start("hung", 24330);
    let a = topo.base + 1;
    let w =
        topo.weiche("[routing]\nquery_timeout = 3\n\n[monitor]\ninterval = 0.2\ntimeout = 0.5\n");
    let load = Load::start(&w, 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stopped = SystemTime::now();
    topo.signal(1, "STOP");
    let went_down = format!("127.0.0.1:{a}: up -> down");
    let down = w
        .wait_log(&went_down, Duration::from_secs(5))
        .await
        .expect("A marked down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    topo.signal(1, "CONT");
    let resumed = Instant::now();
    let back = load
        .wait_for_port(a, resumed, Duration::from_secs(10))
        .await;
    let reads = load.finish().await;

    let errors: Vec<&Read> = reads.iter().filter(|r| r.port.is_err()).collect();
    assert!(errors.is_empty(), "reads failed: {errors:?}");
    let slowest = reads.iter().map(|r| r.took).max().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(3),
        "a read waited {slowest:?}"
    );
    // Once A is down, reads no longer wait for it.
    let after = reads
        .iter()
        .filter(|r| r.start > down + Duration::from_millis(150) && r.start < resumed)
        .map(|r| r.took)
        .max()
        .unwrap_or_default();
    assert!(
        after < Duration::from_millis(500),
        "a read after A was down took {after:?}"
    );
    assert!(back.is_some(), "A did not come back after SIGCONT");
    println!(
        "SIGSTOP -> down in {:?}; slowest read {slowest:?}; SIGCONT -> serving in {:?}; {} reads",
        since(stopped, w.log_time(0, &went_down)),
        back.map(|b| b.saturating_duration_since(resumed)),
        reads.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_primary_and_are_refused_without_exactly_one() {
    let _one = serialize().await;
    let topo = Topology::start("failover", 24340);
    let (p, a) = (topo.base, topo.base + 1);
    let w = topo.weiche("[monitor]\ninterval = 0.2\ntimeout = 0.5\n");
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    c.query_drop("CREATE TABLE f (id INT PRIMARY KEY, port INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO f VALUES (1, @@port)")
        .await
        .unwrap();

    // An operator promotes A: the old primary turns read-only, A stops replicating and writes.
    let mark = w.log_mark();
    let promoted = SystemTime::now();
    topo.root(0, "SET GLOBAL read_only = 1").await;
    topo.root(1, "STOP SLAVE; SET GLOBAL read_only = 0").await;
    let moved = format!("writes now go to 127.0.0.1:{a}");
    w.wait_log_after(mark, &moved, Duration::from_secs(5))
        .await
        .expect("writes moved to A");
    c.query_drop("INSERT INTO f VALUES (2, @@port)")
        .await
        .unwrap();
    let mut direct = Conn::new(topo.root_opts(1)).await.unwrap();
    let port: Option<u16> = direct
        .query_first("SELECT port FROM weiche.f WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(port, Some(a), "the write after the promotion ran on A");

    // Both writable: writes refused with a clear error, reads go on.
    let mark = w.log_mark();
    topo.root(0, "SET GLOBAL read_only = 0").await;
    w.wait_log_after(mark, "two primaries", Duration::from_secs(5))
        .await
        .expect("two primaries noticed");
    let err = c
        .query_drop("INSERT INTO f VALUES (3, @@port)")
        .await
        .expect_err("a write with two primaries");
    assert!(
        err.to_string().contains(&format!(
            "two primaries: 127.0.0.1:{p} and 127.0.0.1:{a}; refusing writes"
        )),
        "{err}"
    );
    let n: Option<u32> = c.query_first("SELECT COUNT(*) FROM f").await.unwrap();
    assert!(n.is_some());

    // Back to one primary (A); a transaction in flight when A dies gets an error and is not
    // replayed anywhere; then, with no primary, writes fail at once and reads go on.
    topo.root(0, "SET GLOBAL read_only = 1").await;
    let was_two = format!("writes now go to 127.0.0.1:{a} (were: 127.0.0.1:{p} and 127.0.0.1:{a})");
    w.wait_log_after(mark, &was_two, Duration::from_secs(5))
        .await
        .expect("A is the only primary again");
    let mut t = Conn::new(opts(&w.addr())).await.unwrap();
    t.query_drop("BEGIN").await.unwrap();
    t.query_drop("INSERT INTO f VALUES (10, @@port)")
        .await
        .unwrap();
    let before_kill = w.log_mark();
    topo.kill(1);
    let commit = t.query_drop("COMMIT").await;
    assert!(commit.is_err(), "COMMIT on a dead primary must fail");
    w.wait_log_after(before_kill, "no primary (", Duration::from_secs(5))
        .await
        .expect("no primary noticed");
    let started = Instant::now();
    let err = c
        .query_drop("INSERT INTO f VALUES (4, @@port)")
        .await
        .expect_err("a write without a primary");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the refusal took {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("no primary"), "{err}");
    let n: Option<u32> = c
        .query_first("SELECT COUNT(*) FROM f WHERE id = 10")
        .await
        .expect("reads go on without a primary");
    assert_eq!(n, Some(0), "the lost transaction was replayed somewhere");
    println!(
        "promotion noticed in {:?}",
        since(promoted, w.log_time(0, &moved))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_timeout_ends_the_statement_and_keeps_the_session() {
    // The shared sandbox: nothing here changes a server.
    let w = Weiche::start_config("[routing]\nquery_timeout = 1\n");
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    let started = Instant::now();
    let err = c
        .query_drop("SELECT SLEEP(7) AS weiche_timeout_probe")
        .await
        .expect_err("the statement outlives the query timeout");
    let took = started.elapsed();
    assert!(err.to_string().contains("routing.query_timeout"), "{err}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1800),
        "the error came after {took:?}"
    );
    // Not retried, the session goes on, and the statement was killed on its backend.
    assert_eq!(port_of(&mut c, "SELECT 1").await, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for addr in common::replicas() {
        let mut d = Conn::new(opts(&addr)).await.unwrap();
        let running: Vec<String> = d
            .query(
                "SELECT INFO FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE 'SELECT SLEEP(7)%' AND COMMAND = 'Query'",
            )
            .await
            .unwrap();
        assert!(running.is_empty(), "still running on {addr}: {running:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_inherits_a_global_wait_timeout_set_on_the_server() {
    // A private primary: a global wait_timeout of 2 s would close the shared sandbox's clients.
    let _one = serialize().await;
    let topo = Topology::start("waittimeout", 24360);
    let w = topo.weiche("[monitor]\ninterval = 0.2\n");
    // A pooled connection from before the change exists.
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    c.query_drop("DO 1").await.unwrap();
    c.disconnect().await.unwrap();
    // Another client (not through Weiche) changes the global, on every server (the replicas
    // serve the SELECT below).
    for n in 0..3 {
        topo.root(n, "SET GLOBAL wait_timeout = 2").await;
    }
    // Weiche sees the change within a few monitor checks.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for addr in [topo.addr(0), w.addr()] {
        let mut c = Conn::new(opts(&addr)).await.expect("connect");
        let v: u32 = c
            .query_first("SELECT @@wait_timeout")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, 2, "{addr}: a new session starts from the new global");
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let e = c.query_drop("SELECT 1").await.expect_err(&format!(
            "{addr}: the session outlived the global wait_timeout"
        ));
        assert!(
            !matches!(e, mysql_async::Error::Server(_)),
            "{addr}: a lost connection, not an ERR: {e:?}"
        );
    }
    for n in 0..3 {
        topo.root(n, "SET GLOBAL wait_timeout = 28800").await;
    }
}
