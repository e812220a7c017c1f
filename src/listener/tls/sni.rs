//! Certificate choice by SNI for one listener.
//!
//! Owns the name index over a listener's certificates: exact names first, then
//! wildcards (`*.example.com` matches exactly one label: `a.example.com`, not
//! `example.com` nor `a.b.example.com`), else the first certificate. When two
//! certificates claim a name the earlier one in the config wins. Names and SNI
//! are compared lower-case without a trailing dot. Does not load certificates
//! (`cert::load_pair`). Tested by `tls/tests.rs` through [`SniResolver::select`],
//! which needs no handshake.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::cert::LoadedCert;

#[derive(Debug)]
pub struct SniResolver {
    /// In config order; the first is the default.
    keys: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// `example.com` for a certificate name `*.example.com`.
    wildcard: HashMap<String, usize>,
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl SniResolver {
    /// `None` without certificates (validation requires at least one).
    pub fn new(certs: Vec<LoadedCert>) -> Option<Self> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut keys = Vec::with_capacity(certs.len());
        for (i, c) in certs.into_iter().enumerate() {
            for n in &c.names {
                let n = normalize(n);
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_insert(i),
                    None => exact.entry(n).or_insert(i),
                };
            }
            keys.push(c.key);
        }
        if keys.is_empty() {
            return None;
        }
        Some(Self {
            keys,
            exact,
            wildcard,
        })
    }

    /// Index of the certificate for this SNI (0 is the default).
    pub fn select(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni.map(normalize) else {
            return 0;
        };
        if let Some(&i) = self.exact.get(&sni) {
            return i;
        }
        sni.split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .and_then(|(_, parent)| self.wildcard.get(parent).copied())
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.select(hello.server_name());
        self.keys.get(i).or(self.keys.first()).cloned()
    }
}
