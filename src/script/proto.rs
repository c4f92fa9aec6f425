//! `mysql.proto`: packet encoders and decoders for scripts, on Weiche's protocol code. Decoders
//! take a payload and return a table; encoders take a table and return a payload. A malformed
//! packet raises a Lua error.

use crate::protocol::basic::{encode_eof, Reader};
use crate::protocol::handshake::{Greeting, HandshakeResponse};
use crate::protocol::{ErrPacket, OkPacket};
use bytes::BytesMut;
use mlua::{Lua, Table};

/// The functions that decode a packet (what a script calls on bytes from the network).
pub const DECODERS: &[&str] = &[
    "from_err_packet",
    "from_ok_packet",
    "from_eof_packet",
    "from_challenge_packet",
    "from_response_packet",
    "from_stmt_prepare_packet",
    "stmt_id_from_stmt_execute_packet",
    "from_stmt_close_packet",
];

fn bad(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(format!("mysql.proto: {e}"))
}

pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set(
        "from_err_packet",
        lua.create_function(|lua, p: mlua::String| {
            let e = ErrPacket::decode(&p.as_bytes()).map_err(bad)?;
            let t = lua.create_table()?;
            t.set("errcode", e.code)?;
            t.set("sqlstate", e.sqlstate_str().to_string())?;
            t.set("errmsg", e.message.clone())?;
            Ok(t)
        })?,
    )?;
    m.set(
        "to_err_packet",
        lua.create_function(|lua, t: Table| {
            let e = ErrPacket::new(
                t.get::<Option<u16>>("errcode")?.unwrap_or(1105),
                &t.get::<Option<String>>("sqlstate")?
                    .unwrap_or_else(|| "07000".into()),
                t.get::<Option<String>>("errmsg")?.unwrap_or_default(),
            );
            let mut b = BytesMut::new();
            e.encode(&mut b);
            lua.create_string(&b)
        })?,
    )?;
    m.set(
        "from_ok_packet",
        lua.create_function(|lua, p: mlua::String| {
            let o = OkPacket::decode(&p.as_bytes()).map_err(bad)?;
            let t = lua.create_table()?;
            t.set("affected_rows", o.affected_rows)?;
            t.set("insert_id", o.last_insert_id)?;
            t.set("server_status", o.status)?;
            t.set("warnings", o.warnings)?;
            t.set("message", lua.create_string(&o.info)?)?;
            Ok(t)
        })?,
    )?;
    m.set(
        "to_ok_packet",
        lua.create_function(|lua, t: Table| {
            let o = OkPacket {
                affected_rows: t.get::<Option<u64>>("affected_rows")?.unwrap_or(0),
                last_insert_id: t.get::<Option<u64>>("insert_id")?.unwrap_or(0),
                status: t.get::<Option<u16>>("server_status")?.unwrap_or(2),
                warnings: t.get::<Option<u16>>("warnings")?.unwrap_or(0),
                info: t
                    .get::<Option<mlua::String>>("message")?
                    .map(|s| s.as_bytes().to_vec())
                    .unwrap_or_default(),
            };
            let mut b = BytesMut::new();
            o.encode(&mut b);
            lua.create_string(&b)
        })?,
    )?;
    m.set(
        "from_eof_packet",
        lua.create_function(|lua, p: mlua::String| {
            let b = p.as_bytes();
            let mut r = Reader::new(&b);
            if r.u8("EOF marker").map_err(bad)? != 0xfe {
                return Err(bad("not an EOF packet"));
            }
            let t = lua.create_table()?;
            t.set("warnings", r.u16("warnings").unwrap_or(0))?;
            t.set("server_status", r.u16("status").unwrap_or(0))?;
            Ok(t)
        })?,
    )?;
    m.set(
        "to_eof_packet",
        lua.create_function(|lua, t: Table| {
            let mut b = BytesMut::new();
            encode_eof(
                &mut b,
                t.get::<Option<u16>>("warnings")?.unwrap_or(0),
                t.get::<Option<u16>>("server_status")?.unwrap_or(2),
            );
            lua.create_string(&b)
        })?,
    )?;
    m.set(
        "from_challenge_packet",
        lua.create_function(|lua, p: mlua::String| {
            let g = Greeting::decode(&p.as_bytes()).map_err(bad)?;
            let t = lua.create_table()?;
            t.set("server_version_str", lua.create_string(&g.server_version)?)?;
            t.set("thread_id", g.connection_id)?;
            t.set("challenge", lua.create_string(&g.scramble)?)?;
            t.set("capabilities", g.capabilities)?;
            t.set("charset", g.charset)?;
            t.set("server_status", g.status)?;
            Ok(t)
        })?,
    )?;
    m.set(
        "from_response_packet",
        lua.create_function(|lua, p: mlua::String| {
            let r = HandshakeResponse::decode(&p.as_bytes()).map_err(bad)?;
            let t = lua.create_table()?;
            t.set("capabilities", r.capabilities)?;
            t.set("max_packet_size", r.max_packet)?;
            t.set("charset", r.charset)?;
            t.set("username", lua.create_string(&r.username)?)?;
            t.set("response", lua.create_string(&r.auth_response)?)?;
            t.set(
                "database",
                lua.create_string(r.database.unwrap_or_default())?,
            )?;
            Ok(t)
        })?,
    )?;
    m.set(
        "from_stmt_prepare_packet",
        lua.create_function(|lua, p: mlua::String| {
            let b = p.as_bytes();
            let t = lua.create_table()?;
            t.set(
                "stmt_text",
                lua.create_string(b.get(1..).unwrap_or_default())?,
            )?;
            Ok(t)
        })?,
    )?;
    let stmt_id = |b: &[u8]| -> mlua::Result<u32> {
        b.get(1..5)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(|| bad("packet too short for a statement id"))
    };
    m.set(
        "stmt_id_from_stmt_execute_packet",
        lua.create_function(move |_, p: mlua::String| stmt_id(&p.as_bytes()))?,
    )?;
    m.set(
        "from_stmt_close_packet",
        lua.create_function(move |lua, p: mlua::String| {
            let t = lua.create_table()?;
            t.set("stmt_id", stmt_id(&p.as_bytes())?)?;
            Ok(t)
        })?,
    )?;
    Ok(m)
}
