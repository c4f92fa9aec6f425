//! `proxy.queries` and the injection object `inj` that `read_query_result` gets: the queued
//! commands a script sends instead of (or around) the client's, and what came back for each.

use super::constants::{MYSQLD_PACKET_ERR, MYSQLD_PACKET_OK};
use crate::protocol::basic::{is_terminator, Reader};
use bytes::Bytes;
use mlua::{Lua, MetaMethod, Table, UserData, UserDataMethods, Value};
use std::time::Instant;

/// A command queued by the script.
#[derive(Debug, Clone)]
pub struct Injection {
    pub id: i64,
    pub packet: Vec<u8>,
    /// The script will look at the result (fields, rows): Weiche buffers it.
    pub resultset_is_needed: bool,
    pub queued_at: Instant,
}

/// The injections queued for one connection, shared by its `proxy.queries` and Weiche.
pub type Queue = std::rc::Rc<std::cell::RefCell<Vec<Injection>>>;

/// `proxy.queries`: append, prepend, reset and `#`.
#[derive(Debug, Default)]
pub struct Queries(pub Queue);

fn injection(id: i64, packet: mlua::String, opts: Option<Table>) -> mlua::Result<Injection> {
    let needed = match opts {
        Some(t) => t
            .get::<Option<bool>>("resultset_is_needed")?
            .unwrap_or(false),
        None => false,
    };
    let packet = packet.as_bytes().to_vec();
    if packet.is_empty() {
        return Err(mlua::Error::runtime("proxy.queries: an empty packet"));
    }
    Ok(Injection {
        id,
        packet,
        resultset_is_needed: needed,
        queued_at: Instant::now(),
    })
}

impl UserData for Queries {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method_mut(
            "append",
            |_, this, (id, packet, opts): (i64, mlua::String, Option<Table>)| {
                this.0.borrow_mut().push(injection(id, packet, opts)?);
                Ok(())
            },
        );
        m.add_method_mut(
            "prepend",
            |_, this, (id, packet, opts): (i64, mlua::String, Option<Table>)| {
                this.0.borrow_mut().insert(0, injection(id, packet, opts)?);
                Ok(())
            },
        );
        m.add_method_mut("reset", |_, this, ()| {
            this.0.borrow_mut().clear();
            Ok(())
        });
        m.add_meta_method(MetaMethod::Len, |_, this, ()| Ok(this.0.borrow().len()));
    }
}

/// What an injected command returned.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub error: bool,
    pub rows: u64,
    pub bytes: u64,
    pub warnings: u16,
    pub status: u16,
    /// From the OK packet, when the answer was one.
    pub affected_rows: Option<u64>,
    pub insert_id: Option<u64>,
    pub query_time_us: u64,
    pub response_time_us: u64,
    /// The whole answer's payloads, when the script asked for them.
    pub packets: Option<Vec<Bytes>>,
}

const STATUS_IN_TRANS: u16 = 0x0001;
const STATUS_AUTOCOMMIT: u16 = 0x0002;
const NO_GOOD_INDEX_USED: u16 = 0x0010;
const NO_INDEX_USED: u16 = 0x0020;

/// The `inj` table for `read_query_result`.
/// `extended_metadata`: the column definitions carry MariaDB's extended-type block.
pub fn inj_table(
    lua: &Lua,
    inj: &Injection,
    out: &Outcome,
    extended_metadata: bool,
) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("id", inj.id)?;
    t.set("type", inj.packet.first().copied().unwrap_or(0))?;
    t.set("query", lua.create_string(&inj.packet)?)?;
    t.set("query_time", out.query_time_us)?;
    t.set("response_time", out.response_time_us)?;
    let rs = lua.create_table()?;
    rs.set("row_count", out.rows)?;
    rs.set("bytes", out.bytes)?;
    rs.set("warning_count", out.warnings)?;
    rs.set(
        "query_status",
        if out.error {
            MYSQLD_PACKET_ERR
        } else {
            MYSQLD_PACKET_OK
        },
    )?;
    if let Some(a) = out.affected_rows {
        rs.set("affected_rows", a)?;
    }
    if let Some(i) = out.insert_id {
        rs.set("insert_id", i)?;
    }
    let flags = lua.create_table()?;
    flags.set("in_trans", out.status & STATUS_IN_TRANS != 0)?;
    flags.set("auto_commit", out.status & STATUS_AUTOCOMMIT != 0)?;
    flags.set("no_good_index_used", out.status & NO_GOOD_INDEX_USED != 0)?;
    flags.set("no_index_used", out.status & NO_INDEX_USED != 0)?;
    rs.set("flags", flags)?;
    match &out.packets {
        Some(packets) => fill_resultset(lua, &rs, packets, extended_metadata)?,
        None => {
            // Fields, rows and raw were streamed to the client, not kept.
            let mt = lua.create_table()?;
            mt.set(
                "__index",
                lua.create_function(|_, (_, key): (Value, String)| -> mlua::Result<Value> {
                    match key.as_str() {
                        "fields" | "rows" | "raw" => Err(mlua::Error::runtime(format!(
                            ".resultset.{key} needs resultset_is_needed = true in proxy.queries:append()"
                        ))),
                        _ => Ok(Value::Nil),
                    }
                })?,
            )?;
            rs.set_metatable(Some(mt));
        }
    }
    t.set("resultset", rs)?;
    Ok(t)
}

/// `fields`, `rows` (an iterator) and `raw` from a buffered text result.
fn fill_resultset(
    lua: &Lua,
    rs: &Table,
    packets: &[Bytes],
    extended_metadata: bool,
) -> mlua::Result<()> {
    let Some(first) = packets.first() else {
        return Ok(());
    };
    rs.set("raw", lua.create_string(first)?)?;
    let fields = lua.create_table()?;
    let rows = lua.create_table()?;
    if !matches!(first.first(), Some(0x00) | Some(0xff)) {
        let (defs, data) = parse_text_result(packets, extended_metadata).map_err(|e| {
            mlua::Error::runtime(format!("cannot read the injected query's result: {e}"))
        })?;
        for (i, d) in defs.iter().enumerate() {
            let f = lua.create_table()?;
            f.set("name", lua.create_string(&d.name)?)?;
            f.set("org_name", lua.create_string(&d.org_name)?)?;
            f.set("table", lua.create_string(&d.table)?)?;
            f.set("org_table", lua.create_string(&d.org_table)?)?;
            f.set("type", d.ty)?;
            fields.set(i + 1, f)?;
        }
        for (i, r) in data.into_iter().enumerate() {
            let row = lua.create_table()?;
            for (j, v) in r.into_iter().enumerate() {
                if let Some(v) = v {
                    row.set(j + 1, lua.create_string(v)?)?;
                }
            }
            rows.set(i + 1, row)?;
        }
    }
    rs.set("fields", fields)?;
    // `for row in inj.resultset.rows do`: a fresh iterator each time it is read.
    let iter = lua.create_function(move |lua, ()| {
        let rows = rows.clone();
        let next = std::cell::Cell::new(0usize);
        lua.create_function(move |_, ()| {
            let i = next.get() + 1;
            next.set(i);
            rows.get::<Value>(i)
        })
    })?;
    let mt = lua.create_table()?;
    mt.set(
        "__index",
        lua.create_function(move |_, (_, key): (Value, String)| -> mlua::Result<Value> {
            match key.as_str() {
                "rows" => Ok(Value::Function(iter.call::<mlua::Function>(())?)),
                _ => Ok(Value::Nil),
            }
        })?,
    )?;
    rs.set_metatable(Some(mt));
    Ok(())
}

struct FieldDef {
    table: Vec<u8>,
    org_table: Vec<u8>,
    name: Vec<u8>,
    org_name: Vec<u8>,
    ty: u8,
}

type Row = Vec<Option<Vec<u8>>>;

/// Column definitions and rows of a text result set (the first one of a multi-result).
fn parse_text_result(
    packets: &[Bytes],
    extended_metadata: bool,
) -> Result<(Vec<FieldDef>, Vec<Row>), crate::protocol::ProtocolError> {
    let mut it = packets.iter();
    let count = match it.next() {
        Some(p) => Reader::new(p).lenenc_int("column count")?,
        None => 0,
    };
    let mut defs = Vec::new();
    for _ in 0..count {
        let Some(p) = it.next() else { break };
        let mut r = Reader::new(p);
        r.lenenc_bytes("catalog")?;
        r.lenenc_bytes("schema")?;
        let table = r.lenenc_bytes("table")?.to_vec();
        let org_table = r.lenenc_bytes("org_table")?.to_vec();
        let name = r.lenenc_bytes("name")?.to_vec();
        let org_name = r.lenenc_bytes("org_name")?.to_vec();
        if extended_metadata {
            r.lenenc_bytes("extended type info")?;
        }
        r.lenenc_int("fixed length")?;
        r.u16("charset")?;
        r.u32("length")?;
        let ty = r.u8("type")?;
        defs.push(FieldDef {
            table,
            org_table,
            name,
            org_name,
            ty,
        });
    }
    let mut rows = Vec::new();
    for p in it {
        match p.first() {
            Some(&b) if is_terminator(b, p.len()) => {
                // The EOF after the columns (older protocol) or the end of the rows.
                if rows.is_empty() && !defs.is_empty() && p.len() < 9 && b == 0xfe {
                    continue;
                }
                break;
            }
            Some(0xff) => break,
            _ => {
                let mut r = Reader::new(p);
                let mut row = Vec::with_capacity(defs.len());
                for _ in 0..defs.len() {
                    if r.remaining() > 0 && p[p.len() - r.remaining()] == 0xfb {
                        r.u8("NULL")?;
                        row.push(None);
                    } else {
                        row.push(Some(r.lenenc_bytes("value")?.to_vec()));
                    }
                }
                rows.push(row);
            }
        }
    }
    Ok((defs, rows))
}
