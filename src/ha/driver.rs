//! The HA driver: the async shell around one [`HaMachine`] per VIP. Owns the heartbeat
//! UDP sockets, the timers, the peer filter and every side effect (VIPs, announcements,
//! notify hooks, metrics, `/status`, runtime-state replication).
//!
//! Does not decide roles (the machines do) or talk netlink itself ([`VipOps`]). One
//! task on the control runtime runs the loop (`task.rs`): datagrams go decode ->
//! [`PeerFilter`] -> every VIP's machine (heartbeats) or the replica (state messages);
//! tracked-upstream health and the configuration hash are polled every heartbeat
//! interval; the maintenance switch of [`HaHandle`] is fed as `Maintenance`; actions are
//! performed in the order polled, and the heartbeats the machines ask for are sent as
//! one datagram carrying every VIP's role.
//!
//! Sockets: `ha.bind` receives (from anyone: forgeries are counted, not filtered by the
//! kernel); heartbeats leave through a second socket on the same IP, connected to the
//! peer, so that the kernel reports an ICMP port unreachable from the peer's host as
//! `ECONNREFUSED`, fed to the machines as the [`Input::PeerRefused`] hint.
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
//! hook and before the heartbeat that says so; on [`HaDriverHandle::shutdown`] every VIP
//! is removed before the `leaving` heartbeat (sent [`LEAVING_COPIES`] times) so the two
//! nodes never hold one at once. Heartbeats carry the boot epoch (wall-clock nanos at
//! start) and a sequence that increases with every packet. Tested on a paused clock in
//! `driver/tests.rs` (two drivers over loopback with fake VIPs) and end to end in
//! `tests/ha.rs`.
//!
//! [`Input::PeerRefused`]: super::machine::Input::PeerRefused

mod hook;
pub mod replicate;
mod task;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::machine::{MachineConfig, Role};
use super::vip::{VipControl, VipError};
use super::wire::{Key, KeyTooShort};
use super::{HaHandle, HaStatus, VipStatus};
use crate::config::types::{Ha, Notify};
use crate::snapshot::SnapshotHandle;
use crate::upstream::runtime::RuntimeStore;
use task::Driver;

/// Gap between two announcements (gratuitous ARP / neighbour advertisement) of a burst.
pub const ANNOUNCE_SPACING: Duration = Duration::from_millis(100);
/// The `leaving` heartbeat is sent this many times: one lost datagram must not cost the
/// peer a whole `dead_interval`.
pub const LEAVING_COPIES: u32 = 3;
/// Receive buffer; larger than any valid packet so oversized datagrams are seen whole.
const RECV_BUF: usize = 2048;

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
    /// One announcement (gratuitous ARP, or unsolicited neighbour advertisement).
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

/// One VIP's election settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VipConfig {
    /// `address/prefix`, for `/status`, logs, hooks and `tandem_ha_vip_held{vip}`.
    pub label: String,
    pub priority: u8,
    /// Announcements sent on takeover.
    pub announcements: u32,
}

/// What the driver needs besides the machine's own settings.
#[derive(Clone)]
pub struct DriverConfig {
    /// Node id, preemption and timings; its priority is used when `vips` is empty.
    pub machine: MachineConfig,
    /// One election per VIP, in configuration order; empty: one election without a VIP
    /// (only the notify hooks run).
    pub vips: Vec<VipConfig>,
    pub bind: SocketAddr,
    pub peer: SocketAddr,
    pub key: Key,
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
            vips: ha
                .vips
                .iter()
                .map(|v| VipConfig {
                    label: format!("{}/{}", v.address, v.prefix_len),
                    priority: v.priority.unwrap_or(ha.priority),
                    announcements: v.gratuitous_arp,
                })
                .collect(),
            bind: ha.bind,
            peer: ha.peer,
            key: Key::new(&ha.secret)?,
            notify: ha.notify.clone(),
            hook_timeout: hook::HOOK_TIMEOUT,
        })
    }

    /// The machine settings of election `i`.
    fn election(&self, i: usize) -> MachineConfig {
        let mut m = self.machine.clone();
        if let Some(v) = self.vips.get(i) {
            m.priority = v.priority;
        }
        m
    }

    fn elections(&self) -> usize {
        self.vips.len().max(1)
    }
}

/// What the driver reads from the rest of the process.
pub struct Sources {
    /// Whether every tracked upstream has a healthy server.
    pub health: Box<dyn FnMut() -> bool + Send>,
    /// The hash of the current traffic configuration (`drift::traffic_hash`).
    pub config_hash: Box<dyn FnMut() -> u64 + Send>,
    /// The operator's runtime server state, replicated to the peer.
    pub runtime: Option<RuntimeStore>,
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

    /// Stops the task dead, as SIGKILL would: no hand-over, sockets closed (tests).
    #[cfg(test)]
    pub fn kill(self) {
        self.task.abort();
    }

    /// SIGTERM: gives the VIPs up, tells the peer (`leaving`), lets queued hooks finish
    /// briefly and stops the driver. Call before draining the workers.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.shutdown.send(tx).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }
}

/// Starts the driver for `ha` with the real VIP control; tracked upstreams and the
/// traffic configuration are read from `snapshot`; `runtime` is replicated.
pub async fn start(
    ha: &Ha,
    snapshot: SnapshotHandle,
    runtime: RuntimeStore,
) -> Result<HaDriverHandle, HaError> {
    let cfg = DriverConfig::from_config(ha)?;
    let vips = ha
        .vips
        .iter()
        .map(|v| VipControl::new(v).map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    let tracked = ha.track_upstreams.clone();
    let snap = snapshot.clone();
    let health = move || {
        let snap = snap.load();
        tracked
            .iter()
            .all(|name| snap.upstream(name).is_some_and(|u| u.has_healthy()))
    };
    // Hashed once per configuration generation.
    let mut cached: Option<(u64, u64)> = None;
    let config_hash = move || {
        let snap = snapshot.load();
        match cached {
            Some((generation, hash)) if generation == snap.generation => hash,
            _ => {
                let hash = super::drift::traffic_hash(&snap.config);
                cached = Some((snap.generation, hash));
                hash
            }
        }
    };
    let sources = Sources {
        health: Box::new(health),
        config_hash: Box::new(config_hash),
        runtime: Some(runtime),
    };
    spawn_with(cfg, vips, sources).await
}

/// [`spawn_with`] for one VIP (or none), no drift hash and no replication: for tests.
pub async fn spawn<V: VipOps>(
    cfg: DriverConfig,
    vip: Option<V>,
    health: impl FnMut() -> bool + Send + 'static,
) -> Result<HaDriverHandle, HaError> {
    let sources = Sources {
        health: Box::new(health),
        config_hash: Box::new(|| 0),
        runtime: None,
    };
    spawn_with(cfg, vec![vip], sources).await
}

/// Binds the heartbeat socket and spawns the driver task. `vips[i]` is the control of
/// `cfg.vips[i]` (`None`: that election runs without touching an address).
pub async fn spawn_with<V: VipOps>(
    cfg: DriverConfig,
    vips: Vec<Option<V>>,
    sources: Sources,
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
        vip: cfg.vips.first().map(|v| v.label.clone()),
        vip_held: false,
        maintenance: false,
        faulty: false,
        vips: cfg
            .vips
            .iter()
            .map(|v| VipStatus {
                address: v.label.clone(),
                priority: v.priority,
                role: Role::Backup.label(),
                held: false,
                peer_role: None,
            })
            .collect(),
        config_hash: String::new(),
        peer_config_hash: None,
        config_in_sync: None,
    };
    let (maintenance, maintenance_rx) = watch::channel(false);
    let handle = HaHandle {
        status: Arc::new(Mutex::new(status)),
        maintenance,
    };
    let (shutdown, shutdown_rx) = mpsc::channel(1);
    let driver = Driver::new(cfg, socket, vips, handle.status.clone(), sources);
    let task = tokio::spawn(driver.run(maintenance_rx, shutdown_rx));
    Ok(HaDriverHandle {
        handle,
        shutdown,
        task,
    })
}

/// UDP socket on `addr` with `IP_FREEBIND`, so the driver can start before the address
/// is configured (the interface comes up late at boot).
fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = freebind_socket(addr)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// The socket heartbeats leave through: on `bind`'s IP (any port), connected to `peer`
/// so that ICMP port unreachable comes back as `ECONNREFUSED`.
fn connect(bind: SocketAddr, peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = freebind_socket(bind)?;
    socket.bind(&SocketAddr::new(bind.ip(), 0).into())?;
    socket.connect(&peer.into())?;
    UdpSocket::from_std(socket.into())
}

fn freebind_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv4() {
        socket.set_freebind(true)?;
    } else {
        socket.set_freebind_ipv6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests;
