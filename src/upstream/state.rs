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
use super::event::{self, EventHooks, Running, ServerEvent};
use super::ewma::EwmaState;
use super::queue::Waiters;
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
    /// The configured weight of the latest snapshot (set at each build), so a
    /// reload that raises it from 0 starts a slow start.
    configured_weight: AtomicU32,
    /// When the server last became available again, as nanoseconds since
    /// [`crate::clock::origin`] (at least 1); 0 = available since start. The
    /// slow-start ramp counts from here.
    available_since: AtomicU64,
    /// Circuit breaker; its config can change on reload, so it is rebuilt then
    /// (see `with_breaker_config`) while keeping the phase.
    pub breaker: BreakerState,
    /// Peak-EWMA latency estimate for the peak_ewma balancer.
    pub ewma: EwmaState,
    /// Metric handles resolved once, so the hot path never hashes labels.
    pub metrics: ServerMetrics,
    /// The upstream's wait queue (shared by its servers, kept across reloads):
    /// a finished request hands its slot to the oldest waiter.
    waiters: Arc<Waiters>,
    /// The upstream's event hooks (shared, kept across reloads).
    events: Arc<EventHooks>,
    /// Which of this server's event hooks run now (one at a time per event).
    hooks_running: Running,
}

impl ServerState {
    pub fn new(
        id: u64,
        key: ServerKey,
        addrs: Vec<SocketAddr>,
        breaker: BreakerConfig,
        waiters: Arc<Waiters>,
        events: Arc<EventHooks>,
    ) -> Self {
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
            configured_weight: AtomicU32::new(1),
            available_since: AtomicU64::new(0),
            breaker: BreakerState::new(breaker, crate::clock::origin()),
            ewma: EwmaState::new(),
            metrics,
            waiters,
            events,
            hooks_running: Running::default(),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Health up after down starts a slow start; either change runs the
    /// upstream's `notify.up` / `notify.down` hook.
    pub fn set_healthy(self: &Arc<Self>, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        self.metrics.up.set(i64::from(healthy));
        if healthy && !was {
            self.mark_available();
            event::fire(self, ServerEvent::Up);
        } else if !healthy && was {
            event::fire(self, ServerEvent::Down);
        }
    }

    pub fn admin_state(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    /// Back to `ready` from drain or maint starts a slow start.
    pub fn set_admin_state(&self, s: AdminState) {
        let was = AdminState::from_u8(self.admin.swap(s.as_u8(), Ordering::Relaxed));
        if s == AdminState::Ready && was != AdminState::Ready {
            self.mark_available();
        }
    }

    /// Records "became available again now": the slow-start ramp starts here.
    /// Called at every such transition (health up, breaker closed after its
    /// trial, added by a reload, weight raised from 0, admin state back to ready).
    pub fn mark_available(&self) {
        let now = crate::clock::now_ns().max(1);
        self.available_since.store(now, Ordering::Relaxed);
    }

    /// See `available_since`.
    pub fn available_since_ns(&self) -> u64 {
        self.available_since.load(Ordering::Relaxed)
    }

    /// The configured weight of the latest snapshot; a rise from 0 (with no
    /// override in the way) starts a slow start.
    pub fn set_configured_weight(&self, w: u32) {
        let was = self.configured_weight.swap(w, Ordering::Relaxed);
        if was == 0 && w > 0 && self.weight_override().is_none() {
            self.mark_available();
        }
    }

    /// The weight balancers use, in thousandths of a weight unit: the operator's
    /// override or the configured weight, times the slow-start factor; 0 when the
    /// operator drained the server or set its weight to 0 (0 = unavailable).
    /// Health and breaker are not part of it (see `Upstream::select`).
    pub fn effective_weight_milli(
        &self,
        slow_start: Option<std::time::Duration>,
        now_ns: u64,
    ) -> u64 {
        if self.admin_state() != AdminState::Ready {
            return 0;
        }
        let base = self
            .weight_override()
            .unwrap_or_else(|| self.configured_weight.load(Ordering::Relaxed));
        let factor = super::slow_start::factor(self.available_since_ns(), now_ns, slow_start);
        u64::from(base) * factor
    }

    /// [`Self::effective_weight_milli`] in weight units (e.g. 0.1 early in a slow
    /// start of a weight-1 server; 0 while drained): the weight balancers use now.
    pub fn pick_weight(&self, slow_start: Option<std::time::Duration>) -> f64 {
        self.effective_weight_milli(slow_start, crate::clock::now_ns()) as f64 / 1000.0
    }

    /// The weight reported by `/status`, the admin API and
    /// `tandem_upstream_server_weight`: [`Self::effective_weight`] (override, else
    /// configured) times the slow-start ramp, so fractional while it ramps. Unlike
    /// [`Self::pick_weight`] it does not drop to 0 while drained (the admin state
    /// is reported beside it).
    pub fn reported_weight(&self, configured: u32, slow_start: Option<std::time::Duration>) -> f64 {
        let factor = super::slow_start::factor(
            self.available_since_ns(),
            crate::clock::now_ns(),
            slow_start,
        );
        f64::from(self.effective_weight(configured)) * factor as f64
            / super::slow_start::FULL as f64
    }

    /// The operator's weight override, if any.
    pub fn weight_override(&self) -> Option<u32> {
        match self.weight_override.load(Ordering::Relaxed) {
            NO_OVERRIDE => None,
            w => Some(w),
        }
    }

    /// A weight raised from 0 (override or configured, whichever applied)
    /// starts a slow start.
    pub fn set_weight_override(&self, w: Option<u32>) {
        // Weights are validated far below u32::MAX, so the sentinel is free.
        let v = w.map_or(NO_OVERRIDE, |w| w.min(NO_OVERRIDE - 1));
        let configured = self.configured_weight.load(Ordering::Relaxed);
        let base = |o: u32| if o == NO_OVERRIDE { configured } else { o };
        let was = self.weight_override.swap(v, Ordering::Relaxed);
        if base(was) == 0 && base(v) > 0 {
            self.mark_available();
        }
    }

    /// The weight this server has now, as shown in `/status`, the admin API and
    /// `tandem_upstream_server_weight`: the operator's override, else the
    /// configured weight; [`Self::reported_weight`] scales it by slow start.
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
        self.active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(self.clone())
    }

    /// Counts a request in flight if fewer than `cap` are (`cap` 0: no cap).
    /// The caller owns the slot: [`ActiveGuard::reserved`] or [`Self::unreserve`].
    pub fn try_reserve(&self, cap: u64) -> bool {
        if cap == 0 {
            self.active.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a slot without handing it to a waiter (see `queue::release`
    /// for the normal end of a request).
    pub fn unreserve(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// The upstream's wait queue.
    pub fn waiters(&self) -> &Arc<Waiters> {
        &self.waiters
    }

    /// The upstream's event hooks.
    pub fn events(&self) -> &Arc<EventHooks> {
        &self.events
    }

    pub(super) fn hooks_running(&self) -> &Running {
        &self.hooks_running
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
/// `tandem_upstream_server_tier`: the one place to read it from.
pub fn tier(config: &crate::config::types::Server) -> u32 {
    u32::from(config.tier)
}

/// One request in flight on a server; on drop its slot goes to the oldest
/// waiter of the upstream's queue, or back to the server.
pub struct ActiveGuard(Arc<ServerState>);

impl ActiveGuard {
    /// Owns a slot already counted ([`ServerState::try_reserve`], a hand-off).
    pub fn reserved(server: Arc<ServerState>) -> Self {
        Self(server)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        super::queue::release(&self.0);
    }
}
