//! One connection to a memcached node, speaking the meta protocol (`mg`, `ms`, `ma`):
//! requests are written as one batch and their replies read in order (pipelining).

use bytes::{Buf, Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reply to one meta request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `VA <n>` and its data, with the seconds it has left when asked for (`t`; -1: no
    /// expiry) and its CAS token when asked for (`c`).
    Value(Bytes, Option<i64>, Option<u64>),
    /// `EX`: a compare-and-set found another value there.
    Exists,
    /// `EN` (miss), `NF` (not found).
    Miss,
    /// `HD` (stored / done).
    Done,
    /// `NS` (not stored) and the like: not an error of the connection.
    NotStored,
}

#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    /// The largest value read back: what Weiche stores at most (cache.max_result_size and the
    /// entry's header); a bigger one is not ours and must not make us buffer it.
    max_value: usize,
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Conn {
    pub async fn connect(address: &str, max_value: usize) -> io::Result<Conn> {
        let stream = TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            max_value,
        })
    }

    pub async fn send(&mut self, requests: &[u8]) -> io::Result<()> {
        self.stream.write_all(requests).await
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.stream.read_buf(&mut self.rbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(p) = self.rbuf.windows(2).position(|w| w == b"\r\n") {
                let line = self.rbuf.split_to(p + 2);
                return Ok(String::from_utf8_lossy(&line[..p]).into_owned());
            }
            if self.rbuf.len() > 8192 {
                return Err(bad("memcached sent an overlong line".into()));
            }
            self.fill().await?;
        }
    }

    /// Read the reply to the next request.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        let line = self.line().await?;
        let mut words = line.split(' ');
        match words.next().unwrap_or("") {
            "VA" => {
                let n: usize = words
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n <= self.max_value)
                    .ok_or_else(|| bad(format!("memcached: bad value header '{line}'")))?;
                let flags: Vec<&str> = words.collect();
                let flag = |f: char| flags.iter().find_map(|w| w.strip_prefix(f));
                let ttl = flag('t').and_then(|v| v.parse().ok());
                let cas = flag('c').and_then(|v| v.parse().ok());
                while self.rbuf.len() < n + 2 {
                    self.rbuf.reserve(n + 2 - self.rbuf.len());
                    self.fill().await?;
                }
                let data = self.rbuf.split_to(n).freeze();
                if &self.rbuf[..2] != b"\r\n" {
                    return Err(bad("memcached: value not followed by CRLF".into()));
                }
                self.rbuf.advance(2);
                Ok(Reply::Value(data, ttl, cas))
            }
            "EN" | "NF" => Ok(Reply::Miss),
            "HD" => Ok(Reply::Done),
            "EX" => Ok(Reply::Exists),
            "NS" => Ok(Reply::NotStored),
            // "object too large for cache", "out of memory storing object": the request is
            // refused, the connection is fine.
            "SERVER_ERROR" => Ok(Reply::NotStored),
            _ => Err(bad(format!("memcached: {line}"))),
        }
    }
}

/// `mg <key> v t`: the value and the seconds it has left, or a miss.
pub fn get(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(format!("mg {key} v t\r\n").as_bytes());
}

/// `ms <key> <len> T<ttl>`: store a value.
pub fn set(out: &mut Vec<u8>, key: &str, value: &[u8], ttl_secs: u64) {
    out.extend_from_slice(format!("ms {key} {} T{ttl_secs}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `mg <key> v c`: the value and its CAS token, or a miss.
pub fn get_cas(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(format!("mg {key} v c\r\n").as_bytes());
}

/// `ms <key> <len> T<ttl> C<cas>`: store a value only if the key still has this CAS token.
pub fn set_cas(out: &mut Vec<u8>, key: &str, value: &[u8], ttl_secs: u64, cas: u64) {
    out.extend_from_slice(format!("ms {key} {} T{ttl_secs} C{cas}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `ms <key> <len> T<ttl> ME`: store a value only if the key is free (add).
pub fn add(out: &mut Vec<u8>, key: &str, value: &[u8], ttl_secs: u64) {
    out.extend_from_slice(format!("ms {key} {} T{ttl_secs} ME\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `ma <key> N0 J<init> D<delta> v`: a counter, created at `init` (never expiring) when missing.
/// Delta 0 reads it; delta 1 bumps it.
pub fn counter(out: &mut Vec<u8>, key: &str, init: u64, delta: u64) {
    out.extend_from_slice(format!("ma {key} N0 J{init} D{delta} v\r\n").as_bytes());
}
