//! TLS termination: the per-listener acceptor, session resumption, the handshake.
//!
//! Owns building one `tokio_rustls::TlsAcceptor` per TLS listener ([`acceptor`])
//! when a snapshot is built, from certificates already loaded by [`crate::cert`];
//! certificate choice by SNI is [`sni::SniResolver`]. Does not own certificate
//! loading, key matching or expiry (`cert`), nor the serving after the handshake
//! (that is `http` and `tcp`).
//!
//! Invariants: an acceptor belongs to one snapshot, so a reload re-reads the files
//! and only new connections see new certificates; established connections keep
//! the session they negotiated. TLS 1.2 and 1.3 only, with rustls' safe defaults
//! and the `ring` provider. Session resumption state ([`Resumption`]: the session
//! cache and the ticket keys) lives in the listener's state, which survives
//! reloads, so clients resume across a reload.
//!
//! Tested by unit tests in `tls/tests.rs` with certificates generated at test time
//! (rcgen), and end to end in `tests/tls.rs`.

pub mod sni;

#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use rustls::server::{
    ProducesTickets, ServerConfig, ServerSessionMemoryCache, StoresServerSessions,
};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::cert::LoadedCert;
use crate::config::types::Tls;

/// Sessions remembered per listener for stateful (TLS 1.2 session id) resumption.
/// A few hundred bytes each; tickets carry the TLS 1.3 case without server state.
const SESSION_CACHE_SIZE: usize = 16 * 1024;

/// Session resumption state of one listener, kept across reloads.
#[derive(Clone)]
pub struct Resumption {
    cache: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl Resumption {
    pub fn new() -> Result<Self, rustls::Error> {
        Ok(Self {
            cache: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            // Rotates its keys itself (every 6 hours).
            ticketer: rustls::crypto::ring::Ticketer::new()?,
        })
    }
}

/// The acceptor for one listener: certificates by SNI, ALPN from the config.
pub fn acceptor(
    tls: &Tls,
    certs: Vec<LoadedCert>,
    resumption: &Resumption,
) -> Result<TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = sni::SniResolver::new(certs).ok_or(rustls::Error::NoCertificatesPresented)?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = tls.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    cfg.session_storage = resumption.cache.clone();
    cfg.ticketer = resumption.ticketer.clone();
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Runs the server handshake, giving up at `deadline` (the listener's
/// `client_header` from accept: a client that stalls the handshake is a
/// slowloris like one that stalls its headers).
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    deadline: Instant,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// True when the handshake chose HTTP/2.
pub fn negotiated_h2(stream: &TlsStream<TcpStream>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice())
}

/// The negotiated TLS version as the access log names it (`TLSv1.3`).
pub fn version_name(stream: &TlsStream<TcpStream>) -> Option<&'static str> {
    match stream.get_ref().1.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        _ => Some("TLS"),
    }
}
