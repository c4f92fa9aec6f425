//! The HTTP listener (`--http-address`, `[http] address`): `/metrics` in the Prometheus text
//! format, `/health` (200 when Weiche can route writes and reads, 503 otherwise, with a JSON
//! body), and the status page (`/` and its `/status.json`). A few lines of HTTP/1.1 by hand: one request per connection, then close.

use super::exposition::escape;
use super::status_page::json_string;
use crate::backend::{State, Writer};
use crate::shared::Shared;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serve HTTP until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), request(&shared, stream))
                        .await;
                });
            }
            Err(e) => {
                tracing::warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn request(shared: &Shared, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 16 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (code, kind, body) = match (method, path) {
        ("GET", "/metrics") => (200, "text/plain; version=0.0.4", metrics(shared)),
        ("GET", "/" | "/index.html") => (
            200,
            "text/html; charset=utf-8",
            super::status_page::PAGE.into(),
        ),
        ("GET", "/status.json") => (200, "application/json", super::status_page::json(shared)),
        ("GET", "/health") => {
            let (ok, body) = health(shared);
            (if ok { 200 } else { 503 }, "application/json", body)
        }
        ("GET", _) => (
            404,
            "text/plain",
            "not found: try /, /status.json, /metrics or /health\n".into(),
        ),
        _ => (405, "text/plain", "only GET\n".into()),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The Prometheus text exposition of what Weiche knows now.
pub fn metrics(shared: &Shared) -> String {
    let t = &shared.backends;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let per = |f: &dyn Fn(usize) -> Option<String>| -> Vec<(String, String)> {
        (0..t.backends.len())
            .filter_map(|i| {
                let labels = format!(
                    "{{backend=\"{}\",role=\"{}\"}}",
                    escape(&t.backends[i].address),
                    t.role(i).as_str()
                );
                f(i).map(|v| (labels, v))
            })
            .collect()
    };
    family(
        "weiche_backend_queries_total",
        "counter",
        "Commands sent to the backend.",
        per(&|i| Some(t.backends[i].served.load(Ordering::Relaxed).to_string())),
    );
    family(
        "weiche_backend_in_flight",
        "gauge",
        "Commands running on the backend now.",
        per(&|i| {
            Some(
                t.backends[i]
                    .outstanding
                    .load(Ordering::Relaxed)
                    .to_string(),
            )
        }),
    );
    family(
        "weiche_backend_up",
        "gauge",
        "1 when the backend takes its role's work (state up).",
        per(&|i| Some(u8::from(t.state(i) == State::Up).to_string())),
    );
    family(
        "weiche_backend_state",
        "gauge",
        "The backend's state: 0 up, 1 down, 2 lagging, 3 offline.",
        per(&|i| Some((t.state(i) as u8).to_string())),
    );
    family(
        "weiche_backend_lag_seconds",
        "gauge",
        "Replication lag in seconds (GTID-corrected).",
        per(&|i| t.report_of(i).lag_seconds.map(|l| format!("{l}"))),
    );
    family(
        "weiche_backend_lag_transactions",
        "gauge",
        "Transactions the replica has not applied yet.",
        per(&|i| t.report_of(i).lag_transactions.map(|l| l.to_string())),
    );
    family(
        "weiche_backend_transitions_total",
        "counter",
        "State changes of the backend since start.",
        per(&|i| Some(t.report_of(i).transitions.to_string())),
    );
    let writable = matches!(t.writer(), Writer::One(_));
    family(
        "weiche_primary_available",
        "gauge",
        "1 when exactly one primary takes writes.",
        vec![(String::new(), u8::from(writable).to_string())],
    );
    family(
        "weiche_sessions",
        "gauge",
        "Client sessions now.",
        vec![(String::new(), shared.registry.len().to_string())],
    );
    if let Some(cache) = &shared.cache {
        family(
            "weiche_cache_events_total",
            "counter",
            "Result cache events: hits, misses, stores, not_stored, bypassed, refused, generation_bumps, rejected, evictions or store_errors; with cache.binlog also binlog_commits, binlog_bumps, binlog_reconnects, binlog_flushes and binlog_held.",
            cache
                .counters()
                .into_iter()
                .map(|(event, n)| {
                    (
                        format!("{{store=\"{}\",event=\"{event}\"}}", cache.store_name()),
                        n.to_string(),
                    )
                })
                .collect(),
        );
        if let Some(tail) = &cache.tail {
            for (name, v) in tail.gauges() {
                let help = match name {
                    "binlog_serving_hits" => "1 while the binlog follower is close enough behind the primary for cache hits.",
                    _ => "Seconds since the binlog follower last caught up with a position read from the primary.",
                };
                family(
                    &format!("weiche_cache_{name}"),
                    "gauge",
                    help,
                    vec![(
                        String::new(),
                        if v.is_finite() {
                            format!("{v:.3}")
                        } else {
                            "+Inf".into()
                        },
                    )],
                );
            }
        }
    }
    super::exposition::families(shared, &mut out);
    out
}

/// Whether Weiche can route writes and reads now, and why, as JSON.
pub fn health(shared: &Shared) -> (bool, String) {
    let t = &shared.backends;
    let config = shared.config();
    let primary = t.primary();
    let replicas = (0..t.backends.len())
        .filter(|&i| t.usable_replica(i))
        .count();
    let writes = primary.is_ok();
    let reads = replicas > 0 || (writes && config.routing.fallback_to_primary);
    let mut body = String::from("{");
    let _ = write!(
        body,
        "\"writes\":{writes},\"reads\":{reads},\"primary\":{},\"replicas_in_rotation\":{replicas}",
        match &primary {
            Ok(i) => json_string(&t.backends[*i].address),
            Err(_) => "null".into(),
        }
    );
    if let Err(e) = &primary {
        let _ = write!(body, ",\"problem\":{}", json_string(&e.to_string()));
    }
    body.push_str(",\"backends\":[");
    for i in 0..t.backends.len() {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            "{{\"address\":{},\"role\":\"{}\",\"state\":\"{}\"}}",
            json_string(&t.backends[i].address),
            t.role(i).as_str(),
            t.state(i).as_str()
        );
    }
    body.push_str("]}\n");
    (writes && reads, body)
}
