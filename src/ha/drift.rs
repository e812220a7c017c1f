//! Configuration drift: a hash of the traffic configuration (`listeners` and
//! `upstreams`) that both nodes put in every heartbeat, so that a pair running two
//! different configurations is noticed before a failover serves something else.
//!
//! Owns what is hashed and how. The hash is taken over the *validated* configuration,
//! not the file: key order, comments, quoting, indentation and defaults written out or
//! left implicit do not change it, while any value that changes traffic does. The `ha`
//! section (node id, addresses, priorities: different on the two nodes by design),
//! `admin`, `workers` and `shutdown_timeout` are left out. Validated types hold no
//! hash maps, so their `Debug` rendering is deterministic within one build; two builds
//! of tandem may render differently, which shows as drift (run one version per pair).
//!
//! Does not own comparing the hashes or reporting (the driver). Tested below.

use sha2::{Digest, Sha256};

use crate::config::types::Config;

/// The first 8 bytes of SHA-256 over the normalised `listeners` and `upstreams`.
pub fn traffic_hash(config: &Config) -> u64 {
    let mut h = Sha256::new();
    h.update(format!("{:?}", config.listeners).as_bytes());
    h.update([0]);
    h.update(format!("{:?}", config.upstreams).as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// The hash as shown in `/status` and logs: 16 lower-case hex digits.
pub fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(yaml: &str) -> u64 {
        let dir = std::env::temp_dir();
        let cfg = crate::config::parse(yaml, "proxy.yaml", &dir)
            .unwrap_or_else(|e| panic!("config does not parse: {e}"));
        traffic_hash(&cfg)
    }

    const A: &str = "\
listeners:
  - name: web
    bind: 127.0.0.1:18080
    upstream: app
upstreams:
  - name: app
    servers:
      - address: 127.0.0.1:3001
      - address: 127.0.0.1:3002
";

    /// The same traffic settings: keys reordered, comments, flow style, quoting,
    /// defaults spelled out, different admin and workers.
    const A2: &str = "\
# the same, written differently
workers: 3
admin: { bind: '127.0.0.1:9999' }
upstreams:
  - servers: [ {address: \"127.0.0.1:3001\", weight: 1}, {address: 127.0.0.1:3002} ]
    name: app   # trailing comment
    balance: round_robin
listeners:
  - upstream: app
    mode: http
    name: web
    bind: \"127.0.0.1:18080\"
";

    #[test]
    fn key_order_comments_and_formatting_do_not_change_the_hash() {
        assert_eq!(hash(A), hash(A2));
        assert_eq!(hex(hash(A)).len(), 16);
    }

    #[test]
    fn a_changed_upstream_or_listener_changes_the_hash() {
        let server = A.replace("127.0.0.1:3002", "127.0.0.1:3003");
        let weight = A.replace(
            "      - address: 127.0.0.1:3002\n",
            "      - address: 127.0.0.1:3002\n        weight: 2\n",
        );
        let bind = A.replace("18080", "18081");
        let order = A
            .replace("3001", "300X")
            .replace("3002", "3001")
            .replace("300X", "3002");
        for other in [server, weight, bind, order] {
            assert_ne!(hash(A), hash(&other), "{other}");
        }
    }
}
