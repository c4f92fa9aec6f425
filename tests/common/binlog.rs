//! Helpers for the tests of [cache.binlog]: the sandbox's replication account, direct
//! connections beside Weiche, SHOW CACHE, and waiting until a follower has caught up.

use super::{admin_opts, admin_port, env_or, primary, Weiche};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const ADMIN: &str =
    "[admin]\naddress = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"admin-secret\"\n";

/// `[cache.binlog]` with the sandbox's replication account.
pub fn binlog_section(extra: &str) -> String {
    binlog_as(
        &env_or("WEICHE_REPL_USER", "repl"),
        &env_or("WEICHE_REPL_PASSWORD", "repl-secret"),
        extra,
    )
}

pub fn binlog_as(user: &str, password: &str, extra: &str) -> String {
    format!("[cache.binlog]\nuser = \"{user}\"\npassword = \"{password}\"\n{extra}")
}

/// The app's account straight on a server, as a cron job or another application would write.
pub fn direct(addr: &str) -> mysql_async::Opts {
    super::opts(addr)
}

/// root (no password) on a server of the sandbox.
pub fn root_opts(addr: &str) -> OptsBuilder {
    let (host, port) = super::host_port(addr);
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
}

pub async fn root_on_primary() -> Conn {
    Conn::new(root_opts(&primary()))
        .await
        .expect("root on the primary")
}

/// domain -> sequence of a GTID position.
pub fn gtids(pos: &str) -> HashMap<u32, u64> {
    pos.split(',')
        .filter_map(|g| {
            let mut it = g.trim().split('-');
            let d = it.next()?.parse().ok()?;
            it.next()?;
            Some((d, it.next()?.parse().ok()?))
        })
        .collect()
}

pub fn covers(have: &str, want: &str) -> bool {
    let have = gtids(have);
    gtids(want)
        .iter()
        .all(|(d, s)| have.get(d).is_some_and(|h| h >= s))
}

pub async fn show_cache(admin: &mut Conn, name: &str) -> String {
    let rows: Vec<(String, String)> = admin.query("SHOW CACHE").await.expect("SHOW CACHE");
    rows.into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("SHOW CACHE has no {name}"))
}

pub async fn admin(w: &Weiche) -> Conn {
    Conn::new(admin_opts(admin_port(w), "admin-secret"))
        .await
        .expect("admin login")
}

/// Wait until Weiche's follower has bumped up to the primary's position now; the time it took.
pub async fn caught_up(primary: &mut Conn, admins: &mut [Conn]) -> Duration {
    let started = Instant::now();
    let want: String = primary
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    for a in admins.iter_mut() {
        loop {
            let have = show_cache(a, "binlog_position").await;
            if covers(&have, &want) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the binlog follower is stuck at {have}, the primary is at {want}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    started.elapsed()
}
