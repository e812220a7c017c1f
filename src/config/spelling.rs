//! The configuration's own spelling of its enum values, for everything that shows
//! them back to people (`/status`, logs): `round_robin`, never `RoundRobin`.
//!
//! Owns only the value -> text direction; parsing stays in `validate`. The tests
//! parse each spelling back through the real loader, so a renamed or added
//! variant cannot drift from what the file accepts.

use std::fmt;

use super::types::{BalanceKind, HashKey, ListenerMode};

impl ListenerMode {
    /// `listeners[].mode` as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerMode::Http => "http",
            ListenerMode::Tcp => "tcp",
        }
    }
}

impl BalanceKind {
    /// `upstreams[].balance` as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceKind::RoundRobin => "round_robin",
            BalanceKind::LeastConnections => "least_connections",
            BalanceKind::RandomTwo => "random_two",
            BalanceKind::PeakEwma => "peak_ewma",
            BalanceKind::ConsistentHash => "consistent_hash",
        }
    }
}

/// `upstreams[].hash_key` as written in the file (header names lower-case).
impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::ClientIp => f.write_str("client_ip"),
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse;

    fn config(mode: &str, balance: &str, hash_key: Option<&str>) -> crate::config::types::Config {
        let hash_key = hash_key
            .map(|k| format!("    hash_key: \"{k}\"\n"))
            .unwrap_or_default();
        let text = format!(
            "listeners:\n  - name: l\n    bind: 127.0.0.1:8080\n    mode: {mode}\n    upstream: u\n\
             upstreams:\n  - name: u\n    balance: {balance}\n{hash_key}    servers:\n      - address: 127.0.0.1:3001\n"
        );
        match parse(&text, "t.yaml", Path::new(".")) {
            Ok(c) => c,
            Err(e) => panic!("{text}\n{e}"),
        }
    }

    #[test]
    fn every_spelling_is_what_the_file_accepts() {
        for mode in [ListenerMode::Http, ListenerMode::Tcp] {
            let c = config(mode.as_str(), "round_robin", None);
            assert_eq!(c.listeners[0].mode, mode);
        }
        for balance in [
            BalanceKind::RoundRobin,
            BalanceKind::LeastConnections,
            BalanceKind::RandomTwo,
            BalanceKind::PeakEwma,
            BalanceKind::ConsistentHash,
        ] {
            let c = config("http", balance.as_str(), None);
            assert_eq!(c.upstreams[0].balance, balance);
        }
        for key in [
            HashKey::ClientIp,
            HashKey::Header("x-user".into()),
            HashKey::Cookie("Session".into()),
        ] {
            let c = config("http", "consistent_hash", Some(&key.to_string()));
            assert_eq!(c.upstreams[0].hash_key.as_ref(), Some(&key));
        }
    }
}
