//! The SNI resolver and the acceptor, on certificates generated here with rcgen
//! (nothing secret is committed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use super::sni::SniResolver;
use super::*;
use crate::cert::load_pair;
use crate::cert::tests::self_signed;

fn loaded(names: &[&str]) -> LoadedCert {
    let (c, k) = self_signed(names, (2099, 1, 1));
    load_pair(c.as_bytes(), k.as_bytes()).unwrap()
}

#[test]
fn sni_picks_exact_then_wildcard_then_the_first() {
    let r = SniResolver::new(vec![
        loaded(&["default.test"]),
        loaded(&["*.example.com"]),
        loaded(&["api.example.com"]),
        loaded(&["other.test", "*.example.com"]),
    ])
    .unwrap();
    assert_eq!(r.select(None), 0);
    assert_eq!(r.select(Some("unknown.test")), 0);
    assert_eq!(r.select(Some("default.test")), 0);
    // Exact beats a wildcard listed earlier.
    assert_eq!(r.select(Some("api.example.com")), 2);
    assert_eq!(r.select(Some("API.Example.COM.")), 2);
    // The earlier certificate wins a shared name.
    assert_eq!(r.select(Some("www.example.com")), 1);
    assert_eq!(r.select(Some("other.test")), 3);
    // A wildcard covers exactly one label.
    assert_eq!(r.select(Some("example.com")), 0);
    assert_eq!(r.select(Some("a.b.example.com")), 0);
    assert_eq!(r.select(Some(".example.com")), 0);
}

#[test]
fn no_certificates_means_no_resolver() {
    assert!(SniResolver::new(Vec::new()).is_none());
}

#[test]
fn acceptor_builds_with_alpn_and_resumption() {
    let tls = Tls {
        certificates: Vec::new(),
        alpn: vec!["h2".into(), "http/1.1".into()],
    };
    let r = Resumption::new().unwrap();
    assert!(acceptor(&tls, vec![loaded(&["a.test"])], &r).is_ok());
    assert!(acceptor(&tls, Vec::new(), &r).is_err());
}
