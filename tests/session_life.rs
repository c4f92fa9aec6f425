//! A session's server connections come and go under Weiche (pooling), yet a client must see
//! what a direct connection shows: closed after its own wait_timeout; closed, not answered
//! with an error, when the server connection that held its transaction dies; never handed a
//! pooled connection that its server closed meanwhile; and, once the server's globals change,
//! new sessions start from the new values while older pooled connections retire. KILL follows
//! MariaDB's rules: one's own connection gets ERR 1927 and closes, another user's session only
//! with the server's privilege, and KILL returns once the target is closed.

mod common;

use common::{admin_opts, admin_port, host_port, opts, primary, table, PrivateUser, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};

const ADMIN: &str =
    "[admin]\naddress = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"admin-secret\"\n";

fn root(addr: &str) -> mysql_async::Opts {
    let (host, port) = host_port(addr);
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
        .into()
}

fn as_user(addr: &str, u: &PrivateUser) -> mysql_async::Opts {
    mysql_async::OptsBuilder::from_opts(opts(addr))
        .user(Some(u.name.clone()))
        .pass(Some(u.password.clone()))
        .into()
}

fn private_weiche(u: &PrivateUser, extra: &str) -> Weiche {
    Weiche::start_primary_config(&format!(
        "[[users]]\nname = \"{}\"\npassword = \"{}\"\n\n{ADMIN}\n{extra}",
        u.name, u.password
    ))
}

/// Kill every server connection of `user` on the primary (as another client would).
async fn kill_connections_of(user: &str) -> usize {
    let mut r = Conn::new(root(&primary())).await.expect("root");
    let ids: Vec<u64> = r
        .query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
        ))
        .await
        .unwrap();
    for id in &ids {
        let _ = r.query_drop(format!("KILL {id}")).await;
    }
    ids.len()
}

/// A connection-level failure (the socket is gone), not an ERR packet from a server.
fn is_connection_loss(e: &mysql_async::Error) -> bool {
    !matches!(e, mysql_async::Error::Server(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_its_own_wait_timeout_is_closed_as_by_the_server() {
    let w = Weiche::start();
    for addr in [primary(), w.addr()] {
        let mut c = Conn::new(opts(&addr)).await.expect("connect");
        c.query_drop("SET SESSION wait_timeout = 1").await.unwrap();
        let v: u32 = c
            .query_first("SELECT @@wait_timeout")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, 1);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let e = c
            .query_drop("SELECT 1")
            .await
            .expect_err(&format!("{addr}: the session outlived its wait_timeout"));
        assert!(is_connection_loss(&e), "{addr}: {e:?}");
    }
    // Sessions that did not ask for it are not closed.
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.query_drop("SELECT 1")
        .await
        .expect("an idle session without wait_timeout stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_server_connection_dies_ends_the_client_connection() {
    let u = PrivateUser::new("lost_txn");
    let w = private_weiche(&u, "");
    let t = table("lost_txn");
    let mut c = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .unwrap();
    assert!(kill_connections_of(&u.name).await >= 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = c
        .query_drop(format!("INSERT INTO {t} VALUES (2)"))
        .await
        .expect_err("the transaction's connection is gone");
    assert!(
        is_connection_loss(&e),
        "the client must see its connection lost (CR 2013), as on a direct connection, not an ERR: {e:?}"
    );
    // A new connection works, and the lost transaction left nothing.
    let mut c = Conn::new(as_user(&w.addr(), &u)).await.expect("reconnect");
    let n: u32 = c
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_its_server_closed_is_not_lent() {
    let u = PrivateUser::new("closed_idle");
    let w = private_weiche(&u, "");
    let t = table("closed_idle");
    let mut c = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    for round in 0..3 {
        // Between commands the session holds no server connection: its pooled one dies.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(kill_connections_of(&u.name).await >= 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A write is never retried blindly: it must not meet the dead connection at all.
        c.query_drop(format!("INSERT INTO {t} VALUES ({round})"))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    let n: u32 = c
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 3);
    c.query_drop(format!("DROP TABLE {t}")).await.unwrap();
    let retired = pool_stat(&w, "retired").await;
    assert!(retired >= 3, "SHOW POOLS retired = {retired}");
}

/// A SHOW POOLS column, summed over the backends.
async fn pool_stat(w: &Weiche, column: &str) -> u64 {
    let mut a = Conn::new(admin_opts(admin_port(w), "admin-secret"))
        .await
        .expect("admin");
    let rows: Vec<mysql_async::Row> = a.query("SHOW POOLS").await.unwrap();
    rows.iter()
        .map(|r| {
            let v: String = r.get(column).expect("column");
            v.parse::<u64>().expect("number")
        })
        .sum()
}

/// Set the global div_precision_increment on `addr` (no other test reads it; each test puts
/// it back).
async fn set_global_div(addr: &str, v: u32) {
    let mut r = Conn::new(root(addr)).await.expect("root");
    r.query_drop(format!("SET GLOBAL div_precision_increment = {v}"))
        .await
        .unwrap();
}

async fn global_div(addr: &str) -> u32 {
    let mut r = Conn::new(root(addr)).await.expect("root");
    r.query_first("SELECT @@GLOBAL.div_precision_increment")
        .await
        .unwrap()
        .unwrap()
}

/// What a new session of `u` through `addr` starts with.
async fn session_div(addr: &str, u: &PrivateUser) -> u32 {
    let mut c = Conn::new(as_user(addr, u)).await.expect("connect");
    let v: u32 = c
        .query_first("SELECT @@div_precision_increment")
        .await
        .unwrap()
        .unwrap();
    c.disconnect().await.ok();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globals_changed_on_the_servers_reach_new_sessions() {
    let u = PrivateUser::new("globals_direct");
    let w = Weiche::start_config(&format!(
        "[[users]]\nname = \"{}\"\npassword = \"{}\"\n\n{ADMIN}",
        u.name, u.password
    ));
    let replicas = common::replicas();
    let before = global_div(&replicas[0]).await;
    let changed = if before == 7 { 8 } else { 7 };
    // Reads go to the replicas: their pools fill with connections that logged in before.
    for _ in 0..6 {
        assert_eq!(session_div(&w.addr(), &u).await, before);
    }
    // Changed by another client, directly on the servers: new sessions see it within a few
    // monitor checks, and from then on always.
    for r in &replicas {
        set_global_div(r, changed).await;
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut in_a_row = 0;
    while in_a_row < 6 && Instant::now() < deadline {
        if session_div(&w.addr(), &u).await == changed {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for r in &replicas {
        set_global_div(r, before).await;
    }
    assert_eq!(in_a_row, 6, "new sessions still start from the old globals");
    assert!(pool_stat(&w, "retired").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_global_through_weiche_reaches_the_next_session_at_once() {
    let u = PrivateUser::new("globals_through");
    let w = private_weiche(&u, "");
    let before = global_div(&primary()).await;
    let changed = if before == 7 { 8 } else { 7 };
    // A pooled connection that logged in with the old globals.
    assert_eq!(session_div(&w.addr(), &u).await, before);
    let root_through: mysql_async::Opts = mysql_async::OptsBuilder::from_opts(root(&w.addr()))
        .db_name(Some("weiche"))
        .into();
    let mut root_w = Conn::new(root_through).await.unwrap();
    root_w
        .query_drop(format!("SET GLOBAL div_precision_increment = {changed}"))
        .await
        .unwrap();
    let next = session_div(&w.addr(), &u).await;
    // The session that changed it keeps its own value, as on a direct connection.
    let own: u32 = root_w
        .query_first("SELECT @@SESSION.div_precision_increment")
        .await
        .unwrap()
        .unwrap();
    set_global_div(&primary(), before).await;
    assert_eq!(
        next, changed,
        "the next session starts from the new globals"
    );
    assert_eq!(
        own, before,
        "the session that ran SET GLOBAL keeps its session value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_older_than_max_lifetime_retire() {
    let u = PrivateUser::new("lifetime");
    let w = private_weiche(&u, "[pool]\nmax_lifetime = 1\n");
    let mut c = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");
    c.query_drop("DO 1").await.unwrap();
    let opened = pool_stat(&w, "opened_total").await;
    c.query_drop("DO 1").await.unwrap();
    assert_eq!(
        pool_stat(&w, "opened_total").await,
        opened,
        "reused while young"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.query_drop("DO 1").await.unwrap();
    assert_eq!(
        pool_stat(&w, "opened_total").await,
        opened + 1,
        "replaced when old"
    );
    assert!(pool_stat(&w, "retired").await >= 1);
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_of_ones_own_connection_answers_as_mariadb_does() {
    let w = Weiche::start();
    for addr in [primary(), w.addr()] {
        let mut c = Conn::new(opts(&addr)).await.expect("connect");
        let id = c.id();
        let e = c.query_drop(format!("KILL QUERY {id}")).await.unwrap_err();
        assert_eq!(server_code(&e), Some(1317), "{addr}: {e:?}");
        c.query_drop("DO 1")
            .await
            .expect("KILL QUERY of itself keeps the session");
        let e = c.query_drop(format!("KILL {id}")).await.unwrap_err();
        assert_eq!(server_code(&e), Some(1927), "{addr}: {e:?}");
        let e = c.query_drop("DO 1").await.unwrap_err();
        assert!(
            is_connection_loss(&e),
            "{addr}: closed after KILL of itself: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_returns_once_the_target_is_closed() {
    let w = Weiche::start();
    let mut killer = Conn::new(opts(&w.addr())).await.expect("connect");
    for round in 0..20 {
        let mut victim = Conn::new(opts(&w.addr())).await.expect("connect");
        killer
            .query_drop(format!("KILL {}", victim.id()))
            .await
            .unwrap();
        let e = victim.ping().await.expect_err(&format!(
            "round {round}: the killed connection still answers"
        ));
        assert!(is_connection_loss(&e), "round {round}: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_another_users_session_needs_the_servers_privilege() {
    let u = PrivateUser::new("killer");
    let w = private_weiche(&u, "");
    let mut intruder = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");

    // An idle session of another user, and one that is running a statement.
    let mut idle = Conn::new(opts(&w.addr())).await.expect("connect");
    let mut busy = Conn::new(opts(&w.addr())).await.expect("connect");
    let (idle_id, busy_id) = (idle.id(), busy.id());
    let sleeping = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = busy.query_first("SELECT SLEEP(2)").await;
        (r.map_err(|e| e.to_string()), busy)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, what) in [(idle_id, "idle"), (busy_id, "busy")] {
        for kill in ["KILL", "KILL QUERY"] {
            let e = intruder
                .query_drop(format!("{kill} {id}"))
                .await
                .expect_err(&format!("{kill} of another user's {what} session"));
            assert_eq!(server_code(&e), Some(1095), "{kill} {what}: {e:?}");
            assert!(e.to_string().contains(&id.to_string()), "{e}");
        }
    }
    idle.query_drop("DO 1")
        .await
        .expect("the idle session lives");
    let (r, mut busy) = sleeping.await.unwrap();
    assert_eq!(
        r,
        Ok(Some(0)),
        "the busy session's statement ran to its end"
    );
    busy.query_drop("DO 1")
        .await
        .expect("the busy session lives");

    // Its own sessions it may kill; root (SUPER) may kill anyone's.
    let mut own = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");
    intruder
        .query_drop(format!("KILL {}", own.id()))
        .await
        .expect("KILL of one's own user's session");
    assert!(own.ping().await.is_err());
    let root_through: mysql_async::Opts = mysql_async::OptsBuilder::from_opts(root(&w.addr()))
        .db_name(Some("weiche"))
        .into();
    let mut admin = Conn::new(root_through).await.unwrap();
    admin
        .query_drop(format!("KILL {idle_id}"))
        .await
        .expect("root kills another user's session");
    assert!(idle.ping().await.is_err());
}

/// State a session creates where Weiche cannot see it in the statement's text (inside a
/// procedure, in variables Weiche does not carry, after turning tracking off) stays with that
/// session's connection: other sessions of the same user, borrowing from the same pools, never
/// see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_weiche_cannot_see_in_the_text_never_reaches_another_session() {
    let u = PrivateUser::new("hidden_state");
    let t = table("hidden_state");
    let mut r = Conn::new(root(&primary())).await.expect("root");
    r.query_drop(format!(
        "CREATE TABLE weiche.{t} (id INT AUTO_INCREMENT PRIMARY KEY); \
         INSERT INTO weiche.{t} VALUES (1); \
         CREATE PROCEDURE weiche.{t}_p() BEGIN \
           CREATE TEMPORARY TABLE {t} (id INT); SET @hidden = 42; END; \
         GRANT EXECUTE ON PROCEDURE weiche.{t}_p TO '{}'@'%', '{}'@'127.0.0.1'",
        u.name, u.name
    ))
    .await
    .unwrap();
    let cases = [
        (
            format!("CALL {t}_p()"),
            format!("SELECT COUNT(*) FROM {t}"),
            "1",
        ),
        (
            format!("CALL {t}_p()"),
            "SELECT IFNULL(@hidden, 'none')".to_string(),
            "none",
        ),
        (
            "SET timestamp = 1000000000".to_string(),
            "SELECT UNIX_TIMESTAMP() > 1000000000".to_string(),
            "1",
        ),
        (
            "SET insert_id = 777".to_string(),
            format!("INSERT INTO {t} () VALUES (); SELECT LAST_INSERT_ID() <> 777"),
            "1",
        ),
        (
            format!("SET session_track_state_change = OFF; CALL {t}_p()"),
            format!("SELECT COUNT(*) >= 1 FROM {t}"),
            "1",
        ),
    ];
    for (setup, check, want) in &cases {
        let w = private_weiche(&u, "[pool]\nmax_connections = 4\n");
        let mut a = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");
        a.query_drop(setup)
            .await
            .unwrap_or_else(|e| panic!("{setup}: {e}"));
        // Past the moment a connection is kept for the statement after a write.
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Sessions take turns on the two workers: some share a's pool.
        for n in 0..4 {
            let mut b = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");
            let (before, last) = check.rsplit_once("; ").unwrap_or(("", check));
            if !before.is_empty() {
                b.query_drop(before).await.unwrap();
            }
            let v: String = b.query_first(last).await.unwrap().expect("a value");
            assert_eq!(
                v, *want,
                "after {setup:?} in another session, {check:?} (session {n})"
            );
            b.disconnect().await.ok();
        }
        // The session itself keeps what it set.
        a.query_drop("DO 1").await.unwrap();
    }
    r.query_drop(format!(
        "DROP PROCEDURE weiche.{t}_p; DROP TABLE weiche.{t}"
    ))
    .await
    .unwrap();
}

/// A connection reset for the next session (COM_RESET_CONNECTION puts the server's session
/// tracking back to its defaults) still reports every variable: what the next session sets is
/// carried, and no later session inherits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_still_reports_what_the_next_session_sets() {
    let u = PrivateUser::new("after_reset");
    let w = private_weiche(&u, "[pool]\nmax_connections = 2\n");
    for round in 0..4 {
        // Clients go to the two workers in turn: a, b and c share one pool; the fillers take
        // the other worker's turns.
        let filler = || async { Conn::new(opts(&w.addr())).await.expect("connect") };
        // User variables: the connection is reset before the next session gets it.
        let mut a = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");
        a.query_drop("SET @x = 1").await.unwrap();
        a.disconnect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _f1 = filler().await;
        let mut b = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");
        b.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
            .await
            .unwrap();
        b.disconnect().await.unwrap();
        let _f2 = filler().await;
        let mut c = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");
        let mode: String = c.query_first("SELECT @@sql_mode").await.unwrap().unwrap();
        assert!(!mode.contains("ANSI_QUOTES"), "round {round}: {mode}");
        c.disconnect().await.unwrap();
        let _f3 = filler().await;
    }
}

/// Server connections of `user` on the primary.
async fn server_connections_of(user: &str) -> usize {
    let mut r = Conn::new(root(&primary())).await.expect("root");
    let n: u32 = r
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
        ))
        .await
        .unwrap()
        .unwrap();
    n as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_connections_close_on_time_without_new_sessions() {
    let u = PrivateUser::new("sweep");
    let w = private_weiche(&u, "[pool]\nidle_timeout = 1\nmin_idle = 0\n");
    let mut c = Conn::new(as_user(&w.addr(), &u)).await.expect("connect");
    c.query_drop("DO 1").await.unwrap();
    c.disconnect().await.unwrap();
    assert!(
        server_connections_of(&u.name).await >= 1,
        "the pool keeps the connection for a while"
    );
    // Nobody borrows from the pool again: the connection must still close.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server_connections_of(&u.name).await > 0 {
        assert!(
            Instant::now() < deadline,
            "an idle connection outlived pool.idle_timeout by 4 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
