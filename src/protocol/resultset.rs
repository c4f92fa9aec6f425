//! Text result sets Weiche answers itself (EXPLAIN ROUTE, and later the admin port): column
//! definitions of type VAR_STRING and rows of text, with or without EOF packets.

use super::basic::{put_lenenc_bytes, put_lenenc_int};
use super::packet::Framed;
use super::ProtocolError;
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

const UTF8MB4_GENERAL_CI: u16 = 45;
const TYPE_VAR_STRING: u8 = 0xfd;

fn column(name: &str) -> BytesMut {
    let mut b = BytesMut::with_capacity(32 + name.len());
    put_lenenc_bytes(&mut b, b"def");
    put_lenenc_bytes(&mut b, b"");
    put_lenenc_bytes(&mut b, b"");
    put_lenenc_bytes(&mut b, b"");
    put_lenenc_bytes(&mut b, name.as_bytes());
    put_lenenc_bytes(&mut b, name.as_bytes());
    b.put_u8(0x0c);
    b.put_u16_le(UTF8MB4_GENERAL_CI);
    b.put_u32_le(1024);
    b.put_u8(TYPE_VAR_STRING);
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

/// Send a whole text result set; `seq` is the sequence id of its first packet.
pub async fn send_text_result<S: AsyncRead + AsyncWrite + Unpin>(
    out: &mut Framed<S>,
    mut seq: u8,
    columns: &[&str],
    rows: &[Vec<Option<String>>],
    deprecate_eof: bool,
    status: u16,
) -> Result<(), ProtocolError> {
    let mut count = BytesMut::new();
    put_lenenc_int(&mut count, columns.len() as u64);
    seq = out.queue(seq, &count);
    for c in columns {
        seq = out.queue(seq, &column(c));
    }
    if !deprecate_eof {
        seq = out.queue(seq, &terminator(false, status));
    }
    for row in rows {
        let mut b = BytesMut::new();
        for v in row {
            match v {
                Some(v) => put_lenenc_bytes(&mut b, v.as_bytes()),
                None => b.put_u8(0xfb),
            }
        }
        seq = out.queue(seq, &b);
    }
    out.queue(seq, &terminator(deprecate_eof, status));
    out.flush().await
}
