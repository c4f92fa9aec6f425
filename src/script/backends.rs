//! `proxy.global.backends`: Weiche's backends as mysql-proxy scripts see them, 1-based, the
//! primary first, then the replicas in configuration order. Each has `dst`, `state`, `type`,
//! `connected_clients`, `uuid`, `pool`, and Weiche's `role` and `lag`. A script may set `state`
//! (DOWN takes the backend out like an operator's OFFLINE; UP puts it back) and `uuid`.

use crate::backend::{BackendTable, State};
use crate::config::Role;
use mlua::{Lua, MetaMethod, UserData, UserDataMethods, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

static TABLE: OnceLock<Arc<BackendTable>> = OnceLock::new();
/// What scripts store on a backend (uuid, pool sizes), by backend index.
static EXTRA: Mutex<Option<HashMap<usize, Extra>>> = Mutex::new(None);

#[derive(Debug, Clone, Default)]
struct Extra {
    uuid: Option<Vec<u8>>,
    min_idle: Option<f64>,
    max_idle: Option<f64>,
}

pub const STATE_UNKNOWN: i64 = 0;
pub const STATE_UP: i64 = 1;
pub const STATE_DOWN: i64 = 2;
/// Weiche's states beyond mysql-proxy's (new numbers; the old ones keep theirs).
pub const STATE_OFFLINE: i64 = 3;
pub const STATE_LAGGING: i64 = 4;
pub const TYPE_RW: i64 = 1;
pub const TYPE_RO: i64 = 2;

/// Give the scripts the process's backend table (once).
pub fn install(table: Arc<BackendTable>) {
    let _ = TABLE.set(table);
}

fn table() -> Option<&'static Arc<BackendTable>> {
    TABLE.get()
}

/// Backend indexes in script order: primaries (by configured role) first.
pub fn order() -> &'static [usize] {
    table().map_or(&[], |t| t.proxy_order())
}

/// The script's 1-based number of backend `i` (0 for none).
pub fn ndx_of(i: Option<usize>) -> i64 {
    i.and_then(|i| order().iter().position(|&o| o == i))
        .map_or(0, |p| p as i64 + 1)
}

/// Backend index for the script's number `ndx` (1-based).
pub fn index_of(ndx: i64) -> Option<usize> {
    let o = order();
    usize::try_from(ndx)
        .ok()?
        .checked_sub(1)
        .and_then(|p| o.get(p).copied())
}

fn state_number(s: State) -> i64 {
    match s {
        State::Up => STATE_UP,
        State::Down => STATE_DOWN,
        State::Offline => STATE_OFFLINE,
        State::Lagging => STATE_LAGGING,
    }
}

/// An address as mysql-proxy's scripts see it: `name`, `address`, `port`, `type`.
pub fn address_table(lua: &Lua, addr: &str) -> mlua::Result<mlua::Table> {
    let t = lua.create_table()?;
    t.set("name", addr)?;
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
    t.set(
        "address",
        host.trim_start_matches('[').trim_end_matches(']'),
    )?;
    t.set("port", port.parse::<u16>().unwrap_or(0))?;
    // The socket family, as mysql-proxy reported it (AF_INET, AF_INET6).
    t.set("type", if host.starts_with('[') { 10 } else { 2 })?;
    Ok(t)
}

/// `proxy.global.backends`.
pub struct Backends;

impl UserData for Backends {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Len, |_, _, ()| Ok(order().len()));
        m.add_meta_method(MetaMethod::Index, |lua, _, ndx: Value| {
            let ndx = match ndx {
                Value::Integer(i) => i,
                Value::Number(n) => n as i64,
                _ => return Ok(Value::Nil),
            };
            match index_of(ndx) {
                Some(i) => Ok(Value::UserData(lua.create_userdata(Backend(i))?)),
                None => Ok(Value::Nil),
            }
        });
    }
}

/// One backend.
pub struct Backend(usize);

fn extra<R>(i: usize, f: impl FnOnce(&mut Extra) -> R) -> R {
    let mut g = EXTRA.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(HashMap::new).entry(i).or_default())
}

impl UserData for Backend {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: String| {
            let Some(t) = table() else {
                return Ok(Value::Nil);
            };
            let i = this.0;
            let b = &t.backends[i];
            Ok(match key.as_str() {
                "dst" => Value::Table(address_table(lua, &b.address)?),
                "state" => Value::Integer(state_number(t.state(i)) as mlua::Integer),
                "type" => Value::Integer(match t.role(i) {
                    Role::Primary => TYPE_RW,
                    Role::Replica => TYPE_RO,
                } as mlua::Integer),
                "role" => Value::String(lua.create_string(t.role(i).as_str())?),
                "lag" => t.report_of(i).lag_seconds.map_or(Value::Nil, Value::Number),
                "connected_clients" => Value::Integer(
                    b.outstanding.load(std::sync::atomic::Ordering::Relaxed) as mlua::Integer,
                ),
                "uuid" => match extra(i, |e| e.uuid.clone()) {
                    Some(u) => Value::String(lua.create_string(u)?),
                    None => Value::Nil,
                },
                "pool" => {
                    let p = lua.create_table()?;
                    let (min, max) = extra(i, |e| (e.min_idle, e.max_idle));
                    p.set("min_idle_connections", min.unwrap_or(0.0))?;
                    p.set("max_idle_connections", max.unwrap_or(0.0))?;
                    // Idle connections on this worker, whatever their user: the script asks
                    // whether to open more, and any of them can be brought to a session's state.
                    let idle = crate::backend::pool::stats()
                        .into_iter()
                        .find(|(a, _, _)| a == &b.address)
                        .map_or(0, |(_, _, idle)| idle);
                    let users = lua.create_table()?;
                    let any = lua.create_table()?;
                    any.set("cur_idle_connections", idle)?;
                    let mt = lua.create_table()?;
                    mt.set(
                        "__index",
                        lua.create_function(move |_, (_, _): (Value, Value)| Ok(any.clone()))?,
                    )?;
                    users.set_metatable(Some(mt));
                    p.set("users", users)?;
                    Value::Table(p)
                }
                _ => Value::Nil,
            })
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, value): (String, Value)| {
                let Some(t) = table() else {
                    return Ok(());
                };
                let i = this.0;
                match (key.as_str(), value) {
                    ("state", Value::Integer(n)) => set_state(t, i, n),
                    ("state", Value::Number(n)) => set_state(t, i, n as i64),
                    ("uuid", Value::String(s)) => {
                        let s = s.as_bytes().to_vec();
                        extra(i, |e| e.uuid = Some(s));
                    }
                    ("uuid", Value::Nil) => extra(i, |e| e.uuid = None),
                    (k, v) => {
                        return Err(mlua::Error::runtime(format!(
                            "proxy.global.backends[n].{k} cannot be set to a {}",
                            v.type_name()
                        )))
                    }
                }
                Ok(())
            },
        );
    }
}

fn set_state(t: &BackendTable, i: usize, n: i64) {
    match n {
        STATE_DOWN | STATE_OFFLINE => {
            t.set_state(i, State::Offline, "set by the Lua script");
        }
        STATE_UP => {
            t.set_state(i, State::Up, "set by the Lua script");
        }
        _ => tracing::warn!("Lua script set backend state {n}, which Weiche ignores"),
    }
}
