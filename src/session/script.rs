//! Where a session meets its Lua script: the view of the connection scripts get
//! (`proxy.connection`), `read_query` before each command, and what the hooks decide about
//! backends (`backend_ndx`) and the connection (`connection_close`).

use super::outcome::Next;
use super::relay::RelayError;
use super::Session;
use crate::protocol::Chunk;
use crate::script::{self, After, ConnView, Decision, ServerView};
use bytes::BytesMut;
use std::borrow::Cow;

impl Session {
    /// What `proxy.connection` shows now (borrowed from the session).
    pub fn conn_view(&self) -> ConnView<'_> {
        ConnView {
            backend: self
                .current
                .as_ref()
                .map(|c| c.backend)
                .or(self.script_backend),
            client_addr: Cow::Borrowed(&self.peer_name),
            local_addr: Cow::Borrowed(&self.local_addr),
            username: Cow::Borrowed(self.user.as_bytes()),
            default_db: Cow::Borrowed(self.state.schema.as_deref().unwrap_or_default()),
            scrambled_password: Cow::Borrowed(&[]),
            server: self.current.as_ref().map(|c| ServerView {
                address: Cow::Borrowed(&c.conn.address),
                thread_id: c.conn.thread_id,
                version: Cow::Borrowed(&c.conn.server_version),
                scramble: Cow::Borrowed(&[]),
                auth_plugin: Cow::Borrowed(&[]),
            }),
        }
    }

    /// Apply what a hook changed: a backend chosen by number, a close requested.
    pub fn apply_after(&mut self, after: After) {
        if let Some(ndx) = after.backend_ndx {
            if ndx == 0 {
                self.script_backend = None;
                self.release();
            } else {
                match script::backend_index(ndx) {
                    Some(i) => self.script_backend = Some(i),
                    None => tracing::warn!(
                        "Lua: proxy.connection.backend_ndx = {ndx}, but there is no such backend"
                    ),
                }
            }
        }
        if after.close {
            self.close_requested = true;
        }
    }

    /// Send payloads as one response to the client command with sequence id `seq`.
    pub async fn send_packets(&mut self, seq: u8, packets: &[BytesMut]) -> Result<(), RelayError> {
        let mut seq = seq.wrapping_add(1);
        for p in packets {
            seq = self.client.queue(seq, p);
        }
        self.client.flush().await.map_err(RelayError::Client)
    }
}

/// Give the command to the script's `read_query`. `None`: Weiche handles the command as usual.
pub(crate) async fn read_query(s: &mut Session, cmd: &Chunk) -> Result<Option<Next>, RelayError> {
    let (status, shape) = (s.status(), s.shape());
    // The handle is taken out while the view borrows the session.
    let Some(mut script) = s.script.take() else {
        return Ok(None);
    };
    let (decision, after) = script.read_query(&s.conn_view(), &cmd.payload, shape, status);
    s.script = Some(script);
    s.apply_after(after);
    let next = match decision {
        Decision::Default | Decision::Ignore => return Ok(None),
        Decision::SendResult(packets) => {
            s.send_packets(cmd.seq, &packets).await?;
            Next::Continue
        }
        Decision::SendQueries(injections) => super::inject::run(s, cmd.seq, injections).await?,
    };
    Ok(Some(if s.close_requested { Next::Close } else { next }))
}
