//! Drift reporting and runtime-state replication, the two things the driver keeps in
//! step with the peer besides roles: comparing configuration hashes (one log line per
//! change of the verdict) and sending / merging runtime-state messages
//! (`driver::replicate` decides what; this sends and counts).

use tokio::time::Instant;

use super::{count, Driver};
use crate::ha::drift;
use crate::ha::driver::replicate::FULL_SYNC_EVERY;
use crate::ha::driver::VipOps;
use crate::ha::wire::{self, StatePacket};
use crate::metrics;

impl<V: VipOps> Driver<V> {
    pub(super) fn on_state(&mut self, st: &StatePacket) {
        let Some(replica) = self.replica.as_mut() else {
            return;
        };
        match replica.receive(&st.payload) {
            Ok(merged) => {
                count("rx", "state");
                if merged > 0 {
                    tracing::info!(
                        merged,
                        full = st.full,
                        "HA: runtime server state merged from the peer"
                    );
                }
            }
            Err(e) => {
                count("rx", "malformed");
                tracing::warn!("HA: unreadable runtime state from the peer: {e}");
            }
        }
    }

    /// Compares the two configuration hashes; logs once per change of the verdict.
    pub(super) fn check_drift(&mut self) {
        let Some(peer) = self.peer_hash else { return };
        let in_sync = peer == self.config_hash;
        metrics::global().ha_config_in_sync.set(i64::from(in_sync));
        if self.in_sync != Some(in_sync) {
            let (ours, theirs) = (drift::hex(self.config_hash), drift::hex(peer));
            if in_sync {
                tracing::info!(config_hash = %ours, "HA: the peer runs the same traffic configuration");
            } else {
                tracing::warn!(config_hash = %ours, peer_config_hash = %theirs,
                    "HA: configuration drift: the peer's listeners/upstreams differ from this node's");
            }
            self.in_sync = Some(in_sync);
        }
    }

    async fn send_state(&mut self, payloads: Vec<Vec<u8>>, full: bool) {
        for payload in payloads {
            let st = StatePacket {
                node_id: self.cfg.machine.node_id.clone(),
                full,
                payload,
                epoch: self.epoch,
                seq: self.next_seq(),
            };
            let packet = wire::encode_state(&st, &self.cfg.key);
            self.send(&packet).await;
            count("tx", "state");
        }
    }

    pub(super) async fn full_sync(&mut self) {
        self.next_full_sync = Instant::now() + FULL_SYNC_EVERY;
        let Some(r) = self.replica.as_mut() else {
            return;
        };
        let payloads = r.full();
        self.send_state(payloads, true).await;
    }

    pub(super) async fn send_changes(&mut self) {
        let Some(r) = self.replica.as_mut() else {
            return;
        };
        let payloads = r.changes();
        self.send_state(payloads, false).await;
    }
}
