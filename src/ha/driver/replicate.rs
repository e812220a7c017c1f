//! Runtime-state replication: the operator's server states and weight overrides
//! ([`RuntimeStore`]) travel to the peer in authenticated state messages on the heartbeat
//! socket, so a failover in the middle of a drain keeps the server drained.
//!
//! Owns what to send and what to do with what arrives; the driver owns the socket, the
//! signing and the replay filter (`wire::PeerFilter::accept_state`). Sending:
//! - a full sync when the peer appears or reappears (first heartbeat, a new boot epoch,
//!   or after it was dead), and every [`FULL_SYNC_EVERY`] while entries exist, which
//!   repairs a lost datagram without acknowledgements;
//! - changes as they happen: every entry that differs from what was last sent.
//!
//! Each datagram holds whole entries as a JSON array of at most
//! `wire::MAX_STATE_PAYLOAD` bytes, so a full sync is several self-contained messages
//! and losing one loses only its entries until the next sync. Receiving merges each
//! entry with last-writer-wins ([`RuntimeStore::merge`]) and records it as known to the
//! peer, so merged entries are not echoed back. The store is bounded on receipt
//! ([`MAX_ENTRIES`]). Tested below and by two drivers in `driver/tests.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ha::wire::MAX_STATE_PAYLOAD;
use crate::upstream::runtime::{RuntimeEntry, RuntimeStore};
use crate::upstream::ServerKey;

/// Resend everything this often (loss repair; a few hundred bytes per server).
pub const FULL_SYNC_EVERY: Duration = Duration::from_secs(10);
/// A peer cannot make this node hold more entries than this.
pub const MAX_ENTRIES: usize = 65_536;

/// What was last sent to the peer, per server.
pub struct Replica {
    pub store: RuntimeStore,
    sent: BTreeMap<ServerKey, RuntimeEntry>,
}

impl Replica {
    pub fn new(store: RuntimeStore) -> Self {
        Replica {
            store,
            sent: BTreeMap::new(),
        }
    }

    /// Payloads of a full sync (empty when there is nothing to tell).
    pub fn full(&mut self) -> Vec<Vec<u8>> {
        let all = self.store.entries();
        self.sent = all.iter().map(|e| (e.key(), e.clone())).collect();
        pack(&all)
    }

    /// Payloads with every entry that changed since it was last sent.
    pub fn changes(&mut self) -> Vec<Vec<u8>> {
        let changed: Vec<RuntimeEntry> = self
            .store
            .entries()
            .into_iter()
            .filter(|e| self.sent.get(&e.key()) != Some(e))
            .collect();
        for e in &changed {
            self.sent.insert(e.key(), e.clone());
        }
        pack(&changed)
    }

    /// Merges a payload from the peer; the number of entries that changed this node's
    /// state, or an error for a payload that is not a JSON array of entries.
    pub fn receive(&mut self, payload: &[u8]) -> Result<usize, serde_json::Error> {
        let entries: Vec<RuntimeEntry> = serde_json::from_slice(payload)?;
        let mut merged = 0;
        let mut held = self.store.entries().len();
        for e in entries {
            let known = self.store.get(&e.key()).is_some();
            if !known && held >= MAX_ENTRIES {
                tracing::warn!(
                    "HA: runtime state from the peer dropped: {MAX_ENTRIES} entries held"
                );
                continue;
            }
            if self.store.merge(e.clone()) {
                merged += 1;
                held += usize::from(!known);
            }
            // The peer has this entry (or a later one of ours, which wins there too).
            if let Some(now) = self.store.get(&e.key()) {
                if now == e {
                    self.sent.insert(e.key(), e);
                }
            }
        }
        Ok(merged)
    }
}

/// Splits `entries` into JSON arrays of at most `MAX_STATE_PAYLOAD` bytes. An entry that
/// alone is larger (names of kilobytes) is skipped with a warning.
fn pack(entries: &[RuntimeEntry]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for e in entries {
        let Ok(json) = serde_json::to_vec(e) else {
            continue;
        };
        if json.len() + 2 > MAX_STATE_PAYLOAD {
            tracing::warn!(upstream = %e.upstream, server = %e.server,
                "HA: runtime entry too large to replicate");
            continue;
        }
        if !cur.is_empty() && cur.len() + 1 + json.len() + 1 > MAX_STATE_PAYLOAD {
            cur.push(b']');
            out.push(std::mem::take(&mut cur));
        }
        cur.push(if cur.is_empty() { b'[' } else { b',' });
        cur.extend_from_slice(&json);
    }
    if !cur.is_empty() {
        cur.push(b']');
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::runtime::{AdminState, RuntimeChange};

    fn key(i: usize) -> ServerKey {
        ServerKey {
            upstream: "app".into(),
            address: format!("10.0.0.{}:3000", i % 250),
        }
    }

    fn drain() -> RuntimeChange {
        RuntimeChange {
            state: Some(AdminState::Drain),
            weight: None,
        }
    }

    #[test]
    fn full_sync_is_fragmented_and_converges() {
        let a = Replica::new(RuntimeStore::new());
        let mut a = a;
        for i in 0..200 {
            let k = ServerKey {
                upstream: format!("upstream-{i}"),
                address: format!("10.0.{}.{}:3000", i / 200, i % 200),
            };
            a.store.set_local(&k, drain(), 1_000 + i as u64);
        }
        let payloads = a.full();
        assert!(payloads.len() > 1, "200 entries need several datagrams");
        assert!(payloads.iter().all(|p| p.len() <= MAX_STATE_PAYLOAD));
        let mut b = Replica::new(RuntimeStore::new());
        let merged: usize = payloads.iter().map(|p| b.receive(p).unwrap()).sum();
        assert_eq!(merged, 200);
        assert_eq!(a.store.entries(), b.store.entries());
        // Nothing to echo back, nothing new to send.
        assert!(b.changes().is_empty());
        assert!(a.changes().is_empty());
    }

    #[test]
    fn changes_carry_only_what_changed_and_last_writer_wins() {
        let mut a = Replica::new(RuntimeStore::new());
        let mut b = Replica::new(RuntimeStore::new());
        a.store.set_local(&key(1), drain(), 10);
        a.store.set_local(&key(2), drain(), 10);
        for p in a.changes() {
            b.receive(&p).unwrap();
        }
        a.store.set_local(
            &key(2),
            RuntimeChange {
                state: Some(AdminState::Ready),
                weight: None,
            },
            20,
        );
        let p = a.changes();
        assert_eq!(p.len(), 1);
        let sent: Vec<RuntimeEntry> = serde_json::from_slice(&p[0]).unwrap();
        assert_eq!(sent.len(), 1, "only the changed server");
        // b changed key 2 later still: its change wins on both sides.
        b.store.set_local(
            &key(2),
            RuntimeChange {
                state: Some(AdminState::Maint),
                weight: None,
            },
            30,
        );
        assert_eq!(b.receive(&p[0]).unwrap(), 0, "older change loses");
        for p in b.changes() {
            a.receive(&p).unwrap();
        }
        assert_eq!(a.store.entries(), b.store.entries());
        assert_eq!(
            a.store.get(&key(2)).map(|e| e.state),
            Some(AdminState::Maint)
        );
    }

    #[test]
    fn garbage_payload_is_an_error_not_a_panic() {
        let mut b = Replica::new(RuntimeStore::new());
        assert!(b.receive(b"not json").is_err());
        assert!(b.receive(b"[{\"upstream\":1}]").is_err());
        assert_eq!(b.receive(b"[]").unwrap(), 0);
    }
}
