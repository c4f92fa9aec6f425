//! Operating Weiche: every admin command through the mariadb CLI against live traffic, and
//! /metrics read by a real Prometheus text-format parser (Python's prometheus_client), with
//! values that move with traffic.

mod common;

use common::{admin_port, http_get, listening_port, opts, table, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::HashMap;
use std::process::Command;

const CONFIG: &str = "[admin]\naddress = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"admin-secret\"\n\n[http]\naddress = \"127.0.0.1:0\"\n";

/// Run one admin command with the mariadb CLI (batch mode: tab-separated, with a header line).
fn admin(port: u16, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port.to_string()])
        .args(["-u", "admin", "-padmin-secret", "--batch", "-e", sql])
        .output()
        .expect("run the mariadb CLI");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect())
}

/// Rows as maps from column name to value.
fn rows(port: u16, sql: &str) -> Vec<HashMap<String, String>> {
    let t = admin(port, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let Some((head, body)) = t.split_first() else {
        return Vec::new();
    };
    body.iter()
        .map(|r| head.iter().cloned().zip(r.iter().cloned()).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_command_through_the_mariadb_cli() {
    let w = Weiche::start_config(CONFIG);
    let port = admin_port(&w);
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    let t = table("ops");
    c.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY, v INT)"))
        .await
        .unwrap();
    for i in 0..20 {
        c.query_drop(format!("INSERT INTO {t} VALUES ({i}, {i})"))
            .await
            .unwrap();
    }
    for _ in 0..20 {
        let _: Option<u32> = c
            .query_first(format!(
                "/* weiche:cache ttl=30 */ SELECT v FROM {t} WHERE id = 3"
            ))
            .await
            .unwrap();
    }
    // A second session holds a transaction open: SHOW SESSIONS names the pin.
    let mut pinned = Conn::new(opts(&w.addr())).await.expect("connect");
    pinned.query_drop("BEGIN").await.unwrap();
    pinned
        .query_drop(format!("SELECT v FROM {t} WHERE id = 1"))
        .await
        .unwrap();

    let backends = rows(port, "SELECT * FROM backends");
    assert_eq!(backends.len(), 3);
    assert_eq!(backends[0]["role"], "primary");
    let used: u64 = backends
        .iter()
        .map(|b| b["connections_in_use"].parse::<u64>().unwrap())
        .sum();
    assert!(
        used >= 1,
        "the open transaction holds a connection: {backends:?}"
    );

    let help = rows(port, "SELECT * FROM help");
    let commands: Vec<&str> = help.iter().map(|r| r["command"].as_str()).collect();
    for c in [
        "SHOW SESSIONS",
        "SHOW QUERY DIGESTS",
        "SHOW POOLS",
        "SHOW CACHE",
        "KILL SESSION n",
    ] {
        assert!(commands.contains(&c), "{c} missing from help: {commands:?}");
    }

    let sessions = rows(port, "SHOW SESSIONS");
    let tx = sessions
        .iter()
        .find(|s| s["pins"] == "transaction")
        .unwrap_or_else(|| panic!("no session pinned by its transaction: {sessions:?}"));
    assert_eq!(tx["user"], "app");
    assert_ne!(tx["backend"], "NULL");

    let digests = rows(port, "SHOW QUERY DIGESTS");
    let insert = digests
        .iter()
        .find(|d| d["digest"] == format!("INSERT INTO {t} VALUES(?, ?)"))
        .unwrap_or_else(|| panic!("no INSERT digest: {digests:?}"));
    assert_eq!(insert["count"], "20", "{digests:?}");
    assert_eq!(insert["primary_share"], "1.000");
    let select = digests
        .iter()
        .find(|d| d["digest"] == format!("SELECT v FROM {t} WHERE id = ?"))
        .unwrap_or_else(|| panic!("no SELECT digest: {digests:?}"));
    // 20 cached reads and the pinned session's one.
    assert_eq!(select["count"], "21");
    assert_eq!(
        select["rows"], "21",
        "each read returned one row, hits included"
    );
    assert_eq!(
        select["cache_share"],
        format!("{:.3}", 19.0 / 21.0),
        "{select:?}"
    );

    let pools = rows(port, "SHOW POOLS");
    assert!(
        pools
            .iter()
            .any(|p| p["open"].parse::<u64>().unwrap() >= 1 && p["opened_total"] != "0"),
        "{pools:?}"
    );

    let cache: HashMap<String, String> = rows(port, "SHOW CACHE")
        .into_iter()
        .map(|r| (r["name"].clone(), r["value"].clone()))
        .collect();
    assert_eq!(cache["store"], "embedded");
    assert!(cache["hits"].parse::<u64>().unwrap() > 0, "{cache:?}");
    assert!(admin(port, &format!("FLUSH CACHE weiche.{t}")).is_ok());
    assert!(admin(port, "FLUSH CACHE").is_ok());

    let explain = rows(port, "EXPLAIN ROUTE SELECT * FROM t FOR UPDATE");
    assert_eq!(explain[0]["target"], backends[0]["address"], "{explain:?}");
    assert!(explain[0]["reason"].contains("FOR UPDATE"), "{explain:?}");

    let r1 = &backends[1]["address"];
    assert!(admin(port, &format!("SET BACKEND '{r1}' OFFLINE")).is_ok());
    assert_eq!(
        rows(port, "SELECT * FROM backends")[1]["weiche_state"],
        "offline"
    );
    assert!(admin(port, &format!("SET BACKEND '{r1}' ONLINE")).is_ok());

    let id = &tx["id"];
    assert!(admin(port, &format!("KILL SESSION {id}")).is_ok());
    let err = admin(port, "FROBNICATE").unwrap_err();
    assert!(err.contains("the commands are"), "{err}");
}

/// /metrics through Python's prometheus_client parser: {sample name + labels: value}.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let program = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}}\t{s.value}")
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", program])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let w = Weiche::start_config(CONFIG);
    let http = listening_port(&w, "http interface listening");
    let before = parse_metrics(&http_get(http, "/metrics").1);
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    for _ in 0..10 {
        let _: Option<u32> = c.query_first("SELECT 1").await.unwrap();
    }
    let _ = c.query_drop("SELECT * FROM no_such_table_anywhere").await;
    let _ =
        Conn::new(mysql_async::OptsBuilder::from_opts(opts(&w.addr())).pass(Some("wrong"))).await;
    let after = parse_metrics(&http_get(http, "/metrics").1);
    let get = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let replica_reads = "weiche_command_duration_seconds_count{route=replica}";
    assert!(
        get(&after, replica_reads) >= get(&before, replica_reads) + 10.0,
        "{after:?}"
    );
    let inf = "weiche_command_duration_seconds_bucket{le=+Inf,route=replica}";
    assert_eq!(get(&after, inf), get(&after, replica_reads));
    assert_eq!(get(&after, "weiche_errors_total{kind=login}"), 1.0);
    assert!(get(&after, "weiche_sessions{}") >= 1.0, "{after:?}");
    assert!(after
        .keys()
        .any(|k| k.starts_with("weiche_pool_connections{")));
    assert!(after.contains_key("weiche_cache_events_total{event=hits,store=embedded}"));
}
