//! TLS on both sides, with rustls (ring provider): the acceptor for clients that upgrade with
//! SSL_REQUEST, the connector for backends, and `Stream`, the byte stream a `Framed` runs over
//! (plain TCP, or TLS in either direction).

use crate::protocol::compress::{Algorithm, Compressed, Traffic};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme, SupportedProtocolVersion};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why a TLS setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: no {what} in PEM format")]
    NoPem { path: PathBuf, what: &'static str },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("'{0}' is not a TLS version Weiche offers (\"1.2\" or \"1.3\")")]
    Version(String),
    #[error("'{0}' is not a valid TLS server name")]
    ServerName(String),
}

/// The lowest TLS version accepted.
pub fn versions(min: &str) -> Result<&'static [&'static SupportedProtocolVersion], TlsError> {
    static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match min {
        "1.2" => Ok(BOTH),
        "1.3" => Ok(ONLY_13),
        other => Err(TlsError::Version(other.to_string())),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Clients' side: what Weiche presents to a client that asks for TLS.
pub fn acceptor(cert: &Path, key: &Path, min: &str) -> Result<Acceptor, TlsError> {
    let chain = certificates(cert)?;
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoPem {
        path: key.to_path_buf(),
        what: "private key",
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min)?)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Invalid {
            path: key.to_path_buf(),
            message: format!("does not fit the certificate: {e}"),
        })?;
    Ok(Acceptor(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Backends' side: how Weiche checks a backend's certificate. `ca: None` with verification
/// means the system's trust store.
pub fn connector(verify: bool, ca: Option<&Path>, min: &str) -> Result<Connector, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min)?)?;
    let config = if verify {
        let path = ca.unwrap_or(Path::new(SYSTEM_CA));
        let mut roots = rustls::RootCertStore::empty();
        for c in certificates(path)? {
            roots.add(c).map_err(|e| TlsError::Invalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth()
    };
    Ok(Connector(tokio_rustls::TlsConnector::from(Arc::new(
        config,
    ))))
}

/// Debian's bundle of the system's trusted CAs.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The name a backend's certificate must carry: the host of `host:port`, or the configured one.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    let host = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(name.to_string()))
}

/// The host part of a backend address `host:port` or `[v6]:port`.
pub fn host_of(address: &str) -> &str {
    match address.rsplit_once(':') {
        Some((h, _)) => h,
        None => address,
    }
}

#[derive(Clone)]
pub struct Acceptor(tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor(..)")
    }
}

#[derive(Clone)]
pub struct Connector(tokio_rustls::TlsConnector);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector(..)")
    }
}

/// A backend's certificate accepted unseen: `[backend_tls] mode = "no-verify"`, encrypted but
/// open to a man in the middle. The handshake's signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The byte stream under a `Framed`.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// The compressed protocol over a TCP or TLS stream (after the login, when negotiated).
    Compressed(Box<Compressed<Stream>>),
    /// Only while the TCP stream is out for a TLS handshake; a failed upgrade leaves it so.
    Gone,
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        match self {
            Stream::Tls(_) => true,
            Stream::Compressed(c) => c.inner.is_tls(),
            _ => false,
        }
    }

    /// Switch to the compressed protocol (after the login's OK, which goes uncompressed);
    /// `to_server` when Weiche is the client on this connection.
    pub fn compress(&mut self, algorithm: Algorithm, to_server: bool) {
        let inner = std::mem::replace(self, Stream::Gone);
        let c = if to_server {
            Compressed::to_server(inner, algorithm)
        } else {
            Compressed::new(inner, algorithm)
        };
        *self = Stream::Compressed(Box::new(c));
    }

    /// The compression in use, and the bytes it has moved.
    pub fn compression(&self) -> Option<(Algorithm, Traffic)> {
        match self {
            Stream::Compressed(c) => Some((c.algorithm(), c.traffic)),
            _ => None,
        }
    }

    /// The TCP stream underneath.
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(t) => Some(t),
            Stream::Tls(t) => Some(t.get_ref().0),
            Stream::Compressed(c) => c.inner.tcp(),
            Stream::Gone => None,
        }
    }

    /// Whether a quiet connection has heard from its peer: closed (EOF, reset) or sent
    /// something nobody asked for (a server's ERR before it closes). Either way it is of no
    /// further use. Never waits: one non-blocking peek at the socket.
    pub fn peer_spoke(&self) -> bool {
        if let Stream::Compressed(c) = self {
            if c.has_buffered() {
                return true;
            }
        }
        let Some(tcp) = self.tcp() else {
            return true;
        };
        let mut buf = [0u8; 1];
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut read = tokio::io::ReadBuf::new(&mut buf);
        !matches!(tcp.poll_peek(&mut cx, &mut read), std::task::Poll::Pending)
    }

    /// The local address of the connection (what a server sees Weiche connect from).
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.tcp()?.local_addr().ok().map(|a| a.ip())
    }

    /// Take the TCP stream for an upgrade, leaving `Gone`.
    fn take_tcp(&mut self) -> io::Result<TcpStream> {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Tcp(t) => Ok(t),
            other => {
                *self = other;
                Err(io::Error::other("TLS requested twice"))
            }
        }
    }

    /// Weiche as the TLS server: a client sent SSL_REQUEST. `early` holds what the client sent
    /// after it without waiting (PHP's mysqlnd sends its ClientHello in the same segment).
    pub async fn accept(&mut self, acceptor: &Acceptor, early: &[u8]) -> io::Result<()> {
        let tcp = self.take_tcp()?;
        let tls = acceptor
            .0
            .accept_with(tcp, |conn| {
                let mut rest = early;
                while !rest.is_empty() {
                    match conn.read_tls(&mut rest) {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
                // A bad ClientHello is remembered and fails the handshake.
                let _ = conn.process_new_packets();
            })
            .await?;
        *self = Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)));
        Ok(())
    }

    /// Weiche as the TLS client of a backend, after sending SSL_REQUEST.
    pub async fn connect(
        &mut self,
        connector: &Connector,
        name: ServerName<'static>,
    ) -> io::Result<()> {
        let tcp = self.take_tcp()?;
        let tls = connector.0.connect(name, tcp).await?;
        *self = Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls)));
        Ok(())
    }

    /// Wait until the peer has sent something, before a buffer is set aside to read it into:
    /// an idle client then holds none. A TLS stream may hold decrypted bytes already, so it
    /// returns at once.
    pub async fn ready_to_read(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(t) => t.readable().await,
            Stream::Compressed(c) if !c.has_buffered() => Box::pin(c.inner.ready_to_read()).await,
            _ => Ok(()),
        }
    }

    /// The TLS version in use, for logs and SHOW SESSIONS.
    pub fn tls_version(&self) -> Option<&'static str> {
        let t = match self {
            Stream::Tls(t) => t,
            Stream::Compressed(c) => return c.inner.tls_version(),
            _ => return None,
        };
        let v = match t.as_ref() {
            tokio_rustls::TlsStream::Server(s) => s.get_ref().1.protocol_version(),
            tokio_rustls::TlsStream::Client(c) => c.get_ref().1.protocol_version(),
        };
        v.map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        })
    }
}

impl From<TcpStream> for Stream {
    fn from(t: TcpStream) -> Self {
        Stream::Tcp(t)
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost in a TLS upgrade",
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(t) => Pin::new(t).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
            Stream::Compressed(c) => Pin::new(c.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(t) => Pin::new(t).poll_write(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
            Stream::Compressed(c) => Pin::new(c.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(_) => Poll::Ready(Ok(())),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
            Stream::Compressed(c) => Pin::new(c.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(t) => Pin::new(t).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
            Stream::Compressed(c) => Pin::new(c.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}
