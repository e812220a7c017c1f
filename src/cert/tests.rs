//! Certificate loading, key matching and expiry, on certificates generated here
//! with rcgen (nothing secret is committed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use super::*;

/// A self-signed certificate for `names`, valid until `not_after` (y, m, d);
/// returns (cert PEM, key PEM).
pub fn self_signed(names: &[&str], not_after: (i32, u8, u8)) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn loads_names_and_expiry_from_the_leaf() {
    let (c, k) = self_signed(&["WWW.Example.com", "*.example.com"], (2090, 6, 1));
    let l = load_pair(c.as_bytes(), k.as_bytes()).unwrap();
    assert_eq!(l.names, vec!["www.example.com", "*.example.com"]);
    assert_eq!(rfc3339(l.not_after), "2090-06-01T00:00:00Z");
}

#[test]
fn a_key_of_another_certificate_is_a_mismatch() {
    let (c, _) = self_signed(&["a.test"], (2099, 1, 1));
    let (_, other_key) = self_signed(&["a.test"], (2099, 1, 1));
    let e = load_pair(c.as_bytes(), other_key.as_bytes()).unwrap_err();
    assert!(matches!(e, CertError::KeyMismatch), "{e}");
    assert!(e.in_key());
}

#[test]
fn pem_without_certificate_or_key_is_reported() {
    let (c, k) = self_signed(&["a.test"], (2099, 1, 1));
    let e = load_pair(b"just text\n", k.as_bytes()).unwrap_err();
    assert!(matches!(e, CertError::NoCertificate), "{e}");
    assert!(!e.in_key());
    // A certificate where the key should be: no key in it.
    let e = load_pair(c.as_bytes(), c.as_bytes()).unwrap_err();
    assert!(matches!(e, CertError::NoKey), "{e}");
    let e = load_pair(
        b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        k.as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(e, CertError::CertPem(_)), "{e}");
}

#[test]
fn expiry_is_expired_soon_or_valid() {
    let day = 24 * 3600;
    let now = 1_000_000_000;
    assert_eq!(expiry(now - 1, now), Expiry::Expired);
    assert_eq!(expiry(now, now), Expiry::Expired);
    assert_eq!(expiry(now + 1, now), Expiry::Soon);
    assert_eq!(expiry(now + 7 * day - 1, now), Expiry::Soon);
    assert_eq!(expiry(now + 7 * day, now), Expiry::Valid);
}

#[test]
fn an_expired_generated_certificate_is_detected() {
    let (c, k) = self_signed(&["old.test"], (2001, 1, 1));
    let l = load_pair(c.as_bytes(), k.as_bytes()).unwrap();
    assert_eq!(
        expiry(l.not_after, unix_seconds(SystemTime::now())),
        Expiry::Expired
    );
}
