//! `proxy.response`: what a script answers the client with (OK, with or without a result set;
//! ERR; or RAW packets), turned into packet payloads.

use super::constants::{MYSQLD_PACKET_ERR, MYSQLD_PACKET_OK, MYSQLD_PACKET_RAW};
use crate::protocol::resultset::{text_result, Shape, TYPE_VAR_STRING};
use crate::protocol::{ErrPacket, OkPacket};
use bytes::BytesMut;
use mlua::{Table, Value};

/// Why a response table cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("proxy.response.type is missing or unknown")]
    Type,
    #[error("{0}")]
    Lua(#[from] mlua::Error),
}

/// The packets (payloads) that answer the client. `status`: the session's real status flags.
pub fn encode(response: &Table, shape: Shape, status: u16) -> Result<Vec<BytesMut>, ResponseError> {
    let ty: Option<i64> = response.get("type")?;
    match ty {
        Some(MYSQLD_PACKET_OK) => {
            if let Some(rs) = response.get::<Option<Table>>("resultset")? {
                return resultset(&rs, shape, status);
            }
            let mut b = BytesMut::new();
            OkPacket {
                affected_rows: response.get::<Option<u64>>("affected_rows")?.unwrap_or(0),
                last_insert_id: response.get::<Option<u64>>("insert_id")?.unwrap_or(0),
                status,
                warnings: 0,
                info: Vec::new(),
            }
            .encode(&mut b);
            Ok(vec![b])
        }
        Some(MYSQLD_PACKET_ERR) => {
            let e = ErrPacket::new(
                response.get::<Option<u16>>("errcode")?.unwrap_or(1105),
                &response
                    .get::<Option<String>>("sqlstate")?
                    .unwrap_or_else(|| "07000".into()),
                response
                    .get::<Option<String>>("errmsg")?
                    .unwrap_or_default(),
            );
            let mut b = BytesMut::new();
            e.encode(&mut b);
            Ok(vec![b])
        }
        Some(MYSQLD_PACKET_RAW) => {
            let packets: Table = response.get("packets")?;
            let mut out = Vec::new();
            for p in packets.sequence_values::<mlua::String>() {
                out.push(BytesMut::from(&p?.as_bytes()[..]));
            }
            Ok(out)
        }
        _ => Err(ResponseError::Type),
    }
}

fn resultset(rs: &Table, shape: Shape, status: u16) -> Result<Vec<BytesMut>, ResponseError> {
    let mut columns: Vec<(Vec<u8>, u8)> = Vec::new();
    if let Some(fields) = rs.get::<Option<Table>>("fields")? {
        for f in fields.sequence_values::<Table>() {
            let f = f?;
            let name = f
                .get::<Option<mlua::String>>("name")?
                .map(|s| s.as_bytes().to_vec())
                .unwrap_or_default();
            let ty = f.get::<Option<u8>>("type")?.unwrap_or(TYPE_VAR_STRING + 1);
            columns.push((name, ty));
        }
    }
    let mut rows = Vec::new();
    if let Some(t) = rs.get::<Option<Table>>("rows")? {
        for row in t.sequence_values::<Table>() {
            let row = row?;
            let mut r = Vec::with_capacity(columns.len());
            for i in 1..=columns.len() {
                r.push(match row.get::<Value>(i)? {
                    Value::Nil => None,
                    Value::String(s) => Some(s.as_bytes().to_vec()),
                    Value::Integer(n) => Some(n.to_string().into_bytes()),
                    Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
                        Some(format!("{}", n as i64).into_bytes())
                    }
                    Value::Number(n) => Some(n.to_string().into_bytes()),
                    Value::Boolean(b) => Some(if b { b"1".to_vec() } else { b"0".to_vec() }),
                    other => Some(format!("{other:?}").into_bytes()),
                });
            }
            rows.push(r);
        }
    }
    let cols: Vec<(&[u8], u8)> = columns.iter().map(|(n, t)| (n.as_slice(), *t)).collect();
    Ok(text_result(&cols, &rows, shape, status))
}
