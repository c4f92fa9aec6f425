//! The status page: `/` is one self-contained HTML page (`status_page.html`, no build step) that
//! polls `/status.json` every second and draws the backends, queries per second per backend,
//! the cache's hit ratio and the top digests.

use crate::backend::Writer;
use crate::shared::Shared;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

pub const PAGE: &str = include_str!("status_page.html");

/// A JSON string literal (also /health's).
pub(super) fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number, or null when it is not finite.
fn n(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

pub fn json(shared: &Shared) -> String {
    let t = &shared.backends;
    let writer = t.writer();
    let mut out = String::with_capacity(2048);
    let _ = write!(
        out,
        "{{\"version\":{},\"uptime_seconds\":{},\"sessions\":{},\"primary_available\":{},\"backends\":[",
        json_string(env!("CARGO_PKG_VERSION")),
        n(shared.metrics.started.elapsed().as_secs_f64()),
        shared.registry.len(),
        matches!(writer, Writer::One(_))
    );
    for (k, &i) in t.proxy_order().iter().enumerate() {
        let b = &t.backends[i];
        let r = t.report_of(i);
        let role = if matches!(writer, Writer::One(w) if w == i) {
            "primary"
        } else {
            t.role(i).as_str()
        };
        let _ = write!(
            out,
            "{}{{\"address\":{},\"role\":{},\"state\":{},\"lag_seconds\":{},\"queries\":{},\"in_flight\":{},\"position\":{}}}",
            if k > 0 { "," } else { "" },
            json_string(&b.address),
            json_string(role),
            json_string(t.state(i).as_str()),
            r.lag_seconds.map_or("null".into(), n),
            b.served.load(Relaxed),
            b.outstanding.load(Relaxed),
            r.position.as_deref().map_or("null".into(), json_string),
        );
    }
    out.push_str("],\"cache\":");
    match &shared.cache {
        Some(c) => {
            let (hits, misses) = (c.stats.hits.load(Relaxed), c.stats.misses.load(Relaxed));
            let ratio = if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            };
            let _ = write!(
                out,
                "{{\"store\":{},\"hits\":{hits},\"misses\":{misses},\"hit_ratio\":{}}}",
                json_string(c.store_name()),
                n(ratio)
            );
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"fleet\":[");
    let members = shared.fleet.members(shared);
    let ours = members.first().map(|m| m.config_digest.clone());
    for (k, m) in members.iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"instance\":{},\"this\":{},\"address\":{},\"version\":{},\"config_digest\":{},\"same_config\":{},\"sessions\":{},\"qps\":{},\"uptime_seconds\":{}}}",
            if k > 0 { "," } else { "" },
            json_string(&m.id),
            k == 0,
            json_string(&m.address),
            json_string(&m.version),
            json_string(&m.config_digest),
            Some(&m.config_digest) == ours.as_ref(),
            m.sessions,
            n(m.qps),
            m.uptime_secs,
        );
    }
    out.push_str("],\"digests\":[");
    for (k, d) in shared.metrics.digests.top(10).iter().enumerate() {
        let ms = |us: u64| us as f64 / 1000.0;
        let _ = write!(
            out,
            "{}{{\"digest\":{},\"count\":{},\"avg_ms\":{},\"max_ms\":{},\"rows\":{},\"total_ms\":{}}}",
            if k > 0 { "," } else { "" },
            json_string(&d.digest),
            d.count,
            n(ms(d.total_micros) / d.count.max(1) as f64),
            n(ms(d.max_micros)),
            d.rows,
            n(ms(d.total_micros)),
        );
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strings_are_escaped() {
        assert_eq!(
            super::json_string("a\"b\\c\n<"),
            "\"a\\\"b\\\\c\\u000a\\u003c\""
        );
        assert_eq!(super::n(f64::NAN), "null");
    }
}
