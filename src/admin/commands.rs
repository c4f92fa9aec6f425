//! The admin port's commands and their answers (text result sets, OK or ERR payloads).

use super::table;
use crate::backend::{State, Writer};
use crate::protocol::constants::{errcode, status};
use crate::protocol::{err_payload, ok_payload, ErrPacket};
use crate::shared::Shared;
use bytes::BytesMut;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

/// (command, what it does) for `SELECT * FROM help` and the unknown-command error.
const HELP: &[(&str, &str)] = &[
    (
        "SELECT * FROM backends",
        "each backend: address, state, role, lag, GTID position, queries",
    ),
    ("SELECT * FROM help", "this list"),
    (
        "SHOW SESSIONS",
        "client sessions: user, database, backend, current command and its age",
    ),
    (
        "SET BACKEND 'host:port' OFFLINE",
        "no new work for the backend; what runs finishes",
    ),
    (
        "SET BACKEND 'host:port' DRAIN",
        "the same as OFFLINE: pinned sessions finish their work",
    ),
    (
        "SET BACKEND 'host:port' ONLINE",
        "the backend takes work again (when its checks pass)",
    ),
    ("KILL SESSION n", "close client session n"),
    (
        "RELOAD CONFIG",
        "re-read the configuration file and apply it (like SIGHUP); a bad file is refused",
    ),
    (
        "SHOW QUERY DIGESTS",
        "statements by digest: count, total/avg/max time, rows, share per route",
    ),
    (
        "SHOW POOLS",
        "server connections per backend: open, in use, idle, waits, exhausted",
    ),
    (
        "SHOW CACHE",
        "result cache statistics: hits, misses, stores, bytes, evictions, per rule",
    ),
    (
        "SHOW FLEET",
        "the Weiche instances sharing this one's memcached cluster: version, config digest, load",
    ),
    (
        "FLUSH CACHE [schema.table]",
        "forget every cached result, or those that read one table",
    ),
    (
        "FLUSH HOSTS",
        "forget every failed-login and handshake-error count: blocked addresses may log in again",
    ),
    (
        "EXPLAIN ROUTE statement",
        "where the statement would go for a new session, and why",
    ),
];

fn err(code: u16, msg: impl Into<String>) -> Vec<BytesMut> {
    vec![err_payload(&ErrPacket::new(code, "HY000", msg))]
}

fn ok(affected: u64) -> Vec<BytesMut> {
    vec![ok_payload(affected, status::AUTOCOMMIT)]
}

/// Collapse whitespace, drop a trailing `;`.
fn normalize(sql: &str) -> String {
    sql.trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The answer to one admin query.
pub fn answer(shared: &Shared, sql: &str) -> Vec<BytesMut> {
    let q = normalize(sql);
    let upper = q.to_ascii_uppercase();
    match upper.as_str() {
        "SELECT * FROM BACKENDS" => return backends(shared),
        "SELECT * FROM HELP" => {
            return table(
                &["command", "description"],
                HELP.iter()
                    .map(|(c, d)| vec![Some(c.to_string()), Some(d.to_string())])
                    .collect(),
            )
        }
        "SHOW SESSIONS" => return sessions(shared),
        // What the mariadb CLI asks when it connects.
        "SELECT @@VERSION_COMMENT LIMIT 1" => {
            return table(
                &["@@version_comment"],
                vec![vec![Some("Weiche admin".into())]],
            )
        }
        "SHOW CACHE" => return super::stats::cache(shared),
        "SHOW POOLS" => return super::stats::pools(shared),
        "SHOW QUERY DIGESTS" => return super::stats::digests(shared),
        "SHOW FLEET" => return super::stats::fleet(shared),
        "FLUSH HOSTS" => {
            shared.admission.flush();
            tracing::info!("FLUSH HOSTS: failed-login counts forgotten");
            return ok(0);
        }

        _ => {}
    }
    if upper.starts_with("SELECT @@") {
        return variables(&q);
    }
    if let Some(rest) = upper.strip_prefix("SET BACKEND ") {
        return set_backend(shared, &q["SET BACKEND ".len()..], rest);
    }
    if let Some(n) = upper.strip_prefix("KILL SESSION ") {
        return match n
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(|id| shared.registry.get(id))
        {
            Some(h) => {
                h.killed.notify_one();
                ok(1)
            }
            None => err(
                errcode::ER_NO_SUCH_THREAD,
                format!("Unknown session id: {}", n.trim()),
            ),
        };
    }
    if upper.starts_with("EXPLAIN ROUTE ") {
        return explain_route(shared, &q["EXPLAIN ROUTE ".len()..]);
    }
    let list: Vec<&str> = HELP.iter().map(|(c, _)| *c).collect();
    err(
        errcode::ER_UNKNOWN_COM,
        format!(
            "unknown admin command '{q}'; the commands are: {}",
            list.join("; ")
        ),
    )
}

/// Is this RELOAD CONFIG?
pub fn is_reload(sql: &str) -> bool {
    normalize(sql).eq_ignore_ascii_case("RELOAD CONFIG")
}

/// RELOAD CONFIG's answer: one row saying what was applied.
pub fn reloaded(summary: &str) -> Vec<BytesMut> {
    table(&["result"], vec![vec![Some(summary.to_string())]])
}

pub fn refused_reload(e: &str) -> Vec<BytesMut> {
    err(
        errcode::ER_UNKNOWN_ERROR,
        format!("RELOAD CONFIG refused, the running configuration stays: {e}"),
    )
}

/// FLUSH CACHE [schema.table]: what to flush (None: everything), or the ERR for a bad name.
pub fn flush_target(
    shared: &Shared,
    sql: &str,
) -> Option<Result<Option<crate::cache::Scope>, Vec<BytesMut>>> {
    let q = normalize(sql);
    let upper = q.to_ascii_uppercase();
    let rest = upper.strip_prefix("FLUSH CACHE")?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    if shared.cache.is_none() {
        return Some(Err(err(
            errcode::ER_UNKNOWN_ERROR,
            "the result cache is off ([cache] enabled = false)",
        )));
    }
    let name = q["FLUSH CACHE".len()..].trim().replace('`', "");
    if name.is_empty() {
        return Some(Ok(None));
    }
    match name.split_once('.') {
        Some((db, t)) if !db.is_empty() && !t.is_empty() => {
            Some(Ok(Some(crate::cache::Scope::Table(
                db.to_ascii_lowercase().into(),
                t.to_ascii_lowercase().into(),
            ))))
        }
        _ => Some(Err(err(
            errcode::ER_UNKNOWN_ERROR,
            format!("FLUSH CACHE {name}: name the table as schema.table"),
        ))),
    }
}

/// `SELECT @@a, @@b`: what client libraries ask when they connect, answered with defaults.
fn variables(q: &str) -> Vec<BytesMut> {
    let names: Vec<&str> = q["SELECT ".len()..]
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| n.starts_with("@@"))
        .collect();
    let value = |n: &str| -> Option<String> {
        match n.trim_start_matches("@@").to_ascii_lowercase().as_str() {
            "max_allowed_packet" => Some("16777216".into()),
            "wait_timeout" | "interactive_timeout" => Some("28800".into()),
            "version_comment" => Some("Weiche admin".into()),
            "version" => Some(format!("5.5.5-weiche-admin-{}", env!("CARGO_PKG_VERSION"))),
            "autocommit" => Some("1".into()),
            _ => None,
        }
    };
    let row = names.iter().map(|n| value(n)).collect();
    table(&names, vec![row])
}

fn backends(shared: &Shared) -> Vec<BytesMut> {
    let t = &shared.backends;
    let order = t.proxy_order();
    let writer = t.writer();
    let pool: std::collections::HashMap<String, (i64, i64)> = shared
        .pool_counts
        .snapshot()
        .into_iter()
        .map(|(a, c)| {
            let (open, idle) = (c.open.load(Relaxed), c.idle.load(Relaxed));
            (a, ((open - idle).max(0), idle.max(0)))
        })
        .collect();
    let rows = order
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let b = &t.backends[i];
            let r = t.report_of(i);
            let state = t.state(i);
            let up = state == State::Up;
            let ty = if t.role(i) == crate::config::Role::Primary {
                "rw"
            } else {
                "ro"
            };
            let ago = r
                .last_check
                .and_then(|c| SystemTime::now().duration_since(c).ok());
            let is_writer = matches!(writer, Writer::One(w) if w == i);
            vec![
                Some((n + 1).to_string()),
                Some(b.address.clone()),
                Some(if up { "up" } else { "down" }.to_string()),
                Some(ty.to_string()),
                None,
                Some(
                    b.outstanding
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .to_string(),
                ),
                Some(if is_writer {
                    "primary".to_string()
                } else {
                    t.role(i).as_str().to_string()
                }),
                Some(state.as_str().to_string()),
                Some(b.weight.load(Relaxed).to_string()),
                r.lag_seconds.map(|l| format!("{l:.3}")),
                r.lag_transactions.map(|l| l.to_string()),
                r.position.clone(),
                ago.map(|a| format!("{:.3}", a.as_secs_f64())),
                Some(r.detail.clone()),
                Some(r.transitions.to_string()),
                Some(pool.get(&b.address).map_or(0, |c| c.0).to_string()),
                Some(pool.get(&b.address).map_or(0, |c| c.1).to_string()),
                Some(
                    b.served
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .to_string(),
                ),
            ]
        })
        .collect();
    table(
        &[
            "backend_ndx",
            "address",
            "state",
            "type",
            "uuid",
            "connected_clients",
            "role",
            "weiche_state",
            "weight",
            "lag_seconds",
            "lag_transactions",
            "gtid_position",
            "last_check_seconds_ago",
            "detail",
            "transitions",
            "connections_in_use",
            "connections_idle",
            "queries",
        ],
        rows,
    )
}

fn sessions(shared: &Shared) -> Vec<BytesMut> {
    let rows = shared
        .registry
        .list()
        .into_iter()
        .map(|(id, h)| {
            let (client, user, db) = h.info();
            let busy = h.busy();
            vec![
                Some(id.to_string()),
                Some(client),
                Some(user),
                Some(db),
                h.server().and_then(|(i, t)| {
                    let b = shared.backends.backends.get(i)?;
                    Some(format!("{} thread {t}", b.address))
                }),
                Some(h.pins()),
                busy.since.map(|_| busy.text()),
                busy.since
                    .map(|s| format!("{:.3}", s.elapsed().as_secs_f64())),
            ]
        })
        .collect();
    table(
        &[
            "id", "client", "user", "db", "backend", "pins", "command", "seconds",
        ],
        rows,
    )
}

fn set_backend(shared: &Shared, original: &str, upper: &str) -> Vec<BytesMut> {
    let Some((target, action)) = original.rsplit_once(' ') else {
        return err(
            errcode::ER_UNKNOWN_COM,
            "SET BACKEND 'host:port' OFFLINE | ONLINE | DRAIN",
        );
    };
    let _ = upper;
    let target = target
        .trim()
        .trim_matches(|c| c == '\'' || c == '"' || c == '`');
    let t = &shared.backends;
    let index = match target.parse::<usize>() {
        Ok(n) => t.proxy_order().get(n.wrapping_sub(1)).copied(),
        Err(_) => t.find(target),
    };
    let Some(i) = index else {
        return err(errcode::ER_UNKNOWN_COM, format!("no backend '{target}'"));
    };
    match action.to_ascii_uppercase().as_str() {
        "OFFLINE" | "DRAIN" => {
            t.set_state(i, State::Offline, "set by an operator");
            tracing::warn!(backend = %t.backends[i].address, "taken offline from the admin port");
        }
        // The monitor's next check decides whether it is up, lagging or down.
        "ONLINE" => {
            t.set_state(i, State::Up, "set online by an operator");
            tracing::warn!(backend = %t.backends[i].address, "put online from the admin port");
        }
        other => {
            return err(
                errcode::ER_UNKNOWN_COM,
                format!("'{other}': say OFFLINE, ONLINE or DRAIN"),
            );
        }
    }
    ok(1)
}

fn explain_route(shared: &Shared, sql: &str) -> Vec<BytesMut> {
    let config = shared.config();
    let analysis = crate::sql::analyze(sql.as_bytes());
    let writes = crate::route::Writes::default();
    let request = crate::route::Request {
        analysis: &analysis,
        text: sql.as_bytes(),
        user: "",
        schema: None,
        held: crate::route::Held::Free,
        script_backend: None,
        writes: &writes,
        avoid: None,
        last: None,
    };
    let rows = match crate::route::decide(&config, &shared.backends, request) {
        Ok(r) => {
            let target = match r.destination {
                crate::route::Destination::Backend(i) => {
                    shared.backends.backends[i].address.clone()
                }
                crate::route::Destination::Current => "current connection".into(),
            };
            vec![vec![Some(target), Some(r.to_string())]]
        }
        Err(e) => vec![vec![None, Some(e.to_string())]],
    };
    table(&["target", "reason"], rows)
}
