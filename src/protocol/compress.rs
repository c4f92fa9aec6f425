//! The compressed protocol: a layer under the packet framing, switched on after the login's OK
//! when both sides asked for it (CLIENT_COMPRESS: zlib; CLIENT_ZSTD_COMPRESSION_ALGORITHM: zstd
//! at the level the client chose). Each compressed packet has a 7-byte header (3-byte payload
//! length, 1-byte compressed sequence id, 3-byte length before compression, 0 when the payload
//! is sent as it is) and carries any run of bytes of the MySQL packet stream: a part of one
//! packet or several. So everything above this layer (framing, the walker, the relay) sees the
//! plain packet stream and is unchanged; the inner packets keep the sequence ids they would
//! have on a plain connection, which peers do not check on a compressed one.
//!
//! The compressed sequence id restarts with each command, and peers check it. Facing a client,
//! Weiche continues from the last packet read (a command's answer follows it) and from its own
//! last packet otherwise. Facing a server, it also restarts at 0 where a command starts: where
//! a MySQL packet with sequence id 0 begins, unless that 0 is the wrap-around after 255 inside
//! one long exchange (LOAD DATA LOCAL's file of many packets), with no answer read in between.
//!
//! Decompression is bounded: a packet may grow to no more than the length its header declares
//! (at most 16 MiB - 1), and must grow to exactly that; a compression bomb is an error, not
//! memory. The compressor and decompressor states are per worker thread (a zlib compressor
//! holds some 300 KiB): a thousand idle compressed clients hold none.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Header of a compressed packet.
pub const HEADER_LEN: usize = 7;
/// The largest payload of one compressed packet, and the largest length before compression.
pub const MAX_PAYLOAD: usize = 0xff_ffff;
/// Shorter runs are sent as they are, as MariaDB does: compressing them gains nothing.
pub const MIN_COMPRESS_LEN: usize = 50;
/// The read buffer starts this small and grows while a packet does not fit.
const FIRST_READ: usize = 4 * 1024;
/// A read buffer larger than this is given back once it is empty (after a large packet).
const KEEP_READ: usize = 64 * 1024;

/// Which algorithm a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// zlib (deflate with the zlib header) at this level (1-9).
    Zlib { level: u32 },
    /// zstd at this level (1-22), one frame per packet.
    Zstd { level: i32 },
}

impl Algorithm {
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::Zlib { .. } => "zlib",
            Algorithm::Zstd { .. } => "zstd",
        }
    }
}

/// Why a compressed packet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("compressed packet declares {declared} bytes but inflates to more")]
    TooLong { declared: usize },
    #[error("compressed packet declares {declared} bytes but inflates to {got}")]
    WrongLength { declared: usize, got: usize },
    #[error("compressed packet is corrupt: {0}")]
    Corrupt(String),
}

impl From<CompressError> for io::Error {
    fn from(e: CompressError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Bytes on the wire and before compression, both directions (for SHOW STATUS and metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub wire_in: u64,
    pub plain_in: u64,
    pub wire_out: u64,
    pub plain_out: u64,
}

/// A byte stream in the compressed protocol over `S`.
#[derive(Debug)]
pub struct Compressed<S> {
    pub inner: S,
    algorithm: Algorithm,
    /// Compressed bytes read: `raw[start..end]` is not decoded yet.
    raw: Vec<u8>,
    start: usize,
    end: usize,
    /// Decoded bytes: `plain[taken..]` is not yet read by the framing. A packet is decoded
    /// only once the last one was read, straight into this buffer.
    plain: Vec<u8>,
    taken: usize,
    /// Compressed packets not yet written: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// The compressed sequence id of the next packet written.
    seq: u8,
    /// Facing a server: where the commands written start.
    commands: Option<Commands>,
    pub traffic: Traffic,
}

/// Where MySQL packets begin in the bytes written to a server, to tell a command's start.
#[derive(Debug, Default)]
struct Commands {
    /// Payload bytes of the current packet still to come.
    left: usize,
    /// A header cut between two writes: its first `have` bytes.
    head: [u8; 4],
    have: usize,
    /// Sequence id of the last packet begun.
    last_seq: u8,
    /// A packet was read since the last write.
    answered: bool,
}

impl Commands {
    /// Whether `data` begins a command; then follow its packets.
    fn starts_command(&mut self, data: &[u8]) -> bool {
        let starts = self.left == 0
            && self.have == 0
            && data.len() >= 4
            && data[3] == 0
            && (self.last_seq != 255 || self.answered);
        self.answered = false;
        let mut rest = data;
        while !rest.is_empty() {
            if self.left > 0 {
                let n = self.left.min(rest.len());
                self.left -= n;
                rest = &rest[n..];
                continue;
            }
            let n = (4 - self.have).min(rest.len());
            self.head[self.have..self.have + n].copy_from_slice(&rest[..n]);
            self.have += n;
            rest = &rest[n..];
            if self.have == 4 {
                self.have = 0;
                self.left = u24(&self.head[..3]);
                self.last_seq = self.head[3];
            }
        }
        starts
    }
}

impl<S> Compressed<S> {
    pub fn new(inner: S, algorithm: Algorithm) -> Self {
        Compressed {
            inner,
            algorithm,
            raw: Vec::new(),
            start: 0,
            end: 0,
            plain: Vec::new(),
            taken: 0,
            out: Vec::new(),
            sent: 0,
            seq: 0,
            commands: None,
            traffic: Traffic::default(),
        }
    }

    /// The compressed protocol towards a server (Weiche is the client).
    pub fn to_server(inner: S, algorithm: Algorithm) -> Self {
        Compressed {
            commands: Some(Commands::default()),
            ..Compressed::new(inner, algorithm)
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether read bytes wait here (compressed or decoded) that the framing has not seen.
    pub fn has_buffered(&self) -> bool {
        self.end > self.start || self.taken < self.plain.len()
    }

    /// Decode one whole compressed packet from the read buffer into `plain`. False when the
    /// buffer does not hold a whole packet yet.
    fn decode_one(&mut self) -> Result<bool, CompressError> {
        let have = &self.raw[self.start..self.end];
        if have.len() < HEADER_LEN {
            return Ok(false);
        }
        let clen = u24(&have[0..3]);
        let seq = have[3];
        let ulen = u24(&have[4..7]);
        if have.len() < HEADER_LEN + clen {
            return Ok(false);
        }
        let payload = &have[HEADER_LEN..HEADER_LEN + clen];
        self.plain.clear();
        self.taken = 0;
        if ulen == 0 {
            self.plain.extend_from_slice(payload);
        } else {
            inflate(self.algorithm, payload, ulen, &mut self.plain)?;
        }
        self.traffic.wire_in += (HEADER_LEN + clen) as u64;
        self.traffic.plain_in += payload.len().max(ulen) as u64;
        self.start += HEADER_LEN + clen;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.raw.len() > KEEP_READ {
                self.raw = Vec::new();
            }
        }
        self.seq = seq.wrapping_add(1);
        if let Some(c) = &mut self.commands {
            c.answered = true;
        }
        Ok(true)
    }

    /// Make room to read into: the packet at the front must fit whole (once its bytes arrive:
    /// a header announcing 16 MiB makes the buffer grow only as data comes).
    fn room(&mut self) {
        if self.start > 0 && (self.end == self.raw.len() || self.start > self.raw.len() / 2) {
            self.raw.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.raw.len() {
            let grown = (self.raw.len() * 2).clamp(FIRST_READ, HEADER_LEN + MAX_PAYLOAD);
            self.raw.resize(grown.max(self.end + FIRST_READ), 0);
        }
    }

    /// Compress `data` (at most MAX_PAYLOAD bytes) into one packet at the end of `out`.
    fn encode(&mut self, data: &[u8]) {
        if let Some(c) = &mut self.commands {
            if c.starts_command(data) {
                self.seq = 0;
            }
        }
        let at = self.out.len();
        self.out.extend_from_slice(&[0; HEADER_LEN]);
        let compressed = data.len() >= MIN_COMPRESS_LEN
            && deflate(self.algorithm, data, &mut self.out)
            && self.out.len() - at - HEADER_LEN < data.len();
        let ulen = if compressed {
            data.len()
        } else {
            self.out.truncate(at + HEADER_LEN);
            self.out.extend_from_slice(data);
            0
        };
        let clen = self.out.len() - at - HEADER_LEN;
        put_u24(&mut self.out[at..at + 3], clen);
        self.out[at + 3] = self.seq;
        put_u24(&mut self.out[at + 4..at + 7], ulen);
        self.seq = self.seq.wrapping_add(1);
        self.traffic.wire_out += (HEADER_LEN + clen) as u64;
        self.traffic.plain_out += data.len() as u64;
    }
}

impl<S: AsyncWrite + Unpin> Compressed<S> {
    /// Write out what `out` holds.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        if self.out.capacity() > KEEP_READ {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Compressed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.plain.len() {
                let n = (this.plain.len() - this.taken).min(buf.remaining());
                buf.put_slice(&this.plain[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plain.len() && this.plain.capacity() > KEEP_READ {
                    this.plain = Vec::new();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.decode_one()? {
                continue;
            }
            this.room();
            let mut rb = ReadBuf::new(&mut this.raw[this.end..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                if this.end > this.start {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a compressed packet",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            this.end += n;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Compressed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One batch in flight at a time: a slow peer holds the writer back.
        ready!(this.poll_drain(cx))?;
        let n = buf.len().min(MAX_PAYLOAD);
        this.encode(&buf[..n]);
        // The bytes are ours now; send what the socket takes (the rest on the next call).
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Decode compressed packets held whole in `wire` (the fuzzers' entry): the plain bytes, or the
/// first error. Bytes after the last whole packet are left alone.
pub fn decode_all(algorithm: Algorithm, wire: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut c = Compressed::new((), algorithm);
    c.raw = wire.to_vec();
    c.end = wire.len();
    let mut out = Vec::new();
    while c.decode_one()? {
        out.extend_from_slice(&c.plain);
    }
    Ok(out)
}

/// `data` in compressed packets, as Weiche sends it.
pub fn encode_all(algorithm: Algorithm, data: &[u8]) -> Vec<u8> {
    let mut c = Compressed::new((), algorithm);
    for piece in data.chunks(MAX_PAYLOAD) {
        c.encode(piece);
    }
    c.out
}

fn u24(b: &[u8]) -> usize {
    b[0] as usize | (b[1] as usize) << 8 | (b[2] as usize) << 16
}

fn put_u24(b: &mut [u8], v: usize) {
    b[0] = v as u8;
    b[1] = (v >> 8) as u8;
    b[2] = (v >> 16) as u8;
}

/// This worker's compressor and decompressor states, made on first use.
#[derive(Default)]
struct Codecs {
    zlib_c: Option<(u32, flate2::Compress)>,
    zlib_d: Option<flate2::Decompress>,
    zstd_c: Option<zstd::bulk::Compressor<'static>>,
    zstd_d: Option<zstd::bulk::Decompressor<'static>>,
}

thread_local! {
    static CODECS: RefCell<Codecs> = RefCell::new(Codecs::default());
}

/// Append `data` compressed to `out`. False when it could not be (then `out` is cut back by
/// the caller and the data goes as it is).
pub fn deflate(algorithm: Algorithm, data: &[u8], out: &mut Vec<u8>) -> bool {
    CODECS.with(|c| {
        let mut c = c.borrow_mut();
        match algorithm {
            Algorithm::Zlib { level } => {
                let z = match &mut c.zlib_c {
                    Some((l, z)) if *l == level => z,
                    slot => {
                        let z = flate2::Compress::new(flate2::Compression::new(level), true);
                        &mut slot.insert((level, z)).1
                    }
                };
                z.reset();
                // Only a result shorter than the input is of use: room for that, no more.
                out.reserve(data.len());
                let room = out.len() + data.len();
                for _ in 0..4 {
                    let before = z.total_in() as usize;
                    match z.compress_vec(&data[before..], out, flate2::FlushCompress::Finish) {
                        Ok(flate2::Status::StreamEnd) => return true,
                        Ok(_) if out.len() < room => continue,
                        _ => return false,
                    }
                }
                false
            }
            Algorithm::Zstd { level } => {
                let z = match &mut c.zstd_c {
                    Some(z) => z,
                    slot => match zstd::bulk::Compressor::new(level) {
                        Ok(z) => slot.insert(z),
                        Err(_) => return false,
                    },
                };
                if z.set_compression_level(level).is_err() {
                    return false;
                }
                let at = out.len();
                out.resize(at + data.len(), 0);
                match z.compress_to_buffer(data, &mut out[at..]) {
                    Ok(n) => {
                        out.truncate(at + n);
                        true
                    }
                    Err(_) => false,
                }
            }
        }
    })
}

/// Decompress `payload` into `out` (empty): exactly `declared` bytes, or an error. The
/// decoders write only into the room reserved, so a bomb stops at `declared` (or the room a
/// reused buffer already had, at most KEEP_READ).
pub fn inflate(
    algorithm: Algorithm,
    payload: &[u8],
    declared: usize,
    out: &mut Vec<u8>,
) -> Result<(), CompressError> {
    out.clear();
    out.reserve_exact(declared);
    CODECS.with(|c| {
        let mut c = c.borrow_mut();
        match algorithm {
            Algorithm::Zlib { .. } => {
                let z = c
                    .zlib_d
                    .get_or_insert_with(|| flate2::Decompress::new(true));
                z.reset(true);
                let status = z
                    .decompress_vec(payload, out, flate2::FlushDecompress::Finish)
                    .map_err(|e| CompressError::Corrupt(e.to_string()))?;
                match status {
                    flate2::Status::StreamEnd => {}
                    _ if out.len() >= declared => {
                        return Err(CompressError::TooLong { declared });
                    }
                    _ => {
                        return Err(CompressError::WrongLength {
                            declared,
                            got: out.len(),
                        })
                    }
                }
            }
            Algorithm::Zstd { .. } => {
                let z = match &mut c.zstd_d {
                    Some(z) => z,
                    slot => slot.insert(
                        zstd::bulk::Decompressor::new()
                            .map_err(|e| CompressError::Corrupt(e.to_string()))?,
                    ),
                };
                z.decompress_to_buffer(payload, out).map_err(|e| {
                    if e.to_string().contains("Destination buffer is too small") {
                        CompressError::TooLong { declared }
                    } else {
                        CompressError::Corrupt(e.to_string())
                    }
                })?;
            }
        }
        Ok(())
    })?;
    match out.len() {
        n if n == declared => Ok(()),
        n if n > declared => Err(CompressError::TooLong { declared }),
        got => Err(CompressError::WrongLength { declared, got }),
    }
}

#[cfg(test)]
#[path = "compress_tests.rs"]
mod tests;
