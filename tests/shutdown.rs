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
