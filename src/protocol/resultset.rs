//! Text result sets Weiche answers itself (EXPLAIN ROUTE, Lua's proxy.response, and later the
//! admin port): column definitions and rows of text, with or without EOF packets.

use super::basic::{put_lenenc_bytes, put_lenenc_int};
use super::packet::Framed;
use super::ProtocolError;
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

const UTF8MB4_GENERAL_CI: u16 = 45;
const BINARY: u16 = 63;
pub const TYPE_VAR_STRING: u8 = 0xfd;

/// What the client agreed to that changes a result set's packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// CLIENT_DEPRECATE_EOF: no EOF after the columns, an OK-like terminator.
    pub deprecate_eof: bool,
    /// MARIADB_CLIENT_EXTENDED_METADATA: each column definition has an extended-type block.
    pub extended_metadata: bool,
}

fn column(name: &[u8], ty: u8, shape: Shape) -> BytesMut {
    let mut b = BytesMut::with_capacity(32 + name.len());
    put_lenenc_bytes(&mut b, b"def");
    put_lenenc_bytes(&mut b, b"");
    put_lenenc_bytes(&mut b, b"");
    put_lenenc_bytes(&mut b, b"");
    put_lenenc_bytes(&mut b, name);
    put_lenenc_bytes(&mut b, name);
    if shape.extended_metadata {
        // No extended type: an empty block.
        put_lenenc_bytes(&mut b, b"");
    }
    b.put_u8(0x0c);
    // Text types carry a character set; numbers are binary, as the server sends them.
    let text = matches!(ty, 0x0f | 0xf5..=0xfe);
    b.put_u16_le(if text { UTF8MB4_GENERAL_CI } else { BINARY });
    b.put_u32_le(1024);
    b.put_u8(ty);
    b.put_u16_le(0);
    b.put_u8(0);
    b.put_u16_le(0);
    b
}

fn terminator(deprecate_eof: bool, status: u16) -> BytesMut {
    let mut b = BytesMut::with_capacity(8);
    b.put_u8(0xfe);
    if deprecate_eof {
        put_lenenc_int(&mut b, 0);
        put_lenenc_int(&mut b, 0);
    }
    b.put_u16_le(status);
    b.put_u16_le(0);
    b
}

/// The packets of a text result set: columns as (name, MYSQL_TYPE_*), rows of text or NULL.
pub fn text_result(
    columns: &[(&[u8], u8)],
    rows: &[Vec<Option<Vec<u8>>>],
    shape: Shape,
    status: u16,
) -> Vec<BytesMut> {
    let deprecate_eof = shape.deprecate_eof;
    let mut out = Vec::with_capacity(columns.len() + rows.len() + 3);
    let mut count = BytesMut::new();
    put_lenenc_int(&mut count, columns.len() as u64);
    out.push(count);
    out.extend(columns.iter().map(|(name, ty)| column(name, *ty, shape)));
    if !deprecate_eof {
        out.push(terminator(false, status));
    }
    for row in rows {
        let mut b = BytesMut::new();
        for v in row {
            match v {
                Some(v) => put_lenenc_bytes(&mut b, v),
                None => b.put_u8(0xfb),
            }
        }
        out.push(b);
    }
    out.push(terminator(deprecate_eof, status));
    out
}

/// The packets of a result set of VAR_STRING columns and rows of text or NULL.
pub fn string_result(
    columns: &[&str],
    rows: &[Vec<Option<String>>],
    shape: Shape,
    status: u16,
) -> Vec<BytesMut> {
    let columns: Vec<(&[u8], u8)> = columns
        .iter()
        .map(|c| (c.as_bytes(), TYPE_VAR_STRING))
        .collect();
    let rows: Vec<Vec<Option<Vec<u8>>>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| v.clone().map(String::into_bytes))
                .collect()
        })
        .collect();
    text_result(&columns, &rows, shape, status)
}

/// Send a whole text result set of VAR_STRING columns; `seq` is the sequence id of its first
/// packet.
pub async fn send_text_result<S: AsyncRead + AsyncWrite + Unpin>(
    out: &mut Framed<S>,
    mut seq: u8,
    columns: &[&str],
    rows: &[Vec<Option<String>>],
    shape: Shape,
    status: u16,
) -> Result<(), ProtocolError> {
    for p in string_result(columns, rows, shape, status) {
        seq = out.queue(seq, &p);
    }
    out.flush().await
}
