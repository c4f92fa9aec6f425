//! The admin port against the sandbox: login, SELECT * FROM backends with the monitor's view,
//! SET BACKEND ... OFFLINE / ONLINE steering real reads, SHOW SESSIONS, KILL SESSION, the help
//! and the error for unknown commands, and an admin Lua script sharing proxy.global.

mod common;

use common::{admin_opts, admin_port, http_get, listening_port, opts, primary, replicas, Weiche};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use std::time::Duration;

const ADMIN: &[&str] = &[
    "--admin-address",
    "127.0.0.1:0",
    "--admin-username",
    "admin",
    "--admin-password",
    "admin-secret",
];

fn port(addr: &str) -> u16 {
    common::host_port(addr).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_and_steer_the_backends() {
    let w = Weiche::start_script_or_flags(None, ADMIN);
    let admin = admin_port(&w);
    let bad = Conn::new(admin_opts(admin, "wrong")).await;
    assert!(bad.is_err(), "a wrong admin password is refused");
    let mut a = Conn::new(admin_opts(admin, "admin-secret"))
        .await
        .expect("admin login");

    let rows: Vec<Row> = a.query("SELECT * FROM backends").await.unwrap();
    assert_eq!(rows.len(), 3);
    let col = |r: &Row, name: &str| -> Option<String> {
        let i = r
            .columns_ref()
            .iter()
            .position(|c| c.name_str() == name)
            .expect(name);
        r.get::<Option<String>, _>(i).flatten()
    };
    assert_eq!(
        col(&rows[0], "address").as_deref(),
        Some(primary().as_str())
    );
    assert_eq!(col(&rows[0], "role").as_deref(), Some("primary"));
    assert_eq!(col(&rows[0], "type").as_deref(), Some("rw"));
    for r in &rows[1..] {
        assert_eq!(col(r, "role").as_deref(), Some("replica"));
        assert_eq!(col(r, "weiche_state").as_deref(), Some("up"));
        assert!(col(r, "gtid_position").is_some_and(|p| p.contains('-')));
        assert!(col(r, "lag_seconds").is_some());
    }

    // OFFLINE steers real reads away, and the monitor does not undo it.
    let r1 = replicas()[0].clone();
    a.query_drop(format!("SET BACKEND '{r1}' OFFLINE"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut c = Conn::new(opts(&w.addr())).await.unwrap();
    for _ in 0..20 {
        let at: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
        assert_ne!(at, port(&r1), "a read went to the offline replica");
    }
    let rows: Vec<Row> = a.query("SELECT * FROM backends").await.unwrap();
    assert_eq!(col(&rows[1], "weiche_state").as_deref(), Some("offline"));
    a.query_drop(format!("SET BACKEND '{r1}' ONLINE"))
        .await
        .unwrap();
    // One session's reads stay on a replica for up to a second (route::AFFINITY), then are
    // placed afresh: within a few seconds they reach the replica that came back.
    let mut seen = false;
    let back = std::time::Instant::now();
    while !seen && back.elapsed() < Duration::from_secs(5) {
        let at: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
        seen = at == port(&r1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the replica is back in rotation");

    // Sessions, and killing one.
    let sessions: Vec<Row> = a.query("SHOW SESSIONS").await.unwrap();
    let mine = sessions
        .iter()
        .find(|r| col(r, "user").as_deref() == Some("app"))
        .expect("the app session");
    assert_eq!(col(mine, "db").as_deref(), Some("weiche"));
    let id = col(mine, "id").unwrap();
    a.query_drop(format!("KILL SESSION {id}")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        c.query_drop("SELECT 1").await.is_err(),
        "the killed session is gone"
    );

    // Help and unknown commands.
    let help: Vec<(String, String)> = a.query("SELECT * FROM help").await.unwrap();
    assert!(help.iter().any(|(c, _)| c.starts_with("SET BACKEND")));
    let err = a.query_drop("FROBNICATE").await.unwrap_err().to_string();
    assert!(
        err.contains("the commands are: SELECT * FROM backends"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_script_shares_proxy_global_with_the_proxy_script() {
    let admin_script = format!("{}/tests/lua/admin.lua", env!("CARGO_MANIFEST_DIR"));
    let counter = format!("{}/examples/querycounter.lua", env!("CARGO_MANIFEST_DIR"));
    let mut flags: Vec<&str> = ADMIN.to_vec();
    flags.extend(["--admin-lua-script", admin_script.as_str()]);
    let w = Weiche::start_script_or_flags(Some(&counter), &flags);
    let mut c = Conn::new(opts(&w.addr())).await.unwrap();
    for _ in 0..3 {
        c.query_drop("DO 1").await.unwrap();
    }
    let mut a = Conn::new(admin_opts(admin_port(&w), "admin-secret"))
        .await
        .unwrap();
    let n: Option<u64> = a.query_first("SHOW COUNTER").await.unwrap();
    assert!(n.unwrap_or(0) >= 3, "{n:?}");
    // Built-in commands still answer.
    let rows: Vec<Row> = a.query("SELECT * FROM backends").await.unwrap();
    assert_eq!(rows.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_over_http() {
    let w = Weiche::start_script_or_flags(None, &["--http-address", "127.0.0.1:0"]);
    let http = listening_port(&w, "http interface listening");
    let mut c = Conn::new(opts(&w.addr())).await.unwrap();
    for _ in 0..5 {
        let _: Option<u32> = c.query_first("SELECT 1").await.unwrap();
    }
    let (code, body) = http_get(http, "/metrics");
    assert_eq!(code, 200);
    let p = primary();
    assert!(
        body.contains(&format!(
            "weiche_backend_up{{backend=\"{p}\",role=\"primary\"}} 1"
        )),
        "{body}"
    );
    let served: u64 = body
        .lines()
        .filter(|l| l.starts_with("weiche_backend_queries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(served >= 5, "{body}");
    assert!(body.contains("weiche_primary_available 1"));
    assert!(body.contains("weiche_sessions 1"));
    let (code, body) = http_get(http, "/health");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"writes\":true") && body.contains(&format!("\"primary\":\"{p}\"")),
        "{body}"
    );
    assert_eq!(http_get(http, "/nothing").0, 404);

    // A Weiche whose primary is unreachable says so with 503.
    let user = format!("{}:{}", common::app_user(), common::app_password());
    let dead = format!("127.0.0.1:{}", common::free_port());
    let w = Weiche::start_with(&[
        "-b",
        &dead,
        "--user",
        &user,
        "--http-address",
        "127.0.0.1:0",
        "--monitor-user",
        "monitor:monitor-secret",
    ]);
    let http = listening_port(&w, "http interface listening");
    let mut last = (0, String::new());
    for _ in 0..50 {
        last = http_get(http, "/health");
        if last.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 503, "{}", last.1);
    assert!(
        last.1.contains("\"writes\":false") && last.1.contains("is down"),
        "{}",
        last.1
    );
}
