//! `[limits]`: each limit refuses with MariaDB's error code and a clear message, counts in
//! `weiche_limit_refusals_total`, and gives its place back when the client goes.

mod common;

use common::{http_get, listening_port, opts, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HTTP: &str = "[http]\naddress = \"127.0.0.1:0\"\n";

/// The value of `weiche_limit_refusals_total{limit="name"}`.
fn refusals(w: &Weiche, name: &str) -> u64 {
    let (status, body) = http_get(listening_port(w, "http interface listening"), "/metrics");
    assert_eq!(status, 200);
    let needle = format!("weiche_limit_refusals_total{{limit=\"{name}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {needle} in /metrics"))
}

/// Everything the server sends until it closes (or 5 s pass).
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    all
}

/// The first packet a fresh connection receives: a greeting (0x0a) or an ERR's text.
async fn first_packet(addr: &str) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.expect("packet header");
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.expect("packet");
    (s, payload)
}

fn err_code(p: &[u8]) -> Option<u16> {
    (p.len() > 3 && p[0] == 0xff).then(|| u16::from_le_bytes([p[1], p[2]]))
}

fn is_greeting(p: &[u8]) -> bool {
    p.iter().next() == Some(&0x0a)
}

#[tokio::test]
async fn too_many_connections_get_err_1040_until_one_leaves() {
    let w = Weiche::start_config(&format!("{HTTP}[limits]\nmax_connections = 3\n"));
    let mut held = Vec::new();
    for _ in 0..3 {
        let (s, p) = first_packet(&w.addr()).await;
        assert!(is_greeting(&p), "expected a greeting");
        held.push(s);
    }
    let (_, p) = first_packet(&w.addr()).await;
    assert_eq!(err_code(&p), Some(1040), "{}", String::from_utf8_lossy(&p));
    assert!(String::from_utf8_lossy(&p).contains("Too many connections"));
    assert_eq!(refusals(&w, "max_connections"), 1);
    held.pop();
    // The slot comes back once Weiche has seen the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, p) = first_packet(&w.addr()).await;
        if is_greeting(&p) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_user_over_its_session_limit_gets_err_1203() {
    let w = Weiche::start_config(&format!("{HTTP}[limits]\nmax_user_connections = 2\n"));
    let a = Conn::new(opts(&w.addr())).await.expect("first session");
    let _b = Conn::new(opts(&w.addr())).await.expect("second session");
    let e = Conn::new(opts(&w.addr()))
        .await
        .expect_err("a third session");
    let e = e.to_string();
    assert!(
        e.contains("1203") && e.contains("max_user_connections"),
        "{e}"
    );
    // Another user has its own count.
    let root = mysql_async::OptsBuilder::from_opts(opts(&w.addr()))
        .user(Some("root"))
        .pass(None::<String>);
    Conn::new(root)
        .await
        .expect("root is not app")
        .disconnect()
        .await
        .ok();
    a.disconnect().await.expect("disconnect");
    let mut c = None;
    for _ in 0..100 {
        if let Ok(conn) = Conn::new(opts(&w.addr())).await {
            c = Some(conn);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = c.expect("a session after one ended");
    assert_eq!(c.query_first::<u8, _>("SELECT 1").await.unwrap(), Some(1));
    assert_eq!(refusals(&w, "max_user_connections"), 1);
}

#[tokio::test]
async fn a_silent_or_trickling_client_is_dropped_after_the_login_timeout() {
    let w = Weiche::start_config(&format!("{HTTP}[limits]\nlogin_timeout = 1\n"));
    let started = Instant::now();
    let (mut silent, p) = first_packet(&w.addr()).await;
    assert!(is_greeting(&p));
    let (mut trickle, _) = first_packet(&w.addr()).await;
    let trickler = tokio::spawn(async move {
        // One byte of a login packet every 300 ms, until Weiche closes.
        for b in [
            0x40u8, 0, 0, 1, 0x85, 0xa6, 0x0f, 0, 0, 0, 0, 1, 0x21, 0, 0, 0,
        ] {
            if trickle.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        read_all(&mut trickle).await
    });
    assert!(
        read_all(&mut silent).await.is_empty(),
        "the silent client got data"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "dropped after {elapsed:?}"
    );
    assert!(trickler.await.unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(refusals(&w, "login_timeout"), 2);
}

#[tokio::test]
async fn an_idle_session_is_closed_after_the_idle_timeout() {
    let w = Weiche::start_config(&format!("{HTTP}[limits]\nidle_timeout = 1\n"));
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    assert_eq!(c.query_first::<u8, _>("SELECT 1").await.unwrap(), Some(1));
    // Busy sessions are not idle: commands 0.5 s apart for 2 s keep it open.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.query_drop("DO 1")
            .await
            .expect("a session in use stays open");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        c.query_drop("DO 1").await.is_err(),
        "the idle session is still open"
    );
    assert_eq!(refusals(&w, "idle_timeout"), 1);
    assert!(w.log_text().contains("limits.idle_timeout"));
}

#[tokio::test]
async fn prepared_statements_beyond_the_limit_get_err_1461() {
    let w = Weiche::start_config(&format!("{HTTP}[limits]\nmax_prepared_statements = 3\n"));
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    let mut stmts = Vec::new();
    for i in 0..3 {
        stmts.push(c.prep(format!("SELECT {i}, ?")).await.expect("prepare"));
    }
    let e = c.prep("SELECT 3, ?").await.expect_err("a fourth statement");
    assert!(e.to_string().contains("1461"), "{e}");
    // The session goes on, and closing one statement makes room.
    let first = stmts.remove(0);
    c.close(first).await.expect("close");
    let s = c.prep("SELECT 4, ?").await.expect("prepare after a close");
    let r: Option<(u8, u8)> = c.exec_first(&s, (7,)).await.unwrap();
    assert_eq!(r, Some((4, 7)));
    assert_eq!(refusals(&w, "max_prepared_statements"), 1);
}

#[tokio::test]
async fn an_account_with_many_failed_logins_is_refused_from_there_for_a_while() {
    let w = Weiche::start_config(&format!(
        "{HTTP}[limits]\nmax_failed_logins = 3\nfailed_login_window = 2\n"
    ));
    let wrong = mysql_async::OptsBuilder::from_opts(opts(&w.addr())).pass(Some("wrong"));
    for _ in 0..3 {
        let e = Conn::new(wrong.clone()).await.expect_err("wrong password");
        assert!(e.to_string().contains("1045"), "{e}");
    }
    // Now even the right password is refused for that account from this address.
    let e = Conn::new(opts(&w.addr())).await.expect_err("blocked");
    assert!(e.to_string().contains("1129"), "{e}");
    assert!(e.to_string().contains("failed logins"), "{e}");
    assert!(refusals(&w, "max_failed_logins") >= 1);
    // After the window it may try again, and a good login clears the count.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut c = Conn::new(opts(&w.addr())).await.expect("after the window");
    assert_eq!(c.query_first::<u8, _>("SELECT 1").await.unwrap(), Some(1));
}
