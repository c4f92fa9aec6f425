//! Multiplexing under load: 200 concurrent clients share at most 20 server connections per
//! backend for a minute of mixed reads, writes, transactions and prepared statements. No client
//! sees an error, every committed write is there afterwards, and the backends never see more
//! connections than the pool allows.

mod common;

use common::{opts, primary, replicas, table, PrivateUser, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 200;
const MAX_PER_BACKEND: usize = 20;

fn run_for() -> Duration {
    let secs = std::env::var("WEICHE_POOL_TEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Connections `user` holds on a backend, seen by root (`except`: the test's own).
async fn connections_of(user: &str, addr: &str, except: u32) -> usize {
    let (host, port) = common::host_port(addr);
    let o = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false);
    let mut c = Conn::new(o).await.expect("root connection");
    let n: usize = c
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}' AND ID <> {except}"
        ))
        .await
        .unwrap()
        .unwrap();
    c.disconnect().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_few_server_connections() {
    // An account of the test's own: the connections counted are this Weiche's only.
    let user = PrivateUser::new("pool");
    let w = Weiche::start_config(&format!(
        "[[users]]\nname = \"{}\"\npassword = \"{}\"\n\n\
         [pool]\nmax_connections = {MAX_PER_BACKEND}\nwait_timeout = 10\n",
        user.name, user.password
    ));
    let client_opts = |addr: &str| -> mysql_async::Opts {
        mysql_async::OptsBuilder::from_opts(opts(addr))
            .user(Some(user.name.clone()))
            .pass(Some(user.password.clone()))
            .into()
    };
    let t = table("pool_load");
    let mut setup = Conn::new(opts(&primary())).await.unwrap();
    setup
        .query_drop(format!(
            "CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, client INT, v INT)"
        ))
        .await
        .unwrap();
    setup
        .query_drop(format!(
            "INSERT INTO {t} (client, v) SELECT 0, seq FROM seq_1_to_100"
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let deadline = Instant::now() + run_for();
    let committed = Arc::new(AtomicUsize::new(0));
    let queries = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for k in 0..CLIENTS {
        let (o, t) = (client_opts(&w.addr()), t.clone());
        let (committed, queries) = (committed.clone(), queries.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(o).await.expect("connect");
            let select = c
                .prep(format!("SELECT v FROM {t} WHERE id = ?"))
                .await
                .expect("prepare");
            let mut i = k;
            while Instant::now() < deadline {
                i += 1;
                match i % 10 {
                    0..=3 => {
                        let _: Option<i64> = c
                            .query_first(format!("SELECT v FROM {t} WHERE id = {}", i % 100 + 1))
                            .await
                            .expect("read");
                    }
                    4 | 5 => {
                        let _: Option<i64> = c
                            .exec_first(&select, (i % 100 + 1,))
                            .await
                            .expect("prepared read");
                    }
                    6 | 7 => {
                        c.query_drop(format!("INSERT INTO {t} (client, v) VALUES ({k}, {i})"))
                            .await
                            .expect("insert");
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                    8 => {
                        c.query_drop("BEGIN").await.expect("begin");
                        for _ in 0..2 {
                            c.query_drop(format!("INSERT INTO {t} (client, v) VALUES ({k}, {i})"))
                                .await
                                .expect("insert in transaction");
                        }
                        let _: Option<i64> = c
                            .query_first(format!("SELECT COUNT(*) FROM {t} WHERE client = {k}"))
                            .await
                            .expect("read in transaction");
                        c.query_drop("COMMIT").await.expect("commit");
                        committed.fetch_add(2, Ordering::Relaxed);
                    }
                    _ => {
                        c.query_drop("BEGIN").await.expect("begin");
                        c.query_drop(format!("INSERT INTO {t} (client, v) VALUES ({k}, -1)"))
                            .await
                            .expect("insert to roll back");
                        c.query_drop("ROLLBACK").await.expect("rollback");
                    }
                }
                queries.fetch_add(1, Ordering::Relaxed);
            }
            c.disconnect().await.expect("disconnect");
        }));
    }
    // Watch the backends' connection counts while the load runs.
    let setup_id = setup.id();
    let watch = {
        let done = done.clone();
        let name = user.name.clone();
        tokio::spawn(async move {
            let mut max = vec![0usize; 3];
            while !done.load(Ordering::Relaxed) {
                for (i, addr) in std::iter::once(primary()).chain(replicas()).enumerate() {
                    max[i] = max[i].max(connections_of(&name, &addr, setup_id).await);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            max
        })
    };
    for task in tasks {
        task.await.expect("a client failed");
    }
    done.store(true, Ordering::Relaxed);
    let max = watch.await.unwrap();

    let rows: usize = setup
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .unwrap()
        .unwrap();
    let rolled_back: usize = setup
        .query_first(format!("SELECT COUNT(*) FROM {t} WHERE v < 0"))
        .await
        .unwrap()
        .unwrap();
    let committed = committed.load(Ordering::Relaxed);
    let queries = queries.load(Ordering::Relaxed);
    eprintln!(
        "{queries} operations, {committed} committed rows, max connections per backend {max:?}"
    );
    assert_eq!(
        rows - 100,
        committed,
        "every committed write is there, and no more"
    );
    assert_eq!(rolled_back, 0, "rolled-back writes are gone");
    assert!(queries > CLIENTS * 10, "the load ran: {queries} operations");
    for m in &max {
        assert!(
            *m <= MAX_PER_BACKEND,
            "backend connections {max:?} over {MAX_PER_BACKEND}"
        );
    }
    assert!(max[1] + max[2] > 0, "replicas served reads: {max:?}");
    setup.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}
