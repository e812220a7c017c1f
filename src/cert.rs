//! Certificates: PEM files turned into rustls material, and what we read from them.
//!
//! Owns loading a PEM chain (leaf first) and its private key ([`load_pair`],
//! [`read_pair`]), the checks that `tandem check` and reload report (no
//! certificate or key, a key that does not match its certificate), the facts
//! read from the leaf (its DNS names for SNI selection, its `notAfter`), and
//! expiry ([`expiry`], [`expiry_warnings`]). A leaf module: config validation,
//! the snapshot builder and the metrics use it without importing the serving
//! layer. Does not own serving: the acceptor, session resumption and the SNI
//! resolver are `listener::tls`; TLS to servers is `upstream::tls`.
//!
//! Invariants: validation and the snapshot builder load a pair through the same
//! [`load_pair`], so a pair that passes `tandem check` is the pair that serves.
//! Only the `ring` provider is used.
//!
//! Tested by unit tests in `cert/tests.rs` with certificates generated at test
//! time (rcgen), and end to end in `tests/tls.rs`.

#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::types::{CertificatePaths, Config};

/// A certificate that expires within this long draws a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

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

/// Why one configured pair cannot be used: the file at fault and the cause.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("cannot read \"{}\": {source}", file.display())]
    Read {
        file: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("\"{}\": {source}", file.display())]
    Load {
        file: std::path::PathBuf,
        source: CertError,
    },
}

/// Reads and loads one configured pair; the error names the file at fault.
pub fn read_pair(paths: &CertificatePaths) -> Result<LoadedCert, PairError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| PairError::Read {
            file: p.to_path_buf(),
            source,
        })
    };
    let cert = read(&paths.cert)?;
    let key = read(&paths.key)?;
    load_pair(&cert, &key).map_err(|source| {
        let file = if source.in_key() {
            &paths.key
        } else {
            &paths.cert
        };
        PairError::Load {
            file: file.clone(),
            source,
        }
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
