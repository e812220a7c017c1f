//! The driver task: one loop that feeds every VIP's machine (datagrams, refusals, ticks,
//! health, maintenance, shutdown) and performs their actions in order (VIPs,
//! announcements, hooks, one combined heartbeat, metrics, `/status`), plus drift
//! reporting and runtime-state replication.
//!
//! Role-change side effects live in `task/effects.rs`, drift and replication in
//! `task/sync.rs`. Owns nothing that outlives the task; everything shared goes through
//! `HaHandle`. See
//! the parent module for the ordering invariants and the peer-learning rule; tested by
//! `driver/tests.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::hook::Hooks;
use super::replicate::{Replica, FULL_SYNC_EVERY};
use super::{DriverConfig, Sources, VipOps, LEAVING_COPIES, RECV_BUF};
use crate::ha::drift;
use crate::ha::machine::{Action, HaMachine, Input, Role};
use crate::ha::wire::{self, Heartbeat, Message, PeerFilter, Reject, VipState};
use crate::ha::HaStatus;
use crate::metrics;
use crate::reload::lock;
use effects::announce;

mod effects;
mod sync;

/// A peer of another wire version is logged at error level at most this often.
const BAD_VERSION_LOG_EVERY: Duration = Duration::from_secs(30);

/// One VIP's election: its machine and the side effects it owns.
struct Election<V> {
    machine: HaMachine,
    vip: Option<V>,
    /// `address/prefix`; `None` for the election of a pair without a VIP.
    label: Option<String>,
    announcements: u32,
    /// The role last performed; `None` before the first action.
    role: Option<Role>,
    held: bool,
    /// The announcements still to send; aborted when the VIP is given up.
    announcer: Option<JoinHandle<()>>,
    held_gauge: Option<IntGauge>,
}

pub(super) struct Driver<V> {
    cfg: DriverConfig,
    elections: Vec<Election<V>>,
    socket: UdpSocket,
    /// Connected to the peer: heartbeats leave here and refusals come back here. `None`
    /// until it can be created (no route to the peer yet); then `socket` sends.
    probe: Option<UdpSocket>,
    /// `None` until the peer's id is learnt; then pinned (see the module docs).
    filter: Option<PeerFilter>,
    epoch: u64,
    seq: u64,
    /// The peer's boot epoch as last heard, to see it restart.
    peer_epoch: Option<u64>,
    hooks: Hooks,
    status: Arc<Mutex<HaStatus>>,
    /// Reject kinds already logged at warn level (later ones go to debug: a flood of
    /// forged packets must not flood the log).
    warned: Vec<Reject>,
    bad_version_logged: Option<Instant>,
    health: Box<dyn FnMut() -> bool + Send>,
    config_hash_of: Box<dyn FnMut() -> u64 + Send>,
    config_hash: u64,
    peer_hash: Option<u64>,
    /// Drift as last reported (one log line per change).
    in_sync: Option<bool>,
    replica: Option<Replica>,
    next_full_sync: Instant,
}

impl<V: VipOps> Driver<V> {
    pub(super) fn new(
        cfg: DriverConfig,
        socket: UdpSocket,
        vips: Vec<Option<V>>,
        status: Arc<Mutex<HaStatus>>,
        mut sources: Sources,
    ) -> Self {
        // The boot epoch: a restarted process must pick a higher one than its previous
        // run so the peer's replay filter lets its sequence start over.
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let now = Instant::now();
        let mut vips = vips.into_iter();
        let elections = (0..cfg.elections())
            .map(|i| {
                let vc = cfg.vips.get(i);
                let label = vc.map(|v| v.label.clone());
                Election {
                    machine: HaMachine::new(cfg.election(i), now),
                    vip: vips.next().flatten(),
                    held_gauge: label.as_ref().map(|l| {
                        metrics::global()
                            .ha_vip_held
                            .with_label_values(&[l.as_str()])
                    }),
                    label,
                    announcements: vc.map_or(0, |v| v.announcements),
                    role: None,
                    held: false,
                    announcer: None,
                }
            })
            .collect();
        let probe = super::connect(cfg.bind, cfg.peer)
            .map_err(
                |e| tracing::warn!(peer = %cfg.peer, "HA: no connected heartbeat socket yet: {e}"),
            )
            .ok();
        let config_hash = (sources.config_hash)();
        metrics::global().ha_config_in_sync.set(1);
        Driver {
            hooks: Hooks::start(cfg.hook_timeout),
            elections,
            socket,
            probe,
            filter: None,
            epoch,
            seq: 0,
            peer_epoch: None,
            status,
            warned: Vec::new(),
            bad_version_logged: None,
            health: sources.health,
            config_hash_of: sources.config_hash,
            config_hash,
            peer_hash: None,
            in_sync: None,
            replica: sources.runtime.map(Replica::new),
            next_full_sync: now + FULL_SYNC_EVERY,
            cfg,
        }
    }

    pub(super) async fn run(
        mut self,
        mut maintenance: watch::Receiver<bool>,
        mut shutdown: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let mut healthy = (self.health)();
        if !healthy {
            self.feed_all(Input::LocalHealth { healthy });
        }
        let mut health_tick = tokio::time::interval(self.cfg.machine.heartbeat_interval);
        health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintenance_open = true;
        let mut runtime = self.replica.as_ref().map(|r| r.store.subscribe());
        let mut buf = vec![0u8; RECV_BUF];
        let mut probe_buf = [0u8; 64];
        loop {
            self.perform_all().await;
            let Some(deadline) = self
                .elections
                .iter()
                .filter_map(|e| e.machine.poll_timeout())
                .min()
            else {
                break;
            };
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, _from)) => self.on_datagram(buf.get(..n).unwrap_or_default()).await,
                    Err(e) => {
                        tracing::debug!("HA heartbeat receive error: {e}");
                        // A persistent error must not turn this loop into a spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                r = recv_probe(self.probe.as_ref(), &mut probe_buf) => self.on_probe(r).await,
                () = tokio::time::sleep_until(deadline) => self.feed_all(Input::Tick),
                _ = health_tick.tick() => {
                    let now_healthy = (self.health)();
                    if now_healthy != healthy {
                        healthy = now_healthy;
                        tracing::warn!(healthy, "HA: tracked upstream health changed");
                        self.feed_all(Input::LocalHealth { healthy });
                    }
                    let hash = (self.config_hash_of)();
                    if hash != self.config_hash {
                        self.config_hash = hash;
                        self.check_drift();
                    }
                    if Instant::now() >= self.next_full_sync {
                        self.full_sync().await;
                    }
                }
                r = changed(runtime.as_mut()) => match r {
                    Ok(()) => self.send_changes().await,
                    Err(_) => runtime = None,
                },
                r = maintenance.changed(), if maintenance_open => match r {
                    Ok(()) => {
                        let on = *maintenance.borrow_and_update();
                        tracing::info!(on, "HA maintenance switched");
                        lock(&self.status).maintenance = on;
                        self.feed_all(Input::Maintenance(on));
                    }
                    Err(_) => maintenance_open = false,
                },
                reply = shutdown.recv() => {
                    tracing::info!("HA: shutting down, handing the VIPs over");
                    self.feed_all(Input::Shutdown);
                    self.perform_all().await;
                    for e in &mut self.elections {
                        if let Some(a) = e.announcer.take() {
                            a.abort();
                        }
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

    fn feed_all(&mut self, input: Input) {
        let now = Instant::now();
        for e in &mut self.elections {
            e.machine.handle(input.clone(), now);
        }
    }

    async fn on_probe(&mut self, r: std::io::Result<usize>) {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                count("rx", "refused");
                tracing::debug!(
                    "HA: heartbeat refused by the peer's host (its tandem is not running)"
                );
                self.feed_all(Input::PeerRefused);
            }
            // Nothing is sent to this socket; anything else is noise.
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("HA: connected heartbeat socket error: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn on_datagram(&mut self, buf: &[u8]) {
        let msg = match wire::decode(buf, &self.cfg.key) {
            Ok(m) => m,
            Err(r) => return self.reject(r),
        };
        let node_id = match &msg {
            Message::Heartbeat(hb) => &hb.node_id,
            Message::State(st) => &st.node_id,
        };
        if *node_id == self.cfg.machine.node_id {
            return self.reject(Reject::UnknownNode);
        }
        let filter = self.filter.get_or_insert_with(|| {
            tracing::info!(peer = %node_id, "HA: learnt the peer's node id (pinned until restart)");
            PeerFilter::new(node_id)
        });
        match msg {
            Message::Heartbeat(hb) => {
                if let Err(r) = filter.accept(&hb) {
                    return self.reject(r);
                }
                count("rx", "ok");
                self.on_heartbeat(hb).await;
            }
            Message::State(st) => {
                if let Err(r) = filter.accept_state(&st) {
                    return self.reject(r);
                }
                self.on_state(&st);
            }
        }
    }

    async fn on_heartbeat(&mut self, hb: Heartbeat) {
        let now = Instant::now();
        let restarted = self.peer_epoch.is_some_and(|e| e != hb.epoch);
        self.peer_epoch = Some(hb.epoch);
        let mut returning_any = false;
        for (i, e) in self.elections.iter_mut().enumerate() {
            let returning = !e.machine.peer_is_alive(now);
            returning_any |= returning;
            let was_master = e.machine.role() == Role::Master;
            e.machine.handle(Input::PeerHeartbeat(hb.view(i)), now);
            // A peer heard again after a silence may have held the VIP meanwhile (a
            // healed partition) and may already have stepped down on our heartbeat
            // before we saw one of its `master` heartbeats, in which case the machine
            // sees no conflict and emits no Reannounce. Clients may still have its MAC.
            if returning && was_master && e.machine.role() == Role::Master {
                announce(e);
            }
        }
        if self.peer_hash != Some(hb.config_hash) {
            self.peer_hash = Some(hb.config_hash);
            self.check_drift();
        }
        // The peer (re)appeared: tell it everything the operator set here.
        if (returning_any || restarted) && !hb.leaving {
            self.full_sync().await;
        }
    }

    fn reject(&mut self, r: Reject) {
        count("rx", r.label());
        if r == Reject::BadVersion {
            // Loud, but not once per heartbeat.
            let now = Instant::now();
            if self
                .bad_version_logged
                .is_none_or(|t| now >= t + BAD_VERSION_LOG_EVERY)
            {
                self.bad_version_logged = Some(now);
                tracing::error!(
                    "HA: the peer speaks another heartbeat wire version (this build speaks {}); \
                     its packets are refused and it counts as dead: run one tandem version on \
                     both nodes",
                    wire::VERSION
                );
            }
            return;
        }
        if self.warned.contains(&r) {
            tracing::debug!("HA: dropped datagram: {r}");
        } else {
            self.warned.push(r);
            tracing::warn!("HA: dropped datagram: {r} (further ones logged at debug)");
        }
    }

    async fn perform_all(&mut self) {
        let mut heartbeat = None::<bool>;
        for i in 0..self.elections.len() {
            while let Some(action) = self
                .elections
                .get_mut(i)
                .and_then(|e| e.machine.poll_action())
            {
                match action {
                    // One datagram for every VIP, after every VIP change of this round.
                    Action::SendHeartbeat { leaving, .. } => {
                        heartbeat = Some(heartbeat.unwrap_or(false) || leaving);
                    }
                    other => self.perform(i, other).await,
                }
            }
        }
        if let Some(leaving) = heartbeat {
            let copies = if leaving { LEAVING_COPIES } else { 1 };
            for c in 0..copies {
                if c > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                self.send_heartbeat(leaving).await;
            }
            let now = Instant::now();
            for e in &mut self.elections {
                e.machine.heartbeat_sent(now);
            }
        }
        self.update_status();
    }

    /// The node's role as one value: master if it holds any VIP, else fault or backup.
    fn node_role(&self) -> Role {
        let roles = || self.elections.iter().map(|e| e.machine.role());
        if roles().any(|r| r == Role::Master) {
            Role::Master
        } else if roles().any(|r| r == Role::Fault) {
            Role::Fault
        } else {
            Role::Backup
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    async fn send_heartbeat(&mut self, leaving: bool) {
        let first = self.elections.first().map(|e| &e.machine);
        let hb = Heartbeat {
            node_id: self.cfg.machine.node_id.clone(),
            leaving,
            faulty: first.is_some_and(HaMachine::faulty),
            maintenance: first.is_some_and(HaMachine::in_maintenance),
            config_hash: self.config_hash,
            vips: self
                .elections
                .iter()
                .enumerate()
                .map(|(i, e)| VipState {
                    priority: self.cfg.election(i).priority,
                    role: e.machine.role().into(),
                })
                .collect(),
            epoch: self.epoch,
            seq: self.next_seq(),
        };
        let packet = wire::encode(&hb, &self.cfg.key);
        self.send(&packet).await;
    }

    async fn send(&mut self, packet: &[u8]) {
        if self.probe.is_none() {
            self.probe = super::connect(self.cfg.bind, self.cfg.peer).ok();
        }
        let sent = match &self.probe {
            Some(p) => p.send(packet).await,
            None => self.socket.send_to(packet, self.cfg.peer).await,
        };
        match sent {
            Ok(_) => count("tx", "ok"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // A refusal reported on send: the same hint as on receive.
                count("tx", "error");
                count("rx", "refused");
                self.feed_all(Input::PeerRefused);
            }
            Err(e) => {
                count("tx", "error");
                tracing::debug!(peer = %self.cfg.peer, "HA heartbeat send failed: {e}");
            }
        }
    }

    fn update_status(&self) {
        let now = Instant::now();
        let first = self.elections.first().map(|e| &e.machine);
        let peer = first.and_then(HaMachine::peer);
        let peer_role = |r: Role| r.label();
        let mut s = lock(&self.status);
        s.role = self.node_role().label();
        s.peer_role = peer.as_ref().map(|_| {
            let roles: Vec<Role> = self
                .elections
                .iter()
                .filter_map(|e| e.machine.peer().map(|p| p.role))
                .collect();
            if roles.contains(&Role::Master) {
                peer_role(Role::Master)
            } else if roles.contains(&Role::Fault) {
                peer_role(Role::Fault)
            } else {
                peer_role(Role::Backup)
            }
        });
        s.peer_last_seen_ms = peer.as_ref().map(|p| {
            u64::try_from(now.saturating_duration_since(p.last_seen).as_millis())
                .unwrap_or(u64::MAX)
        });
        s.vip_held = self.elections.first().is_some_and(|e| e.held);
        s.faulty = first.is_some_and(HaMachine::faulty);
        for (v, e) in s.vips.iter_mut().zip(&self.elections) {
            v.role = e.machine.role().label();
            v.held = e.held;
            v.peer_role = e.machine.peer().map(|p| p.role.label());
        }
        s.config_hash = drift::hex(self.config_hash);
        s.peer_config_hash = self.peer_hash.map(drift::hex);
        s.config_in_sync = self.in_sync;
    }
}

/// Receives on the connected socket, or never when there is none.
async fn recv_probe(probe: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<usize> {
    match probe {
        Some(p) => p.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// The next runtime-store change, or never without replication.
async fn changed(rx: Option<&mut watch::Receiver<u64>>) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

fn count(direction: &str, result: &str) {
    metrics::global()
        .ha_heartbeats
        .with_label_values(&[direction, result])
        .inc();
}
