//! High availability: an active/standby pair sharing a VIP (docs/ha.md).
//!
//! - `wire`: the authenticated heartbeat format and replay filter (pure).
//! - `machine`: the role state machine (pure, sans-io, fake-clock tested).
//! - `driver`: the async shell: UDP socket, timers, VIP and hooks.
//! - `vip`: adding/removing the VIP (netlink) and gratuitous ARP.
//!
//! [`HaHandle`] is what the rest of the process sees: the current status for
//! `/status`, and the maintenance switch for the admin API.
//!
//! Invariant: only heartbeats that pass `wire::decode` and `wire::PeerFilter::accept`
//! reach the machine, so forged, foreign or replayed packets never change a role.
//! Tested by unit tables per module, a fuzz-style wire test, a seeded two-node
//! simulation (`machine::sim`), driver tests on a paused clock (`driver/tests.rs`) and
//! two real nodes in network namespaces (`tests/ha.rs`). User docs: `docs/ha.md`.

pub mod driver;
pub mod machine;
pub mod vip;
pub mod wire;

#[cfg(test)]
pub(crate) mod testrng;

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

/// The HA facts `/status` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HaStatus {
    pub node_id: String,
    pub role: &'static str,
    pub peer_role: Option<&'static str>,
    pub peer_last_seen_ms: Option<u64>,
    pub vip: Option<String>,
    pub vip_held: bool,
    pub maintenance: bool,
}

/// Shared view of the HA driver.
#[derive(Clone)]
pub struct HaHandle {
    pub status: Arc<Mutex<HaStatus>>,
    pub maintenance: watch::Sender<bool>,
}

impl HaHandle {
    pub fn status(&self) -> HaStatus {
        crate::reload::lock(&self.status).clone()
    }

    pub fn set_maintenance(&self, on: bool) {
        self.maintenance.send_replace(on);
    }
}
