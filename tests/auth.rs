//! Authentication paths: users configured by hash only, a client that starts with MySQL 8's
//! caching_sha2_password, and a backend account that uses MariaDB's client_ed25519.

mod common;

use bytes::BytesMut;
use common::{app_password, app_user, opts, primary, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio::net::TcpStream;
use weiche::protocol::auth;
use weiche::protocol::handshake::{AuthSwitch, Greeting, HandshakeResponse};
use weiche::protocol::Framed;

async fn root_on_primary() -> Conn {
    let (host, port) = common::host_port(&primary());
    let o = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false);
    Conn::new(o).await.expect("root on the primary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_configured_by_hash_only() {
    let mut root = root_on_primary().await;
    let hash: String = root
        .exec_first("SELECT PASSWORD(?)", (app_password(),))
        .await
        .unwrap()
        .unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("hash-only-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        format!("[[backends]]\naddress = \"{}\"\n\n[[users]]\nname = \"{}\"\npassword_hash = \"{hash}\"\n", primary(), app_user()),
    )
    .unwrap();
    let w = Weiche::start_with(&["--config", file.to_str().unwrap()]);
    let mut c = Conn::new(opts(&w.addr()))
        .await
        .expect("login with a hash-only user");
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert!(who.unwrap().starts_with(&format!("{}@", app_user())));
    let wrong = mysql_async::OptsBuilder::from_opts(opts(&w.addr())).pass(Some("nope"));
    assert!(Conn::new(wrong)
        .await
        .unwrap_err()
        .to_string()
        .contains("1045"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_starting_with_caching_sha2_is_switched_to_native_password() {
    let w = Weiche::start();
    let mut f = Framed::new(TcpStream::connect(w.addr()).await.unwrap());
    let g = Greeting::decode(&f.read_packet(1 << 16).await.unwrap().payload).unwrap();
    let login = HandshakeResponse {
        capabilities: common::raw::BASE_CAPS & g.capabilities,
        max_packet: 1 << 24,
        charset: 45,
        username: app_user().into_bytes(),
        auth_response: vec![1; 32], // a caching_sha2_password scramble Weiche cannot check
        database: Some(b"weiche".to_vec()),
        auth_plugin: Some(auth::CACHING_SHA2.to_vec()),
        connect_attrs: None,
    };
    let mut buf = BytesMut::new();
    login.encode(&mut buf);
    f.send(1, &buf).await.unwrap();
    let p = f.read_packet(1 << 16).await.unwrap();
    let switch = AuthSwitch::decode(&p.payload).expect("an auth switch request");
    assert_eq!(switch.plugin, auth::NATIVE_PASSWORD);
    let answer = auth::native_response(&auth::stage1(app_password().as_bytes()), &switch.data);
    f.send(p.seq.wrapping_add(1), &answer).await.unwrap();
    let ok = f.read_packet(1 << 16).await.unwrap();
    assert_eq!(
        ok.payload[0],
        0,
        "{:?}",
        String::from_utf8_lossy(&ok.payload)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_account_with_client_ed25519() {
    let mut root = root_on_primary().await;
    // Kept out of the binary log: the replicas have no ed25519 plugin loaded.
    root.query_drop("SET SESSION sql_log_bin = 0")
        .await
        .unwrap();
    let loaded: Option<String> = root
        .query_first(
            "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ed25519'",
        )
        .await
        .unwrap();
    if loaded.is_none() {
        root.query_drop("INSTALL SONAME 'auth_ed25519'")
            .await
            .unwrap();
    }
    for host in ["%", "localhost"] {
        root.query_drop(format!("CREATE OR REPLACE USER 'weiche_ed'@'{host}' IDENTIFIED VIA ed25519 USING PASSWORD('ed-secret')"))
            .await
            .unwrap();
        root.query_drop(format!("GRANT ALL ON weiche.* TO 'weiche_ed'@'{host}'"))
            .await
            .unwrap();
    }
    let w = Weiche::start_with(&["-b", &primary(), "--user", "weiche_ed:ed-secret"]);
    let o = mysql_async::OptsBuilder::from_opts(opts(&w.addr()))
        .user(Some("weiche_ed"))
        .pass(Some("ed-secret"));
    let mut c = Conn::new(o)
        .await
        .expect("login through Weiche to an ed25519 account");
    let who: String = c
        .query_first("SELECT CURRENT_USER()")
        .await
        .unwrap()
        .unwrap();
    assert!(who.starts_with("weiche_ed@"), "{who}");
    c.disconnect().await.unwrap();
    for host in ["%", "localhost"] {
        root.query_drop(format!("DROP USER 'weiche_ed'@'{host}'"))
            .await
            .unwrap();
    }
}
