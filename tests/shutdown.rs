//! Graceful shutdown: on SIGTERM Weiche stops accepting, lets a running statement finish and
//! deliver its result, closes idle sessions, and exits.

mod common;

use common::{opts, Weiche};
use mysql_async::prelude::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_statement_finish() {
    let mut w = Weiche::start();
    let mut busy = mysql_async::Conn::new(opts(&w.addr())).await.unwrap();
    let mut idle = mysql_async::Conn::new(opts(&w.addr())).await.unwrap();
    let running = tokio::spawn(async move {
        let r: Option<i64> = busy.query_first("SELECT SLEEP(1.5) + 7").await.unwrap();
        r
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &w.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The statement in flight completes with its result.
    assert_eq!(running.await.unwrap(), Some(7));
    // The idle session was closed, and Weiche exits by itself.
    assert!(idle.query_drop("SELECT 1").await.is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!w.alive(), "Weiche did not exit after SIGTERM");
    let log = w.log_text();
    assert!(log.contains("SIGTERM: stopping"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

/// SIGTERM under load: writers keep a ledger of acknowledged inserts, readers check every result
/// they get is whole. Afterwards each acknowledged id is on the primary exactly once, no client
/// got half a result, and Weiche exited 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_keeps_every_acknowledged_write_and_whole_results() {
    use std::sync::{Arc, Mutex};
    let mut w = Weiche::start_split();
    let t = common::table("shutdown");
    let mut setup = mysql_async::Conn::new(opts(&w.addr())).await.unwrap();
    setup
        .query_drop(format!(
            "CREATE TABLE {t} (id INT PRIMARY KEY, pad VARCHAR(200) NOT NULL)"
        ))
        .await
        .unwrap();
    let rows: Vec<String> = (1..=2000)
        .map(|i| format!("({}, REPEAT('x', 200))", -i))
        .collect();
    setup
        .query_drop(format!("INSERT INTO {t} VALUES {}", rows.join(", ")))
        .await
        .unwrap();
    drop(setup);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acknowledged = Arc::new(Mutex::new(Vec::<i32>::new()));
    let mut tasks = Vec::new();
    for n in 0..6i32 {
        let (addr, t, acknowledged) = (w.addr(), t.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut c) = mysql_async::Conn::new(opts(&addr)).await else {
                return (0, 0);
            };
            let (mut whole, mut half) = (0u32, 0u32);
            for i in 0.. {
                if n < 4 {
                    let id = n * 1_000_000 + i;
                    match c
                        .query_drop(format!("INSERT INTO {t} VALUES ({id}, 'w')"))
                        .await
                    {
                        Ok(()) => acknowledged.lock().unwrap().push(id),
                        Err(_) => break,
                    }
                } else {
                    let r: Result<Vec<(i32, String)>, _> = c
                        .query(format!("SELECT id, pad FROM {t} WHERE id < 0"))
                        .await;
                    match r {
                        Ok(rows) if rows.len() == 2000 => whole += 1,
                        Ok(rows) => {
                            eprintln!("half a result: {} rows", rows.len());
                            half += 1;
                        }
                        Err(_) => break,
                    }
                }
            }
            (whole, half)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &w.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (mut whole, mut half) = (0, 0);
    for task in tasks {
        let (w, h) = task.await.unwrap();
        (whole, half) = (whole + w, half + h);
    }
    let deadline = Instant::now() + Duration::from_secs(35);
    while w.alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let code = w.exit_status().expect("Weiche exited after SIGTERM");
    assert!(code.success(), "exit status {code:?}");

    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut direct = mysql_async::Conn::new(opts(&common::primary()))
        .await
        .unwrap();
    let on_primary: Vec<i32> = direct
        .query(format!("SELECT id FROM {t} WHERE id >= 0"))
        .await
        .unwrap();
    let on_primary: std::collections::HashSet<i32> = on_primary.into_iter().collect();
    let lost = acknowledged
        .iter()
        .filter(|id| !on_primary.contains(id))
        .count();
    println!(
        "SIGTERM under load: {} acknowledged writes, {lost} lost; {whole} whole results, {half} half; exit {code:?}",
        acknowledged.len()
    );
    assert!(acknowledged.len() > 50, "the load ran");
    assert_eq!(lost, 0);
    assert_eq!(half, 0);
}
