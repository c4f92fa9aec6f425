//! Authentication paths: users configured by hash only, clients that start with MySQL 8's
//! caching_sha2_password (fast and full authentication, RSA and TLS), and a backend account
//! that uses MariaDB's client_ed25519.

mod common;

use bytes::BytesMut;
use common::{app_password, app_user, opts, primary, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio::net::TcpStream;
use weiche::protocol::auth;
use weiche::protocol::caching_sha2;
use weiche::protocol::handshake::{Greeting, HandshakeResponse};
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

/// A raw MySQL 8 style login: caching_sha2_password from the first packet, answered with
/// `password`; returns the packets Weiche sent back.
async fn caching_sha2_login(addr: &str, password: &str) -> Vec<Vec<u8>> {
    let mut f = Framed::new(TcpStream::connect(addr).await.unwrap());
    let g = Greeting::decode(&f.read_packet(1 << 16).await.unwrap().payload).unwrap();
    let login = HandshakeResponse {
        capabilities: common::raw::BASE_CAPS & g.capabilities,
        mariadb_caps: 0,
        max_packet: 1 << 24,
        charset: 45,
        username: app_user().into_bytes(),
        auth_response: caching_sha2::scramble(password.as_bytes(), &g.scramble).to_vec(),
        database: Some(b"weiche".to_vec()),
        auth_plugin: Some(auth::CACHING_SHA2.to_vec()),
        connect_attrs: None,
        zstd_level: None,
    };
    let mut buf = BytesMut::new();
    login.encode(&mut buf);
    f.send(1, &buf).await.unwrap();
    let mut got = Vec::new();
    loop {
        let p = f.read_packet(1 << 16).await.unwrap();
        let last = p.payload[0] != 0x01;
        got.push(p.payload.to_vec());
        if last {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_starting_with_caching_sha2_logs_in_without_a_switch() {
    let w = Weiche::start();
    let got = caching_sha2_login(&w.addr(), &app_password()).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], [0x01, 0x03], "fast authentication success");
    assert_eq!(got[1][0], 0x00, "{:?}", String::from_utf8_lossy(&got[1]));
    let got = caching_sha2_login(&w.addr(), "wrong").await;
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0]).contains("Access denied"));
    assert!(w
        .log_text()
        .contains("caching_sha2_password: fast authentication"));
}

/// The mariadb CLI with caching_sha2_password (its plugin from libmariadb3), as a MySQL 8
/// client logs in.
fn cli_sha2(addr: &str, password: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--default-auth=caching_sha2_password", "-N", "-B"];
    args.extend_from_slice(extra);
    common::mariadb_cli(addr, &app_user(), password, &args, "SELECT CURRENT_USER()")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_full_authentication_over_rsa_and_tls_for_a_hash_only_user() {
    let mut root = root_on_primary().await;
    let hash: String = root
        .exec_first("SELECT PASSWORD(?)", (app_password(),))
        .await
        .unwrap()
        .unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sha2-auth");
    common::self_signed_cert(&dir);
    let file = dir.join("weiche.toml");
    std::fs::write(
        &file,
        format!(
            "[[backends]]\naddress = \"{}\"\n\n[[users]]\nname = \"{}\"\npassword_hash = \"{hash}\"\n\n\
             [tls]\ncert = \"{}/cert.pem\"\nkey = \"{}/key.pem\"\n",
            primary(),
            app_user(),
            dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    let ok = |o: &std::process::Output| {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success() && out.starts_with(&format!("{}@", app_user())),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    // Plain TCP: the password comes RSA-encrypted; then Weiche knows the digest.
    let w = Weiche::start_with(&["--config", file.to_str().unwrap()]);
    ok(&cli_sha2(&w.addr(), &app_password(), &["--skip-ssl"]));
    assert!(w
        .log_text()
        .contains("caching_sha2_password: full authentication with the RSA key exchange"));
    ok(&cli_sha2(&w.addr(), &app_password(), &["--skip-ssl"]));
    assert!(w
        .log_text()
        .contains("caching_sha2_password: fast authentication"));
    let o = cli_sha2(&w.addr(), "wrong", &["--skip-ssl"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("1045"));
    // Over TLS the password itself comes, encrypted by TLS.
    let w = Weiche::start_with(&["--config", file.to_str().unwrap()]);
    ok(&cli_sha2(&w.addr(), &app_password(), &["--ssl"]));
    assert!(w
        .log_text()
        .contains("caching_sha2_password: full authentication over TLS"));
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

/// `monitor.load_users`: accounts come from the primary's mysql.user, new ones work at once,
/// and their hashes never reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_read_from_the_primarys_mysql_user() {
    let mut root = root_on_primary().await;
    for user in ["weiche_loaded", "weiche_later"] {
        root.query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
            .await
            .unwrap();
    }
    root.query_drop("CREATE USER 'weiche_loaded'@'%' IDENTIFIED BY 'loaded-pw'")
        .await
        .unwrap();
    root.query_drop("GRANT SELECT ON weiche.* TO 'weiche_loaded'@'%'")
        .await
        .unwrap();
    let hash: String = root
        .query_first("SELECT PASSWORD('loaded-pw')")
        .await
        .unwrap()
        .unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("load-users-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "[[backends]]\naddress = \"{}\"\n\n[monitor]\nuser = \"monitor\"\n\
             password = \"monitor-secret\"\nload_users = true\n",
            primary()
        ),
    )
    .unwrap();
    let w = Weiche::start_with(&["--config", file.to_str().unwrap()]);
    let login = |user: &str, pw: &str| {
        mysql_async::OptsBuilder::from_opts(opts(&w.addr()))
            .user(Some(user.to_string()))
            .pass(Some(pw.to_string()))
            .db_name(None::<String>)
    };
    let mut c = Conn::new(login("weiche_loaded", "loaded-pw"))
        .await
        .expect("an account from mysql.user");
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("weiche_loaded@%"));
    let e = Conn::new(login("weiche_loaded", "wrong"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1045"), "{e}");
    // An account made after the start works at once (the table is read again on demand, at
    // most every 2 s).
    root.query_drop("CREATE USER 'weiche_later'@'%' IDENTIFIED BY 'later-pw'")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut c = Conn::new(login("weiche_later", "later-pw"))
        .await
        .expect("an account made after the start");
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some("weiche_later@%"));
    let log = w.log_text();
    assert!(log.contains("accounts read from mysql.user"), "{log}");
    assert!(!log.contains(&hash[1..]), "a password hash reached the log");
    for user in ["weiche_loaded", "weiche_later"] {
        root.query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
            .await
            .unwrap();
    }
}
