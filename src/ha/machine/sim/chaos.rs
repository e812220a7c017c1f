//! The simulation's disturbances: network phases, health flaps, maintenance, crashes,
//! graceful shutdowns and the adversary. Each one moves the window start S (see `sim`).

use super::*;

impl Sim {
    pub(super) fn chaos(&mut self) {
        if self.now >= QUIET {
            return;
        }
        let node = self.rng.below(2) as usize;
        match self.rng.below(9) {
            0..=2 => {
                if self.rng.chance(0.5) {
                    self.set_net(0.0, [false, false]);
                } else {
                    let loss = self.rng.below(60) as f64 / 100.0;
                    let cut = [[false, false], [true, true], [true, false], [false, true]]
                        [self.rng.below(4) as usize];
                    self.set_net(loss, cut);
                }
            }
            3 => {
                // The shared backends go down: both nodes faulty at once, a third of the time.
                let both = self.rng.chance(0.33);
                let back = self.now + 50 * MS + self.rng.below(3_000 * MS);
                for i in 0..2 {
                    if i == node || both {
                        self.set_health(i, false);
                        self.push(back, Kind::HealthBack { node: i });
                    }
                }
            }
            4 => {
                let on = !self.nodes[node].as_ref().is_some_and(|n| n.maintenance);
                self.set_maintenance(node, on);
            }
            5 | 6 if self.nodes[node].is_some() => {
                self.window_start = self.now;
                if self.rng.chance(0.5) {
                    self.log(|| format!("{} shuts down", IDS[node]));
                    let was_master = self.masters().contains(&node);
                    self.feed(node, Input::Shutdown);
                    let peer_ready = self.nodes[1 - node]
                        .as_ref()
                        .is_some_and(|p| p.started + self.dead() <= self.now);
                    if was_master && peer_ready {
                        let since = self.now;
                        self.push(
                            since + DELTA,
                            Kind::HandoverDone {
                                node: 1 - node,
                                since,
                            },
                        );
                    }
                } else {
                    // Either the process dies (the host answers with refusals) or the host.
                    self.host_down[node] = self.rng.chance(0.5);
                    self.log(|| {
                        format!(
                            "{} crashes (host down: {})",
                            IDS[node], self.host_down[node]
                        )
                    });
                }
                self.nodes[node] = None;
                let back = self.now + 100 * MS + self.rng.below(3_000 * MS);
                self.push(back, Kind::Restart { node });
            }
            _ => self.adversary(),
        }
        let next = self.now + 100 * MS + self.rng.below(3_000 * MS);
        self.push(next, Kind::Chaos);
    }

    /// Garbage and wrongly keyed packets any time; replays only while the network is
    /// dirty, because a freshly restarted node has no replay state and would take one old
    /// packet as news (the same thing a late packet does, and the bounds allow for late
    /// packets only until δ after the window starts).
    pub(super) fn adversary(&mut self) {
        for to in 0..2 {
            let len = self.rng.below(wire::MAX_PACKET_LEN as u64 + 8) as usize;
            let junk: Vec<u8> = (0..len).map(|_| self.rng.byte()).collect();
            self.push(self.now, Kind::Deliver { to, bytes: junk });
            let forged = Heartbeat {
                node_id: IDS[1 - to].to_owned(),
                vips: vec![wire::VipState {
                    priority: 255,
                    role: wire::WireRole::Master,
                }],
                leaving: self.rng.chance(0.5),
                faulty: false,
                maintenance: false,
                config_hash: 0,
                epoch: u64::MAX,
                seq: u64::MAX,
            };
            let bytes = wire::encode(&forged, &self.forger);
            self.push(self.now, Kind::Deliver { to, bytes });
            // Forged refusals too; while heartbeats flow on a clean network they must not
            // matter, but with the simulation's delay jitter (3 H) two intervals of silence
            // happen between genuine heartbeats, so only while the network is dirty.
            if self.loss > 0.0 {
                self.push(self.now, Kind::Refused { node: to });
            }
            if self.loss > 0.0 && !self.captured.is_empty() {
                let i = self.rng.below(self.captured.len() as u64) as usize;
                let bytes = self.captured[i].clone();
                self.push(self.now, Kind::Deliver { to, bytes });
            }
        }
    }

    pub(super) fn set_net(&mut self, loss: f64, cut: [bool; 2]) {
        self.log(|| format!("network loss {loss} cut {cut:?}"));
        self.loss = loss;
        self.cut = cut;
        self.window_start = self.now;
    }

    pub(super) fn set_health(&mut self, node: usize, healthy: bool) {
        if self.healthy[node] != healthy {
            self.log(|| format!("{} healthy={healthy}", IDS[node]));
            self.healthy[node] = healthy;
            self.window_start = self.now;
            self.feed(node, Input::LocalHealth { healthy });
        }
    }

    pub(super) fn set_maintenance(&mut self, node: usize, on: bool) {
        if let Some(n) = self.nodes[node].as_mut() {
            n.maintenance = on;
            self.log(|| format!("{} maintenance={on}", IDS[node]));
            self.window_start = self.now;
            self.feed(node, Input::Maintenance(on));
        }
    }
}
