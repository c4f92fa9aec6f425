//! The admin port: a MySQL-protocol listener (mysql-proxy's admin plugin) for operators. Log in
//! with the admin credentials; then `SELECT * FROM backends`, `SHOW SESSIONS`, `SET BACKEND ...
//! OFFLINE | ONLINE | DRAIN`, `KILL SESSION n` and the rest (`SELECT * FROM help` lists them).
//! An admin Lua script, when configured, sees each query first (its `read_query`), sharing
//! `proxy.global` with the proxy scripts. `http` serves /metrics and /health.

mod commands;
mod exposition;
pub mod http;
mod stats;
mod status_page;

use crate::config::{Config, Credentials, Scripting};
use crate::login::{access_denied, read_login, Login};
use crate::protocol::auth::{self, NATIVE_PASSWORD};
use crate::protocol::constants::{cap, errcode, status, MAX_CHUNK};
use crate::protocol::handshake::Greeting;
use crate::protocol::{err_payload, ok_payload, ErrPacket, Framed, ProtocolError};
use crate::script::{ConnView, Decision, ScriptHandle};
use crate::shared::Shared;
use crate::tls::Stream;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Admin connections get ids from here (apart from the proxy's).
const FIRST_ADMIN_ID: u32 = 1;

/// Admin connections open at once at most: the port is for a few operators and their tools.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The name admin-port password failures count under (no proxy user can have it).
const ADMIN_ACCOUNT: &[u8] = b"\0admin port";

/// Serve the admin port until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let mut next = FIRST_ADMIN_ID;
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                let id = next;
                next = next.wrapping_add(1).max(FIRST_ADMIN_ID);
                let open = open.clone();
                if open.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= MAX_ADMIN_CONNECTIONS {
                    open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    tracing::warn!(client = %peer, "admin connection refused: {MAX_ADMIN_CONNECTIONS} are open");
                    drop(stream);
                    continue;
                }
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    // Given back however the connection ends.
                    let _slot = AdminSlot(open);
                    if let Err(e) = connection(shared, stream, peer, id).await {
                        if !e.is_disconnect() {
                            tracing::warn!(client = %peer, "admin connection: {e}");
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u32,
) -> Result<(), ProtocolError> {
    let config = shared.config();
    let Some(creds) = config.admin.clone() else {
        return Ok(());
    };
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut client = Framed::new(Stream::from(stream));
    let scramble = auth::new_scramble();
    let mut caps = cap::WEICHE_SERVER & !cap::SESSION_TRACK & !cap::DEPRECATE_EOF;
    // The admin password may travel over TLS too.
    if config.tls.acceptor.is_some() {
        caps |= cap::SSL;
    }
    let mut buf = BytesMut::new();
    Greeting {
        server_version: format!("5.5.5-weiche-admin-{}", env!("CARGO_PKG_VERSION")).into_bytes(),
        connection_id: id,
        scramble: scramble.to_vec(),
        capabilities: caps,
        mariadb_caps: 0,
        charset: 45,
        status: status::AUTOCOMMIT,
        auth_plugin: NATIVE_PASSWORD.to_vec(),
    }
    .encode(&mut buf);
    client.send(0, &buf).await?;
    let login = tokio::time::timeout(
        Duration::from_secs(10),
        read_login(
            &mut client,
            &scramble,
            caps,
            config.tls.acceptor.as_ref(),
            false,
        ),
    )
    .await
    .map_err(|_| ProtocolError::Closed)??;
    let (resp, answer, seq) = match login {
        Login::Answered {
            resp, answer, seq, ..
        } => (resp, answer, seq),
        Login::Refused(seq, err) => {
            client.send(seq, &err_payload(&err)).await?;
            return Ok(());
        }
    };
    let ok = admin_password_ok(&creds, &resp.username, &scramble, &answer);
    // The proxy's failed-login limit holds here too, counted apart from proxy accounts.
    if let Err(left) =
        shared
            .admission
            .password_verdict(peer.ip(), ADMIN_ACCOUNT, ok, &config.limits)
    {
        tracing::warn!(client = %peer, "admin login refused: blocked after failed logins");
        let err = ErrPacket::new(
            errcode::ER_HOST_IS_BLOCKED,
            "HY000",
            format!(
                "Host '{}' is blocked from the admin port because of {} failed logins; try again \
                 in {} s",
                peer.ip(),
                config.limits.max_failed_logins,
                left.as_secs() + 1
            ),
        );
        client.send(seq, &err_payload(&err)).await?;
        return Ok(());
    }
    if ok && config.tls.require && !client.io.is_tls() {
        let err = crate::login::tls_required("admin", true);
        client.send(seq, &err_payload(&err)).await?;
        return Ok(());
    }
    if !ok {
        tracing::warn!(client = %peer, "admin login refused for '{}'", String::from_utf8_lossy(&resp.username));
        let err = access_denied(&resp.username, &peer, !answer.is_empty());
        client.send(seq, &err_payload(&err)).await?;
        return Ok(());
    }
    client.send(seq, &ok_payload(0, status::AUTOCOMMIT)).await?;
    tracing::info!(client = %peer, "admin logged in");
    let mut script = open_script(&shared, &config, &peer, &local, &resp.username);
    loop {
        let cmd = match client.read_chunk(MAX_CHUNK).await {
            Ok(c) => c,
            Err(e) if e.is_disconnect() => return Ok(()),
            Err(e) => return Err(e),
        };
        let seq = cmd.seq.wrapping_add(1);
        match cmd.payload.first() {
            Some(1) => return Ok(()),
            Some(14) => {
                client.send(seq, &ok_payload(0, status::AUTOCOMMIT)).await?;
                continue;
            }
            Some(3) => {}
            _ => {
                let err = ErrPacket::new(
                    errcode::ER_UNKNOWN_COM,
                    "08S01",
                    "the admin port takes queries only",
                );
                client.send(seq, &err_payload(&err)).await?;
                continue;
            }
        }
        if let Some(h) = script.as_mut() {
            let view = ConnView {
                client_addr: peer.to_string().into(),
                local_addr: local.clone().into(),
                username: resp.username.clone().into(),
                ..Default::default()
            };
            if let (Decision::SendResult(packets), _) =
                h.read_query(&view, &cmd.payload, Default::default(), status::AUTOCOMMIT)
            {
                let mut s = seq;
                for p in &packets {
                    s = client.queue(s, p);
                }
                client.flush().await?;
                continue;
            }
        }
        let sql = String::from_utf8_lossy(&cmd.payload[1..]).into_owned();
        let packets = match commands::flush_target(&shared, &sql) {
            Some(Ok(scope)) => {
                if let Some(cache) = &shared.cache {
                    let what = scope
                        .as_ref()
                        .map_or("everything".to_string(), |s| s.describe());
                    cache.flush(scope).await;
                    tracing::info!("admin: cache flushed ({what})");
                }
                vec![crate::protocol::ok_payload(
                    0,
                    crate::protocol::constants::status::AUTOCOMMIT,
                )]
            }
            Some(Err(e)) => e,
            None if commands::is_reload(&sql) => {
                match shared.reload_logged("admin RELOAD CONFIG") {
                    Ok(summary) => commands::reloaded(&summary),
                    Err(e) => commands::refused_reload(&e.to_string()),
                }
            }
            None => commands::answer(&shared, &sql),
        };
        let mut s = seq;
        for p in &packets {
            s = client.queue(s, p);
        }
        client.flush().await?;
    }
}

fn admin_password_ok(creds: &Credentials, user: &[u8], scramble: &[u8], answer: &[u8]) -> bool {
    let stage2 = auth::stage2(&auth::stage1(creds.password.as_bytes()));
    user == creds.user.as_bytes() && auth::native_verify(scramble, answer, &stage2).is_some()
}

/// The admin Lua script for this connection, when one is configured.
fn open_script(
    shared: &Shared,
    config: &Config,
    peer: &SocketAddr,
    local: &str,
    user: &[u8],
) -> Option<ScriptHandle> {
    let path = config.admin_script.clone()?;
    let scripting = Scripting {
        path,
        lua_path: config.script.as_ref().and_then(|s| s.lua_path.clone()),
        lua_cpath: config.script.as_ref().and_then(|s| s.lua_cpath.clone()),
        instruction_limit: config
            .script
            .as_ref()
            .map_or(10_000_000, |s| s.instruction_limit),
    };
    let view = ConnView {
        client_addr: peer.to_string().into(),
        local_addr: local.to_string().into(),
        username: user.to_vec().into(),
        ..Default::default()
    };
    match ScriptHandle::open(&scripting, shared.backends.clone(), &view) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!("admin Lua script: {e}; the built-in commands answer");
            None
        }
    }
}

/// An admin answer: a text result set with these columns and rows.
pub(crate) fn table(columns: &[&str], rows: Vec<Vec<Option<String>>>) -> Vec<bytes::BytesMut> {
    crate::protocol::resultset::string_result(
        columns,
        &rows,
        crate::protocol::resultset::Shape::default(),
        crate::protocol::constants::status::AUTOCOMMIT,
    )
}

/// Counts an admin connection until it is dropped.
struct AdminSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for AdminSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
