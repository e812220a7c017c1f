//! The HA role state machine: decides from heartbeats, local health and time whether this
//! node is backup, master or fault, and when to send heartbeats.
//!
//! Owns the role rules (docs/ha.md). It is sans-io: no sockets, no clock reads, no VIP. The
//! driver feeds [`Input`]s with the current instant, performs every [`Action`] from
//! [`HaMachine::poll_action`] in order, and feeds [`Input::Tick`] at
//! [`HaMachine::poll_timeout`]. Only authenticated, non-replayed heartbeats (see
//! `wire::PeerFilter`) may be fed as [`Input::PeerHeartbeat`].
//!
//! Rules, with rank = (priority, node_id) compared lexicographically. A node is
//! *faulty* while local health is bad, *in maintenance* after `POST /ha/maintenance`;
//! heartbeats carry both facts besides the role.
//! - In maintenance: fault (no VIP) while the peer is alive; master once it is dead.
//! - Faulty: fault while the peer is alive and serving (healthy, out of maintenance);
//!   master when the peer is dead or in maintenance; when both are faulty the rules for
//!   two healthy nodes below apply (with `fault` in place of `backup`), so the node that
//!   would be master if both were healthy keeps or takes the VIP and the pair never goes
//!   dark: clients get a fast 503, and listeners of other upstreams keep serving.
//! - Healthy: master when the peer is faulty or in maintenance (whatever its role), and
//!   otherwise master when the peer is dead (no heartbeat for `dead_interval`), has left
//!   (a `leaving` heartbeat), is faulty, or is a backup we outrank; or when the peer is
//!   master, we outrank it and *our* `preempt` is set. Preemption is a property of the node
//!   that takes over: a master never yields to a backup, it only loses a two-master
//!   conflict. Equal priorities are ordered by node id, so with `preempt: true` the higher
//!   id takes over; set `preempt: false` on both to avoid that.
//! - Two masters that hear each other: the lower rank steps down on receipt, whatever its
//!   preempt setting; the higher one emits [`Action::Reannounce`].
//! - A new machine is backup and claims master only after one `dead_interval`, so it hears
//!   an existing master first; the wait is cut short only by a heartbeat that shows the
//!   peer will not serve (fault, maintenance or leaving), or by the death of a peer that
//!   was heard (after a refusal, two silent heartbeat intervals).
//! - Heartbeats every `heartbeat_interval` and at once on every role change.
//! - The peer is dead after `dead_interval` without a heartbeat, or after two heartbeat
//!   intervals without one once [`Input::PeerRefused`] (the kernel answered our
//!   heartbeat with ICMP port unreachable: the peer's host is up, its tandem is not)
//!   arrived after the last heartbeat. A refusal alone changes nothing: the next
//!   heartbeat clears it, so a forged ICMP packet cannot take the VIP from a live peer
//!   whose heartbeats keep arriving (the hint assumes delay jitter below one interval).
//!
//! Invariants (`check_invariants`): never master while in maintenance with the peer
//! alive, nor while faulty with a serving peer alive; inert
//! and not master after shutdown; `poll_timeout` is never in the past of the last input,
//! so a driver cannot spin. Tested by transition tables (`machine/tests.rs`) and a seeded
//! two-node simulation over a lossy, partitioning network (`machine/sim.rs`).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Backup,
    Master,
    Fault,
}

impl Role {
    /// For hooks, `/status` and `tandem_ha_transitions_total{to}`.
    pub fn label(self) -> &'static str {
        match self {
            Role::Backup => "backup",
            Role::Master => "master",
            Role::Fault => "fault",
        }
    }

    /// The value of the `tandem_ha_role` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            Role::Backup => 0,
            Role::Master => 1,
            Role::Fault => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub node_id: String,
    pub priority: u8,
    /// Whether *this* node, when healthy and of higher rank, takes the VIP from a healthy
    /// master peer.
    pub preempt: bool,
    pub heartbeat_interval: Duration,
    /// Must exceed `heartbeat_interval` plus the worst one-way delay, or a live peer is
    /// declared dead between two heartbeats.
    pub dead_interval: Duration,
}

/// What an authenticated heartbeat says about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub node_id: String,
    pub priority: u8,
    pub role: Role,
    pub leaving: bool,
    /// A tracked upstream of the peer has no healthy server.
    pub faulty: bool,
    pub maintenance: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time has passed; fed at `poll_timeout` (extra ticks are harmless).
    Tick,
    PeerHeartbeat(PeerView),
    /// Whether every tracked upstream has a healthy server.
    LocalHealth {
        healthy: bool,
    },
    /// `POST` (true) / `DELETE` (false) `/ha/maintenance`.
    Maintenance(bool),
    /// SIGTERM: hand the VIP over and go inert.
    Shutdown,
    /// Our heartbeat to the peer was refused (ICMP port unreachable): a hint that the
    /// peer's process is gone; see the module docs.
    PeerRefused,
}

/// Side effects for the driver, to be performed in the order they are polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send one heartbeat now (the driver adds node id, priority, epoch and sequence).
    SendHeartbeat { role: Role, leaving: bool },
    /// Add the VIP, send the gratuitous ARPs, run the master hook.
    BecomeMaster,
    /// Remove the VIP if present, run the backup hook. Also emitted once by
    /// [`HaMachine::new`] so that a VIP left behind by a killed process is removed.
    BecomeBackup,
    /// Remove the VIP if present, run the fault hook.
    BecomeFault,
    /// Still master, but the peer held the VIP too (healed partition, or a preemption just
    /// completed): send the gratuitous ARPs again so that clients that learned the peer's
    /// MAC come back. No hook, no VIP change.
    Reannounce,
}

/// The last authenticated heartbeat from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub node_id: String,
    pub priority: u8,
    pub role: Role,
    pub leaving: bool,
    pub faulty: bool,
    pub maintenance: bool,
    pub last_seen: Instant,
}

impl PeerStatus {
    /// Healthy and out of maintenance.
    fn serving(&self) -> bool {
        !self.faulty && !self.maintenance && self.role != Role::Fault
    }
}

#[derive(Debug)]
pub struct HaMachine {
    cfg: MachineConfig,
    role: Role,
    /// End of the start-up wait; before it this node claims master only if the peer has
    /// shown it will not serve.
    claim_after: Instant,
    peer: Option<PeerStatus>,
    /// Set by [`Input::PeerRefused`]; cleared by the next heartbeat.
    refused: bool,
    healthy: bool,
    maintenance: bool,
    /// After `Input::Shutdown` the machine emits nothing more.
    shut_down: bool,
    next_heartbeat: Instant,
    /// The instant of the last input, so `poll_timeout` never returns a past deadline.
    last_now: Instant,
    actions: VecDeque<Action>,
}

impl HaMachine {
    /// A backup that announces itself at once. Local health starts good: the driver
    /// feeds `LocalHealth` as soon as it knows better.
    pub fn new(cfg: MachineConfig, now: Instant) -> Self {
        let mut actions = VecDeque::new();
        actions.push_back(Action::BecomeBackup);
        actions.push_back(Action::SendHeartbeat {
            role: Role::Backup,
            leaving: false,
        });
        HaMachine {
            claim_after: now + cfg.dead_interval,
            next_heartbeat: now + cfg.heartbeat_interval,
            cfg,
            role: Role::Backup,
            peer: None,
            refused: false,
            healthy: true,
            maintenance: false,
            shut_down: false,
            last_now: now,
            actions,
        }
    }

    pub fn handle(&mut self, input: Input, now: Instant) {
        if self.shut_down {
            return;
        }
        // A driver may hand us a slightly older instant (two timers racing); time never
        // goes back inside the machine.
        let now = now.max(self.last_now);
        self.last_now = now;
        let was_master = self.role == Role::Master;
        let mut peer_was_master = false;
        let mut peer_is_master = false;
        match input {
            Input::Tick => {}
            Input::PeerHeartbeat(view) => {
                peer_was_master = self.peer_alive(now).is_some_and(|p| p.role == Role::Master);
                peer_is_master = view.role == Role::Master && !view.leaving;
                self.refused = false;
                self.peer = Some(PeerStatus {
                    node_id: view.node_id,
                    priority: view.priority,
                    role: view.role,
                    leaving: view.leaving,
                    faulty: view.faulty,
                    maintenance: view.maintenance,
                    last_seen: now,
                });
            }
            Input::PeerRefused => self.refused = self.peer.is_some(),
            Input::LocalHealth { healthy } => self.healthy = healthy,
            Input::Maintenance(on) => self.maintenance = on,
            Input::Shutdown => return self.shut_down(),
        }

        let desired = self.desired_role(now);
        if desired != self.role {
            self.role = desired;
            self.actions.push_back(match desired {
                Role::Master => Action::BecomeMaster,
                Role::Backup => Action::BecomeBackup,
                Role::Fault => Action::BecomeFault,
            });
            self.send_heartbeat(now);
        } else if was_master && self.role == Role::Master && (peer_is_master || peer_was_master) {
            // Either the peer claims the VIP too and must hear at once that it lost, or it
            // just released it: in both cases clients may have the peer's MAC.
            self.actions.push_back(Action::Reannounce);
            if peer_is_master {
                self.send_heartbeat(now);
            }
        }
        if now >= self.next_heartbeat {
            self.send_heartbeat(now);
        }
    }

    /// The driver sent a heartbeat for this machine together with other VIPs' machines
    /// (one datagram carries every VIP): the next one is due one interval from now.
    pub fn heartbeat_sent(&mut self, now: Instant) {
        if self.shut_down {
            return;
        }
        let now = now.max(self.last_now);
        self.last_now = now;
        self.next_heartbeat = now + self.cfg.heartbeat_interval;
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next instant at which the driver must feed `Input::Tick`; `None` once shut down.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.shut_down {
            return None;
        }
        let mut next = self.next_heartbeat;
        if self.claim_after > self.last_now {
            next = next.min(self.claim_after);
        }
        if let Some(p) = self.peer_alive(self.last_now) {
            next = next.min(p.last_seen + self.dead_after());
        }
        Some(next)
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether local health is bad (advertised in heartbeats).
    pub fn faulty(&self) -> bool {
        !self.healthy
    }

    /// Whether the operator put this node in maintenance (advertised in heartbeats).
    pub fn in_maintenance(&self) -> bool {
        self.maintenance
    }

    pub fn peer(&self) -> Option<PeerStatus> {
        self.peer.clone()
    }

    /// Whether the peer counts as alive at `now` (heard within the dead interval, or
    /// the shorter one after a refusal, and not leaving).
    pub fn peer_is_alive(&self, now: Instant) -> bool {
        self.peer_alive(now).is_some()
    }

    /// Debug assertions of the module invariants, for tests and the simulation.
    pub fn check_invariants(&self) {
        let peer = self.peer_alive(self.last_now);
        debug_assert!(
            !(self.role == Role::Master && self.maintenance && peer.is_some()),
            "master in maintenance while the peer is alive"
        );
        debug_assert!(
            !(self.role == Role::Master && !self.healthy && peer.is_some_and(|p| p.serving())),
            "master while faulty and the peer is alive and serving"
        );
        debug_assert!(
            !(self.shut_down && self.role == Role::Master),
            "master after shutdown"
        );
        debug_assert!(
            self.shut_down || self.next_heartbeat > self.last_now,
            "heartbeat deadline in the past"
        );
        debug_assert!(self.actions.len() <= 8, "driver is not draining actions");
    }

    fn shut_down(&mut self) {
        if self.role == Role::Master {
            // VIP first, then tell the peer, so the two never hold it at once.
            self.role = Role::Backup;
            self.actions.push_back(Action::BecomeBackup);
        }
        self.actions.push_back(Action::SendHeartbeat {
            role: self.role,
            leaving: true,
        });
        self.shut_down = true;
    }

    fn send_heartbeat(&mut self, now: Instant) {
        self.actions.push_back(Action::SendHeartbeat {
            role: self.role,
            leaving: false,
        });
        self.next_heartbeat = now + self.cfg.heartbeat_interval;
    }

    /// How long the peer may stay silent before it is dead: `dead_interval`, or two
    /// heartbeat intervals once a refusal came in after its last heartbeat.
    fn dead_after(&self) -> std::time::Duration {
        if self.refused {
            (2 * self.cfg.heartbeat_interval).min(self.cfg.dead_interval)
        } else {
            self.cfg.dead_interval
        }
    }

    /// The peer, if it has been heard within [`Self::dead_after`] and has not left.
    fn peer_alive(&self, now: Instant) -> Option<&PeerStatus> {
        let dead_after = self.dead_after();
        self.peer
            .as_ref()
            .filter(|p| !p.leaving && now < p.last_seen + dead_after)
    }

    fn outranks(&self, p: &PeerStatus) -> bool {
        (self.cfg.priority, self.cfg.node_id.as_str()) > (p.priority, p.node_id.as_str())
    }

    fn desired_role(&self, now: Instant) -> Role {
        // What a node that does not hold the VIP is called.
        let idle = if !self.healthy || self.maintenance {
            Role::Fault
        } else {
            Role::Backup
        };
        let waited = now >= self.claim_after;
        let Some(peer) = self.peer_alive(now) else {
            // Alone: hold the VIP even when faulty or in maintenance, so that clients get
            // an answer (a fast 503 at worst) rather than a timeout.
            // A peer that was heard and then died (left, or silent after a refusal)
            // ends the start-up wait: the wait only exists to hear a live master.
            let heard = self.peer.is_some();
            return if waited || heard { Role::Master } else { idle };
        };
        let claim = if self.maintenance {
            false
        } else if peer.maintenance || (self.healthy && !peer.serving()) {
            true
        } else if !self.healthy && !peer.faulty {
            // The peer serves; a faulty node yields to it.
            false
        } else {
            // Both healthy, or both faulty: the same contest. The peer does not hold the
            // VIP when its role is backup or fault.
            match peer.role {
                Role::Master if self.role == Role::Master => self.outranks(peer),
                Role::Master => waited && self.cfg.preempt && self.outranks(peer),
                Role::Backup | Role::Fault => {
                    self.role == Role::Master || (waited && self.outranks(peer))
                }
            }
        };
        if claim {
            Role::Master
        } else {
            idle
        }
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
