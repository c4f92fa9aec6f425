//! The admin port's statistics tables: SHOW POOLS, SHOW CACHE, SHOW QUERY DIGESTS, SHOW FLEET.

use super::table;
use crate::metrics::RouteLabel;
use crate::shared::Shared;
use bytes::BytesMut;
use std::sync::atomic::Ordering::Relaxed;

/// SHOW POOLS: each backend's server connections over all workers.
pub fn pools(shared: &Shared) -> Vec<BytesMut> {
    let config = shared.config();
    let max = config.pool.settings.max_connections;
    let rows = shared
        .pool_counts
        .snapshot()
        .into_iter()
        .map(|(address, c)| {
            let (open, idle) = (c.open.load(Relaxed), c.idle.load(Relaxed));
            vec![
                Some(address),
                Some(open.max(0).to_string()),
                Some((open - idle).max(0).to_string()),
                Some(idle.max(0).to_string()),
                Some(max.to_string()),
                Some(c.opened.load(Relaxed).to_string()),
                Some(c.waits.load(Relaxed).to_string()),
                Some(c.exhausted.load(Relaxed).to_string()),
                Some(c.retired.load(Relaxed).to_string()),
            ]
        })
        .collect();
    table(
        &[
            "backend",
            "open",
            "in_use",
            "idle",
            "max_connections",
            "opened_total",
            "waits",
            "exhausted",
            "retired",
        ],
        rows,
    )
}

/// SHOW CACHE: one row per statistic.
pub fn cache(shared: &Shared) -> Vec<BytesMut> {
    let rows = match &shared.cache {
        Some(c) => c
            .describe(&shared.config().cache)
            .into_iter()
            .map(|(k, v)| vec![Some(k), Some(v)])
            .collect(),
        None => vec![vec![Some("store".into()), Some("off".into())]],
    };
    table(&["name", "value"], rows)
}

/// SHOW QUERY DIGESTS: per digest, by total time.
pub fn digests(shared: &Shared) -> Vec<BytesMut> {
    let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
    // Which digests the cache holds: auto mode's by name; a rule's or hint's by its hits.
    let cached = |d: &crate::metrics::DigestRow| {
        let auto = shared.cache.as_ref().and_then(|c| c.auto.digest(d.hash));
        match auto {
            Some(a) if a.too_large => "auto: results too large",
            Some(_) => "auto",
            None if d.routes[RouteLabel::Cache as usize] > 0 => "rule or hint",
            None => "",
        }
        .to_string()
    };
    let rows = shared
        .metrics
        .digests
        .top(usize::MAX)
        .into_iter()
        .map(|d| {
            let share = |r: RouteLabel| {
                format!("{:.3}", d.routes[r as usize] as f64 / d.count.max(1) as f64)
            };
            let (cached, saved) = (cached(&d), ms(d.saved_micros()));
            vec![
                Some(d.digest),
                Some(d.count.to_string()),
                Some(ms(d.total_micros)),
                Some(ms(d.total_micros / d.count.max(1))),
                Some(ms(d.max_micros)),
                Some(d.rows.to_string()),
                Some(d.errors.to_string()),
                Some(share(RouteLabel::Primary)),
                Some(share(RouteLabel::Replica)),
                Some(share(RouteLabel::Cache)),
                Some(cached),
                Some(saved),
            ]
        })
        .collect();
    table(
        &[
            "digest",
            "count",
            "total_ms",
            "avg_ms",
            "max_ms",
            "rows",
            "errors",
            "primary_share",
            "replica_share",
            "cache_share",
            "cached",
            "saved_ms",
        ],
        rows,
    )
}

/// SHOW FLEET: this instance first, then the others its last heartbeat saw; `same_config` is
/// "no" where an instance's configuration digest differs from this one's.
pub fn fleet(shared: &Shared) -> Vec<BytesMut> {
    let members = shared.fleet.members(shared);
    let ours = members.first().map(|m| m.config_digest.clone());
    let rows = members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let same = Some(&m.config_digest) == ours.as_ref();
            vec![
                Some(m.id),
                Some(if i == 0 { "yes" } else { "no" }.into()),
                Some(m.address),
                Some(m.version),
                Some(m.config_digest),
                Some(if same { "yes" } else { "no" }.into()),
                Some(m.sessions.to_string()),
                Some(format!("{:.1}", m.qps)),
                Some(m.uptime_secs.to_string()),
            ]
        })
        .collect();
    table(
        &[
            "instance",
            "this",
            "address",
            "version",
            "config_digest",
            "same_config",
            "sessions",
            "qps",
            "uptime_s",
        ],
        rows,
    )
}
