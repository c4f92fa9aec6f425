//! `weiche --upgrade` against the sandbox: while clients connect, query and disconnect in a
//! loop (the PHP pattern) and one client keeps its connection, a second process takes the
//! listening sockets over through proxy.upgrade_socket and the first one stops. No connect is
//! refused, the kept client reconnects once and carries on, the old process exits on its own.

mod common;

use common::{opts, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_refuses_no_connect_and_the_old_process_leaves() {
    let dir = std::env::temp_dir().join(common::table("weiche-upgrade"));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("upgrade.sock");
    let path = Weiche::config_file(&format!(
        "[proxy]\nupgrade_socket = \"{}\"\n",
        socket.display()
    ));
    let path = path.to_str().unwrap().to_string();
    let mut old = Weiche::start_with(&["--config", &path]);
    let addr = old.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // The longest wait between two answered requests, in microseconds.
    let gap = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, gap, addr) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            gap.clone(),
            addr.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let answered = async {
                    let mut c = Conn::new(opts(&addr)).await?;
                    let one: Option<u32> = c.query_first("SELECT 1").await?;
                    c.disconnect().await?;
                    Ok::<_, mysql_async::Error>(one == Some(1))
                }
                .await;
                match answered {
                    Ok(true) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        gap.fetch_max(last.elapsed().as_micros() as u64, Ordering::Relaxed);
                        last = Instant::now();
                    }
                    Ok(false) | Err(_) => {
                        eprintln!("a request failed: {answered:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // A client that keeps its connection: closed between commands, it reconnects once.
    let mut kept = Conn::new(opts(&addr)).await.expect("connect");
    let _: Option<u32> = kept.query_first("SELECT 1").await.unwrap();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ok.load(Ordering::Relaxed);
    let started = Instant::now();
    let new = Weiche::start_with(&["--config", &path, "--upgrade"]);
    assert_eq!(
        new.addr(),
        addr,
        "the new process listens where the old one did"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.alive() {
        assert!(Instant::now() < deadline, "the old process did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(old.log_text().contains("upgrade"), "{}", old.log_text());
    assert!(old.exit_status().is_some_and(|s| s.success()));

    let answered = match kept.query_first::<u32, _>("SELECT 1").await {
        Ok(v) => v,
        Err(_) => {
            // Closed between commands, as a pooled connection may be at any time: reconnect.
            let mut again = Conn::new(opts(&addr)).await.expect("reconnect");
            again
                .query_first("SELECT 1")
                .await
                .expect("after reconnecting")
        }
    };
    assert_eq!(answered, Some(1));
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "upgrade: old process gone {took:?} after the new one started; {ok} requests answered \
         ({} after the upgrade began), {failed} failed, longest gap {:.1} ms",
        ok - before,
        gap.load(Ordering::Relaxed) as f64 / 1000.0
    );
    assert_eq!(failed, 0, "requests failed during the upgrade");
    assert!(
        ok > before,
        "no request was answered after the upgrade began"
    );
    drop(new);
    let _ = std::fs::remove_dir_all(&dir);
}
