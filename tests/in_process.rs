//! Weiche run in the test's own process, as mini-redis' tests run their server: listeners bound
//! by the test on port 0, `server::run` on a thread of its own, stopped by a future the test
//! controls. For what needs no database: bad input at the door, and the stop.

use clap::Parser;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use weiche::config::{Cli, LoadedConfig};
use weiche::server::{self, Listeners};
use weiche::shared::Shared;

/// A Weiche whose backend refuses connections (nothing listens on its port).
fn start() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<Result<(), server::ServerError>>,
) {
    let cli = Cli::try_parse_from([
        "weiche",
        "--proxy-address",
        "127.0.0.1:0",
        "--proxy-backend-addresses",
        "127.0.0.1:1",
        "--user",
        "in_process:secret",
        "--event-threads",
        "1",
    ])
    .expect("flags");
    let config = LoadedConfig::load(cli).expect("config").config;
    let shared = Shared::new(config);
    let listeners = Listeners::bind(&shared.config()).expect("bind");
    let addr = listeners.proxy.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = std::thread::spawn(move || {
        server::run(shared, listeners, async move {
            let _ = stopped.await;
            "the test"
        })
    });
    (addr, stop, run)
}

#[test]
fn a_client_that_sends_garbage_gets_a_bad_handshake_error_and_weiche_stops_on_request() {
    let (addr, stop, run) = start();
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The greeting: a 4-byte header, then protocol version 10.
    let mut header = [0u8; 4];
    c.read_exact(&mut header).expect("greeting header");
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut greeting = vec![0u8; len];
    c.read_exact(&mut greeting).expect("greeting");
    assert_eq!(greeting[0], 10, "protocol version");
    // Not a login packet: an HTTP request.
    c.write_all(b"\x0e\x00\x00\x01GET / HTTP/1.0")
        .expect("send");
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    assert!(answer.len() > 7, "an ERR packet: {answer:?}");
    assert_eq!(answer[4], 0xff, "ERR: {answer:?}");
    let code = u16::from_le_bytes([answer[5], answer[6]]);
    assert_eq!(code, 1043, "ER_HANDSHAKE_ERROR: {answer:?}");
    assert!(
        String::from_utf8_lossy(&answer).contains("Bad handshake"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    stop.send(()).expect("stop");
    let result = run.join().expect("server thread");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is closed after the stop"
    );
}
