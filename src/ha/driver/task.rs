//! The driver task: one loop that feeds the machine (datagrams, ticks, health,
//! maintenance, shutdown) and performs its actions in order (heartbeats, VIP, ARP
//! announcements, hooks, metrics, `/status`).
//!
//! Owns nothing that outlives the task; everything shared goes through `HaHandle`. See
//! the parent module for the ordering invariants and the peer-learning rule; tested by
//! `driver/tests.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::hook::Hooks;
use super::{DriverConfig, VipOps, ANNOUNCE_SPACING, LEAVING_COPIES, RECV_BUF};
use crate::ha::machine::{Action, HaMachine, Input, Role};
use crate::ha::wire::{self, Heartbeat, PeerFilter, Reject};
use crate::ha::HaStatus;
use crate::metrics;
use crate::reload::lock;

pub(super) struct Driver<V> {
    cfg: DriverConfig,
    machine: HaMachine,
    socket: UdpSocket,
    vip: Option<V>,
    /// `None` until the peer's id is learnt; then pinned (see the module docs).
    filter: Option<PeerFilter>,
    epoch: u64,
    seq: u64,
    /// The role last performed; `None` before the first action.
    role: Option<Role>,
    vip_held: bool,
    /// The gratuitous ARPs still to send; aborted when the VIP is given up.
    announcer: Option<JoinHandle<()>>,
    hooks: Hooks,
    status: Arc<Mutex<HaStatus>>,
    /// Reject kinds already logged at warn level (later ones go to debug: a flood of
    /// forged packets must not flood the log).
    warned: Vec<Reject>,
}

impl<V: VipOps> Driver<V> {
    pub(super) fn new(
        cfg: DriverConfig,
        socket: UdpSocket,
        vip: Option<V>,
        status: Arc<Mutex<HaStatus>>,
    ) -> Self {
        // The boot epoch: a restarted process must pick a higher one than its previous
        // run so the peer's replay filter lets its sequence start over.
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Driver {
            machine: HaMachine::new(cfg.machine.clone(), Instant::now()),
            hooks: Hooks::start(cfg.hook_timeout),
            cfg,
            socket,
            vip,
            filter: None,
            epoch,
            seq: 0,
            role: None,
            vip_held: false,
            announcer: None,
            status,
            warned: Vec::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut health: impl FnMut() -> bool + Send,
        mut maintenance: watch::Receiver<bool>,
        mut shutdown: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let mut healthy = health();
        if !healthy {
            self.machine
                .handle(Input::LocalHealth { healthy }, Instant::now());
        }
        let mut health_tick = tokio::time::interval(self.cfg.machine.heartbeat_interval);
        health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintenance_open = true;
        let mut buf = [0u8; RECV_BUF];
        loop {
            self.perform_all().await;
            let Some(deadline) = self.machine.poll_timeout() else {
                break;
            };
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, _from)) => self.on_datagram(buf.get(..n).unwrap_or_default()),
                    Err(e) => {
                        tracing::debug!("HA heartbeat receive error: {e}");
                        // A persistent error must not turn this loop into a spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                () = tokio::time::sleep_until(deadline) => {
                    self.machine.handle(Input::Tick, Instant::now());
                }
                _ = health_tick.tick() => {
                    let now_healthy = health();
                    if now_healthy != healthy {
                        healthy = now_healthy;
                        tracing::warn!(healthy, "HA: tracked upstream health changed");
                        self.machine.handle(Input::LocalHealth { healthy }, Instant::now());
                    }
                }
                r = maintenance.changed(), if maintenance_open => match r {
                    Ok(()) => {
                        let on = *maintenance.borrow_and_update();
                        tracing::info!(on, "HA maintenance switched");
                        lock(&self.status).maintenance = on;
                        self.machine.handle(Input::Maintenance(on), Instant::now());
                    }
                    Err(_) => maintenance_open = false,
                },
                reply = shutdown.recv() => {
                    tracing::info!("HA: shutting down, handing the VIP over");
                    self.machine.handle(Input::Shutdown, Instant::now());
                    self.perform_all().await;
                    if let Some(a) = self.announcer.take() {
                        a.abort();
                    }
                    let Driver { hooks, .. } = self;
                    hooks.finish(Duration::from_secs(2)).await;
                    if let Some(reply) = reply {
                        let _ = reply.send(());
                    }
                    return;
                }
            }
            self.update_status();
        }
    }

    fn on_datagram(&mut self, buf: &[u8]) {
        let hb = match wire::decode(buf, &self.cfg.key) {
            Ok(hb) => hb,
            Err(r) => return self.reject(r),
        };
        if hb.node_id == self.cfg.machine.node_id {
            return self.reject(Reject::UnknownNode);
        }
        let filter = self.filter.get_or_insert_with(|| {
            tracing::info!(peer = %hb.node_id, "HA: learnt the peer's node id (pinned until restart)");
            PeerFilter::new(&hb.node_id)
        });
        if let Err(r) = filter.accept(&hb) {
            return self.reject(r);
        }
        count("rx", "ok");
        let now = Instant::now();
        let dead_for = self.cfg.machine.dead_interval;
        let returning = self
            .machine
            .peer()
            .is_none_or(|p| p.leaving || now >= p.last_seen + dead_for);
        let was_master = self.machine.role() == Role::Master;
        self.machine.handle(Input::PeerHeartbeat(hb.view()), now);
        // A peer heard again after a silence may have held the VIP meanwhile (a healed
        // partition) and may already have stepped down on our heartbeat before we saw
        // one of its `master` heartbeats, in which case the machine sees no conflict and
        // emits no Reannounce. Clients may still have its MAC: announce once more.
        if returning && was_master && self.machine.role() == Role::Master {
            self.announce();
        }
    }

    fn reject(&mut self, r: Reject) {
        count("rx", r.label());
        if self.warned.contains(&r) {
            tracing::debug!("HA: dropped datagram: {r}");
        } else {
            self.warned.push(r);
            tracing::warn!("HA: dropped datagram: {r} (further ones logged at debug)");
        }
    }

    async fn perform_all(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            self.perform(action).await;
        }
        self.update_status();
    }

    async fn perform(&mut self, action: Action) {
        match action {
            Action::SendHeartbeat { role, leaving } => {
                let copies = if leaving { LEAVING_COPIES } else { 1 };
                for i in 0..copies {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    self.send_heartbeat(role, leaving).await;
                }
            }
            Action::BecomeMaster => {
                self.transition(Role::Master);
                if let Some(vip) = &self.vip {
                    match vip.add().await {
                        Ok(()) => self.vip_held = true,
                        Err(e) => vip_error("add", &e),
                    }
                }
                self.announce();
                self.hook(Role::Master);
            }
            Action::BecomeBackup | Action::BecomeFault => {
                let role = if action == Action::BecomeBackup {
                    Role::Backup
                } else {
                    Role::Fault
                };
                self.transition(role);
                if let Some(a) = self.announcer.take() {
                    a.abort();
                }
                if let Some(vip) = &self.vip {
                    match vip.remove().await {
                        Ok(()) => self.vip_held = false,
                        Err(e) => vip_error("remove", &e),
                    }
                }
                self.hook(role);
            }
            Action::Reannounce => {
                tracing::info!("HA: re-announcing the VIP (the peer held it too)");
                self.announce();
            }
        }
    }

    fn transition(&mut self, to: Role) {
        crate::audit::ha_transition(
            None,
            self.role,
            to,
            &self.machine,
            self.cfg.machine.dead_interval,
        );
        let m = metrics::global();
        m.ha_role.set(to.gauge());
        if self.role.is_some() {
            m.ha_transitions.with_label_values(&[to.label()]).inc();
            tracing::warn!(to = to.label(), "HA role change");
        } else {
            tracing::info!(role = to.label(), "HA: starting");
        }
        self.role = Some(to);
    }

    /// Sends the configured gratuitous ARPs: the first now (so it precedes the master
    /// hook), the others every [`ANNOUNCE_SPACING`] on a task of their own.
    fn announce(&mut self) {
        let Some(vip) = self.vip.clone() else { return };
        if let Some(a) = self.announcer.take() {
            a.abort();
        }
        let n = self.cfg.announcements;
        if n == 0 {
            return;
        }
        self.announcer = Some(tokio::spawn(async move {
            for i in 0..n {
                if i > 0 {
                    tokio::time::sleep(ANNOUNCE_SPACING).await;
                }
                if let Err(e) = vip.announce().await {
                    vip_error("arp", &e);
                }
            }
        }));
    }

    fn hook(&self, role: Role) {
        let n = &self.cfg.notify;
        let path = match role {
            Role::Master => &n.master,
            Role::Backup => &n.backup,
            Role::Fault => &n.fault,
        };
        if let Some(path) = path {
            self.hooks.run(path.clone(), role.label());
        }
    }

    async fn send_heartbeat(&mut self, role: Role, leaving: bool) {
        self.seq += 1;
        let hb = Heartbeat {
            node_id: self.cfg.machine.node_id.clone(),
            priority: self.cfg.machine.priority,
            role: role.into(),
            leaving,
            epoch: self.epoch,
            seq: self.seq,
        };
        let packet = wire::encode(&hb, &self.cfg.key);
        match self.socket.send_to(&packet, self.cfg.peer).await {
            Ok(_) => count("tx", "ok"),
            Err(e) => {
                count("tx", "error");
                tracing::debug!(peer = %self.cfg.peer, "HA heartbeat send failed: {e}");
            }
        }
    }

    fn update_status(&self) {
        let now = Instant::now();
        let peer = self.machine.peer();
        let mut s = lock(&self.status);
        s.role = self.machine.role().label();
        s.peer_role = peer.as_ref().map(|p| p.role.label());
        s.peer_last_seen_ms = peer.as_ref().map(|p| {
            u64::try_from(now.saturating_duration_since(p.last_seen).as_millis())
                .unwrap_or(u64::MAX)
        });
        s.vip_held = self.vip_held;
    }
}

fn vip_error(op: &str, e: &crate::ha::vip::VipError) {
    metrics::global()
        .ha_vip_errors
        .with_label_values(&[op])
        .inc();
    tracing::error!(op, "HA: VIP operation failed: {e}");
}

fn count(direction: &str, result: &str) {
    metrics::global()
        .ha_heartbeats
        .with_label_values(&[direction, result])
        .inc();
}
