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
use super::{HaHandle, HaStatus};
use crate::config::types::{Ha, Notify};
use crate::snapshot::SnapshotHandle;
use task::Driver;

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
    let driver = Driver::new(cfg, socket, vip, handle.status.clone());
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

#[cfg(test)]
mod tests;
