//! The data path: a command goes to the server connection, its response streams back to the
//! client as it arrives. The walker looks at packet headers (and the few small packets that carry
//! counts and status flags); rows pass through without being parsed or copied into packets.

use crate::protocol::constants::MAX_CHUNK;
use crate::protocol::packet::{peek_header, HEADER_LEN};
use crate::protocol::track::untracked_ok;
use crate::protocol::{Chunk, Framed, Need, ProtocolError, Step, Walker};
use crate::tls::Stream;
use bytes::{Buf, BytesMut};

/// Which side failed while relaying.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client: {0}")]
    Client(ProtocolError),
    #[error("server connection: {0}")]
    Server(ProtocolError),
    #[error("command of more than {max} bytes")]
    CommandTooLarge { max: usize },
    /// Weiche gave the command up: its backend went down.
    #[error("{0}")]
    Abandoned(String),
    /// Weiche gave the command up: `routing.query_timeout` passed.
    #[error("{0}")]
    Timeout(String),
}

impl RelayError {
    /// The failure is the server's side (or Weiche's giving up on it), not the client's.
    pub fn is_server_side(&self) -> bool {
        matches!(
            self,
            RelayError::Server(_) | RelayError::Abandoned(_) | RelayError::Timeout(_)
        )
    }
}

/// Send a command to the server: `first` is its first packet, already read. A command of 16 MiB
/// or more continues in further packets, which are streamed through as they arrive, numbered
/// after the first: a client on the compressed protocol (the MariaDB CLI, libmariadb) numbers
/// them all 0, which only a compressed connection's reader lets pass.
pub async fn forward_command(
    client: &mut Framed<Stream>,
    server: &mut Framed<Stream>,
    first: &Chunk,
    max: usize,
) -> Result<(), RelayError> {
    server.queue_chunk(first);
    let mut total = first.payload.len();
    let mut more = first.continues();
    let mut seq = first.seq;
    while more {
        server.flush().await.map_err(RelayError::Server)?;
        let mut c = client
            .read_chunk(MAX_CHUNK)
            .await
            .map_err(RelayError::Client)?;
        seq = seq.wrapping_add(1);
        c.seq = seq;
        total += c.payload.len();
        if total > max {
            return Err(RelayError::CommandTooLarge { max });
        }
        server.queue_chunk(&c);
        more = c.continues();
    }
    server.flush().await.map_err(RelayError::Server)
}

/// What the relay changes in a response on its way to the client.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rewrite {
    /// The client lacks CLIENT_SESSION_TRACK: OK packets go out in the older layout.
    pub untrack_ok: bool,
    /// A prepare-OK carries this statement id (the client's) instead of the server's.
    pub statement_id: Option<u32>,
    /// Keep the response's last bytes in the client's write buffer instead of sending them:
    /// the caller flushes them once it is done (the cache's generation bump after a write
    /// happens before the client learns that the write is done).
    pub hold_last: bool,
}

/// A copy of the bytes a response sent to the client (what the result cache stores), up to a
/// limit: a larger response is not kept at all.
#[derive(Debug, Default)]
pub struct Tap {
    pub bytes: BytesMut,
    pub max: usize,
    pub overflow: bool,
}

impl Tap {
    pub fn new(max: usize) -> Tap {
        Tap {
            bytes: BytesMut::new(),
            max,
            overflow: false,
        }
    }

    fn record(&mut self, b: &[u8]) {
        if self.overflow {
            return;
        }
        if self.bytes.len() + b.len() > self.max {
            self.overflow = true;
            self.bytes = BytesMut::new();
        } else {
            self.bytes.extend_from_slice(b);
        }
    }
}

/// Stream the server's response to the client until the walker says it is complete.
/// `answered` becomes true once any of it is written to the client.
pub async fn relay_response(
    client: &mut Framed<Stream>,
    server: &mut Framed<Stream>,
    walker: &mut Walker,
    mut rewrite: Rewrite,
    answered: &mut bool,
    mut tap: Option<&mut Tap>,
) -> Result<(), RelayError> {
    // `pos`: bytes at the front of the server's read buffer that are walked and ready to go.
    // `skip`: bytes of a skimmed packet's payload not yet received.
    let mut pos = 0usize;
    let mut skip = 0usize;
    // The sequence id of the server's last packet header walked (a LOAD DATA request's).
    let mut last_seq = 0u8;
    loop {
        let mut infile = false;
        while !infile {
            let buf = &server.rbuf;
            if skip > 0 {
                let n = skip.min(buf.len() - pos);
                pos += n;
                skip -= n;
                if skip > 0 {
                    break;
                }
                continue;
            }
            if walker.is_done() {
                break;
            }
            let Some((len, seq)) = peek_header(&buf[pos..]) else {
                break;
            };
            last_seq = seq;
            let body = pos + HEADER_LEN;
            let first = buf.get(body).copied();
            if len > 0 && first.is_none() {
                break;
            }
            let step = match walker.need(len, first) {
                Need::Skim => {
                    let step = walker
                        .packet(len, &buf[body..body + len.min(1)])
                        .map_err(RelayError::Server)?;
                    pos = body;
                    skip = len;
                    step
                }
                Need::Whole => {
                    if buf.len() < body + len {
                        let want = body + len - buf.len();
                        server.rbuf.reserve(want);
                        break;
                    }
                    let step = walker
                        .packet(len, &buf[body..body + len])
                        .map_err(RelayError::Server)?;
                    if walker.statement_id.is_some() && len >= 5 {
                        if let Some(id) = rewrite.statement_id.take() {
                            server.rbuf[body + 1..body + 5].copy_from_slice(&id.to_le_bytes());
                        }
                    }
                    let replaced = if walker.at_ok && rewrite.untrack_ok {
                        untracked_ok(&server.rbuf[body..body + len]).map_err(RelayError::Server)?
                    } else {
                        None
                    };
                    match replaced {
                        Some(new) => {
                            let seq = server.rbuf[pos + 3];
                            let head = server.rbuf.split_to(pos);
                            client.wbuf.extend_from_slice(&head);
                            client.queue(seq, &new);
                            server.rbuf.advance(HEADER_LEN + len);
                            pos = 0;
                        }
                        None => pos = body + len,
                    }
                    step
                }
            };
            infile = step == Step::LocalInfile;
        }
        if pos > 0 || !client.wbuf.is_empty() {
            *answered = true;
            let out = server.rbuf.split_to(pos);
            pos = 0;
            if let Some(t) = tap.as_deref_mut() {
                t.record(&client.wbuf);
                t.record(&out);
            }
            let last = walker.is_done() && skip == 0 && !infile;
            if rewrite.hold_last && last {
                client.wbuf.extend_from_slice(&out);
            } else if client.wbuf.is_empty() {
                client
                    .write_direct(&out)
                    .await
                    .map_err(RelayError::Client)?;
            } else {
                client.wbuf.extend_from_slice(&out);
                client.flush().await.map_err(RelayError::Client)?;
            }
        }
        if infile {
            relay_local_infile(client, server, last_seq.wrapping_add(1)).await?;
            continue;
        }
        if walker.is_done() && skip == 0 {
            return Ok(());
        }
        server.fill().await.map_err(RelayError::Server)?;
    }
}

/// LOAD DATA LOCAL INFILE: the client sends the file as packets ending with an empty one; each
/// is passed to the server as it comes, never the whole file at once, numbered from `seq` (the
/// request's + 1) as the server expects: a compressed client's own numbers are not checked by
/// servers, and some clients do not keep them.
async fn relay_local_infile(
    client: &mut Framed<Stream>,
    server: &mut Framed<Stream>,
    mut seq: u8,
) -> Result<(), RelayError> {
    loop {
        let mut c = client
            .read_chunk(MAX_CHUNK)
            .await
            .map_err(RelayError::Client)?;
        c.seq = seq;
        seq = seq.wrapping_add(1);
        server.queue_chunk(&c);
        let last = c.payload.is_empty();
        // Batch the packets already received into one write.
        if last
            || peek_header(&client.rbuf).is_none_or(|(len, _)| client.rbuf.len() < HEADER_LEN + len)
            || server.wbuf.len() > 256 * 1024
        {
            server.flush().await.map_err(RelayError::Server)?;
        }
        if last {
            return Ok(());
        }
    }
}
