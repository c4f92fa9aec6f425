//! Packet framing: a 4-byte header (3-byte little-endian length, 1-byte sequence id) and a
//! payload. Payloads of 16 MiB - 1 or more continue in further packets; the last one is shorter
//! (possibly empty). One `BytesMut` per direction per connection: check completeness, then split
//! off whole packets without copying.

use super::constants::MAX_CHUNK;
use super::ProtocolError;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const HEADER_LEN: usize = 4;

/// How much a read asks the kernel for at a time.
const READ_CHUNK: usize = 64 * 1024;
/// A new connection reads in 4 KiB: logins and most commands fit, and ten thousand idle
/// clients must not each have touched 64 KiB. A read that fills the room doubles it.
const FIRST_READ_CHUNK: usize = 4 * 1024;

/// Length and sequence id of the packet at the start of `buf`, if its header is complete.
#[inline]
pub fn peek_header(buf: &[u8]) -> Option<(usize, u8)> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let len = buf[0] as usize | (buf[1] as usize) << 8 | (buf[2] as usize) << 16;
    Some((len, buf[3]))
}

/// One physical packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub seq: u8,
    pub payload: Bytes,
}

impl Chunk {
    /// True if the logical packet continues in the next physical packet.
    pub fn continues(&self) -> bool {
        self.payload.len() == MAX_CHUNK
    }
}

/// Split one complete physical packet off the front of `buf`, or `None` if it is not complete.
pub fn decode_chunk(buf: &mut BytesMut) -> Option<Chunk> {
    let (len, seq) = peek_header(buf)?;
    if buf.len() < HEADER_LEN + len {
        return None;
    }
    buf.advance(HEADER_LEN);
    Some(Chunk {
        seq,
        payload: buf.split_to(len).freeze(),
    })
}

/// Append `payload` as one logical packet starting at sequence id `seq`, split into physical
/// packets as needed. Returns the sequence id that follows.
pub fn encode_packet(out: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        out.reserve(HEADER_LEN + n);
        out.put_uint_le(n as u64, 3);
        out.put_u8(seq);
        out.put_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_CHUNK {
            return seq;
        }
    }
}

/// A connection with its read and write buffers.
#[derive(Debug)]
pub struct Framed<S> {
    pub io: S,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// How much room a read asks for: grows from FIRST_READ_CHUNK to READ_CHUNK as reads fill it.
    chunk: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    pub fn new(io: S) -> Self {
        Framed {
            io,
            // Buffers grow on first use and are given back when idle (`release_buffers`): ten
            // thousand idle clients must not hold ten thousand pairs of them.
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            chunk: FIRST_READ_CHUNK,
        }
    }

    /// Whether the buffers hold memory.
    pub fn holds_buffers(&self) -> bool {
        self.rbuf.capacity() > 0 || self.wbuf.capacity() > 0
    }

    /// Give empty buffers' memory back (an idle connection).
    pub fn release_buffers(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
    }

    /// Read more bytes into the read buffer. A peer that closes between packets gives `Closed`,
    /// one that closes inside a packet `UnexpectedEof`.
    pub async fn fill(&mut self) -> Result<usize, ProtocolError> {
        if self.rbuf.capacity() - self.rbuf.len() < self.chunk / 4 {
            self.rbuf.reserve(self.chunk);
        }
        let room = self.rbuf.capacity() - self.rbuf.len();
        let n = self.io.read_buf(&mut self.rbuf).await?;
        if n == room && self.chunk < READ_CHUNK {
            self.chunk *= 2;
        }
        if n == 0 {
            return Err(if self.rbuf.is_empty() {
                ProtocolError::Closed
            } else {
                ProtocolError::UnexpectedEof
            });
        }
        Ok(n)
    }

    /// Read one physical packet. `max` bounds its payload.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Chunk, ProtocolError> {
        loop {
            if let Some((len, _)) = peek_header(&self.rbuf) {
                if len > max {
                    return Err(ProtocolError::TooLarge { len, max });
                }
                // Room for the whole packet, but only up to 1 MiB ahead of the data: a peer that
                // announces 16 MiB and sends nothing must not make us hold 16 MiB.
                if self.rbuf.len() < HEADER_LEN + len {
                    let want = (HEADER_LEN + len - self.rbuf.len()).min(1 << 20);
                    self.rbuf.reserve(want);
                }
            }
            if let Some(c) = decode_chunk(&mut self.rbuf) {
                return Ok(c);
            }
            self.fill().await?;
        }
    }

    /// Read one logical packet, joining continuation packets; `max` bounds the joined payload.
    /// Returns the sequence id of the last physical packet.
    pub async fn read_packet(&mut self, max: usize) -> Result<Chunk, ProtocolError> {
        let first = self.read_chunk(max.min(MAX_CHUNK)).await?;
        if !first.continues() {
            return Ok(first);
        }
        let mut joined = BytesMut::from(&first.payload[..]);
        loop {
            let c = self.read_chunk(MAX_CHUNK).await?;
            if joined.len() + c.payload.len() > max {
                return Err(ProtocolError::TooLarge {
                    len: joined.len() + c.payload.len(),
                    max,
                });
            }
            joined.extend_from_slice(&c.payload);
            if !c.continues() {
                return Ok(Chunk {
                    seq: c.seq,
                    payload: joined.freeze(),
                });
            }
        }
    }

    /// Queue a logical packet for writing; returns the next sequence id.
    pub fn queue(&mut self, seq: u8, payload: &[u8]) -> u8 {
        encode_packet(&mut self.wbuf, seq, payload)
    }

    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            // A TLS stream holds records until flushed; for TCP this returns at once.
            self.io.flush().await?;
        }
        Ok(())
    }

    /// Write bytes past the write buffer (which must be flushed first): a relayed response
    /// goes from the server's read buffer to the client without a copy.
    pub async fn write_direct(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.flush().await?;
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Queue one physical packet exactly as received (relaying: no splitting, no terminator).
    pub fn queue_chunk(&mut self, chunk: &Chunk) {
        let len = chunk.payload.len().min(MAX_CHUNK);
        self.wbuf.reserve(HEADER_LEN + len);
        self.wbuf.put_uint_le(len as u64, 3);
        self.wbuf.put_u8(chunk.seq);
        self.wbuf.put_slice(&chunk.payload[..len]);
    }

    /// Queue and flush one packet.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<u8, ProtocolError> {
        let next = self.queue(seq, payload);
        self.flush().await?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_large_payloads() {
        for size in [
            0usize,
            1,
            MAX_CHUNK - 1,
            MAX_CHUNK,
            MAX_CHUNK + 1,
            2 * MAX_CHUNK + 5,
        ] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut buf = BytesMut::new();
            let next = encode_packet(&mut buf, 3, &payload);
            let packets = size / MAX_CHUNK + 1;
            assert_eq!(next, 3 + packets as u8);
            assert_eq!(buf.len(), size + 4 * packets);
            let mut joined = Vec::new();
            let mut seqs = Vec::new();
            while let Some(c) = decode_chunk(&mut buf) {
                joined.extend_from_slice(&c.payload);
                seqs.push(c.seq);
                if !c.continues() {
                    break;
                }
            }
            assert_eq!(joined, payload);
            assert_eq!(seqs, (3..3 + packets as u8).collect::<Vec<_>>());
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn incomplete_packets_wait() {
        let mut buf = BytesMut::from(&[5u8, 0, 0, 0, b'a', b'b'][..]);
        assert!(decode_chunk(&mut buf).is_none());
        buf.extend_from_slice(b"cde");
        let c = decode_chunk(&mut buf).unwrap();
        assert_eq!(&c.payload[..], b"abcde");
    }

    #[tokio::test]
    async fn read_packet_over_a_stream() {
        let payload: Vec<u8> = (0..MAX_CHUNK + 10).map(|i| i as u8).collect();
        let mut wire = BytesMut::new();
        encode_packet(&mut wire, 0, &payload);
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(async move {
            a.write_all(&wire).await.unwrap();
        });
        let mut f = Framed::new(b);
        let p = f.read_packet(64 << 20).await.unwrap();
        assert_eq!(p.payload.len(), payload.len());
        assert_eq!(p.seq, 1);
        writer.await.unwrap();
        assert!(matches!(
            f.read_packet(100).await,
            Err(ProtocolError::Closed)
        ));
    }

    #[tokio::test]
    async fn oversized_packets_are_refused_before_buffering() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            a.write_all(&[0xff, 0xff, 0xff, 0]).await.unwrap();
        });
        let mut f = Framed::new(b);
        assert!(matches!(
            f.read_packet(1024).await,
            Err(ProtocolError::TooLarge { .. })
        ));
    }
}
