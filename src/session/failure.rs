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
    pub fn retry_elsewhere(&mut self, backend: usize, retry: Retry, sql: &[u8]) -> bool {
        let retry = retry == Retry::BeforeAnswer && !self.answered;
        if retry {
            self.drop_current();
            self.shared.backends.mark_down(backend, DOWN_FOR);
            // The digest (no literals) says which statement runs again.
            tracing::warn!(
                backend = %self.shared.backends.backends[backend].address,
                statement = %crate::sql::digest::digest(sql),
                "retrying a read on another backend"
            );
        }
        retry
    }

    /// The server connection failed while a command ran (and the command is not retried).
    ///
    /// A session that held a transaction or other state on that connection has lost it: it is
    /// closed without an answer, as the server closed it (what the server said before closing,
    /// an ERR 1927 or 1053, reached the client as the answer to its command already). The
    /// client's library reports the lost connection (CR 2013) and reconnects, as it would on a
    /// direct connection; an ERR would leave it using a session whose state is gone. A session
    /// without such state lost nothing: it gets an ERR that names the loss, and goes on. Weiche's
    /// own query timeout is always explained by an ERR.
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
        let lost = matches!(e, RelayError::Server(_) | RelayError::Abandoned(_));
        if was_pinned && lost {
            tracing::warn!(
                "{e}: the transaction and session state held on that server connection are gone \
                 (nothing was replayed); closing the client connection, as the server did"
            );
            return Ok(Next::Close);
        }
        let held = if was_pinned {
            "; the transaction and session state held there are gone, and nothing was replayed"
        } else {
            ""
        };
        tracing::warn!("{e}: the client gets an error{held}");
        let err = lost_during_command(e, held);
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
