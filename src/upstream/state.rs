//! Per-server runtime state shared by every worker thread.
//!
//! A [`ServerState`] is created once per (upstream, address) and reused by every
//! snapshot that still lists that server, so health, breaker state, in-flight
//! counts and latency estimates survive reloads. All fields are atomics (or the
//! breaker's own lock-free-on-success state); the request path never locks here.
//! The resolved socket addresses live in a small `ArcSwap`, written only by the
//! resolver task and independent of the config snapshot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::breaker::{BreakerConfig, BreakerState};
use super::ewma::EwmaState;
use super::runtime::AdminState;
use super::ServerKey;
use crate::metrics::ServerMetrics;

/// `weight_override` value meaning "no override".
const NO_OVERRIDE: u32 = u32::MAX;

/// Live state of one server of one upstream.
pub struct ServerState {
    /// Process-unique id: the key of this server in each thread's pool.
    pub id: u64,
    /// Stable identity across reloads.
    pub key: ServerKey,
    /// Addresses the server's host resolved to (one for an IP literal).
    /// Empty until the first resolution succeeds for a host name.
    addrs: ArcSwap<Vec<SocketAddr>>,
    /// Round-robin cursor over `addrs` so multi-address names spread.
    addr_cursor: AtomicU64,
    /// Result of active health checks; true until probes say otherwise.
    healthy: AtomicBool,
    /// Requests in flight (for least_connections, random_two, /status).
    active: AtomicU64,
    /// The operator's [`AdminState`] as its `u8`, applied from the
    /// [`super::runtime::RuntimeStore`] (the one place it is kept).
    admin: AtomicU8,
    /// The operator's weight override; [`NO_OVERRIDE`] when unset.
    weight_override: AtomicU32,
    /// Circuit breaker; its config can change on reload, so it is rebuilt then
    /// (see `with_breaker_config`) while keeping the phase.
    pub breaker: BreakerState,
    /// Peak-EWMA latency estimate for the peak_ewma balancer.
    pub ewma: EwmaState,
    /// Metric handles resolved once, so the hot path never hashes labels.
    pub metrics: ServerMetrics,
}

impl ServerState {
    pub fn new(id: u64, key: ServerKey, addrs: Vec<SocketAddr>, breaker: BreakerConfig) -> Self {
        let metrics = ServerMetrics::new(&key.upstream, &key.address);
        metrics.up.set(1);
        Self {
            id,
            key,
            addrs: ArcSwap::from_pointee(addrs),
            addr_cursor: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            active: AtomicU64::new(0),
            admin: AtomicU8::new(AdminState::Ready.as_u8()),
            weight_override: AtomicU32::new(NO_OVERRIDE),
            breaker: BreakerState::new(breaker, crate::clock::origin()),
            ewma: EwmaState::new(),
            metrics,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        self.metrics.up.set(i64::from(healthy));
    }

    pub fn admin_state(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    pub fn set_admin_state(&self, s: AdminState) {
        self.admin.store(s.as_u8(), Ordering::Relaxed);
    }

    /// The operator's weight override, if any.
    pub fn weight_override(&self) -> Option<u32> {
        match self.weight_override.load(Ordering::Relaxed) {
            NO_OVERRIDE => None,
            w => Some(w),
        }
    }

    pub fn set_weight_override(&self, w: Option<u32>) {
        // Weights are validated far below u32::MAX, so the sentinel is free.
        let v = w.map_or(NO_OVERRIDE, |w| w.min(NO_OVERRIDE - 1));
        self.weight_override.store(v, Ordering::Relaxed);
    }

    /// The weight this server has now, as shown in `/status`, the admin API and
    /// `tandem_upstream_server_weight`: the operator's override, else the
    /// configured weight. The one place it is computed (slow start scales it here).
    pub fn effective_weight(&self, configured: u32) -> u32 {
        self.weight_override().unwrap_or(configured)
    }

    /// True while the operator lets this server take new requests and keep
    /// idle pooled connections (admin state `ready`).
    pub fn admits_traffic(&self) -> bool {
        self.admin_state() == AdminState::Ready
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn begin_request(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    /// The resolved addresses in the order to try them: rotated by a cursor so
    /// multi-address names spread, every address once.
    pub fn connect_order(&self) -> impl Iterator<Item = SocketAddr> {
        let addrs = self.addrs.load_full();
        let n = addrs.len().max(1);
        let start = usize::try_from(self.addr_cursor.fetch_add(1, Ordering::Relaxed) % n as u64)
            .unwrap_or(0);
        (0..addrs.len()).filter_map(move |i| addrs.get((start + i) % n).copied())
    }

    /// The next address to probe.
    pub fn next_addr(&self) -> Option<SocketAddr> {
        self.connect_order().next()
    }

    pub fn addrs(&self) -> Arc<Vec<SocketAddr>> {
        self.addrs.load_full()
    }

    pub fn set_addrs(&self, addrs: Vec<SocketAddr>) {
        self.addrs.store(Arc::new(addrs));
    }
}

/// A server's failover tier as reported by the admin API, `/status` and
/// `tandem_upstream_server_tier`. TIERS: always 0 until `types::Server` carries a
/// `tier`; this is the one place to read it from then.
pub fn tier(_config: &crate::config::types::Server) -> u32 {
    0
}

/// Decrements the server's in-flight count on drop.
pub struct ActiveGuard(Arc<ServerState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
