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
//! `runtime` (the operator's admin state and weight overrides).

pub mod attempt;
pub mod balance;
pub mod breaker;
pub mod ewma;
pub mod h1;
pub mod health;
pub mod pool;
pub mod probe;
pub mod resolve;
pub mod runtime;
pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use crate::config::types;
use crate::metrics::UpstreamMetrics;
use balance::{Balancer, Candidates};
use breaker::{Admit, BreakerConfig};
pub use state::ServerState;

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
}

/// A server chosen for one attempt, with its breaker admission.
pub struct Selected {
    pub index: usize,
    pub server: Arc<ServerState>,
    /// True when this attempt is the breaker's half-open trial.
    pub trial: bool,
}

/// Bit set of server indexes already tried by one request.
#[derive(Default, Clone, Copy)]
pub struct Tried(u128);

impl Tried {
    pub fn insert(&mut self, i: usize) {
        if i < 128 {
            self.0 |= 1 << i;
        }
    }
    pub fn contains(&self, i: usize) -> bool {
        i < 128 && self.0 & (1 << i) != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

struct View<'a> {
    up: &'a Upstream,
    tried: Tried,
    now: Instant,
    now_ns: u64,
}

impl Candidates for View<'_> {
    fn len(&self) -> usize {
        self.up.servers.len()
    }
    fn available(&self, i: usize) -> bool {
        let Some(s) = self.up.servers.get(i) else {
            return false;
        };
        !self.tried.contains(i)
            && self
                .up
                .config
                .servers
                .get(i)
                .is_some_and(|c| s.effective_weight(c.weight) > 0)
            && s.is_healthy()
            && s.admin_state() == runtime::AdminState::Ready
            && s.breaker.available(self.now)
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
}

impl Upstream {
    /// Picks a server for the next attempt, or `None` when none is available.
    ///
    /// A server that was tried already is skipped while another is available
    /// (SPEC §3: never the same server twice while another is available).
    pub fn select(&self, tried: Tried, hash: Option<u64>) -> Option<Selected> {
        let now = Instant::now();
        let now_ns = crate::clock::nanos_since_origin(now);
        let mut view = View {
            up: self,
            tried,
            now,
            now_ns,
        };
        // Bounded: each round either returns or marks one more server as tried.
        for _ in 0..=self.servers.len() {
            let picked = self
                .balancer
                .pick(&view, hash, fastrand::u64(..))
                .or_else(|| {
                    if view.tried.is_empty() {
                        None
                    } else {
                        // Everything untried is unavailable: allow a tried server again.
                        let fresh = View {
                            up: self,
                            tried: Tried::default(),
                            now,
                            now_ns,
                        };
                        self.balancer.pick(&fresh, hash, fastrand::u64(..))
                    }
                })?;
            let server = self.servers.get(picked)?.clone();
            match server.breaker.admit(now) {
                Admit::Yes => {
                    return Some(Selected {
                        index: picked,
                        server,
                        trial: false,
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
                    });
                }
                // Lost the half-open trial slot to another request: look again.
                Admit::No => view.tried.insert(picked),
            }
        }
        None
    }

    /// True when at least one server could take a request now.
    pub fn has_available(&self) -> bool {
        let now = Instant::now();
        let view = View {
            up: self,
            tried: Tried::default(),
            now,
            now_ns: crate::clock::nanos_since_origin(now),
        };
        (0..self.servers.len()).any(|i| view.available(i))
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
}

impl Default for ServerRegistry {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::new(1),
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
                        existing.clone()
                    }
                    None => Arc::new(ServerState::new(
                        self.next_id.fetch_add(1, Ordering::Relaxed),
                        key,
                        literal_addr(s).into_iter().collect(),
                        breaker_cfg,
                    )),
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
pub fn log_breaker_transition(server: &ServerState, t: &breaker::Transition) {
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

/// Metric label and gauge value of a breaker phase (SPEC §6).
pub fn phase_label(p: breaker::Phase) -> (&'static str, i64) {
    match p {
        breaker::Phase::Closed => ("closed", 0),
        breaker::Phase::Open => ("open", 1),
        breaker::Phase::HalfOpen => ("half_open", 2),
    }
}
