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
        let gave_up =
            n.m.peer()
                .is_some_and(|p| p.leaving || p.role == Role::Fault);
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
        if self.in_window() && self.both_serving() && fresh && peer_master && !preempting {
            self.fail(&format!(
                "{} took over from a healthy master without preemption",
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

    /// Running, healthy and out of maintenance.
    pub(super) fn serving(&self, i: usize) -> bool {
        self.healthy[i] && self.nodes[i].as_ref().is_some_and(|n| !n.maintenance)
    }

    pub(super) fn both_serving(&self) -> bool {
        self.serving(0) && self.serving(1)
    }

    pub(super) fn in_window(&self) -> bool {
        self.loss == 0.0 && self.cut == [false, false] && (self.serving(0) || self.serving(1))
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
        for &i in &masters {
            let maint = self.nodes[i].as_ref().is_some_and(|n| n.maintenance);
            if !self.healthy[i] || maint {
                self.fail(&format!(
                    "(ii) {} master while unhealthy or in maintenance",
                    IDS[i]
                ));
            }
        }
        if masters.len() == 2 {
            self.dual_since.get_or_insert(self.now);
        } else {
            self.dual_since = None;
        }
        let next = self.queue.peek().map_or(RUN, |Reverse(e)| e.t);
        let both_serving = self.both_serving();
        if !self.in_window() || next <= self.now {
            return;
        }
        let s = self.window_start;
        let bound = self.dead() + DELTA;
        self.stats.checked += 1;
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
        let winner = self.winner();
        if both_serving && self.cfgs[winner].preempt && next > s + bound && masters != [winner] {
            self.fail(&format!(
                "(i) preempting {} is not the only master",
                IDS[winner]
            ));
        }
        if let (Some(since), true) = (self.dual_since, both_serving) {
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
