//! The simulation's assertions (see the list in `sim`), run after every event and on
//! every role change.

use super::*;

impl Sim {
    /// Checks on each role change, for the state just before it.
    pub(super) fn transition(&mut self, node: usize, action: Action) {
        if action == Action::Reannounce {
            return;
        }
        let s = self.window_start;
        if self.in_window() && self.now > s + self.dead() + DELTA {
            self.fail(&format!(
                "{} {action:?} in a window that had settled",
                IDS[node]
            ));
        }
        if action != Action::BecomeMaster {
            return;
        }
        self.stats.takeovers += 1;
        let Some(n) = self.nodes[node].as_ref() else {
            return;
        };
        let now = self.instant();
        let gave_up =
            n.m.peer()
                .is_some_and(|p| p.leaving || p.role == Role::Fault || p.faulty || p.maintenance)
                || (n.m.peer().is_some() && !n.m.peer_is_alive(now));
        if self.now < n.started + self.dead() && !gave_up {
            self.fail(&format!(
                "{} claimed master during its start-up wait",
                IDS[node]
            ));
        }
        // From S + H + 2δ on, views reflect the peer's role after its last possible claim,
        // so taking over from a running master can only be a preemption by the winner.
        let peer_master = self.nodes[1 - node]
            .as_ref()
            .is_some_and(|p| p.m.role() == Role::Master);
        let preempting = node == self.winner() && self.cfgs[node].preempt;
        let fresh = self.now >= s + H + 2 * DELTA;
        let same_class = self.class(0).is_some() && self.class(0) == self.class(1);
        if self.in_window() && same_class && fresh && peer_master && !preempting {
            self.fail(&format!(
                "{} took over from a master of its own class without preemption",
                IDS[node]
            ));
        }
    }

    pub(super) fn winner(&self) -> usize {
        if (self.cfgs[0].priority, IDS[0]) > (self.cfgs[1].priority, IDS[1]) {
            0
        } else {
            1
        }
    }

    /// A running node's standing: 2 serving, 1 faulty, 0 in maintenance.
    pub(super) fn class(&self, i: usize) -> Option<u8> {
        let n = self.nodes[i].as_ref()?;
        Some(if n.maintenance {
            0
        } else if self.healthy[i] {
            2
        } else {
            1
        })
    }

    /// The node that must hold the VIP once a window has settled, if the rules name one
    /// (two nodes of one class where the winner does not preempt: either may).
    pub(super) fn expected(&self) -> Option<usize> {
        match (self.class(0), self.class(1)) {
            (Some(_), None) => Some(0),
            (None, Some(_)) => Some(1),
            (Some(a), Some(b)) if a != b => Some(if a > b { 0 } else { 1 }),
            (Some(_), Some(_)) if self.cfgs[self.winner()].preempt => Some(self.winner()),
            _ => None,
        }
    }

    /// A clean network and someone who should hold the VIP: a node runs, and not both
    /// running nodes are in maintenance.
    pub(super) fn in_window(&self) -> bool {
        let holder = match (self.class(0), self.class(1)) {
            (None, None) => false,
            (Some(a), Some(b)) => a > 0 || b > 0,
            _ => true,
        };
        self.loss == 0.0 && self.cut == [false, false] && holder
    }

    pub(super) fn masters(&self) -> Vec<usize> {
        (0..2)
            .filter(|&i| {
                self.nodes[i]
                    .as_ref()
                    .is_some_and(|n| n.m.role() == Role::Master)
            })
            .collect()
    }

    pub(super) fn check(&mut self) {
        let masters = self.masters();
        if masters.len() == 2 {
            self.dual_since.get_or_insert(self.now);
        } else {
            self.dual_since = None;
        }
        let next = self.queue.peek().map_or(RUN, |Reverse(e)| e.t);
        let both_running = self.nodes.iter().all(Option::is_some);
        if !self.in_window() || next <= self.now {
            return;
        }
        let s = self.window_start;
        let bound = self.dead() + DELTA;
        self.stats.checked += 1;
        if self.class(0) == Some(1) && self.class(1) == Some(1) {
            self.stats.double_faults += 1;
        }
        // (ii) once views are fresh: no master in maintenance beside a running peer, no
        // faulty master beside a serving one.
        if next > s + H + 2 * DELTA {
            for &i in &masters {
                let peer = self.class(1 - i);
                if (self.class(i) == Some(0) && peer.is_some())
                    || (self.class(i) == Some(1) && peer == Some(2))
                {
                    self.fail(&format!(
                        "(ii) {} master while faulty or in maintenance beside a better peer",
                        IDS[i]
                    ));
                }
            }
        }
        if masters.len() != 1 {
            self.stats.worst_convergence = self.stats.worst_convergence.max(next - s);
            if next > s + bound {
                self.fail(&format!(
                    "(i) masters {masters:?} {}ms after the window opened (bound {}ms)",
                    (next - s) / MS,
                    bound / MS
                ));
            }
        }
        if let Some(e) = self.expected() {
            if next > s + bound && masters != [e] {
                self.fail(&format!(
                    "(i) {} should be the only master, masters {masters:?}",
                    IDS[e]
                ));
            }
        }
        if let (Some(since), true) = (self.dual_since, both_running) {
            let overlap = next - since.max(s);
            self.stats.worst_dual = self.stats.worst_dual.max(overlap);
            if overlap > H + DELTA {
                self.fail(&format!(
                    "(iii) two masters for {}ms in a window",
                    overlap / MS
                ));
            }
            // Once views are fresh, a second master can only be a takeover that was
            // announced at once, so the loser hears of it within δ.
            if since >= s + H + DELTA && next - since > DELTA {
                self.fail(&format!(
                    "(iii) takeover overlap of {}ms",
                    (next - since) / MS
                ));
            }
        }
    }
}
