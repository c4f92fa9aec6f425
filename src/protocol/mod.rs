//! The MySQL wire format, and nothing else: framing (including payloads of 16 MiB and more),
//! the handshake, capabilities, authentication plugins, OK/ERR/EOF, and the response walker that
//! tells a relay where each response ends. No policy lives here.

pub mod auth;
pub mod basic;
pub mod caching_sha2;
pub mod compress;
pub mod constants;
pub mod handshake;
pub mod packet;
pub mod resultset;
pub mod track;
pub mod walker;
#[cfg(test)]
mod walker_tests;

pub use basic::{ErrPacket, OkPacket};
pub use packet::{Chunk, Framed};
pub use walker::{Expect, Need, Step, Walker};

/// What can go wrong while reading or decoding packets.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection closed by peer")]
    Closed,
    #[error("connection closed in the middle of a packet")]
    UnexpectedEof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("packet of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("not supported: {0}")]
    Unsupported(&'static str),
}

impl ProtocolError {
    /// True when the peer simply went away (not worth more than a debug line).
    pub fn is_disconnect(&self) -> bool {
        match self {
            ProtocolError::Closed | ProtocolError::UnexpectedEof => true,
            ProtocolError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// Payload of an OK packet with these status flags.
pub fn ok_payload(affected_rows: u64, status: u16) -> bytes::BytesMut {
    let mut b = bytes::BytesMut::with_capacity(16);
    OkPacket {
        affected_rows,
        status,
        ..Default::default()
    }
    .encode(&mut b);
    b
}

/// Payload of an ERR packet.
pub fn err_payload(err: &ErrPacket) -> bytes::BytesMut {
    let mut b = bytes::BytesMut::with_capacity(16 + err.message.len());
    err.encode(&mut b);
    b
}
