//! The operator's runtime state of servers: admin state and weight override.
//!
//! This is the one place that state lives. It is set through the admin API,
//! persisted to `admin.state_file`, replicated to the HA peer, and applied to
//! the live [`super::ServerState`] atomics (the request path reads only those).
//! Each entry carries the wall-clock time of its change so that two nodes that
//! both changed a server converge on the later change (last writer wins); ties
//! are broken by the entry's content so both sides pick the same winner.
//!
//! Entries are keyed by upstream name + server address (the same identity as
//! [`super::ServerKey`]), so they survive reloads while the server stays in the
//! configuration. A reload that removes a server forgets its entry
//! ([`RuntimeStore::retain_configured`]); an entry merged from the peer or the
//! state file for a server this node does not have is kept until the next
//! reload and has nothing to apply to meanwhile. [`RuntimeStore::apply`] is the
//! one step that writes entries into the live server atomics.
//!
//! Not on the hot path: a `Mutex` guards the map; writers are the admin API,
//! the state-file loader and the HA receiver. Readers that need to react to
//! changes (the state-file writer, HA replication) watch [`RuntimeStore::subscribe`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{ServerKey, Upstream};

/// The operator's state of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum AdminState {
    /// In rotation (the default).
    Ready = 0,
    /// No new requests; in-flight ones finish; idle pooled connections close.
    Drain = 1,
    /// As drain, and health probes stop.
    Maint = 2,
}

impl AdminState {
    /// The metric value (`tandem_upstream_server_admin_state`): 0, 1, 2.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Drain,
            2 => Self::Maint,
            _ => Self::Ready,
        }
    }

    /// The spelling used in the API, the state file and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        }
    }
}

/// One server's runtime state as stored, persisted and replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeEntry {
    pub upstream: String,
    pub server: String,
    pub state: AdminState,
    /// Overrides the configured weight while set.
    pub weight: Option<u32>,
    /// Milliseconds since the Unix epoch of the last change (either key).
    pub changed_ms: u64,
}

impl RuntimeEntry {
    pub fn key(&self) -> ServerKey {
        ServerKey {
            upstream: self.upstream.clone(),
            address: self.server.clone(),
        }
    }

    /// True when `self` should replace `current` under last-writer-wins.
    fn wins_over(&self, current: &RuntimeEntry) -> bool {
        (self.changed_ms, self.state, self.weight)
            > (current.changed_ms, current.state, current.weight)
    }
}

/// A change requested through the admin API: `None` leaves a key as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeChange {
    pub state: Option<AdminState>,
    /// `Some(None)` clears the override.
    pub weight: Option<Option<u32>>,
}

/// Shared handle to every server's runtime state (cheap to clone).
#[derive(Clone)]
pub struct RuntimeStore {
    inner: Arc<Inner>,
}

struct Inner {
    entries: Mutex<BTreeMap<ServerKey, RuntimeEntry>>,
    /// Bumped on every change, local or remote.
    version: watch::Sender<u64>,
}

impl Default for RuntimeStore {
    fn default() -> Self {
        Self::new()
    }
}

impl RuntimeStore {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: Mutex::new(BTreeMap::new()),
                version: watch::channel(0).0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServerKey, RuntimeEntry>> {
        // A panic while holding this lock cannot leave the map half-written
        // (every mutation is a single insert), so a poisoned lock is usable.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.inner.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn get(&self, key: &ServerKey) -> Option<RuntimeEntry> {
        self.lock().get(key).cloned()
    }

    /// Every entry, ordered by upstream then server.
    pub fn entries(&self) -> Vec<RuntimeEntry> {
        self.lock().values().cloned().collect()
    }

    /// Applies an operator's change made on this node at `now_ms`.
    pub fn set_local(&self, key: &ServerKey, change: RuntimeChange, now_ms: u64) -> RuntimeEntry {
        let entry = {
            let mut map = self.lock();
            let e = map.entry(key.clone()).or_insert_with(|| RuntimeEntry {
                upstream: key.upstream.clone(),
                server: key.address.clone(),
                state: AdminState::Ready,
                weight: None,
                changed_ms: 0,
            });
            if let Some(s) = change.state {
                e.state = s;
            }
            if let Some(w) = change.weight {
                e.weight = w;
            }
            // Strictly later than the entry's previous change, so a local
            // change always wins over what it replaces even within one ms.
            e.changed_ms = now_ms.max(e.changed_ms.saturating_add(1));
            e.clone()
        };
        self.bump();
        entry
    }

    /// Merges an entry from the peer or the state file; true if it replaced
    /// what this node had (last writer wins).
    pub fn merge(&self, entry: RuntimeEntry) -> bool {
        let changed = {
            let mut map = self.lock();
            let key = entry.key();
            match map.get(&key) {
                Some(cur) if !entry.wins_over(cur) => false,
                _ => {
                    map.insert(key, entry);
                    true
                }
            }
        };
        if changed {
            self.bump();
        }
        changed
    }

    /// Makes the live servers of `upstreams` match the store: each server takes
    /// its entry's admin state and weight override, a server without an entry
    /// is `ready` without override. The one place the store reaches the
    /// `ServerState` atomics the request path reads, for local, merged and
    /// restored changes alike: called after every store change and for every
    /// snapshot built (so states survive reloads and reach servers that return).
    pub fn apply(&self, upstreams: &[Arc<Upstream>]) {
        let map = self.lock();
        for u in upstreams {
            for (s, c) in u.servers.iter().zip(&u.config.servers) {
                let entry = map.get(&s.key);
                let state = entry.map_or(AdminState::Ready, |e| e.state);
                let weight = entry.and_then(|e| e.weight);
                if s.admin_state() != state || s.weight_override() != weight {
                    tracing::info!(upstream = %s.key.upstream, server = %s.key.address,
                        state = state.as_str(), weight = ?weight, "server admin state applied");
                }
                s.set_admin_state(state);
                s.set_weight_override(weight);
                s.metrics.admin_state.set(i64::from(state.as_u8()));
                s.metrics.tier.set(i64::from(super::state::tier(c)));
            }
        }
    }

    /// Forgets entries of servers no longer in `upstreams` (the state is the
    /// operator's only while the server stays configured). True if any went.
    pub fn retain_configured(&self, upstreams: &[Arc<Upstream>]) -> bool {
        let removed = {
            let mut map = self.lock();
            let before = map.len();
            map.retain(|k, _| {
                upstreams
                    .iter()
                    .filter(|u| u.config.name == k.upstream)
                    .any(|u| u.config.servers.iter().any(|s| s.address == k.address))
            });
            before != map.len()
        };
        if removed {
            self.bump();
        }
        removed
    }

    /// A receiver that sees the version change on every local or merged change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }
}

/// Milliseconds since the Unix epoch, for [`RuntimeEntry::changed_ms`].
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ServerKey {
        ServerKey {
            upstream: "app".into(),
            address: "127.0.0.1:3001".into(),
        }
    }

    #[test]
    fn local_change_sets_keys_and_moves_time_forward() {
        let s = RuntimeStore::new();
        let mut rx = s.subscribe();
        let e = s.set_local(
            &key(),
            RuntimeChange {
                state: Some(AdminState::Drain),
                weight: None,
            },
            1_000,
        );
        assert_eq!(
            (e.state, e.weight, e.changed_ms),
            (AdminState::Drain, None, 1_000)
        );
        assert!(rx.has_changed().unwrap_or(false));
        rx.mark_unchanged();
        // Same millisecond: still strictly later.
        let e = s.set_local(
            &key(),
            RuntimeChange {
                state: None,
                weight: Some(Some(5)),
            },
            1_000,
        );
        assert_eq!(
            (e.state, e.weight, e.changed_ms),
            (AdminState::Drain, Some(5), 1_001)
        );
        assert!(rx.has_changed().unwrap_or(false));
    }

    #[test]
    fn merge_is_last_writer_wins_and_symmetric() {
        let a = RuntimeStore::new();
        let b = RuntimeStore::new();
        let ea = a.set_local(
            &key(),
            RuntimeChange {
                state: Some(AdminState::Drain),
                weight: None,
            },
            10,
        );
        let eb = b.set_local(
            &key(),
            RuntimeChange {
                state: Some(AdminState::Maint),
                weight: None,
            },
            20,
        );
        assert!(a.merge(eb.clone()));
        assert!(!b.merge(ea));
        assert_eq!(a.get(&key()), Some(eb.clone()));
        assert_eq!(b.get(&key()), Some(eb.clone()));
        // Re-merging the same entry changes nothing.
        assert!(!a.merge(eb));
    }

    #[test]
    fn equal_times_converge_on_the_same_entry() {
        let mk = |state| RuntimeEntry {
            upstream: "app".into(),
            server: "127.0.0.1:3001".into(),
            state,
            weight: None,
            changed_ms: 7,
        };
        let a = RuntimeStore::new();
        let b = RuntimeStore::new();
        a.merge(mk(AdminState::Drain));
        b.merge(mk(AdminState::Maint));
        a.merge(mk(AdminState::Maint));
        b.merge(mk(AdminState::Drain));
        assert_eq!(a.get(&key()), b.get(&key()));
    }

    fn upstreams(servers: &str) -> Vec<Arc<Upstream>> {
        let text = format!(
            "listeners: [{{name: w, bind: '127.0.0.1:0', upstream: app}}]\n\
             upstreams: [{{name: app, servers: [{servers}]}}]\n"
        );
        let c = crate::config::parse(&text, "t.yaml", std::path::Path::new(".")).unwrap();
        let registry = crate::upstream::ServerRegistry::default();
        c.upstreams
            .iter()
            .map(|u| Arc::new(registry.build_upstream(u, &Default::default())))
            .collect()
    }

    #[test]
    fn apply_sets_the_live_servers_and_resets_those_without_entry() {
        let ups = upstreams("{address: '127.0.0.1:3001', weight: 4}, {address: '127.0.0.1:3002'}");
        let [a, b] = [&ups[0].servers[0], &ups[0].servers[1]];
        let s = RuntimeStore::new();
        s.set_local(
            &key(),
            RuntimeChange {
                state: Some(AdminState::Drain),
                weight: Some(Some(9)),
            },
            5,
        );
        b.set_admin_state(AdminState::Maint);
        s.apply(&ups);
        assert_eq!(
            (a.admin_state(), a.weight_override()),
            (AdminState::Drain, Some(9))
        );
        assert_eq!(a.effective_weight(4), 9);
        assert_eq!(a.metrics.admin_state.get(), 1);
        assert_eq!(b.admin_state(), AdminState::Ready, "no entry: ready");
        s.set_local(
            &key(),
            RuntimeChange {
                state: Some(AdminState::Ready),
                weight: Some(None),
            },
            6,
        );
        s.apply(&ups);
        assert_eq!(
            (a.admin_state(), a.effective_weight(4)),
            (AdminState::Ready, 4)
        );
    }

    #[test]
    fn entries_of_servers_no_longer_configured_are_forgotten() {
        let s = RuntimeStore::new();
        s.set_local(
            &key(),
            RuntimeChange {
                state: Some(AdminState::Drain),
                weight: None,
            },
            1,
        );
        assert!(!s.retain_configured(&upstreams("{address: '127.0.0.1:3001'}")));
        assert_eq!(s.entries().len(), 1);
        let rx = s.subscribe();
        assert!(s.retain_configured(&upstreams("{address: '127.0.0.1:3009'}")));
        assert!(s.entries().is_empty());
        assert!(rx.has_changed().unwrap_or(false), "a removal is a change");
    }

    #[test]
    fn admin_state_round_trips_through_u8_and_json() {
        for s in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
            assert_eq!(AdminState::from_u8(s.as_u8()), s);
            let j = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(j, format!("\"{}\"", s.as_str()));
        }
    }
}
