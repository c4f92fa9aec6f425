//! Where a session meets its Lua script: the view of the connection scripts get
//! (`proxy.connection`), `read_query` before each command, and what the hooks decide about
//! backends (`backend_ndx`) and the connection (`connection_close`).

use super::command::Next;
use super::relay::RelayError;
use super::Session;
use crate::protocol::Chunk;
use crate::script::{self, After, ConnView, Decision, ServerView};
use bytes::BytesMut;

impl Session {
    /// What `proxy.connection` shows now.
    pub fn conn_view(&self) -> ConnView {
        ConnView {
            backend: self
                .current
                .as_ref()
                .map(|c| c.backend)
                .or(self.script_backend),
            client_addr: self.peer.to_string(),
            local_addr: self.local_addr.clone(),
            username: self.user.as_bytes().to_vec(),
            default_db: self.state.schema.clone().unwrap_or_default(),
            scrambled_password: Vec::new(),
            server: self.current.as_ref().map(|c| ServerView {
                address: c.conn.address.clone(),
                thread_id: c.conn.thread_id,
                version: c.conn.server_version.clone(),
                scramble: Vec::new(),
                auth_plugin: Vec::new(),
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
    let view = s.conn_view();
    let (status, deprecate_eof) = (s.status(), s.deprecate_eof());
    let Some(script) = s.script.as_mut() else {
        return Ok(None);
    };
    let (decision, after) = script.read_query(&view, &cmd.payload, deprecate_eof, status);
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
