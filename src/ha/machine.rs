//! The HA role state machine: decides from heartbeats, local health and time whether this
//! node is backup, master or fault, and when to send heartbeats.
//!
//! Owns the role rules (docs/ha.md). It is sans-io: no sockets, no clock reads, no VIP. The
//! driver feeds [`Input`]s with the current instant, performs every [`Action`] from
//! [`HaMachine::poll_action`] in order, and feeds [`Input::Tick`] at
//! [`HaMachine::poll_timeout`]. Only authenticated, non-replayed heartbeats (see
//! `wire::PeerFilter`) may be fed as [`Input::PeerHeartbeat`].
//!
//! Rules, with rank = (priority, node_id) compared lexicographically:
//! - Fault while local health is bad or in maintenance; the VIP is given up.
//! - Otherwise master when the peer is dead (no heartbeat for `dead_interval`), has left
//!   (a `leaving` heartbeat), is faulty, or is a backup we outrank; or when the peer is
//!   master, we outrank it and *our* `preempt` is set. Preemption is a property of the node
//!   that takes over: a master never yields to a backup, it only loses a two-master
//!   conflict. Equal priorities are ordered by node id, so with `preempt: true` the higher
//!   id takes over; set `preempt: false` on both to avoid that.
//! - Two masters that hear each other: the lower rank steps down on receipt, whatever its
//!   preempt setting; the higher one emits [`Action::Reannounce`].
//! - A new machine is backup and claims master only after one `dead_interval`, so it hears
//!   an existing master first; the wait is cut short only by a heartbeat that shows the
//!   peer will not serve (fault or leaving).
//! - Heartbeats every `heartbeat_interval` and at once on every role change.
//!
//! Invariants (`check_invariants`): never master while unhealthy or in maintenance; inert
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
    pub last_seen: Instant,
}

#[derive(Debug)]
pub struct HaMachine {
    cfg: MachineConfig,
    role: Role,
    /// End of the start-up wait; before it this node claims master only if the peer has
    /// shown it will not serve.
    claim_after: Instant,
    peer: Option<PeerStatus>,
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
                self.peer = Some(PeerStatus {
                    node_id: view.node_id,
                    priority: view.priority,
                    role: view.role,
                    leaving: view.leaving,
                    last_seen: now,
                });
            }
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
            next = next.min(p.last_seen + self.cfg.dead_interval);
        }
        Some(next)
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn peer(&self) -> Option<PeerStatus> {
        self.peer.clone()
    }

    /// Debug assertions of the module invariants, for tests and the simulation.
    pub fn check_invariants(&self) {
        debug_assert!(
            !(self.role == Role::Master && (!self.healthy || self.maintenance)),
            "master while unhealthy or in maintenance"
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

    /// The peer, if it has been heard within `dead_interval` and has not left.
    fn peer_alive(&self, now: Instant) -> Option<&PeerStatus> {
        self.peer
            .as_ref()
            .filter(|p| !p.leaving && now < p.last_seen + self.cfg.dead_interval)
    }

    fn outranks(&self, p: &PeerStatus) -> bool {
        (self.cfg.priority, self.cfg.node_id.as_str()) > (p.priority, p.node_id.as_str())
    }

    fn desired_role(&self, now: Instant) -> Role {
        if !self.healthy || self.maintenance {
            return Role::Fault;
        }
        let waited = now >= self.claim_after;
        let Some(peer) = self.peer_alive(now) else {
            let left = self.peer.as_ref().is_some_and(|p| p.leaving);
            return if waited || left {
                Role::Master
            } else {
                Role::Backup
            };
        };
        let claim = match peer.role {
            Role::Fault => true,
            Role::Backup => self.role == Role::Master || (waited && self.outranks(peer)),
            Role::Master if self.role == Role::Master => self.outranks(peer),
            Role::Master => waited && self.cfg.preempt && self.outranks(peer),
        };
        if claim {
            Role::Master
        } else {
            Role::Backup
        }
    }
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
