//! The process-wide families of /metrics: command latency histograms by route, errors by kind,
//! server connection pools, and sessions pinned by reason (the per-backend families are in
//! `http`).

use crate::metrics::{ErrorKind, Limit, RouteLabel, BUCKETS};
use crate::shared::Shared;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A counter family: its head, then one line per label set.
fn counters<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (&'a String, &'a std::sync::atomic::AtomicU64)>,
) {
    head(out, name, "counter", help);
    for (labels, value) in rows {
        let _ = writeln!(out, "{name}{{{labels}}} {}", value.load(Relaxed));
    }
}

/// A Prometheus label value.
pub(super) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn families(shared: &Shared, out: &mut String) {
    let m = &shared.metrics;
    let name = "weiche_command_duration_seconds";
    head(
        out,
        name,
        "histogram",
        "Time from a command's arrival to the end of its answer, by where it was answered.",
    );
    for r in RouteLabel::ALL {
        let (cumulative, sum) = m.latency[r as usize].snapshot();
        let route = r.as_str();
        for (bound, n) in BUCKETS.iter().zip(&cumulative) {
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {n}");
        }
        let total = cumulative.last().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", sum as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {total}");
    }

    let pools = shared.pool_counts.snapshot();
    let exhausted: u64 = pools.iter().map(|(_, c)| c.exhausted.load(Relaxed)).sum();
    head(
        out,
        "weiche_errors_total",
        "counter",
        "Errors by kind: routing, backend, timeout, pool, login, client.",
    );
    for k in ErrorKind::ALL {
        let n = m.errors(k) + if k == ErrorKind::Pool { exhausted } else { 0 };
        let _ = writeln!(out, "weiche_errors_total{{kind=\"{}\"}} {n}", k.as_str());
    }

    head(
        out,
        "weiche_shared_writes_unpublished_total",
        "counter",
        "Commits whose GTID could not be published in memcached (routing.shared_read_your_writes).",
    );
    let _ = writeln!(
        out,
        "weiche_shared_writes_unpublished_total {}",
        m.shared_writes_unpublished.load(Relaxed)
    );

    let sessions = ["zlib", "zstd"].map(|a| format!("algorithm=\"{a}\""));
    counters(
        out,
        "weiche_compressed_sessions_total",
        "Client sessions on the compressed protocol, by algorithm.",
        sessions.iter().zip(&m.compressed_sessions),
    );
    let bytes = [
        ("received", "wire"),
        ("received", "plain"),
        ("sent", "wire"),
        ("sent", "plain"),
    ]
    .map(|(dir, form)| format!("direction=\"{dir}\",form=\"{form}\""));
    counters(
        out,
        "weiche_compressed_bytes_total",
        "Bytes of ended compressed client sessions, on the wire and before compression.",
        bytes.iter().zip(&m.compressed_bytes),
    );

    head(
        out,
        "weiche_limit_refusals_total",
        "counter",
        "Clients refused or closed by a limit ([limits], proxy.max_packet_size).",
    );
    for l in Limit::ALL {
        let _ = writeln!(
            out,
            "weiche_limit_refusals_total{{limit=\"{}\"}} {}",
            l.as_str(),
            m.limits(l)
        );
    }

    head(
        out,
        "weiche_pool_connections",
        "gauge",
        "Server connections per backend, in use by sessions or idle in the pools.",
    );
    for (address, c) in &pools {
        let (open, idle) = (c.open.load(Relaxed), c.idle.load(Relaxed));
        let a = escape(address);
        let _ = writeln!(
            out,
            "weiche_pool_connections{{backend=\"{a}\",state=\"in_use\"}} {}",
            (open - idle).max(0)
        );
        let _ = writeln!(
            out,
            "weiche_pool_connections{{backend=\"{a}\",state=\"idle\"}} {}",
            idle.max(0)
        );
    }
    head(
        out,
        "weiche_pool_waits_total",
        "counter",
        "Borrows that waited because the backend's connections were all in use.",
    );
    for (address, c) in &pools {
        let _ = writeln!(
            out,
            "weiche_pool_waits_total{{backend=\"{}\"}} {}",
            escape(address),
            c.waits.load(Relaxed)
        );
    }

    head(
        out,
        "weiche_pool_retired_total",
        "counter",
        "Idle connections closed instead of lent: closed by their server, past pool.max_lifetime, or older than a change of the server's globals.",
    );
    for (address, c) in &pools {
        let _ = writeln!(
            out,
            "weiche_pool_retired_total{{backend=\"{}\"}} {}",
            escape(address),
            c.retired.load(Relaxed)
        );
    }

    let mut pinned: BTreeMap<String, u64> = BTreeMap::new();
    for (_, h) in shared.registry.list() {
        let pins = h.pins();
        for reason in pins.split(", ").filter(|r| !r.is_empty()) {
            // "temporary table t1" -> "temporary table": one series per kind, not per name.
            let kind = reason.split(" (").next().unwrap_or(reason);
            *pinned.entry(kind.to_string()).or_default() += 1;
        }
    }
    head(
        out,
        "weiche_sessions_pinned",
        "gauge",
        "Sessions held on one server connection now, by reason.",
    );
    for (reason, n) in pinned {
        let _ = writeln!(
            out,
            "weiche_sessions_pinned{{reason=\"{}\"}} {n}",
            escape(&reason)
        );
    }
}
