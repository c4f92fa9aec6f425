//! The small building blocks: a bounds-checked payload reader, length-encoded integers and
//! strings, and the OK, ERR and EOF packets.

use super::ProtocolError;
use bytes::{BufMut, BytesMut};

/// Reads fields from a payload; every read is bounds-checked and fails with `Malformed`.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let r = &self.buf[self.pos..];
        self.pos = self.buf.len();
        r
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.remaining() < n {
            return Err(ProtocolError::Malformed(what));
        }
        let r = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(r)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, ProtocolError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated string; a missing NUL takes the rest of the payload (as servers do).
    pub fn null_str(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(i) => {
                self.pos += i + 1;
                &rest[..i]
            }
            None => {
                self.pos = self.buf.len();
                rest
            }
        }
    }

    pub fn lenenc_int(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        let first = self.u8(what)?;
        Ok(match first {
            0xfc => self.u16(what)? as u64,
            0xfd => {
                let b = self.bytes(3, what)?;
                u32::from_le_bytes([b[0], b[1], b[2], 0]) as u64
            }
            0xfe => {
                let b = self.bytes(8, what)?;
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            0xfb | 0xff => return Err(ProtocolError::Malformed(what)),
            n => n as u64,
        })
    }

    pub fn lenenc_bytes(&mut self, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        let n = self.lenenc_int(what)?;
        let n = usize::try_from(n).map_err(|_| ProtocolError::Malformed(what))?;
        self.bytes(n, what)
    }
}

pub fn put_lenenc_int(out: &mut BytesMut, n: u64) {
    if n < 0xfb {
        out.put_u8(n as u8);
    } else if n <= 0xffff {
        out.put_u8(0xfc);
        out.put_u16_le(n as u16);
    } else if n <= 0xff_ffff {
        out.put_u8(0xfd);
        out.put_uint_le(n, 3);
    } else {
        out.put_u8(0xfe);
        out.put_u64_le(n);
    }
}

pub fn put_lenenc_bytes(out: &mut BytesMut, b: &[u8]) {
    put_lenenc_int(out, b.len() as u64);
    out.put_slice(b);
}

/// An OK packet (also the 0xFE-headed OK that ends a result set under DEPRECATE_EOF).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: Vec<u8>,
}

impl OkPacket {
    /// Header, affected rows, insert id, status and warnings: the part every OK layout shares.
    pub fn decode_head(r: &mut Reader<'_>) -> Result<(u64, u64, u16, u16), ProtocolError> {
        let header = r.u8("OK header")?;
        if header != 0x00 && header != 0xfe {
            return Err(ProtocolError::Malformed("OK header"));
        }
        let affected_rows = r.lenenc_int("OK affected rows")?;
        let last_insert_id = r.lenenc_int("OK insert id")?;
        // Servers always send status and warnings to PROTOCOL_41 clients; be lenient anyway.
        let status = if r.remaining() >= 2 {
            r.u16("OK status")?
        } else {
            0
        };
        let warnings = if r.remaining() >= 2 {
            r.u16("OK warnings")?
        } else {
            0
        };
        Ok((affected_rows, last_insert_id, status, warnings))
    }

    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(payload);
        let (affected_rows, last_insert_id, status, warnings) = Self::decode_head(&mut r)?;
        let info = r.rest().to_vec();
        Ok(OkPacket {
            affected_rows,
            last_insert_id,
            status,
            warnings,
            info,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(0x00);
        put_lenenc_int(out, self.affected_rows);
        put_lenenc_int(out, self.last_insert_id);
        out.put_u16_le(self.status);
        out.put_u16_le(self.warnings);
        out.put_slice(&self.info);
    }
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    pub sqlstate: [u8; 5],
    pub message: String,
}

impl ErrPacket {
    pub fn new(code: u16, sqlstate: &str, message: impl Into<String>) -> Self {
        let mut s = [b'H', b'Y', b'0', b'0', b'0'];
        for (d, b) in s.iter_mut().zip(sqlstate.bytes()) {
            *d = b;
        }
        ErrPacket {
            code,
            sqlstate: s,
            message: message.into(),
        }
    }

    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(payload);
        if r.u8("ERR header")? != 0xff {
            return Err(ProtocolError::Malformed("ERR header"));
        }
        let code = r.u16("ERR code")?;
        let mut sqlstate = *b"HY000";
        if r.remaining() >= 6 && payload[3] == b'#' {
            r.u8("ERR marker")?;
            sqlstate.copy_from_slice(r.bytes(5, "ERR sqlstate")?);
        }
        let message = String::from_utf8_lossy(r.rest()).into_owned();
        Ok(ErrPacket {
            code,
            sqlstate,
            message,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(0xff);
        out.put_u16_le(self.code);
        out.put_u8(b'#');
        out.put_slice(&self.sqlstate);
        out.put_slice(self.message.as_bytes());
    }

    pub fn sqlstate_str(&self) -> &str {
        std::str::from_utf8(&self.sqlstate).unwrap_or("HY000")
    }
}

impl std::fmt::Display for ErrPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code,
            self.sqlstate_str(),
            self.message
        )
    }
}

/// Status flags of a packet that ends a result (EOF, or OK with header 0xFE under DEPRECATE_EOF).
pub fn terminator_status(payload: &[u8], deprecate_eof: bool) -> Result<u16, ProtocolError> {
    if deprecate_eof {
        Ok(OkPacket::decode(payload)?.status)
    } else {
        let mut r = Reader::new(payload);
        r.u8("EOF header")?;
        if r.remaining() < 4 {
            // A pre-4.1 EOF has no status; treat it as "nothing more".
            return Ok(0);
        }
        r.u16("EOF warnings")?;
        r.u16("EOF status")
    }
}

pub fn encode_eof(out: &mut BytesMut, warnings: u16, status: u16) {
    out.put_u8(0xfe);
    out.put_u16_le(warnings);
    out.put_u16_le(status);
}

/// True when a packet of this length starting with this byte ends rows or column lists:
/// 0xFE with a payload shorter than a full chunk (a row starting with 0xFE is at least 16 MiB).
pub fn is_terminator(first: u8, len: usize) -> bool {
    first == 0xfe && len < super::constants::MAX_CHUNK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trip() {
        for n in [
            0u64,
            1,
            250,
            251,
            0xffff,
            0x10000,
            0xff_ffff,
            0x100_0000,
            u64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_lenenc_int(&mut b, n);
            assert_eq!(Reader::new(&b).lenenc_int("t").unwrap(), n);
        }
    }

    #[test]
    fn ok_and_err_round_trip() {
        let ok = OkPacket {
            affected_rows: 300,
            last_insert_id: 7,
            status: 0x4002,
            warnings: 1,
            info: b"x".to_vec(),
        };
        let mut b = BytesMut::new();
        ok.encode(&mut b);
        assert_eq!(OkPacket::decode(&b).unwrap(), ok);
        let err = ErrPacket::new(1045, "28000", "Access denied");
        let mut b = BytesMut::new();
        err.encode(&mut b);
        assert_eq!(ErrPacket::decode(&b).unwrap(), err);
    }

    #[test]
    fn truncated_packets_are_errors() {
        assert!(OkPacket::decode(&[0x00, 0xfc]).is_err());
        assert!(ErrPacket::decode(&[0xff, 1]).is_err());
        assert!(Reader::new(&[0xfe, 1, 2]).lenenc_int("t").is_err());
    }
}
