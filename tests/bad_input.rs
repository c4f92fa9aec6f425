//! Hostile and broken clients: each gets an ERR or a closed socket, Weiche logs it, and a
//! session running queries in parallel is not disturbed.

mod common;

use common::raw::{is_err, Raw};
use common::{app_password, app_user, opts, Weiche};
use mysql_async::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read whatever the server sends until it closes or 5 s pass.
async fn drain(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => panic!("Weiche kept the connection open; got {} bytes", all.len()),
        }
    }
}

/// The ERR packet after the greeting, if any.
fn err_after_greeting(bytes: &[u8]) -> Option<String> {
    let glen = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0]) as usize;
    let rest = bytes.get(4 + glen..)?;
    let payload = rest.get(4..)?;
    is_err(payload).then(|| String::from_utf8_lossy(&payload[9..]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_do_not_disturb_a_working_session() {
    let w = Weiche::start();
    let addr = w.addr();

    // A session that keeps running queries while the bad clients come and go.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (stop, done, addr) = (stop.clone(), done.clone(), addr.clone());
        tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts(&addr)).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let v: Option<i64> = c.query_first("SELECT 40 + 2").await.unwrap();
                assert_eq!(v, Some(42));
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // 1. A load balancer's TCP check: connect and close at once, 1,000 times.
    for _ in 0..1000 {
        drop(TcpStream::connect(&addr).await.unwrap());
    }

    // 2. Garbage instead of a login (an HTTP request).
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = drain(&mut s).await;
    let msg = err_after_greeting(&got).expect("an ERR for garbage");
    assert!(msg.contains("Bad handshake"), "{msg}");

    // 3. A small packet that is not a valid login.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[5, 0, 0, 1, 1, 2, 3, 4, 5]).await.unwrap();
    let msg = err_after_greeting(&drain(&mut s).await).expect("an ERR for a broken login");
    assert!(msg.contains("Bad handshake"), "{msg}");

    // 4. A packet that announces 16 MiB and then the client goes away.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 1, b'x', b'y'])
        .await
        .unwrap();
    drop(s);

    // ... and the same after logging in, as a command.
    let mut r = Raw::login(&addr, &app_user(), &app_password(), 0).await;
    r.f.io
        .write_all(&[0xff, 0xff, 0xff, 0, 3, b'S'])
        .await
        .unwrap();
    drop(r);

    // 5. A wrong password and an unknown user.
    let wrong = mysql_async::OptsBuilder::from_opts(opts(&addr)).pass(Some("wrong"));
    let e = mysql_async::Conn::new(wrong).await.unwrap_err().to_string();
    assert!(
        e.contains("1045") && e.contains(&format!("Access denied for user '{}'", app_user())),
        "{e}"
    );
    let nobody = mysql_async::OptsBuilder::from_opts(opts(&addr)).user(Some("nobody"));
    let e = mysql_async::Conn::new(nobody)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1045") && e.contains("'nobody'"), "{e}");

    // 6. A command byte that does not exist: ERR 1047, and the session goes on.
    let mut r = Raw::login(&addr, &app_user(), &app_password(), 0).await;
    r.send(&[0x63, 1, 2, 3]).await;
    let p = r.read().await;
    assert!(is_err(&p.payload), "{:?}", p.payload);
    assert_eq!(u16::from_le_bytes([p.payload[1], p.payload[2]]), 1047);
    r.send(&[14]).await; // COM_PING
    assert_eq!(r.read().await.payload.first(), Some(&0));
    // An empty command packet.
    r.send(&[]).await;
    assert!(is_err(&r.read().await.payload));
    r.send(&[14]).await;
    assert_eq!(r.read().await.payload.first(), Some(&0));
    // Replication commands are not relayed.
    r.send(&[18, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]).await;
    assert!(is_err(&r.read().await.payload));

    stop.store(true, Ordering::Relaxed);
    worker.await.expect("the parallel session saw no error");
    assert!(done.load(Ordering::Relaxed) > 0);

    // Weiche is alive, accepts new sessions, and logged each bad client.
    let mut c = mysql_async::Conn::new(opts(&addr)).await.unwrap();
    let v: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(v, Some(1));
    let log = w.log_text();
    assert!(log.contains("Bad handshake"), "{log}");
    assert!(log.contains("Access denied for user 'nobody'"), "{log}");
    assert!(
        log.contains("refused a command Weiche does not relay"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// A dead backend at login: the mariadb CLI (Connector/C) shows Weiche's error. It reads an ERR
/// with a client-side code (2003) as "Received malformed packet", so Weiche uses server codes.
#[test]
fn the_mariadb_cli_reads_the_error_for_an_unreachable_backend() {
    let user = format!("{}:{}", app_user(), app_password());
    let w = Weiche::start_with(&["-b", "127.0.0.1:1", "--user", &user]);
    let out = common::mariadb_cli(&w.addr(), &app_user(), &app_password(), &[], "SELECT 1");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("ERROR 1429") && text.contains("Weiche:") && !text.contains("malformed"),
        "{text}"
    );
}
