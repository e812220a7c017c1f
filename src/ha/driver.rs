//! The HA driver: the async shell around [`HaMachine`]. Owns the heartbeat UDP socket,
//! the timers, the peer filter and every side effect (VIP, gratuitous ARP, notify hooks,
//! metrics, `/status`).
//!
//! Does not decide roles (the machine does) or talk netlink itself ([`VipOps`]). One
//! task on the control runtime runs [`Driver::run`]: datagrams go decode ->
//! [`PeerFilter`] -> machine; tracked-upstream health is polled every heartbeat interval
//! and fed as `LocalHealth`; the maintenance switch of [`HaHandle`] is fed as
//! `Maintenance`; actions are performed in the order polled.
//!
//! Peer learning: the config names the peer's address but not its node id, so the first
//! heartbeat that authenticates and does not carry our own id (our own packets reflected
//! back are `unknown_node`) pins the peer's id for the life of the process; a different id
//! later is `unknown_node`. Only a holder of the shared key can be learnt, and a pair
//! whose peer is renamed needs a restart of this node.
//!
//! Ordering invariants: becoming master adds the VIP, sends the first announcement, then
//! queues the master hook (the other announcements follow every [`ANNOUNCE_SPACING`]);
//! becoming backup or fault stops pending announcements and removes the VIP before its
//! hook; on [`HaDriverHandle::shutdown`] the VIP is removed before the `leaving`
//! heartbeat (sent [`LEAVING_COPIES`] times) so the two nodes never hold it at once.
//! Heartbeats carry the boot epoch (wall-clock nanos at start) and a sequence that
//! increases with every packet. Tested on a paused clock in `driver/tests.rs` (two
//! drivers over loopback with a fake VIP) and end to end in `tests/ha.rs`.

mod hook;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::machine::{Action, HaMachine, Input, MachineConfig, Role};
use super::vip::{VipControl, VipError};
use super::wire::{self, Heartbeat, Key, KeyTooShort, PeerFilter, Reject};
use super::{HaHandle, HaStatus};
use crate::config::types::{Ha, Notify};
use crate::metrics;
use crate::reload::lock;
use crate::snapshot::SnapshotHandle;
use hook::Hooks;

/// Gap between two gratuitous ARPs of one announcement burst.
pub const ANNOUNCE_SPACING: Duration = Duration::from_millis(100);
/// The `leaving` heartbeat is sent this many times: one lost datagram must not cost the
/// peer a whole `dead_interval`.
pub const LEAVING_COPIES: u32 = 3;
/// Receive buffer; larger than any valid heartbeat so oversized datagrams are seen whole.
const RECV_BUF: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("ha.bind: cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ha.secret_file: {0}")]
    Key(#[from] KeyTooShort),
    #[error("ha.vip: {0}")]
    Vip(#[from] VipError),
}

/// The VIP side effects, a trait so that driver tests run without root.
pub trait VipOps: Clone + Send + Sync + 'static {
    fn add(&self) -> impl std::future::Future<Output = Result<(), VipError>> + Send;
    fn remove(&self) -> impl std::future::Future<Output = Result<(), VipError>> + Send;
    /// One gratuitous ARP.
    fn announce(&self) -> impl std::future::Future<Output = Result<(), VipError>> + Send;
}

impl VipOps for VipControl {
    async fn add(&self) -> Result<(), VipError> {
        VipControl::add(self).await
    }
    async fn remove(&self) -> Result<(), VipError> {
        VipControl::remove(self).await
    }
    async fn announce(&self) -> Result<(), VipError> {
        VipControl::announce(self).await
    }
}

/// What the driver needs besides the machine's own settings.
#[derive(Clone)]
pub struct DriverConfig {
    pub machine: MachineConfig,
    pub bind: SocketAddr,
    pub peer: SocketAddr,
    pub key: Key,
    /// `ha.vip.gratuitous_arp`.
    pub announcements: u32,
    /// `address/prefix` for `/status`.
    pub vip_label: Option<String>,
    pub notify: Notify,
    pub hook_timeout: Duration,
}

impl DriverConfig {
    pub fn from_config(ha: &Ha) -> Result<Self, HaError> {
        Ok(DriverConfig {
            machine: MachineConfig {
                node_id: ha.node_id.clone(),
                priority: ha.priority,
                preempt: ha.preempt,
                heartbeat_interval: ha.heartbeat_interval,
                dead_interval: ha.dead_interval,
            },
            bind: ha.bind,
            peer: ha.peer,
            key: Key::new(&ha.secret)?,
            announcements: ha.vip.as_ref().map_or(0, |v| v.gratuitous_arp),
            vip_label: ha
                .vip
                .as_ref()
                .map(|v| format!("{}/{}", v.address, v.prefix_len)),
            notify: ha.notify.clone(),
            hook_timeout: hook::HOOK_TIMEOUT,
        })
    }
}

/// The running driver: its status for the admin API and the way to stop it.
pub struct HaDriverHandle {
    handle: HaHandle,
    shutdown: mpsc::Sender<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HaDriverHandle {
    /// The status and maintenance switch, for `AdminContext::ha`.
    pub fn handle(&self) -> HaHandle {
        self.handle.clone()
    }

    /// SIGTERM: gives the VIP up, tells the peer (`leaving`), lets queued hooks finish
    /// briefly and stops the driver. Call before draining the workers.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.shutdown.send(tx).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }
}

/// Starts the driver for `ha` with the real VIP control; tracked upstreams are read from
/// `snapshot`.
pub async fn start(ha: &Ha, snapshot: SnapshotHandle) -> Result<HaDriverHandle, HaError> {
    let cfg = DriverConfig::from_config(ha)?;
    let vip = ha.vip.as_ref().map(VipControl::new).transpose()?;
    let tracked = ha.track_upstreams.clone();
    let health = move || {
        let snap = snapshot.load();
        tracked
            .iter()
            .all(|name| snap.upstream(name).is_some_and(|u| u.has_healthy()))
    };
    spawn(cfg, vip, health).await
}

/// Binds the heartbeat socket and spawns the driver task.
pub async fn spawn<V: VipOps>(
    cfg: DriverConfig,
    vip: Option<V>,
    health: impl FnMut() -> bool + Send + 'static,
) -> Result<HaDriverHandle, HaError> {
    let socket = bind(cfg.bind).map_err(|source| HaError::Bind {
        addr: cfg.bind,
        source,
    })?;
    let status = HaStatus {
        node_id: cfg.machine.node_id.clone(),
        role: Role::Backup.label(),
        peer_role: None,
        peer_last_seen_ms: None,
        vip: cfg.vip_label.clone(),
        vip_held: false,
        maintenance: false,
    };
    let (maintenance, maintenance_rx) = watch::channel(false);
    let handle = HaHandle {
        status: Arc::new(Mutex::new(status)),
        maintenance,
    };
    let (shutdown, shutdown_rx) = mpsc::channel(1);
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let driver = Driver {
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
        status: handle.status.clone(),
        warned: Vec::new(),
    };
    let task = tokio::spawn(driver.run(health, maintenance_rx, shutdown_rx));
    Ok(HaDriverHandle {
        handle,
        shutdown,
        task,
    })
}

/// UDP socket on `addr` with `IP_FREEBIND`, so the driver can start before the address
/// is configured (the interface comes up late at boot).
fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv4() {
        socket.set_freebind(true)?;
    } else {
        socket.set_freebind_ipv6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

struct Driver<V> {
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
    async fn run(
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
                    Err(e) => tracing::debug!("HA heartbeat receive error: {e}"),
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
                        Err(e) => tracing::error!("HA: cannot add the VIP: {e}"),
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
                        Err(e) => tracing::error!("HA: cannot remove the VIP: {e}"),
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
                    tracing::error!("HA: gratuitous ARP failed: {e}");
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

fn count(direction: &str, result: &str) {
    metrics::global()
        .ha_heartbeats
        .with_label_values(&[direction, result])
        .inc();
}

#[cfg(test)]
mod tests;
