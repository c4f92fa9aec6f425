//! Lua scripts through Weiche against the sandbox: every example in examples/ does what its
//! header says, the contract's constants and modules are there, and broken, slow and changing
//! scripts are handled (errors logged, the query goes on, hot reload keeps the last good one).

mod common;

use common::{app_password, opts, primary, replicas, Weiche};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use std::time::Duration;

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn port(addr: &str) -> u16 {
    common::host_port(addr).1
}

async fn connect(w: &Weiche) -> Conn {
    Conn::new(opts(&w.addr()))
        .await
        .expect("connect through weiche")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw_splitting_script_routes_reads_and_writes() {
    let w = Weiche::start_script(&example("rw-splitting.lua"), &[]);
    let mut c = connect(&w).await;
    let replica_ports: Vec<u16> = replicas().iter().map(|r| port(r)).collect();
    let p = port(&primary());
    for _ in 0..4 {
        let at: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
        assert!(replica_ports.contains(&at), "a read went to {at}");
    }
    c.query_drop("CREATE TABLE IF NOT EXISTS lua_rw (id INT PRIMARY KEY, port INT)")
        .await
        .unwrap();
    c.query_drop("REPLACE INTO lua_rw VALUES (1, @@port)")
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    let at: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
    assert_eq!(at, p, "a read in a transaction stays on the primary");
    c.query_drop("COMMIT").await.unwrap();
    let at: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
    assert!(replica_ports.contains(&at));
    // Prepared statements go where the script says too (the primary: not COM_QUERY).
    let at: Option<u16> = c.exec_first("SELECT @@port", ()).await.unwrap();
    assert_eq!(at, Some(p));
    let written: Option<u16> = c
        .query_first("SELECT port FROM lua_rw WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    assert_eq!(written, Some(p), "the write ran on the primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_log_records_each_query_with_timings() {
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lua-query-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    std::env::set_var("WEICHE_QUERY_LOG", &log);
    let w = Weiche::start_script(&example("query-log.lua"), &[]);
    let mut c = connect(&w).await;
    let n: Vec<u32> = c
        .query("SELECT 1 UNION SELECT 2 UNION SELECT 3")
        .await
        .unwrap();
    assert_eq!(n, [1, 2, 3]);
    assert!(c.query_drop("SELECT * FROM no_such_table").await.is_err());
    drop(c);
    // read_query_result runs once the (streamed) answer reached the client: wait for it.
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("no_such_table") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = text
        .lines()
        .find(|l| l.contains("SELECT 1 UNION"))
        .expect("the union in the log");
    let f: Vec<&str> = line.split('\t').collect();
    assert_eq!(f[1], "app");
    let (qt, rt): (u64, u64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
    assert!(qt > 0 && rt >= qt, "timings {qt} {rt}");
    assert_eq!(f[4], "3", "row count");
    assert!(text
        .lines()
        .any(|l| l.contains("ERR\tSELECT * FROM no_such_table")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_rewritten_by_the_script() {
    let w = Weiche::start_script(&example("rewrite-result.lua"), &[]);
    let mut c = connect(&w).await;
    let rows: Vec<Row> = c
        .query("SELECT 'abc' AS s, NULL AS z UNION ALL SELECT 'de', 'f' /* shout */")
        .await
        .unwrap();
    let names: Vec<String> = rows[0]
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    assert_eq!(names, ["n", "s", "z"]);
    let got: Vec<(u32, String, Option<String>)> =
        rows.into_iter().map(mysql_async::from_row).collect();
    assert_eq!(
        got,
        [(1, "ABC".into(), None), (2, "DE".into(), Some("F".into()))]
    );
    // Without the marker the result is the server's.
    let s: Option<String> = c.query_first("SELECT 'abc'").await.unwrap();
    assert_eq!(s.as_deref(), Some("abc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_injections_one_result_hidden() {
    let w = Weiche::start_script(&example("inject-hidden.lua"), &[]);
    let mut c = connect(&w).await;
    let v: Vec<(u32, String)> = c.query("SELECT 42, 'x'").await.unwrap();
    assert_eq!(v, [(42, "x".to_string())]);
    c.query_drop("CREATE TEMPORARY TABLE lua_tmp (a INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO lua_tmp VALUES (7)")
        .await
        .unwrap();
    let a: Option<u32> = c.query_first("SELECT a FROM lua_tmp").await.unwrap();
    assert_eq!(a, Some(7), "the session's state survives the injections");
    assert!(w
        .wait_log("server clock before the query: ", Duration::from_secs(2))
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_logins_denied_by_the_script() {
    std::env::set_var("WEICHE_MAX_CLIENTS", "2");
    std::env::set_var("WEICHE_DENY_USERS", "root");
    let w = Weiche::start_script(&example("access-control.lua"), &[]);
    let a = connect(&w).await;
    let b = connect(&w).await;
    let third = Conn::new(opts(&w.addr())).await;
    let err = third.expect_err("a third client is refused").to_string();
    assert!(err.contains("too many clients (2)"), "{err}");
    a.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = connect(&w).await;
    drop(c);
    b.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (host, port) = common::host_port(&w.addr());
    let root: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
        .into();
    let err = Conn::new(root)
        .await
        .expect_err("root is refused")
        .to_string();
    assert!(err.contains("not allowed through this proxy"), "{err}");
    let _ = app_password();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_answered_by_the_script() {
    let w = Weiche::start_script(&example("querycounter.lua"), &[]);
    let mut a = connect(&w).await;
    let first: (u64, u64) = a.query_first("SHOW QUERYCOUNTER").await.unwrap().unwrap();
    a.query_drop("DO 1").await.unwrap();
    let second: (u64, u64) = a.query_first("SHOW QUERYCOUNTER").await.unwrap().unwrap();
    assert_eq!(second.0, first.0 + 2);
    assert!(second.1 >= first.1 + 2);
    let mut b = connect(&w).await;
    let other: (u64, u64) = b.query_first("show querycounter").await.unwrap().unwrap();
    assert!(
        other.0 < second.0,
        "per connection: {other:?} vs {second:?}"
    );
    assert!(other.1 > second.1, "global: {other:?} vs {second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_warnings_injected_after_results_with_warnings() {
    let w = Weiche::start_script(&example("show-warnings.lua"), &[]);
    let mut c = connect(&w).await;
    let v: Option<Option<u32>> = c.query_first("SELECT 1/0").await.unwrap();
    assert_eq!(v, Some(None));
    assert!(
        w.wait_log(
            "warning Warning 1365: Division by 0",
            Duration::from_secs(2)
        )
        .await
        .is_some(),
        "log:\n{}",
        w.log_text()
    );
    let v: Option<u32> = c.query_first("SELECT 5").await.unwrap();
    assert_eq!(v, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_constants_and_modules() {
    let script = format!("{}/tests/lua/contract.lua", env!("CARGO_MANIFEST_DIR"));
    let w = Weiche::start_script(&script, &[]);
    let mut c = connect(&w).await;
    let rows: Vec<(String, String)> = c.query("SHOW CONTRACT").await.unwrap();
    let get = |k: &str| {
        rows.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} missing in {rows:?}"))
    };
    for (k, v) in [
        ("PROXY_SEND_QUERY", "1"),
        ("PROXY_SEND_RESULT", "2"),
        ("PROXY_IGNORE_RESULT", "4"),
        ("MYSQLD_PACKET_OK", "0"),
        ("MYSQLD_PACKET_ERR", "255"),
        ("MYSQLD_PACKET_RAW", "250"),
        ("MYSQLD_PACKET_EOF", "254"),
        ("BACKEND_STATE_UNKNOWN", "0"),
        ("BACKEND_STATE_UP", "1"),
        ("BACKEND_STATE_DOWN", "2"),
        ("BACKEND_TYPE_RW", "1"),
        ("BACKEND_TYPE_RO", "2"),
        ("PROXY_VERSION", "2053"),
        ("COM_QUERY", "3"),
        ("COM_STMT_FETCH", "28"),
        ("COM_RESET_CONNECTION", "31"),
        ("MYSQL_TYPE_LONG", "3"),
        ("MYSQL_TYPE_JSON", "245"),
        ("MYSQL_TYPE_GEOMETRY", "255"),
        ("first_token", "TK_SQL_SELECT"),
        ("normalize", "SELECT `a` FROM `t` WHERE `b` = ? "),
        ("bare", "SELECT a FROM t WHERE b = 'x'"),
        ("command", "COM_QUERY:SELECT 1"),
        ("backends", "3"),
        ("backend2_type", "2"),
        ("rw", "1"),
        ("ro_is_replica", "true"),
        ("password", "true"),
        ("proto", "m"),
        ("client", "app@127.0.0.1"),
    ] {
        assert_eq!(get(k), v, "{k}");
    }
    assert_eq!(get("backend1"), format!("{} 1 1 primary", primary()));
    assert!(get("deprecated").contains("deprecated, use proxy.connection.server.thread_id"));
    // A runtime error and a runaway hook are logged; the query goes on as if no script ran.
    let s: Option<String> = c.query_first("SELECT 'boom'").await.unwrap();
    assert_eq!(s.as_deref(), Some("boom"));
    let s: Option<String> = c.query_first("SELECT 'loop'").await.unwrap();
    assert_eq!(s.as_deref(), Some("loop"));
    let log = w.log_text();
    assert!(log.contains("a runtime error in read_query"), "{log}");
    assert!(log.contains("Lua instructions"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_reload_and_broken_ones_are_refused() {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lua-reload-{}.lua", std::process::id()));
    let version = |v: &str| {
        format!(
            "function read_query(p)\n  if p:sub(2) == 'SHOW VERSIONX' then\n    \
             proxy.response = {{ type = proxy.MYSQLD_PACKET_OK, resultset = {{ \
             fields = {{ {{ name = 'v' }} }}, rows = {{ {{ '{v}' }} }} }} }}\n    \
             return proxy.PROXY_SEND_RESULT\n  end\nend\n"
        )
    };
    std::fs::write(&path, version("one")).unwrap();
    let w = Weiche::start_script(path.to_str().unwrap(), &[]);
    let ask = |w: &Weiche| {
        let addr = w.addr();
        async move {
            let mut c = Conn::new(opts(&addr)).await.expect("connect");
            let v: Option<String> = c.query_first("SHOW VERSIONX").await.unwrap();
            v.unwrap_or_default()
        }
    };
    assert_eq!(ask(&w).await, "one");
    std::fs::write(&path, version("second")).unwrap();
    assert_eq!(
        ask(&w).await,
        "second",
        "a new connection gets the new version"
    );
    std::fs::write(&path, "function read_query(p) this is not lua end").unwrap();
    assert_eq!(
        ask(&w).await,
        "second",
        "a broken version keeps the old one"
    );
    assert!(w
        .log_text()
        .contains("does not compile; the previous version stays"));
    drop(w);

    // A script that never compiled: clients get mysql-proxy's error at connect.
    let w = Weiche::start_script(path.to_str().unwrap(), &[]);
    let err = Conn::new(opts(&w.addr()))
        .await
        .expect_err("no script, no session")
        .to_string();
    assert!(
        err.contains("MySQL Proxy Lua script failed to load"),
        "{err}"
    );
}
