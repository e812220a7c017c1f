//! High availability: a pair of nodes sharing one or more VIPs (active/standby, or
//! active/active with one VIP each).
//!
//! - `wire`: the authenticated packet format (heartbeats, runtime state) and replay
//!   filter (pure).
//! - `machine`: the role state machine of one VIP (pure, sans-io, fake-clock tested).
//! - `driver`: the async shell: UDP sockets, timers, VIPs, hooks, replication.
//! - `vip`: adding/removing a VIP (netlink) and announcing it (gratuitous ARP, IPv6
//!   unsolicited neighbour advertisements).
//! - `drift`: the hash of the traffic configuration carried in heartbeats.
//!
//! [`HaHandle`] is what the rest of the process sees: the current status for
//! `/status`, and the maintenance switch for the admin API.
//!
//! Invariant: only heartbeats that pass `wire::decode` and `wire::PeerFilter::accept`
//! reach the machine, so forged, foreign or replayed packets never change a role.
//! Tested by unit tables per module, a fuzz-style wire test, a seeded two-node
//! simulation (`machine::sim`), driver tests on a paused clock (`driver/tests.rs`) and
//! two real nodes in network namespaces (`tests/ha.rs`). User docs: `docs/ha.md`.

pub mod drift;
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
    /// `master` when this node holds any VIP; else `fault` or `backup`.
    pub role: &'static str,
    pub peer_role: Option<&'static str>,
    pub peer_last_seen_ms: Option<u64>,
    /// The first VIP (the one-VIP form of earlier versions), and whether it is held.
    pub vip: Option<String>,
    pub vip_held: bool,
    pub maintenance: bool,
    /// A tracked upstream has no healthy server.
    pub faulty: bool,
    /// Every VIP with its own election.
    pub vips: Vec<VipStatus>,
    /// This node's traffic configuration hash (16 hex digits) and the peer's.
    pub config_hash: String,
    pub peer_config_hash: Option<String>,
    /// `None` until the peer has been heard.
    pub config_in_sync: Option<bool>,
}

/// One VIP's election as `/status` reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VipStatus {
    pub address: String,
    pub priority: u8,
    pub role: &'static str,
    pub held: bool,
    pub peer_role: Option<&'static str>,
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
