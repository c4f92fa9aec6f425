//! `[tls]` (clients that upgrade to TLS) and `[backend_tls]` (Weiche's connections to the
//! backends): the file's settings, checked and turned into rustls configurations at load time,
//! so a missing or mismatched certificate stops a start or a reload with its reason.

use super::{invalid, ConfigError};
use crate::tls::{self, Acceptor, Connector};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// The certificate chain (PEM) Weiche presents to clients.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Refuse clients that do not upgrade to TLS (default false).
    pub require: Option<bool>,
    /// The lowest TLS version: "1.2" (default) or "1.3".
    pub min_version: Option<String>,
}

/// How Weiche talks to the backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTlsMode {
    /// Plain TCP.
    #[default]
    Off,
    /// TLS, and the backend's certificate must be signed by `ca` and name the backend.
    Verify,
    /// TLS without checking the certificate: encrypted, but open to a man in the middle.
    NoVerify,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackendTls {
    pub mode: Option<BackendTlsMode>,
    /// CA certificates (PEM) for mode = "verify" (default: the system's trust store).
    pub ca: Option<PathBuf>,
    /// The name backends' certificates carry, when it is not the host of their address.
    pub server_name: Option<String>,
    /// "1.2" (default) or "1.3".
    pub min_version: Option<String>,
}

/// The validated TLS settings.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// Present when a certificate is configured: clients are offered TLS.
    pub acceptor: Option<Acceptor>,
    /// Every client must use TLS.
    pub require: bool,
    pub backend: Option<BackendTls>,
}

/// TLS to the backends.
#[derive(Debug, Clone)]
pub struct BackendTls {
    pub connector: Connector,
    pub server_name: Option<String>,
    pub verify: bool,
}

pub fn tls(client: &FileTls, backend: &FileBackendTls) -> Result<Tls, ConfigError> {
    let bad = |what: &str, e: tls::TlsError| invalid(format!("{what}: {e}"));
    let min = client.min_version.as_deref().unwrap_or("1.2");
    let acceptor = match (&client.cert, &client.key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key, min).map_err(|e| bad("tls", e))?),
        (None, None) => {
            tls::versions(min).map_err(|e| bad("tls.min_version", e))?;
            None
        }
        _ => return Err(invalid("tls: give both cert and key")),
    };
    let require = client.require.unwrap_or(false);
    if require && acceptor.is_none() {
        return Err(invalid("tls.require needs tls.cert and tls.key"));
    }
    let mode = backend.mode.unwrap_or_default();
    let min = backend.min_version.as_deref().unwrap_or("1.2");
    let backend = match mode {
        BackendTlsMode::Off => {
            if backend.ca.is_some() || backend.server_name.is_some() {
                return Err(invalid(
                    "backend_tls: ca and server_name need mode = \"verify\"",
                ));
            }
            None
        }
        BackendTlsMode::Verify | BackendTlsMode::NoVerify => {
            let verify = mode == BackendTlsMode::Verify;
            if !verify && backend.ca.is_some() {
                return Err(invalid(
                    "backend_tls: a ca with mode = \"no-verify\" would not be used",
                ));
            }
            if let Some(name) = &backend.server_name {
                tls::server_name(name).map_err(|e| bad("backend_tls.server_name", e))?;
            }
            let connector = tls::connector(verify, backend.ca.as_deref(), min)
                .map_err(|e| bad("backend_tls", e))?;
            Some(BackendTls {
                connector,
                server_name: backend.server_name.clone(),
                verify,
            })
        }
    };
    Ok(Tls {
        acceptor,
        require,
        backend,
    })
}
