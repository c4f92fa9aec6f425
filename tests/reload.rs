//! Hot reload under load (SIGHUP and RELOAD CONFIG, a good file and a bad one: zero client
//! errors, no session dropped), and the logs: JSON lines with the session's fields, the query
//! log and the slow-query log, and no password in any of them.

mod common;

use common::Weiche;
use common::{admin_opts, admin_port, app_password, app_user, opts, primary, replicas, table};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn config_text(extra: &str) -> String {
    let r = replicas();
    format!(
        "[[backends]]\naddress = \"{}\"\nrole = \"primary\"\n\n\
         [[backends]]\naddress = \"{}\"\nrole = \"replica\"\n\n\
         [[backends]]\naddress = \"{}\"\nrole = \"replica\"\n\n\
         [[users]]\nname = \"{}\"\npassword = \"{}\"\n\n\
         [monitor]\nuser = \"monitor\"\npassword = \"monitor-secret\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"admin-secret\"\n\n{extra}\n",
        primary(),
        r[0],
        r[1],
        app_user(),
        app_password()
    )
}

/// EXPLAIN ROUTE's cache column for a point read of `t`.
async fn cache_column(c: &mut Conn, t: &str) -> String {
    let row: (String, String, String, String) = c
        .query_first(format!("EXPLAIN ROUTE SELECT v FROM {t} WHERE id = 1"))
        .await
        .unwrap()
        .unwrap();
    row.3
}

fn config_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("reload-{}-{name}.toml", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_applies_a_good_file_and_refuses_a_bad_one() {
    let path = config_path("load");
    std::fs::write(&path, config_text("")).unwrap();
    let w = Weiche::start_with(&["--config", path.to_str().unwrap()]);
    let mut setup = Conn::new(opts(&w.addr())).await.expect("connect");
    let t = table("reload");
    setup
        .query_drop(format!(
            "CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"
        ))
        .await
        .unwrap();

    // Other sessions read from the replicas: wait until both have the table.
    for r in replicas() {
        let mut direct = Conn::new(opts(&r)).await.expect("replica");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while direct
            .query_drop(format!("SELECT 1 FROM {t} LIMIT 0"))
            .await
            .is_err()
        {
            assert!(std::time::Instant::now() < deadline, "{r} never got {t}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Load: four sessions that keep one connection each, reading and writing, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for n in 0..4u32 {
        let (addr, t) = (w.addr(), t.clone());
        let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(opts(&addr)).await.expect("connect");
            let id: Option<u32> = c.query_first("SELECT CONNECTION_ID()").await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let r = if n % 2 == 0 {
                    c.query_drop(format!("INSERT INTO {t} (v) VALUES ({n})"))
                        .await
                } else {
                    c.query_drop(format!("SELECT COUNT(*) FROM {t}")).await
                };
                match r {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("client error: {e}");
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            // The same session all along: its server thread may differ (pooling), its
            // connection to Weiche does not.
            c.ping().await.expect("the session survived the reloads");
            id
        }));
    }
    let root = mysql_async::OptsBuilder::from_opts(opts(&w.addr()))
        .user(Some("root"))
        .pass(None::<String>);
    assert!(Conn::new(root).await.is_err(), "root is not a user yet");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A good file: a new user, a cache rule, another weight, another log level; by SIGHUP.
    let r1 = replicas()[0].clone();
    let good = config_text(&format!(
        "[[users]]\nname = \"root\"\npassword = \"\"\n\n[log]\nlevel = \"debug\"\n\n\
         [[cache.rules]]\ntable = \"{t}\"\nttl = 30\n"
    ))
    .replacen(
        &format!("address = \"{r1}\"\nrole = \"replica\"\n"),
        &format!("address = \"{r1}\"\nrole = \"replica\"\nweight = 5\n"),
        1,
    );
    std::fs::write(&path, good).unwrap();
    let mark = w.log_mark();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &w.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    w.wait_log_after(
        mark,
        "SIGHUP: configuration reloaded",
        Duration::from_secs(5),
    )
    .await
    .expect("the reload is logged");
    let log = w.log_text();
    for applied in [
        "users",
        "cache rules and limits",
        &format!("weight of {r1} 1 -> 5"),
    ] {
        assert!(log.contains(applied), "{applied} not in the reload summary");
    }
    let root = mysql_async::OptsBuilder::from_opts(opts(&w.addr()))
        .user(Some("root"))
        .pass(None::<String>);
    let mut r = Conn::new(root).await.expect("root is a user now");
    r.query_drop("SELECT 1").await.unwrap();
    assert_eq!(
        cache_column(&mut setup, &t).await,
        "cacheable (ttl 30 s, cache rule 1)",
        "a running session sees the new rules"
    );
    let mut admin = Conn::new(admin_opts(admin_port(&w), "admin-secret"))
        .await
        .unwrap();
    let rows: Vec<Row> = admin.query("SELECT * FROM backends").await.unwrap();
    let weight: Option<String> = rows[1].get("weight");
    assert_eq!(weight.as_deref(), Some("5"));

    // A bad file, by RELOAD CONFIG: refused with the reason; the running configuration stays.
    std::fs::write(&path, config_text("[cache]\nmemory = \"lots\"\n")).unwrap();
    let err = admin
        .query_drop("RELOAD CONFIG")
        .await
        .expect_err("a bad file is refused")
        .to_string();
    assert!(
        err.contains("RELOAD CONFIG refused") && err.contains("memory"),
        "{err}"
    );
    std::fs::write(&path, "this is not toml").unwrap();
    let err = admin
        .query_drop("RELOAD CONFIG")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused"), "{err}");
    assert_eq!(
        cache_column(&mut setup, &t).await,
        "cacheable (ttl 30 s, cache rule 1)",
        "the good configuration stays"
    );

    // A good file again, by RELOAD CONFIG: the answer says what was applied.
    std::fs::write(&path, config_text("")).unwrap();
    let summary: Option<String> = admin.query_first("RELOAD CONFIG").await.unwrap();
    let summary = summary.unwrap();
    assert!(summary.starts_with("configuration reloaded"), "{summary}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a load session");
    }
    let (done, errors) = (done.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    println!(
        "reload under load: {done} statements, {errors} client errors, 4 reloads: 2 applied, 2 refused"
    );
    assert_eq!(errors, 0);
    assert!(done > 100, "{done} statements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_statement_logs_without_passwords() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (query_log, slow_log) = (
        dir.join(format!("query-{}.log", std::process::id())),
        dir.join(format!("slow-{}.log", std::process::id())),
    );
    let _ = std::fs::remove_file(&query_log);
    let _ = std::fs::remove_file(&slow_log);
    let path = config_path("logs");
    std::fs::write(
        &path,
        config_text(&format!(
            "[log]\nformat = \"json\"\nquery_log = \"{}\"\nslow_log = \"{}\"\nslow_query_time = 0.1\n",
            query_log.display(),
            slow_log.display()
        )),
    )
    .unwrap();
    let w = Weiche::start_with(&["--config", path.to_str().unwrap()]);
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    c.query_drop("SELECT 1").await.unwrap();
    c.query_drop("SELECT SLEEP(0.2)").await.unwrap();
    let _ = c.query_drop("SELECT PASSWORD('hunter2')").await;
    c.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let q = std::fs::read_to_string(&query_log).expect("query log");
    let s = std::fs::read_to_string(&slow_log).expect("slow log");
    assert!(
        q.lines().any(|l| l.contains("user=app")
            && l.contains("route=replica")
            && l.ends_with("SELECT 1")),
        "{q}"
    );
    assert!(q.contains("SELECT SLEEP(0.2)"), "{q}");
    assert_eq!(s.lines().count(), 1, "only the SLEEP is slow: {s}");
    assert!(s.contains("SELECT SLEEP(0.2)"), "{s}");
    let log = w.log_text();
    for text in [&q, &s, &log] {
        assert!(!text.contains("hunter2"), "a password was logged");
    }
    assert!(q.contains("SELECT PASSWORD(?)"), "{q}");
    // JSON logs: every line one object; session lines carry the session's fields.
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
    }
    assert!(
        log.lines().any(|l| l.contains("\"span\":{")
            && l.contains("\"user\":\"app\"")
            && l.contains("\"client\":\"127.0.0.1:")),
        "{log}"
    );
}
