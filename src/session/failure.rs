//! When a command's server fails: whether a read runs again elsewhere, what the client is told
//! when a command cannot be retried, and the KILL QUERY sent after a timeout (the watchdog that
//! gives commands up is in `watchdog`).

use super::outcome::{lost_during_command, Next, Retry, DOWN_FOR};
use super::relay::RelayError;
use super::Session;
use crate::backend::ServerConnection;

impl Session {
    /// A read outside a transaction failed on `backend`: run it again elsewhere when its error
    /// says that is safe (`Retry::BeforeAnswer`: the backend was unreachable, or broke) and
    /// none of the answer reached the client. When it is retried, the backend is skipped by
    /// this worker for a while.
    pub fn retry_elsewhere(&mut self, backend: usize, retry: Retry) -> bool {
        let retry = retry == Retry::BeforeAnswer && !self.answered;
        if retry {
            self.drop_current();
            self.shared.backends.mark_down(backend, DOWN_FOR);
            tracing::warn!(
                backend = %self.shared.backends.backends[backend].address,
                "retrying a read on another backend"
            );
        }
        retry
    }

    /// The server connection failed while a command ran (and the command is not retried). The
    /// client learns it from an ERR when none of the answer reached it yet; a session that held
    /// a transaction or other state on that connection has lost it, and is closed after the ERR,
    /// as a direct connection would be.
    pub async fn command_failed(
        &mut self,
        seq: u8,
        e: &RelayError,
        was_pinned: bool,
    ) -> Result<Next, RelayError> {
        self.shared.metrics.error(super::outcome::kind_of(e));
        if self.answered {
            tracing::warn!("{e}, after part of the answer reached the client: closing");
            return Ok(Next::Close);
        }
        let lost = if was_pinned {
            "; the transaction and session state held there are gone, and nothing was replayed"
        } else {
            ""
        };
        tracing::warn!("{e}: the client gets an error{lost}");
        let err = lost_during_command(e, lost);
        self.send_err(seq.wrapping_add(1), &err)
            .await
            .map_err(RelayError::Client)?;
        Ok(if was_pinned {
            Next::Close
        } else {
            Next::Continue
        })
    }

    /// Stop what a given-up command left running on its server (best effort, in the background).
    pub(super) fn kill_query(&self, backend: usize, thread_id: u32) {
        let address = self.shared.backends.backends[backend].address.clone();
        let params = self.backend_params();
        tokio::spawn(async move {
            let kill = async {
                let mut c = ServerConnection::connect(&address, &params).await.ok()?;
                c.execute(format!("KILL QUERY {thread_id}").as_bytes())
                    .await
                    .ok()
            };
            let done = tokio::time::timeout(params.timeout, kill).await;
            if !matches!(done, Ok(Some(_))) {
                tracing::warn!(backend = %address, "could not KILL QUERY {thread_id} after the query timeout");
            }
        });
    }
}
