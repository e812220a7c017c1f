//! TLS to servers (`upstreams[].tls`): the client side of rustls for the proxy
//! leg, TCP-mode relays and HTTP probes.
//!
//! Owns: building one `rustls::ClientConfig` per upstream and snapshot (roots from
//! `ca` or the system's store, optional client certificate, `verify: false`), the
//! name checked (`server_name`, else the server's host; an IP as an IP SAN), the
//! handshake, and [`ServerStream`], the plain-or-TLS stream the HTTP/1.1 client and
//! the relays read and write. Session resumption is rustls' in-memory cache of the
//! shared `ClientConfig` (every worker's connections to a server resume each other's
//! sessions). Does not own TCP connect (`pool::connect_tcp`) nor pooling.
//!
//! A handshake that fails (unknown CA, wrong name, a server asking for a client
//! certificate we do not have) is `Failure::Tls`: a connect error, counted as
//! `kind="tls"`, retried elsewhere and fed to the breaker like a refused connect.
//!
//! The plain path costs one `match` per read or write. Tested by `tests/tls_upstream.rs`
//! (Node `https` servers with a CA made by rcgen in the test).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::attempt::Failure;
use crate::config::types;

/// One upstream's TLS client, shared by all workers through the snapshot.
pub struct UpstreamTls {
    /// `None`: the TLS material could not be loaded when the snapshot was
    /// built (logged then); every connect fails as `kind="tls"` rather than
    /// falling back to plain text.
    connector: Option<TlsConnector>,
    /// `server_name`, when configured; else each server's host.
    name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// A client for `cfg`, or one that refuses every connect when the material
    /// cannot be loaded (the reason is logged once, here).
    pub fn build_or_refuse(upstream: &str, cfg: &types::UpstreamTls) -> Self {
        Self::build(cfg).unwrap_or_else(|e| {
            tracing::error!(%upstream, "TLS to servers cannot be set up: {e}; connects fail");
            Self {
                connector: None,
                name: None,
            }
        })
    }

    /// Builds the client config; the message says which file or setting is wrong
    /// (validation reads the same files first, so this fails only on a race).
    pub fn build(cfg: &types::UpstreamTls) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = if cfg.verify {
            builder.with_root_certificates(roots(cfg.ca.as_deref())?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        };
        let config = match &cfg.client {
            Some(paths) => {
                let (chain, key) = client_pair(paths)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        let name = match &cfg.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone()).map_err(|e| format!("server_name \"{n}\": {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            connector: Some(TlsConnector::from(Arc::new(config))),
            name,
        })
    }

    /// TLS over a connected socket to `host` (a name or an IP literal).
    pub async fn handshake(&self, tcp: TcpStream, host: &str) -> Result<ServerStream, Failure> {
        let Some(connector) = &self.connector else {
            return Err(Failure::Tls);
        };
        let name = match &self.name {
            Some(n) => n.clone(),
            None => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(bare.to_owned()).map_err(|_| Failure::Tls)?
            }
        };
        match connector.connect(name, tcp).await {
            Ok(s) => Ok(ServerStream::Tls(Box::new(s))),
            Err(e) => {
                tracing::debug!(%host, "TLS handshake with server failed: {e}");
                Err(Failure::Tls)
            }
        }
    }
}

/// The trust anchors: the PEM file `ca`, or the system's store.
fn roots(ca: Option<&std::path::Path>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("\"{}\": {e}", path.display()))?;
                store
                    .add(cert)
                    .map_err(|e| format!("\"{}\": {e}", path.display()))?;
            }
            if store.is_empty() {
                return Err(format!("\"{}\": no PEM certificate found", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A malformed system certificate is skipped, as browsers do.
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err("no trusted root certificates found on this system; set tls.ca".into());
            }
        }
    }
    Ok(store)
}

type ClientPair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_pair(paths: &types::CertificatePaths) -> Result<ClientPair, String> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read \"{}\": {e}", p.display()))
    };
    let chain = CertificateDer::pem_slice_iter(&read(&paths.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("\"{}\": {e}", paths.cert.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&paths.key)?)
        .map_err(|e| format!("\"{}\": {e}", paths.key.display()))?;
    Ok((chain, key))
}

/// `verify: false`: any certificate is accepted (lab use; `tandem check` warns).
/// Handshake signatures are still checked, so the session keys are the peer's.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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

/// `tandem check` warnings: `verify: false` accepts any certificate.
pub fn warnings(config: &types::Config) -> Vec<String> {
    config
        .upstreams
        .iter()
        .filter(|u| u.tls.as_ref().is_some_and(|t| !t.verify))
        .map(|u| {
            format!(
                "upstreams.{}: tls.verify is false: any server certificate is accepted (lab use only)",
                u.name
            )
        })
        .collect()
}

/// A connection to a server, plain or TLS.
#[derive(Debug)]
pub enum ServerStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ServerStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// True when an idle connection can carry a request: the server has not
    /// closed it and (plain) sent nothing unasked. TLS may carry records the
    /// server sends unasked (session tickets), so only a close or an error
    /// counts there, seen without consuming a byte.
    pub fn is_usable(&self) -> bool {
        match self {
            Self::Plain(s) => {
                let mut probe = [0u8; 1];
                matches!(
                    s.try_read(&mut probe),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock
                )
            }
            Self::Tls(s) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match s.get_ref().0.poll_peek(&mut cx, &mut buf) {
                    Poll::Pending => true,
                    Poll::Ready(Ok(n)) => n > 0,
                    Poll::Ready(Err(_)) => false,
                }
            }
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to the server's addresses within `timeout` (TCP and handshake
/// together), with TLS when the upstream has it.
pub async fn connect(
    addrs: impl Iterator<Item = std::net::SocketAddr>,
    host: &str,
    tls: Option<&UpstreamTls>,
    timeout: std::time::Duration,
) -> Result<ServerStream, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = super::pool::connect_tcp(addrs, timeout).await?;
    // Small request/response exchanges: Nagle would add a round trip.
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(ServerStream::Plain(tcp));
    };
    match tokio::time::timeout_at(deadline, tls.handshake(tcp, host)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::ConnectTimeout),
    }
}

impl ServerStream {
    /// Read and write halves for one exchange that uploads while it watches for
    /// an early answer. Plain: the socket's own borrowed halves (no cost); TLS:
    /// tokio's split over the one session.
    pub fn split(&mut self) -> (ServerRead<'_>, ServerWrite<'_>) {
        match self {
            Self::Plain(s) => {
                let (r, w) = s.split();
                (ServerRead::Plain(r), ServerWrite::Plain(w))
            }
            Self::Tls(s) => {
                let (r, w) = tokio::io::split(s.as_mut());
                (ServerRead::Tls(r), ServerWrite::Tls(w))
            }
        }
    }
}

type TlsRef<'a> = &'a mut TlsStream<TcpStream>;

/// The read half of [`ServerStream::split`].
pub enum ServerRead<'a> {
    Plain(tokio::net::tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<TlsRef<'a>>),
}

/// The write half of [`ServerStream::split`].
pub enum ServerWrite<'a> {
    Plain(tokio::net::tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<TlsRef<'a>>),
}

impl AsyncRead for ServerRead<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerWrite<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
