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
pub mod proto;
mod response;
pub mod tokenizer;

pub use constants::{PROXY_IGNORE_RESULT, PROXY_SEND_QUERY, PROXY_SEND_RESULT};
pub use engine::ScriptError;
pub use inject::{Injection, Outcome};

use crate::backend::BackendTable;
use crate::config::Scripting;
use crate::protocol::resultset::Shape;
use bytes::BytesMut;
use mlua::{Lua, Table, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// What a session tells scripts about its connection (`proxy.connection`). Borrowed where it
/// can be: a session builds one per command.
#[derive(Debug, Clone, Default)]
pub struct ConnView<'a> {
    /// The backend serving the session now (index into the backend table).
    pub backend: Option<usize>,
    pub client_addr: Cow<'a, str>,
    pub local_addr: Cow<'a, str>,
    pub username: Cow<'a, [u8]>,
    pub default_db: Cow<'a, [u8]>,
    pub scrambled_password: Cow<'a, [u8]>,
    pub server: Option<ServerView<'a>>,
}

/// The server connection, when the session holds one.
#[derive(Debug, Clone, Default)]
pub struct ServerView<'a> {
    pub address: Cow<'a, str>,
    pub thread_id: u32,
    pub version: Cow<'a, [u8]>,
    pub scramble: Cow<'a, [u8]>,
    pub auth_plugin: Cow<'a, [u8]>,
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

/// `proxy.connection.backend_ndx` and `.connection_close` live in Rust (the table's
/// metamethods read and write them), so Weiche learns what a script set without asking Lua.
#[derive(Debug, Default)]
pub(crate) struct Cells {
    backend_ndx: std::cell::Cell<i64>,
    /// The script wrote backend_ndx during the current call.
    ndx_written: std::cell::Cell<bool>,
    close: std::cell::Cell<bool>,
}

/// What `proxy.connection` shows already, so that a call only updates what changed (building
/// Lua strings and tables per query is most of what a script costs).
#[derive(Debug, Default)]
pub(crate) struct Shown {
    client: bool,
    username: Vec<u8>,
    default_db: Vec<u8>,
    scrambled: Vec<u8>,
    server: Option<(String, u32)>,
}

fn fill_connection(
    lua: &Lua,
    conn: &Table,
    cells: &Cells,
    view: &ConnView<'_>,
    shown: &mut Shown,
) -> mlua::Result<()> {
    cells.backend_ndx.set(backends::ndx_of(view.backend));
    cells.ndx_written.set(false);
    if !shown.client {
        let c = lua.create_table()?;
        set_addr(lua, &c, "src", &view.client_addr)?;
        set_addr(lua, &c, "dst", &view.local_addr)?;
        conn.raw_set("client", c)?;
        shown.client = true;
        shown.username.clear();
        shown.default_db.clear();
        shown.scrambled.clear();
        let client: Table = conn.raw_get("client")?;
        client.set("username", "")?;
        client.set("default_db", "")?;
        client.set("scrambled_password", "")?;
    }
    if shown.username[..] != view.username[..]
        || shown.default_db[..] != view.default_db[..]
        || shown.scrambled[..] != view.scrambled_password[..]
    {
        let client: Table = conn.raw_get("client")?;
        client.set("username", lua.create_string(&view.username)?)?;
        client.set("default_db", lua.create_string(&view.default_db)?)?;
        client.set(
            "scrambled_password",
            lua.create_string(&view.scrambled_password)?,
        )?;
        shown.username = view.username.to_vec();
        shown.default_db = view.default_db.to_vec();
        shown.scrambled = view.scrambled_password.to_vec();
    }
    let same = match (&view.server, &shown.server) {
        (Some(s), Some((a, t))) => *s.address == **a && s.thread_id == *t,
        (None, None) => true,
        _ => false,
    };
    if !same {
        let key = view
            .server
            .as_ref()
            .map(|s| (s.address.to_string(), s.thread_id));
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
        shown.server = key;
    } else if let Some(Value::Table(t)) = conn.raw_get::<Option<Value>>("server")? {
        if shown.default_db[..] != view.default_db[..] {
            t.set("default_db", lua.create_string(&view.default_db)?)?;
        }
    }
    Ok(())
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

/// `proxy.connection` for a new connection: `backend_ndx` and `connection_close` kept in
/// `cells`, the removed 0.7 names raising errors.
fn connection_table(lua: &Lua, cells: &std::rc::Rc<Cells>) -> mlua::Result<Table> {
    let conn = lua.create_table()?;
    let mt = lua.create_table()?;
    let c = cells.clone();
    mt.set(
        "__newindex",
        lua.create_function(move |_, (t, key, value): (Table, Value, Value)| {
            match key.as_str().as_deref() {
                Some("backend_ndx") => {
                    let n = match value {
                        Value::Integer(n) => n,
                        Value::Number(n) => n as i64,
                        _ => 0,
                    };
                    c.backend_ndx.set(n);
                    c.ndx_written.set(true);
                    Ok(())
                }
                Some("connection_close") => {
                    c.close.set(matches!(value, Value::Boolean(true)));
                    Ok(())
                }
                _ => t.raw_set(key, value),
            }
        })?,
    )?;
    let c = cells.clone();
    mt.set(
        "__index",
        lua.create_function(move |_, (_, key): (Value, String)| -> mlua::Result<Value> {
            let instead = match key.as_str() {
                "backend_ndx" => return Ok(Value::Integer(c.backend_ndx.get())),
                "connection_close" => return Ok(Value::Boolean(c.close.get())),
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
        view: &ConnView<'_>,
    ) -> Result<ScriptHandle, String> {
        backends::install(table);
        let id = engine::with(config, |e| -> Result<u64, ScriptError> {
            let cells = std::rc::Rc::new(Cells::default());
            let conn = connection_table(&e.lua, &cells)?;
            let mut shown = Shown::default();
            fill_connection(&e.lua, &conn, &cells, view, &mut shown)?;
            e.open(conn, cells, shown)
        })
        .and_then(|r| r)
        .map_err(|e| e.to_string())?;
        Ok(ScriptHandle {
            id,
            config: config.clone(),
        })
    }

    /// Call a hook; on a Lua error, log it and take the default.
    fn call(
        &mut self,
        name: &'static str,
        view: &ConnView<'_>,
        args: impl FnOnce(&Lua) -> mlua::Result<mlua::MultiValue>,
    ) -> (Option<Value>, After) {
        let id = self.id;
        let r = engine::with(
            &self.config,
            |e| -> Result<(Option<Value>, After), ScriptError> {
                if e.hook(id, name)?.is_none() {
                    return Ok((None, After::default()));
                }
                let Some(c) = e.sessions.get_mut(&id) else {
                    return Ok((None, After::default()));
                };
                if name == "read_query" {
                    // proxy.queries starts empty for each command.
                    c.list.borrow_mut().clear();
                }
                let (conn, cells) = (c.connection.clone(), c.cells.clone());
                fill_connection(&e.lua, &conn, &cells, view, &mut c.shown)?;
                let args = args(&e.lua)?;
                let ret = e.call(id, name, args)?;
                Ok((
                    ret,
                    After {
                        backend_ndx: cells.ndx_written.get().then(|| cells.backend_ndx.get()),
                        close: cells.close.get(),
                    },
                ))
            },
        );
        match r {
            Ok(Ok((ret, after))) => (ret, after),
            Ok(Err(e)) | Err(e) => {
                tracing::error!("Lua hook {name} failed: {e}");
                (None, After::default())
            }
        }
    }

    /// Read `proxy.queries` and `proxy.response` after a hook returned `ret`.
    fn decision(&self, ret: Option<Value>, shape: Shape, status: u16) -> Decision {
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
                    // proxy.response is reset once it was used, not before every call.
                    let _ = e.fresh_response();
                    response::encode(&resp, shape, status)
                        .map(Decision::SendResult)
                        .map_err(|e| e.to_string())
                }
                PROXY_SEND_QUERY => {
                    let Some(conn) = e.sessions.get(&id) else {
                        return Ok(Decision::Default);
                    };
                    let taken = std::mem::take(&mut *conn.list.borrow_mut());
                    Ok(Decision::SendQueries(taken))
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

    /// Whether the script defines `name` (so Weiche can skip the work of calling it).
    pub fn has(&self, name: &'static str) -> bool {
        let id = self.id;
        engine::with_existing(|e| e.hook(id, name).ok().flatten().is_some()).unwrap_or(false)
    }

    /// A hook without arguments of its own (connect_server, read_handshake, read_auth).
    pub fn phase(
        &mut self,
        name: &'static str,
        view: &ConnView<'_>,
        shape: Shape,
        status: u16,
    ) -> (Decision, After) {
        let (ret, after) = self.call(name, view, |_| Ok(mlua::MultiValue::new()));
        (self.decision(ret, shape, status), after)
    }

    /// `read_auth_result({packet = ...})`.
    pub fn read_auth_result(
        &mut self,
        view: &ConnView<'_>,
        packet: &[u8],
        status: u16,
    ) -> (Decision, After) {
        let (ret, after) = self.call("read_auth_result", view, |lua| {
            let t = lua.create_table()?;
            t.set("packet", lua.create_string(packet)?)?;
            Ok(mlua::MultiValue::from_iter([Value::Table(t)]))
        });
        (self.decision(ret, Shape::default(), status), after)
    }

    /// `read_query(packet)` for a client command.
    pub fn read_query(
        &mut self,
        view: &ConnView<'_>,
        packet: &[u8],
        shape: Shape,
        status: u16,
    ) -> (Decision, After) {
        let (ret, after) = self.call("read_query", view, |lua| {
            Ok(mlua::MultiValue::from_iter([Value::String(
                lua.create_string(packet)?,
            )]))
        });
        (self.decision(ret, shape, status), after)
    }

    /// `read_query_result(inj)` for an injection's result. Returns the decision and the
    /// injections the hook queued meanwhile.
    pub fn read_query_result(
        &mut self,
        view: &ConnView<'_>,
        inj: &Injection,
        outcome: &Outcome,
        shape: Shape,
        status: u16,
    ) -> (Decision, Vec<Injection>, After) {
        let (ret, after) = self.call("read_query_result", view, |lua| {
            let t = inject::inj_table(lua, inj, outcome, shape.extended_metadata)?;
            Ok(mlua::MultiValue::from_iter([Value::Table(t)]))
        });
        let decision = self.decision(ret, shape, status);
        let id = self.id;
        let more = engine::with_existing(|e| {
            e.sessions
                .get(&id)
                .map(|c| std::mem::take(&mut *c.list.borrow_mut()))
                .unwrap_or_default()
        })
        .unwrap_or_default();
        (decision, more, after)
    }

    /// `disconnect_client()`.
    pub fn disconnect_client(&mut self, view: &ConnView<'_>) {
        let _ = self.call("disconnect_client", view, |_| Ok(mlua::MultiValue::new()));
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
