//! SHOW FLEET and /status.json against a real memcached: instances that share the cluster (and
//! its secret) find each other by their heartbeats, one with another configuration is flagged,
//! one that stops drops out, and one with another secret is never listed.

mod common;

use common::memcached::Memcached;
use common::{admin_opts, admin_port, http_get, listening_port, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};

const ADMIN: &str =
    "[admin]\naddress = \"127.0.0.1:0\"\nusername = \"admin\"\npassword = \"admin-secret\"\n\
                     [http]\naddress = \"127.0.0.1:0\"\n";

fn config(m: &Memcached, ns: &str, secret: &str, ttl: u32) -> String {
    format!(
        "{ADMIN}[cache]\nservers = [\"{}\"]\nnamespace = \"{ns}\"\nsecret = \"{secret}\"\n\
         [[cache.rules]]\ntable = \"fleet_t\"\nttl = {ttl}\n",
        m.addr()
    )
}

/// (instance, address, same_config) per SHOW FLEET row.
async fn fleet(w: &Weiche) -> Vec<(String, String, String)> {
    let mut a = Conn::new(admin_opts(admin_port(w), "admin-secret"))
        .await
        .expect("admin");
    let rows: Vec<mysql_async::Row> = a.query("SHOW FLEET").await.expect("SHOW FLEET");
    rows.into_iter()
        .map(|r| {
            let get = |name: &str| -> String { r.get(name).expect(name) };
            (get("instance"), get("address"), get("same_config"))
        })
        .collect()
}

/// Wait until `w` lists exactly these addresses (in any order).
async fn wait_for(w: &Weiche, want: &[String]) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let f = fleet(w).await;
        let mut have: Vec<&String> = f.iter().map(|(_, a, _)| a).collect();
        have.sort();
        let mut want_sorted: Vec<&String> = want.iter().collect();
        want_sorted.sort();
        if have == want_sorted {
            return f;
        }
        assert!(Instant::now() < deadline, "fleet {f:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_memcached_list_each_other_and_flag_a_different_config() {
    let m = Memcached::start();
    let ns = common::table("fleet");
    let secret = format!("{ns}-shared-secret");
    let a = Weiche::start_config(&config(&m, &ns, &secret, 60));
    let b = Weiche::start_config(&config(&m, &ns, &secret, 60));
    let odd = Weiche::start_config(&config(&m, &ns, &secret, 30));
    // Another secret: its heartbeats are not ours to trust.
    let stranger = Weiche::start_config(&config(&m, &ns, &format!("{ns}-another-secret"), 60));
    let all = [a.addr(), b.addr(), odd.addr()];
    let f = wait_for(&a, &all).await;
    println!("SHOW FLEET on a: {f:?}");
    assert_eq!(f[0].1, a.addr(), "this instance comes first");
    for (_, addr, same) in &f {
        let want = if *addr == odd.addr() { "no" } else { "yes" };
        assert_eq!(same, want, "{addr} in {f:?}");
    }
    wait_for(&b, &all).await;
    let s = wait_for(&stranger, &[stranger.addr()]).await;
    assert_eq!(s.len(), 1);

    // /status.json has the fleet too.
    let http = listening_port(&a, "http interface listening");
    let (code, body) = http_get(http, "/status.json");
    assert_eq!(code, 200);
    assert!(body.contains("\"fleet\":["), "{body}");
    assert!(
        body.contains(&format!("\"address\":\"{}\"", odd.addr())),
        "{body}"
    );
    assert!(body.contains("\"same_config\":false"), "{body}");

    // One that stops is gone within its slot's lifetime.
    drop(odd);
    let started = Instant::now();
    wait_for(&a, &[a.addr(), b.addr()]).await;
    println!(
        "a stopped instance left the fleet after {:?}",
        started.elapsed()
    );
}
