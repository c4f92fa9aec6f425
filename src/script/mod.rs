//! mysql-proxy compatible Lua scripting (../docs/lua.md): the hooks a script defines run at
//! their phase of each client connection, and what they return steers Weiche: answer the client
//! directly, send injected queries instead of the client's, look at and replace results, move
//! the session to another backend. Without a script no Lua runs at all.
//!
//! Lua runs on the worker threads, one state each (`engine`); sessions hold a `ScriptHandle`.

mod backends;
mod constants;
mod engine;
mod global;
pub mod inject;
mod modules;
mod password;
mod proto;
mod response;
pub mod tokenizer;

pub use constants::{PROXY_IGNORE_RESULT, PROXY_SEND_QUERY, PROXY_SEND_RESULT};
pub use engine::ScriptError;
pub use inject::{Injection, Outcome};

use crate::config::Scripting;
use crate::route::BackendTable;
use bytes::BytesMut;
use mlua::{Lua, Table, Value};
use std::sync::Arc;

/// What a session tells scripts about its connection (`proxy.connection`).
#[derive(Debug, Clone, Default)]
pub struct ConnView {
    /// The backend serving the session now (index into the backend table).
    pub backend: Option<usize>,
    pub client_addr: String,
    pub local_addr: String,
    pub username: Vec<u8>,
    pub default_db: Vec<u8>,
    pub scrambled_password: Vec<u8>,
    pub server: Option<ServerView>,
}

/// The server connection, when the session holds one.
#[derive(Debug, Clone, Default)]
pub struct ServerView {
    pub address: String,
    pub thread_id: u32,
    pub version: Vec<u8>,
    pub scramble: Vec<u8>,
    pub auth_plugin: Vec<u8>,
}

/// What a hook decided.
#[derive(Debug)]
pub enum Decision {
    /// No decision: Weiche's default for the phase.
    Default,
    /// Answer the client with these payloads (from proxy.response).
    SendResult(Vec<BytesMut>),
    /// Send the queued injections (read_query) or use the chosen backend (connect_server).
    SendQueries(Vec<Injection>),
    /// PROXY_IGNORE_RESULT.
    Ignore,
}

/// What else a hook changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct After {
    /// The script set `proxy.connection.backend_ndx` to this (0: release the connection).
    pub backend_ndx: Option<i64>,
    /// `proxy.connection.connection_close = true`.
    pub close: bool,
}

/// A session's script: its environment lives on this worker's Lua state.
#[derive(Debug)]
pub struct ScriptHandle {
    id: u64,
    config: Scripting,
    /// The backend_ndx the script saw last (to notice its writes).
    shown_ndx: i64,
}

/// The backend index for a script's 1-based backend number.
pub fn backend_index(ndx: i64) -> Option<usize> {
    backends::index_of(ndx)
}

/// The client's error when the script cannot run for a connection.
pub const LOAD_FAILED: &str = "MySQL Proxy Lua script failed to load. Check the error log.";

fn set_addr(lua: &Lua, t: &Table, key: &str, addr: &str) -> mlua::Result<()> {
    t.set(key, backends::address_table(lua, addr)?)
}

fn fill_connection(lua: &Lua, conn: &Table, view: &ConnView) -> mlua::Result<i64> {
    let ndx = backends::ndx_of(view.backend);
    conn.raw_set("backend_ndx", ndx)?;
    let client: Table = match conn.raw_get::<Option<Table>>("client")? {
        Some(c) => c,
        None => {
            let c = lua.create_table()?;
            set_addr(lua, &c, "src", &view.client_addr)?;
            set_addr(lua, &c, "dst", &view.local_addr)?;
            conn.raw_set("client", c.clone())?;
            c
        }
    };
    client.set("username", lua.create_string(&view.username)?)?;
    client.set("default_db", lua.create_string(&view.default_db)?)?;
    client.set(
        "scrambled_password",
        lua.create_string(&view.scrambled_password)?,
    )?;
    match &view.server {
        Some(s) => {
            let t = lua.create_table()?;
            set_addr(lua, &t, "dst", &s.address)?;
            set_addr(lua, &t, "src", &view.local_addr)?;
            t.set("thread_id", s.thread_id)?;
            t.set("mysqld_version", mysqld_version(&s.version))?;
            t.set("scramble_buffer", lua.create_string(&s.scramble)?)?;
            t.set("auth_plugin_name", lua.create_string(&s.auth_plugin)?)?;
            t.set("username", lua.create_string(&view.username)?)?;
            t.set("default_db", lua.create_string(&view.default_db)?)?;
            conn.raw_set("server", t)?;
        }
        None => conn.raw_set("server", Value::Nil)?,
    }
    Ok(ndx)
}

/// "5.5.5-10.11.19-MariaDB" -> 101119; "8.0.36" -> 80036.
fn mysqld_version(v: &[u8]) -> u32 {
    let s = String::from_utf8_lossy(v);
    let s = s.strip_prefix("5.5.5-").unwrap_or(&s);
    let mut parts = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b, c) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    a * 10000 + b * 100 + c
}

/// `proxy.connection` for a new connection, with the removed 0.7 names raising errors.
fn connection_table(lua: &Lua) -> mlua::Result<Table> {
    let conn = lua.create_table()?;
    let mt = lua.create_table()?;
    mt.set(
        "__index",
        lua.create_function(|_, (_, key): (Value, String)| -> mlua::Result<Value> {
            let instead = match key.as_str() {
                "thread_id" => "proxy.connection.server.thread_id",
                "default_db" => "proxy.connection.client.default_db",
                "mysqld_version" => "proxy.connection.server.mysqld_version",
                _ => return Ok(Value::Nil),
            };
            Err(mlua::Error::runtime(format!(
                "proxy.connection.{key} is deprecated, use {instead} instead"
            )))
        })?,
    )?;
    conn.set_metatable(Some(mt));
    Ok(conn)
}

impl ScriptHandle {
    /// Run the script's top-level chunk for a new connection. The error is text (Lua's errors
    /// must not travel with a session across threads).
    pub fn open(
        config: &Scripting,
        table: Arc<BackendTable>,
        view: &ConnView,
    ) -> Result<ScriptHandle, String> {
        backends::install(table);
        let id = engine::with(config, |e| -> Result<u64, ScriptError> {
            let conn = connection_table(&e.lua)?;
            fill_connection(&e.lua, &conn, view)?;
            e.open(conn)
        })
        .and_then(|r| r)
        .map_err(|e| e.to_string())?;
        Ok(ScriptHandle {
            id,
            config: config.clone(),
            shown_ndx: backends::ndx_of(view.backend),
        })
    }

    /// Call a hook; on a Lua error, log it and take the default.
    fn call(
        &mut self,
        name: &str,
        view: &ConnView,
        args: impl FnOnce(&Lua) -> mlua::Result<mlua::MultiValue>,
        fresh_response: bool,
    ) -> (Option<Value>, After) {
        let id = self.id;
        let r = engine::with(
            &self.config,
            |e| -> Result<(Option<Value>, After), ScriptError> {
                let conn = match e.sessions.get(&id) {
                    Some(c) => c.connection.clone(),
                    None => return Ok((None, After::default())),
                };
                let shown = fill_connection(&e.lua, &conn, view)?;
                let args = args(&e.lua)?;
                let ret = e.call(id, name, args, |lua, proxy| {
                    if fresh_response {
                        proxy.set("response", lua.create_table()?)?;
                    }
                    Ok(())
                })?;
                let ndx: i64 = conn.raw_get::<Option<i64>>("backend_ndx")?.unwrap_or(0);
                let close = conn
                    .raw_get::<Option<bool>>("connection_close")?
                    .unwrap_or(false);
                Ok((
                    ret,
                    After {
                        backend_ndx: (ndx != shown).then_some(ndx),
                        close,
                    },
                ))
            },
        );
        match r {
            Ok(Ok((ret, after))) => {
                if let Some(n) = after.backend_ndx {
                    self.shown_ndx = n;
                }
                (ret, after)
            }
            Ok(Err(e)) | Err(e) => {
                tracing::error!("Lua hook {name} failed: {e}");
                (None, After::default())
            }
        }
    }

    /// Read `proxy.queries` and `proxy.response` after a hook returned `ret`.
    fn decision(&self, ret: Option<Value>, deprecate_eof: bool, status: u16) -> Decision {
        let code = match ret {
            Some(Value::Integer(n)) => n,
            Some(Value::Number(n)) => n as i64,
            _ => return Decision::Default,
        };
        let id = self.id;
        let r = engine::with_existing(|e| -> Result<Decision, String> {
            match code {
                PROXY_SEND_RESULT => {
                    let proxy: Table = e.lua.globals().get("proxy").map_err(|e| e.to_string())?;
                    let resp: Table = proxy.get("response").map_err(|e| e.to_string())?;
                    response::encode(&resp, deprecate_eof, status)
                        .map(Decision::SendResult)
                        .map_err(|e| e.to_string())
                }
                PROXY_SEND_QUERY => {
                    let Some(conn) = e.sessions.get(&id) else {
                        return Ok(Decision::Default);
                    };
                    let mut q = conn
                        .queries
                        .borrow_mut::<inject::Queries>()
                        .map_err(|e| e.to_string())?;
                    Ok(Decision::SendQueries(std::mem::take(&mut q.0)))
                }
                PROXY_IGNORE_RESULT => Ok(Decision::Ignore),
                _ => Ok(Decision::Default),
            }
        });
        match r {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::error!("(lua) handling proxy.response failed: {e}");
                let err = crate::protocol::ErrPacket::new(
                    1105,
                    "07000",
                    "(lua) handling proxy.response failed",
                );
                Decision::SendResult(vec![crate::protocol::err_payload(&err)])
            }
            None => Decision::Default,
        }
    }

    /// Empty `proxy.queries` (before each read_query).
    fn reset_queries(&self) {
        let id = self.id;
        engine::with_existing(|e| {
            if let Some(c) = e.sessions.get(&id) {
                if let Ok(mut q) = c.queries.borrow_mut::<inject::Queries>() {
                    q.0.clear();
                }
            }
        });
    }

    /// Whether the script defines `name` (so Weiche can skip the work of calling it).
    pub fn has(&self, name: &str) -> bool {
        let id = self.id;
        engine::with_existing(|e| {
            e.sessions
                .get(&id)
                .and_then(|c| c.env.get::<Value>(name).ok())
                .is_some_and(|v| matches!(v, Value::Function(_)))
        })
        .unwrap_or(false)
    }

    /// A hook without arguments of its own (connect_server, read_handshake, read_auth).
    pub fn phase(
        &mut self,
        name: &str,
        view: &ConnView,
        deprecate_eof: bool,
        status: u16,
    ) -> (Decision, After) {
        let (ret, after) = self.call(name, view, |_| Ok(mlua::MultiValue::new()), true);
        (self.decision(ret, deprecate_eof, status), after)
    }

    /// `read_auth_result({packet = ...})`.
    pub fn read_auth_result(
        &mut self,
        view: &ConnView,
        packet: &[u8],
        status: u16,
    ) -> (Decision, After) {
        let (ret, after) = self.call(
            "read_auth_result",
            view,
            |lua| {
                let t = lua.create_table()?;
                t.set("packet", lua.create_string(packet)?)?;
                Ok(mlua::MultiValue::from_iter([Value::Table(t)]))
            },
            true,
        );
        (self.decision(ret, false, status), after)
    }

    /// `read_query(packet)` for a client command.
    pub fn read_query(
        &mut self,
        view: &ConnView,
        packet: &[u8],
        deprecate_eof: bool,
        status: u16,
    ) -> (Decision, After) {
        self.reset_queries();
        let (ret, after) = self.call(
            "read_query",
            view,
            |lua| {
                Ok(mlua::MultiValue::from_iter([Value::String(
                    lua.create_string(packet)?,
                )]))
            },
            true,
        );
        (self.decision(ret, deprecate_eof, status), after)
    }

    /// `read_query_result(inj)` for an injection's result. Returns the decision and the
    /// injections the hook queued meanwhile.
    pub fn read_query_result(
        &mut self,
        view: &ConnView,
        inj: &Injection,
        outcome: &Outcome,
        deprecate_eof: bool,
        status: u16,
    ) -> (Decision, Vec<Injection>, After) {
        let (ret, after) = self.call(
            "read_query_result",
            view,
            |lua| {
                let t = inject::inj_table(lua, inj, outcome)?;
                Ok(mlua::MultiValue::from_iter([Value::Table(t)]))
            },
            true,
        );
        let decision = self.decision(ret, deprecate_eof, status);
        let id = self.id;
        let more = engine::with_existing(|e| {
            e.sessions
                .get(&id)
                .and_then(|c| {
                    c.queries
                        .borrow_mut::<inject::Queries>()
                        .ok()
                        .map(|mut q| std::mem::take(&mut q.0))
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
        (decision, more, after)
    }

    /// `disconnect_client()`.
    pub fn disconnect_client(&mut self, view: &ConnView) {
        let _ = self.call(
            "disconnect_client",
            view,
            |_| Ok(mlua::MultiValue::new()),
            false,
        );
    }
}

impl Drop for ScriptHandle {
    fn drop(&mut self) {
        let id = self.id;
        engine::with_existing(|e| e.sessions.remove(&id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_numbers() {
        assert_eq!(
            mysqld_version(b"5.5.5-10.11.19-MariaDB-0+deb12u1-log"),
            101119
        );
        assert_eq!(mysqld_version(b"8.0.36"), 80036);
    }
}
