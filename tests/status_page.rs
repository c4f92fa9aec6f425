//! The status page in headless Chromium (Debian's chromium, through scripts/status-page-check):
//! it renders, shows the sandbox's three backends with the right roles, and its numbers change
//! after traffic.

mod common;

use common::{listening_port, opts, primary, replicas, Weiche};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::path::PathBuf;
use std::process::Command;

/// Render the page once: the summary scripts/status-page-check wrote (JSON text) and the DOM.
fn render(http: u16, name: &str) -> (String, String) {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("status-page-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/status-page-check");
    let run = Command::new(script)
        .arg(format!("http://127.0.0.1:{http}"))
        .arg(&out)
        .output()
        .expect("run scripts/status-page-check");
    assert!(
        run.status.success(),
        "status-page-check failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (
        std::fs::read_to_string(out.join("summary.json")).expect("summary.json"),
        std::fs::read_to_string(out.join("dom.html")).expect("dom.html"),
    )
}

/// The `"queries"` value of the row for `address` in a summary.
fn queries(summary: &str, address: &str) -> u64 {
    let at = summary
        .find(&format!("\"address\": \"{address}\""))
        .unwrap_or_else(|| panic!("no row for {address}: {summary}"));
    let rest = &summary[at..];
    let q = rest.find("\"queries\": \"").expect("queries") + "\"queries\": \"".len();
    rest[q..]
        .split('"')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_the_backends_and_follows_traffic() {
    let w = Weiche::start_config("[http]\naddress = \"127.0.0.1:0\"\n");
    let http = listening_port(&w, "http interface listening");
    let (before, _) = render(http, "before");
    for (address, role) in [
        (primary(), "primary"),
        (replicas()[0].clone(), "replica"),
        (replicas()[1].clone(), "replica"),
    ] {
        let row = format!("\"address\": \"{address}\",\n      \"role\": \"{role}\"");
        assert!(before.contains(&row), "{row} in {before}");
    }
    let mut c = Conn::new(opts(&w.addr())).await.expect("connect");
    for _ in 0..50 {
        let _: Option<u32> = c.query_first("SELECT 1").await.unwrap();
    }
    let (after, dom) = render(http, "after");
    let moved: u64 = replicas()
        .iter()
        .map(|r| queries(&after, r) - queries(&before, r))
        .sum();
    assert!(moved >= 50, "the replicas' query counts grew by {moved}");
    assert!(
        dom.contains(r#"<td class="digest">SELECT ?</td>"#),
        "the digest appears: {dom}"
    );
    // Without a memcached cluster the fleet is this instance alone.
    assert!(
        dom.contains(&format!(r#"<td class="address">{}</td>"#, w.addr())),
        "the fleet shows this instance: {dom}"
    );
}
