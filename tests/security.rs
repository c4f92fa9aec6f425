//! Attacks on identity, privileges and limits through Weiche, each as security review 2
//! (docs/security.md) describes it, against the real sandbox: COM_CHANGE_USER past the login's
//! checks, one host entry's password opening another's privileges, revoked accounts, guesses
//! raced past the failed-login limit, and garbage from a shared address locking out an
//! application. (KILL without the privilege is in tests/session_life.rs.)

mod common;

use common::raw::Raw;
use common::{admin_opts, admin_port, host_port, opts, primary, table, PrivateUser, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str =
    "[admin]\naddress = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"admin-secret\"\n";

fn declared(u: &PrivateUser, extra: &str) -> String {
    format!(
        "[[users]]\nname = \"{}\"\npassword = \"{}\"\n{extra}\n",
        u.name, u.password
    )
}

fn as_user(addr: &str, user: &str, password: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::from_opts(opts(addr))
        .user(Some(user.to_string()))
        .pass(Some(password.to_string()))
        .db_name(None::<String>)
        .into()
}

fn code(p: &[u8]) -> Option<u16> {
    (p.first() == Some(&0xff) && p.len() >= 3).then(|| u16::from_le_bytes([p[1], p[2]]))
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

async fn root() -> Conn {
    let (host, port) = host_port(&primary());
    Conn::new(
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some("root"))
            .prefer_socket(false),
    )
    .await
    .expect("root on the primary")
}

/// Whether the connection was closed (EOF within a second).
async fn closed(r: &mut Raw) -> bool {
    tokio::time::timeout(Duration::from_secs(1), r.f.read_packet(1 << 16))
        .await
        .is_ok_and(|p| p.is_err())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_cannot_skip_require_tls() {
    let plain = PrivateUser::new("cu_plain");
    let sec = PrivateUser::new("cu_sec");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(table("cu_tls"));
    common::self_signed_cert(&dir);
    let w = Weiche::start_primary_config(&format!(
        "{}{}[tls]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n",
        declared(&plain, ""),
        declared(&sec, "require_tls = true"),
        d = dir.display()
    ));
    // A direct plain login as sec is refused...
    let e = Conn::new(as_user(&w.addr(), &sec.name, &sec.password))
        .await
        .expect_err("require_tls");
    assert_eq!(server_code(&e), Some(3159), "{e}");
    // ...and so is a change to sec on a plain connection, which then closes.
    let mut r = Raw::login(&w.addr(), &plain.name, &plain.password, 0).await;
    let p = r.change_user(&plain.name, &plain.password).await;
    assert_eq!(
        p.as_slice().first(),
        Some(&0),
        "a change to a plain user works"
    );
    let p = r.change_user(&sec.name, &sec.password).await;
    assert_eq!(code(&p), Some(3159), "{:?}", String::from_utf8_lossy(&p));
    assert!(closed(&mut r).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_runs_the_scripts_read_auth() {
    let a = PrivateUser::new("cu_lua_a");
    let b = PrivateUser::new("cu_lua_b");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let script = dir.join(format!("deny-{}.lua", table("lua")));
    std::fs::write(
        &script,
        format!(
            "function read_auth()\n\
             if proxy.connection.client.username == '{}' then\n\
             proxy.response = {{ type = proxy.MYSQLD_PACKET_ERR, errcode = 1045,\n\
             errmsg = 'not allowed through this proxy' }}\n\
             return proxy.PROXY_SEND_RESULT\nend\nend\n",
            b.name
        ),
    )
    .unwrap();
    let ua = format!("{}:{}", a.name, a.password);
    let ub = format!("{}:{}", b.name, b.password);
    let w = Weiche::start_script(script.to_str().unwrap(), &["--user", &ua, "--user", &ub]);
    let e = Conn::new(as_user(&w.addr(), &b.name, &b.password))
        .await
        .expect_err("the script refuses b");
    assert!(e.to_string().contains("not allowed"), "{e}");
    let mut r = Raw::login(&w.addr(), &a.name, &a.password, 0).await;
    let p = r.change_user(&b.name, &b.password).await;
    assert_eq!(code(&p), Some(1045), "{:?}", String::from_utf8_lossy(&p));
    assert!(String::from_utf8_lossy(&p).contains("not allowed"));
    assert!(closed(&mut r).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_guesses_count_as_failed_logins() {
    let u = PrivateUser::new("cu_guess");
    let w = Weiche::start_primary_config(&format!(
        "{}[limits]\nmax_failed_logins = 3\n",
        declared(&u, "")
    ));
    for _ in 0..3 {
        let mut r = Raw::login(&w.addr(), &common::app_user(), &common::app_password(), 0).await;
        let p = r.change_user(&u.name, "wrong").await;
        assert_eq!(code(&p), Some(1045), "{:?}", String::from_utf8_lossy(&p));
    }
    // The right password is not told now, by either way in.
    let mut r = Raw::login(&w.addr(), &common::app_user(), &common::app_password(), 0).await;
    let p = r.change_user(&u.name, &u.password).await;
    assert_eq!(code(&p), Some(1129), "{:?}", String::from_utf8_lossy(&p));
    let e = Conn::new(as_user(&w.addr(), &u.name, &u.password))
        .await
        .expect_err("blocked");
    assert_eq!(server_code(&e), Some(1129), "{e}");
    // Other accounts from the same address are not locked out.
    Conn::new(opts(&w.addr()))
        .await
        .expect("the application logs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_at_once_get_no_more_answers_than_the_limit() {
    let u = PrivateUser::new("race");
    let w = Weiche::start_primary_config(&format!(
        "{}[limits]\nmax_failed_logins = 20\n",
        declared(&u, "")
    ));
    let addr = w.addr();
    let mut tasks = Vec::new();
    for n in 0..100 {
        let o = as_user(&addr, &u.name, &format!("guess-{n}"));
        tasks.push(tokio::spawn(async move { Conn::new(o).await.err() }));
    }
    let (mut denied, mut blocked) = (0, 0);
    for t in tasks {
        match t.await.unwrap().as_ref().and_then(server_code) {
            Some(1045) => denied += 1,
            Some(1129) => blocked += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    println!("100 guesses at once: {denied} answered, {blocked} blocked");
    assert!(
        denied <= 20,
        "{denied} guesses were answered, the limit is 20"
    );
    assert_eq!(denied + blocked, 100);
    let e = Conn::new(as_user(&addr, &u.name, &u.password))
        .await
        .expect_err("the account is blocked from here");
    assert_eq!(server_code(&e), Some(1129));
    Conn::new(opts(&addr))
        .await
        .expect("the application is not");
}

/// A TCP connection that sends garbage instead of a login.
async fn garbage(addr: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut first = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut first))
        .await
        .expect("first packet")
        .unwrap();
    first.truncate(n);
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    first
}

/// The first packet's payload is an ERR with this code.
fn first_is(p: &[u8], c: u16) -> bool {
    p.len() > 7 && code(&p[4..]) == Some(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_shared_address_cannot_lock_out_the_application() {
    let w = Weiche::start_primary_config(&format!(
        "{ADMIN}[limits]\nmax_handshake_errors = 5\nmax_failed_logins = 3\n"
    ));
    let addr = w.addr();
    // Fewer than the limit, then a good login: the count starts over.
    for _ in 0..4 {
        assert!(!first_is(&garbage(&addr).await, 1129));
    }
    Conn::new(opts(&addr)).await.expect("a login");
    for _ in 0..4 {
        assert!(!first_is(&garbage(&addr).await, 1129));
    }
    Conn::new(opts(&addr))
        .await
        .expect("still not blocked: a login reset the count");
    // A broken cron job's wrong password blocks only its own account.
    let cron = PrivateUser::new("cron");
    for _ in 0..4 {
        let _ = Conn::new(as_user(&addr, &cron.name, "wrong")).await;
    }
    Conn::new(opts(&addr))
        .await
        .expect("the application logs in after a cron job failed");
    // Garbage up to the limit blocks the address before its greeting; FLUSH HOSTS lifts it.
    for _ in 0..6 {
        garbage(&addr).await;
    }
    assert!(first_is(&garbage(&addr).await, 1129));
    let mut a = Conn::new(admin_opts(admin_port(&w), "admin-secret"))
        .await
        .expect("admin");
    a.query_drop("FLUSH HOSTS").await.unwrap();
    Conn::new(opts(&addr)).await.expect("after FLUSH HOSTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_networks_are_not_counted() {
    let w = Weiche::start_primary_config(
        "[limits]\nmax_handshake_errors = 2\ntrusted_networks = [\"127.0.0.0/8\"]\n",
    );
    for _ in 0..5 {
        assert!(!first_is(&garbage(&w.addr()).await, 1129));
    }
    Conn::new(opts(&w.addr())).await.expect("a trusted address");
}

/// Weiche with accounts read from the primary; `extra` is more TOML.
fn load_users_weiche(extra: &str) -> Weiche {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("security-{}.toml", table("cfg")));
    std::fs::write(
        &file,
        format!(
            "[[backends]]\naddress = \"{}\"\n\n[monitor]\nuser = \"monitor\"\n\
             password = \"monitor-secret\"\nload_users = true\n{extra}",
            primary()
        ),
    )
    .unwrap();
    Weiche::start_with(&["--config", file.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_entrys_password_never_opens_anothers_privileges() {
    let name = table("multi");
    let t = table("multi_t");
    let mut r = root().await;
    r.query_drop(format!(
        "CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY 'pw-a'; \
         GRANT SELECT ON weiche.* TO '{name}'@'127.0.0.1'; \
         CREATE USER '{name}'@'%' IDENTIFIED BY 'pw-b'; \
         CREATE TABLE weiche.{t} (v INT); INSERT INTO weiche.{t} VALUES (7)"
    ))
    .await
    .unwrap();
    let w = load_users_weiche("");
    let addr = w.addr();
    let try_as = |source: &'static str, pw: &'static str| {
        let (addr, name) = (addr.clone(), name.clone());
        async move { Raw::try_login_from(source, &addr, &name, pw).await }
    };
    // Before and after a 127.0.0.1 client filled the pool: 127.0.0.2 gets in with neither.
    for round in 0..2 {
        for pw in ["pw-a", "pw-b"] {
            let e = try_as("127.0.0.2", pw)
                .await
                .err()
                .unwrap_or_else(|| panic!("round {round}: 127.0.0.2 got in with {pw}"));
            assert_eq!(code(&e), Some(1045), "{:?}", String::from_utf8_lossy(&e));
        }
        let mut ok = try_as("127.0.0.1", "pw-a")
            .await
            .unwrap_or_else(|e| panic!("{:?}", String::from_utf8_lossy(&e)));
        let rows = ok.query(&format!("SELECT v FROM weiche.{t}")).await;
        assert_eq!(rows.len(), 5, "127.0.0.1 reads: {rows:?}");
    }
    r.query_drop(format!(
        "DROP USER '{name}'@'127.0.0.1', '{name}'@'%'; DROP TABLE weiche.{t}"
    ))
    .await
    .unwrap();
}

/// Log in through `w` as `u` (no database) and read `weiche.<t>`: the error code, if any.
async fn read_as(w: &Weiche, name: &str, pw: &str, t: &str) -> Result<(), Option<u16>> {
    let mut c = Conn::new(as_user(&w.addr(), name, pw))
        .await
        .map_err(|e| server_code(&e))?;
    let r = c
        .query_drop(format!("SELECT * FROM weiche.{t}"))
        .await
        .map_err(|e| server_code(&e));
    c.disconnect().await.ok();
    r
}

/// Wait up to 3 s for `check` to hold.
async fn within_3s<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{what}: not within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{what}: {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_new_logins_within_seconds() {
    let name = table("revoked");
    let t = table("revoked_t");
    let mut r = root().await;
    r.query_drop(format!(
        "CREATE USER '{name}'@'%' IDENTIFIED BY 'pw'; \
         CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY 'pw'; \
         GRANT SELECT ON weiche.* TO '{name}'@'%', '{name}'@'127.0.0.1'; \
         CREATE TABLE weiche.{t} (v INT)"
    ))
    .await
    .unwrap();
    // The polling below would trip the failed-login limit.
    let w = load_users_weiche("[limits]\nmax_failed_logins = 0\n");
    read_as(&w, &name, "pw", &t).await.expect("granted");
    // REVOKE: a pooled connection from before must not keep the privilege for new sessions.
    r.query_drop(format!(
        "REVOKE SELECT ON weiche.* FROM '{name}'@'%', '{name}'@'127.0.0.1'"
    ))
    .await
    .unwrap();
    within_3s("REVOKE", || async {
        read_as(&w, &name, "pw", &t).await == Err(Some(1142))
    })
    .await;
    r.query_drop(format!(
        "GRANT SELECT ON weiche.* TO '{name}'@'%', '{name}'@'127.0.0.1'"
    ))
    .await
    .unwrap();
    within_3s("GRANT", || async {
        read_as(&w, &name, "pw", &t).await.is_ok()
    })
    .await;
    // ACCOUNT LOCK, then a password change, then DROP USER.
    r.query_drop(format!(
        "ALTER USER '{name}'@'%', '{name}'@'127.0.0.1' ACCOUNT LOCK"
    ))
    .await
    .unwrap();
    within_3s("ACCOUNT LOCK", || async {
        read_as(&w, &name, "pw", &t).await.is_err()
    })
    .await;
    r.query_drop(format!(
        "ALTER USER '{name}'@'%', '{name}'@'127.0.0.1' ACCOUNT UNLOCK; \
         ALTER USER '{name}'@'%' IDENTIFIED BY 'new'; \
         ALTER USER '{name}'@'127.0.0.1' IDENTIFIED BY 'new'"
    ))
    .await
    .unwrap();
    within_3s("password change", || async {
        read_as(&w, &name, "pw", &t).await.is_err() && read_as(&w, &name, "new", &t).await.is_ok()
    })
    .await;
    r.query_drop(format!("DROP USER '{name}'@'%', '{name}'@'127.0.0.1'"))
        .await
        .unwrap();
    within_3s("DROP USER", || async {
        read_as(&w, &name, "new", &t).await.is_err()
    })
    .await;
    r.query_drop(format!("DROP TABLE weiche.{t}"))
        .await
        .unwrap();
}

/// One memcached text-protocol exchange: send `cmd`, read until `end` appears.
async fn mc(addr: &str, cmd: &[u8], end: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(cmd).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while !out.windows(end.len()).any(|w| w == end) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("memcached answers")
            .unwrap();
        assert!(n > 0, "memcached closed");
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_forged_in_memcached_are_never_served() {
    let m = common::memcached::Memcached::start();
    let ns = table("forge");
    let w = Weiche::start_config(&format!(
        // No near cache: every hit is read back from memcached, where the attacker writes. A
        // generous timeout: at the default 50 ms a loaded machine can make the store look
        // unreachable, the reads bypass the cache, and there is no entry to forge.
        "{ADMIN}\n[cache]\nservers = [\"{}\"]\nnamespace = \"{ns}\"\nsecret = \"{ns}-secret-of-the-fleet\"\n\
         near_memory = 0\ntimeout = 2\n",
        m.addr()
    ));
    let t = table("forge_t");
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    c.query_drop(format!(
        "CREATE TABLE {t} (v INT); INSERT INTO {t} VALUES (7)"
    ))
    .await
    .unwrap();
    let q = format!("/* weiche:cache ttl=60 */ SELECT v FROM {t}");
    for _ in 0..2 {
        assert_eq!(c.query_first::<i32, _>(&q).await.unwrap(), Some(7));
    }
    // The attacker reads the entry (its stamps are in clear) and writes it back with 8 for 7.
    let dump = mc(&m.addr(), b"lru_crawler metadump all\r\n", b"END\r\n").await;
    let dump = String::from_utf8_lossy(&dump);
    let key = dump
        .lines()
        .filter_map(|l| l.strip_prefix("key="))
        .map(|l| l.split(' ').next().unwrap_or(""))
        .map(|k| k.replace("%3A", ":"))
        .find(|k| k.starts_with(&ns) && k.contains(":r:"))
        .unwrap_or_else(|| panic!("no result entry in {dump}"));
    let got = mc(&m.addr(), format!("get {key}\r\n").as_bytes(), b"END\r\n").await;
    let header_end = got.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let len: usize = String::from_utf8_lossy(&got[..header_end])
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    let mut value = got[header_end..header_end + len].to_vec();
    let at = value
        .windows(2)
        .rposition(|w| w == b"\x017")
        .expect("the row in the entry");
    value[at + 1] = b'8';
    let mut set = format!("set {key} 0 60 {}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    assert!(mc(&m.addr(), &set, b"\r\n").await.starts_with(b"STORED"));
    // Weiche refuses the forged entry and asks the database.
    assert_eq!(c.query_first::<i32, _>(&q).await.unwrap(), Some(7));
    let mut a = Conn::new(admin_opts(admin_port(&w), "admin-secret"))
        .await
        .expect("admin");
    let rows: Vec<(String, String)> = a.query("SHOW CACHE").await.unwrap();
    let rejected = rows
        .iter()
        .find(|(k, _)| k == "rejected")
        .map(|(_, v)| v.clone());
    assert_eq!(rejected.as_deref(), Some("1"), "{rows:?}");
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_over_max_packet_size_is_refused_before_it_is_read() {
    let w = Weiche::start_primary_config("[proxy]\nmax_packet_size = 1048576\n");
    let mut r = Raw::login(&w.addr(), &common::app_user(), &common::app_password(), 0).await;
    let mut q = b"\x03SELECT COUNT(*) FROM DUAL WHERE 1 IN (1".to_vec();
    while q.len() < 4 << 20 {
        q.extend_from_slice(b",1");
    }
    q.push(b')');
    // Only the header and a little of the payload need to go out before Weiche answers.
    let _ = tokio::time::timeout(Duration::from_secs(5), r.f.send(0, &q)).await;
    let e = r.read().await.payload;
    assert_eq!(code(&e), Some(1153), "{:?}", String::from_utf8_lossy(&e));
    // Under the limit is fine.
    let mut ok = Raw::login(&w.addr(), &common::app_user(), &common::app_password(), 0).await;
    assert_eq!(ok.query("SELECT 1").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_cannot_hold_unbounded_text() {
    let w = Weiche::start_primary_config("");
    let mut r = Raw::login(&w.addr(), &common::app_user(), &common::app_password(), 0).await;
    let mut p = b"\x16SELECT 1 /*".to_vec();
    p.resize(10 << 20, b'x');
    p.extend_from_slice(b"*/");
    let mut answers = Vec::new();
    for _ in 0..7 {
        r.send(&p).await;
        let first = r.read().await.payload.to_vec();
        if first[0] == 0 {
            r.read_until(common::raw::is_eof).await; // the column
        }
        answers.push(code(&first));
    }
    // Six of 10 MiB fit in 64 MiB; the seventh is refused, and the session goes on.
    assert_eq!(answers[..6], [None; 6], "{answers:?}");
    assert_eq!(answers[6], Some(1461), "{answers:?}");
    assert_eq!(r.query("SELECT 1").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_has_a_failed_login_limit_too() {
    let w = Weiche::start_primary_config(&format!("{ADMIN}[limits]\nmax_failed_logins = 3\n"));
    for _ in 0..3 {
        let e = Conn::new(admin_opts(admin_port(&w), "wrong"))
            .await
            .expect_err("a wrong admin password");
        assert_eq!(server_code(&e), Some(1045), "{e}");
    }
    let e = Conn::new(admin_opts(admin_port(&w), "admin-secret"))
        .await
        .expect_err("blocked");
    assert_eq!(server_code(&e), Some(1129), "{e}");
    // The proxy's accounts from the same address are not.
    Conn::new(opts(&w.addr()))
        .await
        .expect("the application logs in");
}
