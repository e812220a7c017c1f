//! Upstreams: the servers behind a name, their live state and how one is chosen.
//!
//! An [`Upstream`] is immutable and lives in a [`crate::snapshot::Snapshot`]; it
//! holds the validated config, the balancer and `Arc<ServerState>` for each server.
//! [`Upstream::select`] is the hot-path entry: it asks the balancer for a server
//! among those that are healthy, breaker-admitted, weighted above zero and not yet
//! tried by this request.
//!
//! Submodules: `state` (shared atomics), `balance` (algorithms), `breaker`,
//! `health` (rise/fall), `ewma`, `probe` (active checks), `resolve` (DNS), `h1` (our HTTP/1.1 client), `pool`
//! (per-thread keep-alive connections), `attempt` (failure classification),
//! `runtime` (the operator's admin state and weight overrides), `tier` (which
//! failover tier takes a request), `slow_start` (the ramp of a returning server),
//! `queue` (the per-server cap and its wait queue), `event` (server event hooks).
//!
//! Selection order: the tier first (`tier::choose` over the tiers' available
//! weights; skipped when every server is in tier 0), then the balancer over the
//! servers of that tier, with effective weights ([`ServerState::effective_weight_milli`]).

pub mod attempt;
pub mod attempts;
pub mod balance;
pub mod breaker;
pub mod event;
pub mod ewma;
pub mod h1;
pub mod health;
pub mod pool;
pub mod probe;
pub mod queue;
pub mod resolve;
pub mod runtime;
pub mod slow_start;
pub mod state;
pub mod tier;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;

use crate::config::types;
use crate::metrics::UpstreamMetrics;
use balance::{Balancer, Candidates};
use breaker::{Admit, BreakerConfig};
pub use state::{ActiveGuard, ServerState};

/// The identity of a server across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    pub upstream: String,
    pub address: String,
}

/// One upstream as of one snapshot.
pub struct Upstream {
    pub config: types::Upstream,
    pub servers: Vec<Arc<ServerState>>,
    pub balancer: Balancer,
    pub metrics: UpstreamMetrics,
    /// Some server is outside tier 0: selection chooses a tier first.
    tiered: bool,
    /// Requests waiting for a server under `max_requests_per_server`.
    pub waiters: Arc<queue::Waiters>,
    /// TLS to the servers and their probes (`upstreams[].tls`).
    pub tls: Option<Arc<tls::UpstreamTls>>,
}

/// A server chosen for one attempt, with its breaker admission.
pub struct Selected {
    pub index: usize,
    pub server: Arc<ServerState>,
    /// True when this attempt is the breaker's half-open trial.
    pub trial: bool,
    /// The in-flight slot reserved under `max_requests_per_server`.
    slot: Option<ActiveGuard>,
}

impl Selected {
    /// Counts the attempt in flight (taking the slot reserved for it, if any)
    /// until the guard drops.
    pub fn begin(&mut self) -> ActiveGuard {
        match self.slot.take() {
            Some(slot) => slot,
            None => self.server.begin_request(),
        }
    }
}

/// Why [`Upstream::acquire`] found no server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoServer {
    /// None is available (unhealthy, breaker open, drained).
    Unavailable,
    /// Every eligible server is at its cap and the queue said no.
    Queue(queue::Rejected),
}

/// The server indexes one request has tried. Indexes below 128 are bits (no
/// allocation on the request path); larger upstreams spill into a list, which
/// allocates only once a server past the 128th is tried.
#[derive(Default, Clone, Debug)]
pub struct Tried {
    low: u128,
    high: Vec<usize>,
}

impl Tried {
    pub fn insert(&mut self, i: usize) {
        if i < 128 {
            self.low |= 1 << i;
        } else if !self.high.contains(&i) {
            self.high.push(i);
        }
    }
    pub fn contains(&self, i: usize) -> bool {
        if i < 128 {
            self.low & (1 << i) != 0
        } else {
            self.high.contains(&i)
        }
    }
    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.high.is_empty()
    }
}

struct View<'a> {
    up: &'a Upstream,
    tried: Tried,
    /// Only servers of this tier are candidates (`None`: every tier).
    tier: Option<usize>,
    now: Instant,
    now_ns: u64,
}

impl View<'_> {
    /// Could take a request now, whatever this request tried and whatever its
    /// tier: healthy, breaker admits, weight > 0, not drained.
    fn usable(&self, i: usize) -> bool {
        let Some(s) = self.up.servers.get(i) else {
            return false;
        };
        self.up.config.servers.get(i).is_some_and(|c| c.weight > 0)
            && s.is_healthy()
            && s.effective_weight_milli(None, 0) > 0
            && s.breaker.available(self.now)
    }

    fn tier_of(&self, i: usize) -> usize {
        self.up
            .config
            .servers
            .get(i)
            .map_or(0, |c| usize::from(c.tier))
    }

    /// Weight sums per tier over the usable servers (untried ones when `untried`).
    fn tier_weights(&self, untried: bool) -> [tier::TierWeight; tier::TIERS] {
        let mut out = [tier::TierWeight::default(); tier::TIERS];
        for (i, (c, s)) in self
            .up
            .config
            .servers
            .iter()
            .zip(&self.up.servers)
            .enumerate()
        {
            let Some(t) = out.get_mut(usize::from(c.tier)) else {
                continue;
            };
            t.configured += u64::from(c.weight);
            if self.usable(i) && !(untried && self.tried.contains(i)) {
                t.available += u64::from(s.weight_override().unwrap_or(c.weight));
            }
        }
        out
    }

    /// The tier for this attempt. First attempt: `tier::choose` (`rand` is the
    /// hash for consistent hashing, so a key keeps its tier). A retry: another
    /// server of the highest tier tried so far, else the next tier up that has
    /// one, else any lower tier that has one.
    fn choose_tier(&self, hash: Option<u64>, rand: u64) -> Option<usize> {
        if self.tried.is_empty() {
            let weights = self.tier_weights(false);
            let r = hash.map_or(rand, balance::mix64);
            return tier::choose(&weights, self.up.config.failover, r);
        }
        let weights = self.tier_weights(true);
        let from = (0..self.up.servers.len())
            .filter(|&i| self.tried.contains(i))
            .map(|i| self.tier_of(i))
            .max()
            .unwrap_or(0);
        (from..tier::TIERS)
            .chain((0..from).rev())
            .find(|&t| weights.get(t).is_some_and(|w| w.available > 0))
    }
}

impl Candidates for View<'_> {
    fn len(&self) -> usize {
        self.up.servers.len()
    }

    fn available(&self, i: usize) -> bool {
        let cap = u64::from(self.up.config.max_requests_per_server);
        !self.tried.contains(i)
            && self.tier.is_none_or(|t| self.tier_of(i) == t)
            && self.usable(i)
            && (cap == 0 || self.up.servers.get(i).is_some_and(|s| s.active() < cap))
    }

    fn active(&self, i: usize) -> u64 {
        self.up.servers.get(i).map_or(0, |s| s.active())
    }

    fn latency_ns(&self, i: usize) -> f64 {
        self.up
            .servers
            .get(i)
            .map_or(0.0, |s| s.ewma.get(self.now_ns))
    }

    fn weight(&self, i: usize, _configured: u32) -> u64 {
        self.up.servers.get(i).map_or(0, |s| {
            s.effective_weight_milli(self.up.config.slow_start, self.now_ns)
        })
    }
}

impl Upstream {
    /// Picks a server for the next attempt, or `None` when none is available.
    ///
    /// A server that was tried already is skipped while another is available
    /// (never the same server twice while another is available).
    pub fn select(&self, tried: &Tried, hash: Option<u64>) -> Option<Selected> {
        let now = Instant::now();
        let now_ns = crate::clock::nanos_since_origin(now);
        let mut view = View {
            up: self,
            tried: tried.clone(),
            tier: None,
            now,
            now_ns,
        };
        // Bounded: each round either returns or marks one more server as tried.
        for _ in 0..=self.servers.len() {
            let rand = fastrand::u64(..);
            if self.tiered {
                view.tier = view.choose_tier(hash, rand);
            }
            let picked = self.balancer.pick(&view, hash, rand).or_else(|| {
                if view.tried.is_empty() {
                    None
                } else {
                    // Everything untried is unavailable: allow a tried server again.
                    let mut fresh = View {
                        up: self,
                        tried: Tried::default(),
                        tier: None,
                        now,
                        now_ns,
                    };
                    if self.tiered {
                        fresh.tier = fresh.choose_tier(hash, rand);
                    }
                    self.balancer.pick(&fresh, hash, fastrand::u64(..))
                }
            })?;
            let server = self.servers.get(picked)?.clone();
            let cap = u64::from(self.config.max_requests_per_server);
            let slot = if cap > 0 {
                // Another worker may have taken the last slot since the pick.
                if !server.try_reserve(cap) {
                    view.tried.insert(picked);
                    continue;
                }
                Some(ActiveGuard::reserved(server.clone()))
            } else {
                None
            };
            match server.breaker.admit(now) {
                Admit::Yes => {
                    return Some(Selected {
                        index: picked,
                        server,
                        trial: false,
                        slot,
                    })
                }
                Admit::Trial => {
                    // Open turns half-open by time alone; the admitted trial is
                    // where that change becomes visible, so it is logged here.
                    log_breaker_transition(
                        &server,
                        &breaker::Transition {
                            from: breaker::Phase::Open,
                            to: breaker::Phase::HalfOpen,
                            reason: "reset timeout elapsed: one trial request admitted",
                        },
                    );
                    return Some(Selected {
                        index: picked,
                        server,
                        trial: true,
                        slot,
                    });
                }
                // Lost the half-open trial slot to another request: look again.
                Admit::No => view.tried.insert(picked),
            }
        }
        None
    }

    /// A server for a request's first attempt: [`Self::select`], or, when every
    /// eligible server is at `max_requests_per_server`, a place in the queue until
    /// a slot frees (FIFO) or `queue.timeout` passes. Dropping the future (the
    /// client went away) leaves the queue at once.
    pub async fn acquire(&self, hash: Option<u64>) -> Result<Selected, NoServer> {
        let capped = self.config.max_requests_per_server > 0;
        if !capped || self.waiters.is_empty() {
            if let Some(sel) = self.select(&Tried::default(), hash) {
                return Ok(sel);
            }
            if !capped {
                return Err(NoServer::Unavailable);
            }
        }
        let deadline = Instant::now() + self.config.queue.timeout;
        loop {
            if !self.has_usable() {
                return Err(NoServer::Unavailable);
            }
            let queued = self.waiters.enqueue(self.config.queue.size, || {
                self.select(&Tried::default(), hash)
            });
            let waiter = match queued {
                Err(r) => return Err(NoServer::Queue(r)),
                Ok(Err(sel)) => return Ok(sel),
                Ok(Ok(waiter)) => waiter,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let server = waiter.wait(left).await.map_err(NoServer::Queue)?;
            match self.adopt(&server) {
                Some(sel) => return Ok(sel),
                // No longer usable (health, breaker changed): the slot goes back
                // quietly, or waiters would pass it around among themselves.
                None => server.unreserve(),
            }
        }
    }

    /// A `Selected` for a slot handed over by the queue, if the server may still
    /// take a request.
    fn adopt(&self, server: &Arc<ServerState>) -> Option<Selected> {
        let index = self.servers.iter().position(|s| Arc::ptr_eq(s, server))?;
        let now = Instant::now();
        let view = View {
            up: self,
            tried: Tried::default(),
            tier: None,
            now,
            now_ns: crate::clock::nanos_since_origin(now),
        };
        if !view.usable(index) {
            return None;
        }
        let trial = match server.breaker.admit(now) {
            Admit::Yes => false,
            Admit::Trial => true,
            Admit::No => return None,
        };
        Some(Selected {
            index,
            server: server.clone(),
            trial,
            slot: Some(ActiveGuard::reserved(server.clone())),
        })
    }

    /// True when some server could take a request but for its cap.
    fn has_usable(&self) -> bool {
        let now = Instant::now();
        let view = View {
            up: self,
            tried: Tried::default(),
            tier: None,
            now,
            now_ns: crate::clock::nanos_since_origin(now),
        };
        (0..self.servers.len()).any(|i| view.usable(i))
    }

    /// True when at least one server could take a request now.
    pub fn has_available(&self) -> bool {
        let now = Instant::now();
        let view = View {
            up: self,
            tried: Tried::default(),
            tier: None,
            now,
            now_ns: crate::clock::nanos_since_origin(now),
        };
        (0..self.servers.len()).any(|i| view.available(i))
    }

    /// The effective weight of server `i` now, in weight units: the operator's
    /// override or the configured weight, times the slow-start ramp (0.1 -> 1).
    /// What `/status`, the admin API and `tandem_upstream_server_weight` show
    /// (`admin::servers` reads it through [`ServerState::reported_weight`]).
    /// Consistent hashing picks by its table (configured weights), whatever this
    /// says, except that 0 excludes.
    pub fn effective_weight(&self, i: usize) -> f64 {
        match (self.servers.get(i), self.config.servers.get(i)) {
            (Some(s), Some(c)) => s.reported_weight(c.weight, self.config.slow_start),
            _ => 0.0,
        }
    }

    /// Host part of server `i`'s address (the TLS name when `server_name` is unset).
    pub fn host(&self, i: usize) -> &str {
        self.config.servers.get(i).map_or("", |c| c.host.as_str())
    }

    /// The TLS client for this upstream's servers, if it has one.
    pub fn tls(&self) -> Option<&tls::UpstreamTls> {
        self.tls.as_deref()
    }

    /// The failover tier of server `i` (0 = primary).
    pub fn tier(&self, i: usize) -> u8 {
        self.config.servers.get(i).map_or(0, |c| c.tier)
    }

    /// True when at least one server passes its health checks.
    pub fn has_healthy(&self) -> bool {
        self.servers.iter().any(|s| s.is_healthy())
    }
}

/// Creates server state for a new snapshot, reusing the state of servers that
/// the previous snapshot already had (keyed by upstream name + address).
pub struct ServerRegistry {
    next_id: AtomicU64,
    /// Each upstream's queue and event hooks by name, kept across reloads
    /// (control plane only).
    shared: Mutex<HashMap<String, PerUpstream>>,
}

/// What an upstream keeps across reloads besides its servers.
type PerUpstream = (Arc<queue::Waiters>, Arc<event::EventHooks>);

impl Default for ServerRegistry {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::new(1),
            shared: Mutex::new(HashMap::new()),
        }
    }
}

impl ServerRegistry {
    pub fn build_upstream(
        &self,
        config: &types::Upstream,
        previous: &HashMap<ServerKey, Arc<ServerState>>,
    ) -> Upstream {
        let breaker_cfg = breaker_config(&config.circuit_breaker);
        let (waiters, events) = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(config.name.clone())
            .or_insert_with(|| {
                (
                    Arc::new(queue::Waiters::new(&config.name)),
                    Arc::new(event::EventHooks::new(&config.name)),
                )
            })
            .clone();
        waiters.set_cap(config.max_requests_per_server);
        events.set(&config.notify);
        // A previous snapshot always has servers: a server new to it was added by
        // a reload and starts slowly (those present at start take their share at once).
        let reload = !previous.is_empty();
        let servers: Vec<Arc<ServerState>> = config
            .servers
            .iter()
            .map(|s| {
                let key = ServerKey {
                    upstream: config.name.clone(),
                    address: s.address.clone(),
                };
                match previous.get(&key) {
                    Some(existing) => {
                        existing.breaker.set_config(breaker_cfg);
                        existing.set_configured_weight(s.weight);
                        existing.clone()
                    }
                    None => {
                        let state = ServerState::new(
                            self.next_id.fetch_add(1, Ordering::Relaxed),
                            key,
                            literal_addr(s).into_iter().collect(),
                            breaker_cfg,
                            waiters.clone(),
                            events.clone(),
                        );
                        state.set_configured_weight(s.weight);
                        if reload {
                            state.mark_available();
                        }
                        Arc::new(state)
                    }
                }
            })
            .collect();
        let weights: Vec<(String, u32)> = config
            .servers
            .iter()
            .map(|s| (s.address.clone(), s.weight))
            .collect();
        Upstream {
            balancer: Balancer::new(config.balance, &weights),
            metrics: UpstreamMetrics::new(&config.name),
            tiered: config.servers.iter().any(|s| s.tier > 0),
            waiters,
            tls: config
                .tls
                .as_ref()
                .map(|t| Arc::new(tls::UpstreamTls::build_or_refuse(&config.name, t))),
            servers,
            config: config.clone(),
        }
    }
}

/// The address of a server written as an IP literal; names resolve later.
fn literal_addr(s: &types::Server) -> Option<SocketAddr> {
    s.host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, s.port))
}

pub fn breaker_config(c: &types::CircuitBreaker) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: c.failure_threshold,
        reset_timeout: c.reset_timeout,
        monitor_interval: c.monitor_interval,
    }
}

/// Logs a breaker state change once and updates its metrics.
pub fn log_breaker_transition(server: &Arc<ServerState>, t: &breaker::Transition) {
    match t.to {
        // Closed after its trial: the server returns, slowly with slow start.
        breaker::Phase::Closed => server.mark_available(),
        breaker::Phase::Open => event::fire(server, event::ServerEvent::BreakerOpen),
        breaker::Phase::HalfOpen => {}
    }
    let (label, code) = phase_label(t.to);
    server.metrics.breaker_transition(label, code);
    tracing::warn!(
        upstream = %server.key.upstream,
        server = %server.key.address,
        from = phase_label(t.from).0,
        to = label,
        reason = t.reason,
        "circuit breaker state changed"
    );
}

/// Metric label and gauge value of a breaker phase (`tandem_circuit_breaker_state`).
pub fn phase_label(p: breaker::Phase) -> (&'static str, i64) {
    match p {
        breaker::Phase::Closed => ("closed", 0),
        breaker::Phase::Open => ("open", 1),
        breaker::Phase::HalfOpen => ("half_open", 2),
    }
}

#[cfg(test)]
mod tests;
