//! TLS termination: certificate loading, the per-listener acceptor, the handshake.
//!
//! Owns turning PEM files into rustls material ([`load_pair`]), the checks that
//! `tandem check` and reload report (no certificate or key, a key that does not
//! match its certificate, expiry: [`expiry`]), and building one
//! `tokio_rustls::TlsAcceptor` per TLS listener ([`acceptor`]) when a snapshot is
//! built. Certificate choice by SNI is [`sni::SniResolver`]. Does not own the
//! serving after the handshake (that is `http` and `tcp`).
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
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{
    ProducesTickets, ServerConfig, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::types::{CertificatePaths, Config, Tls};

/// A certificate that expires within this long draws a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Sessions remembered per listener for stateful (TLS 1.2 session id) resumption.
/// A few hundred bytes each; tickets carry the TLS 1.3 case without server state.
const SESSION_CACHE_SIZE: usize = 16 * 1024;

/// One certificate chain with its key, ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// DNS names from the subjectAltName extension (the subject CN when there is
    /// none), lower-case; `*.example.com` wildcards kept as written.
    pub names: Vec<String>,
    /// End of validity of the leaf certificate, Unix seconds.
    pub not_after: i64,
}

/// Why a certificate/key pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("invalid PEM certificate: {0}")]
    CertPem(String),
    #[error("cannot parse the certificate: {0}")]
    Certificate(String),
    #[error("no PEM private key found (PKCS#8, RSA or EC)")]
    NoKey,
    #[error("invalid PEM private key: {0}")]
    KeyPem(String),
    #[error("unsupported private key: {0}")]
    UnsupportedKey(rustls::Error),
    #[error("the private key does not match the certificate")]
    KeyMismatch,
}

impl CertError {
    /// True when the key file is at fault (errors are placed at `key`, not `cert`).
    pub fn in_key(&self) -> bool {
        matches!(
            self,
            CertError::NoKey
                | CertError::KeyPem(_)
                | CertError::UnsupportedKey(_)
                | CertError::KeyMismatch
        )
    }
}

/// Parses a PEM chain (leaf first) and a PEM private key, and checks they belong
/// together.
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<LoadedCert, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::CertPem(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate);
    };
    let (names, not_after) = leaf_facts(leaf)?;
    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(CertError::NoKey),
        Err(e) => return Err(CertError::KeyPem(e.to_string())),
    };
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(CertError::UnsupportedKey)?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        Ok(()) => {}
        // The key cannot tell its public half; nothing to compare, rustls will
        // fail the handshake if it is wrong.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => return Err(CertError::KeyMismatch),
        Err(e) => return Err(CertError::Certificate(e.to_string())),
    }
    Ok(LoadedCert {
        key: Arc::new(key),
        names,
        not_after,
    })
}

/// DNS names and `notAfter` of the leaf.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| CertError::Certificate(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        let cn = cert.subject().iter_common_name().next();
        if let Some(cn) = cn.and_then(|c| c.as_str().ok()) {
            names.push(cn.to_ascii_lowercase());
        }
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// Reads and loads one configured pair; the message names the file at fault.
pub fn read_pair(paths: &CertificatePaths) -> Result<LoadedCert, String> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read \"{}\": {e}", p.display()))
    };
    let cert = read(&paths.cert)?;
    let key = read(&paths.key)?;
    load_pair(&cert, &key).map_err(|e| {
        let file = if e.in_key() { &paths.key } else { &paths.cert };
        format!("\"{}\": {e}", file.display())
    })
}

/// Where a certificate stands at `now` (both Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Valid,
    /// Valid, but for less than [`EXPIRY_WARNING`].
    Soon,
    Expired,
}

pub fn expiry(not_after: i64, now: i64) -> Expiry {
    let warn = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
    if not_after <= now {
        Expiry::Expired
    } else if not_after - now < warn {
        Expiry::Soon
    } else {
        Expiry::Valid
    }
}

/// Unix seconds of `t` (negative before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `2026-11-22T15:07:01Z` for a Unix time.
pub fn rfc3339(unix: i64) -> String {
    let t = if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Warnings for certificates of `config` that expire within [`EXPIRY_WARNING`]
/// of `now`. Files that cannot be loaded are skipped: validation reports them.
pub fn expiry_warnings(config: &Config, now: SystemTime) -> Vec<String> {
    let now = unix_seconds(now);
    let mut out = Vec::new();
    for l in &config.listeners {
        let Some(tls) = &l.tls else { continue };
        for paths in &tls.certificates {
            let Ok(c) = read_pair(paths) else { continue };
            if expiry(c.not_after, now) == Expiry::Soon {
                out.push(format!(
                    "listeners.{}: certificate \"{}\" expires on {}, in less than 7 days",
                    l.name,
                    paths.cert.display(),
                    rfc3339(c.not_after)
                ));
            }
        }
    }
    out
}

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
