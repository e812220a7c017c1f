//! The immutable view of one configuration generation, and its handle.
//!
//! A [`Snapshot`] holds everything derived from a validated config: listeners
//! with resolved routes, upstreams with balancers and server state, metric
//! handles. It is built off the request path ([`build`]) and published with one
//! `ArcSwap` store ([`SnapshotHandle::publish`]); readers load it once per
//! connection (L4) or request (L7) and keep that `Arc` until they finish, so
//! requests in flight complete on the config they started with.
//!
//! State that must outlive a generation — server health and breakers, listener
//! connection counts — is reused from the previous snapshot by stable keys
//! (upstream + address, listener bind + name).
//!
//! Building is where TLS files are read (again, after validation checked them):
//! a file that changed into something unusable in between fails the build, and
//! the caller keeps the previous generation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use crate::cert;
use crate::config::types::{self, Config};
use crate::listener::tls::{self, Resumption};
use crate::metrics::{self, ListenerMetrics, RouteMetrics};
use crate::upstream::{ServerKey, ServerRegistry, ServerState, Upstream};

mod error;
mod routes;

pub use error::{BuildError, BuildErrors};
pub use routes::{Route, RouteTable};

/// One configuration generation, ready to serve.
pub struct Snapshot {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub config: Arc<Config>,
    /// Shared, so a client connection keeps its listener as of its accept
    /// without holding the whole generation.
    pub listeners: Vec<Arc<Listener>>,
    pub upstreams: Vec<Arc<Upstream>>,
}

/// A listener as of one snapshot.
pub struct Listener {
    pub config: types::Listener,
    pub state: Arc<ListenerState>,
    /// Compiled for look-ups that cost the same for the first route and the
    /// five-thousandth.
    pub routes: RouteTable,
    /// Index into `Snapshot::upstreams`.
    pub default_upstream: usize,
    /// Per upstream index: handles for requests this listener sends there.
    pub route_metrics: Vec<Option<RouteMetrics>>,
    /// Present when the listener terminates TLS; built from the files as they
    /// were when this generation was built.
    pub tls: Option<TlsAcceptor>,
}

/// Listener state that survives reloads while the bind (and name) stay.
pub struct ListenerState {
    pub metrics: ListenerMetrics,
    pub limit: ConnLimit,
    /// TLS session cache and ticket keys, made on first use, so that clients
    /// resume sessions across reloads.
    pub tls_resumption: OnceLock<Resumption>,
}

/// `max_connections`: connections beyond the limit wait in the accept backlog.
pub struct ConnLimit {
    active: AtomicUsize,
    max: AtomicUsize,
    freed: Notify,
}

impl ConnLimit {
    pub fn new(max: usize) -> Self {
        Self {
            active: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            freed: Notify::new(),
        }
    }

    /// Waits for a free slot and takes it. Release with [`ConnLimit::release`].
    pub async fn acquire(&self) {
        loop {
            let notified = self.freed.notified();
            let cur = self.active.load(Ordering::Acquire);
            if cur < self.max.load(Ordering::Relaxed) {
                if self
                    .active
                    .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            notified.await;
        }
    }

    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_waiters();
    }

    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
        self.freed.notify_waiters();
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

impl Snapshot {
    /// The listener bound to `bind` in this generation.
    pub fn listener(&self, bind: SocketAddr) -> Option<&Arc<Listener>> {
        self.listeners.iter().find(|l| l.config.bind == bind)
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.config.name == name)
    }

    /// Every server state, keyed for reuse by the next generation.
    pub fn servers(&self) -> HashMap<ServerKey, Arc<ServerState>> {
        self.upstreams
            .iter()
            .flat_map(|u| u.servers.iter())
            .map(|s| (s.key.clone(), s.clone()))
            .collect()
    }
}

impl Listener {
    /// The upstream index for a request: first matching route, else default.
    /// `host` is without port; it is compared case-insensitively (route hosts
    /// are stored lower-case).
    pub fn route(&self, host: Option<&str>, path: &str) -> usize {
        self.routes
            .lookup(host, path)
            .unwrap_or(self.default_upstream)
    }
}

/// Builds a snapshot for `config`, reusing server and listener state of
/// `previous`. Validation guarantees every upstream name resolves; the error
/// case is TLS material that cannot be loaded (every problem, per listener).
pub fn build(
    config: Arc<Config>,
    generation: u64,
    previous: Option<&Snapshot>,
    registry: &ServerRegistry,
) -> Result<Snapshot, BuildErrors> {
    let mut errors = Vec::new();
    let mut expiries = Vec::new();
    let prev_servers = previous.map(Snapshot::servers).unwrap_or_default();
    let upstreams: Vec<Arc<Upstream>> = config
        .upstreams
        .iter()
        .map(|u| Arc::new(registry.build_upstream(u, &prev_servers)))
        .collect();
    let index: HashMap<&str, usize> = config
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.as_str(), i))
        .collect();
    let listeners: Vec<Arc<Listener>> = config
        .listeners
        .iter()
        .map(|l| {
            let state = previous
                .and_then(|p| p.listener(l.bind))
                .filter(|p| p.config.name == l.name)
                .map(|p| {
                    p.state.limit.set_max(l.max_connections);
                    p.state.clone()
                })
                .unwrap_or_else(|| {
                    Arc::new(ListenerState {
                        metrics: ListenerMetrics::new(&l.name),
                        limit: ConnLimit::new(l.max_connections),
                        tls_resumption: OnceLock::new(),
                    })
                });
            let tls = l.tls.as_ref().and_then(|t| {
                build_tls(l, t, &state, &mut expiries)
                    .map_err(|e| errors.extend(e))
                    .ok()
            });
            let up = |name: &str| index.get(name).copied().unwrap_or(0);
            let routes: Vec<Route> = l
                .routes
                .iter()
                .map(|r| Route {
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    upstream: up(&r.upstream),
                })
                .collect();
            let routes = RouteTable::new(routes);
            let default_upstream = up(&l.upstream);
            let mut route_metrics: Vec<Option<RouteMetrics>> =
                (0..upstreams.len()).map(|_| None).collect();
            for i in routes
                .routes()
                .iter()
                .map(|r| r.upstream)
                .chain(std::iter::once(default_upstream))
            {
                if let (Some(slot), Some(u)) = (route_metrics.get_mut(i), upstreams.get(i)) {
                    if slot.is_none() {
                        *slot = Some(RouteMetrics::new(&l.name, &u.config.name));
                    }
                }
            }
            Arc::new(Listener {
                config: l.clone(),
                state,
                routes,
                default_upstream,
                route_metrics,
                tls,
            })
        })
        .collect();
    if let Some(errors) = BuildErrors::new(errors) {
        return Err(errors);
    }
    metrics::global().set_tls_certificates(expiries);
    Ok(Snapshot {
        generation,
        loaded_at: SystemTime::now(),
        config,
        listeners,
        upstreams,
    })
}

/// Loads one listener's certificates and makes its acceptor; records each
/// certificate's expiry for the metric as (listener, name, not_after).
fn build_tls(
    l: &types::Listener,
    t: &types::Tls,
    state: &ListenerState,
    expiries: &mut Vec<(String, String, i64)>,
) -> Result<TlsAcceptor, Vec<BuildError>> {
    let mut errors = Vec::new();
    let mut certs = Vec::with_capacity(t.certificates.len());
    let now = cert::unix_seconds(SystemTime::now());
    for paths in &t.certificates {
        match cert::read_pair(paths) {
            Ok(c) => {
                let name = c
                    .names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| paths.cert.display().to_string());
                if cert::expiry(c.not_after, now) != cert::Expiry::Valid {
                    tracing::warn!(listener = %l.name, certificate = %paths.cert.display(),
                        not_after = %cert::rfc3339(c.not_after), "TLS certificate expires within 7 days");
                }
                expiries.push((l.name.clone(), name, c.not_after));
                certs.push(c);
            }
            Err(source) => errors.push(BuildError::Certificate {
                listener: l.name.clone(),
                source,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let refused = |source| {
        vec![BuildError::Tls {
            listener: l.name.clone(),
            source,
        }]
    };
    let resumption = match state.tls_resumption.get() {
        Some(r) => r.clone(),
        None => {
            let r = Resumption::new().map_err(refused)?;
            state.tls_resumption.get_or_init(|| r).clone()
        }
    };
    tls::acceptor(t, certs, &resumption).map_err(refused)
}

/// Cheap-to-clone handle to the current snapshot.
#[derive(Clone)]
pub struct SnapshotHandle(Arc<ArcSwap<Snapshot>>);

impl SnapshotHandle {
    pub fn new(initial: Snapshot) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(initial)))
    }

    /// The current snapshot, held by the caller for as long as it needs it.
    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Short synchronous look-ups without touching the reference count.
    pub fn peek(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }

    /// Makes `next` current in one atomic step; returns the previous one.
    pub fn publish(&self, next: Snapshot) -> Arc<Snapshot> {
        self.0.swap(Arc::new(next))
    }
}
