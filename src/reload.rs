//! Configuration generations: load -> validate -> build -> swap, or keep the old.
//!
//! [`Generations`] owns everything that changes with the config on the control
//! plane: the snapshot handle, the listener sockets and which workers accept on
//! them, the probe and resolver tasks. [`Generations::reload`] either moves to a
//! new generation in one `ArcSwap` store, or changes nothing and returns every
//! error. Settings that need a restart (`admin.bind`, `workers`, `ha`) are
//! refused as errors rather than ignored. The outcome of the last reload is
//! kept for `/status`, and every attempt is recorded in the audit log with who
//! asked, the SHA-256 of the file read and what it changed.
//!
//! The operator's server states ([`RuntimeStore`]) are applied to every
//! generation's servers before it is published, so they survive reloads.
//!
//! A listener is known by its bind address everywhere (snapshot, workers,
//! state carried over). One configured on port 0 gets its port from the
//! kernel when first bound, and the generation's config carries that port, so
//! two such listeners on one IP stay two listeners; it keeps the port across
//! reloads while its name and configured address stay.
//!
//! Tested end to end by `tests/lifecycle/{reload,refused}.rs`: 60 reloads under
//! HTTP/1, h2c and TCP load, invalid and restart-only reloads, state carried
//! over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::audit::{self, ConfigDiff, Source};
use crate::config::{self, types::Config};
use crate::metrics;
use crate::snapshot::{self, Snapshot, SnapshotHandle};
use crate::upstream::probe::Prober;
use crate::upstream::resolve::{self, Resolver};
use crate::upstream::runtime::RuntimeStore;
use crate::upstream::ServerRegistry;
use crate::worker::{Command, WorkerHandle};

/// The last reload attempt, for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadRecord {
    pub at_unix_ms: u64,
    pub result: &'static str,
    pub errors: Vec<String>,
}

/// Control-plane facts the admin API reports besides the snapshot.
#[derive(Default)]
pub struct ControlStatus {
    pub last_reload: Mutex<Option<ReloadRecord>>,
    /// Configured bind -> address actually bound (differs for port 0).
    pub bound: Mutex<HashMap<SocketAddr, SocketAddr>>,
    /// Set once shutdown began: `/readyz` then answers 503 so a load balancer
    /// in front stops sending, while `/healthz` keeps answering 200.
    pub draining: AtomicBool,
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Everything that changes with the configuration.
pub struct Generations {
    pub path: PathBuf,
    pub snapshot: SnapshotHandle,
    pub status: Arc<ControlStatus>,
    /// The operator's server states, applied to each generation's servers.
    pub runtime: RuntimeStore,
    registry: ServerRegistry,
    workers: Vec<WorkerHandle>,
    prober: Prober,
    resolver: Resolver,
    /// Port-0 listeners: (name, configured bind) -> the address bound.
    pinned: Pinned,
}

type Pinned = HashMap<(String, SocketAddr), SocketAddr>;

/// Sockets bound for one listener, one per worker.
type Bound = (SocketAddr, Vec<TcpListener>);

/// Gives every port-0 listener in `config` the address it is (or now gets)
/// bound to. Returns the pins for this config and the sockets bound just now;
/// nothing of `pinned` changes, so a failed reload leaves it as it was.
fn pin_port_zero(
    config: &mut Config,
    pinned: &Pinned,
    workers: usize,
) -> anyhow::Result<(Pinned, Vec<Bound>)> {
    let mut pins = Pinned::new();
    let mut fresh = Vec::new();
    for l in config.listeners.iter_mut().filter(|l| l.bind.port() == 0) {
        let key = (l.name.clone(), l.bind);
        let addr = match pinned.get(&key) {
            Some(a) => *a,
            None => {
                let s = crate::listener::bind_sockets(l.bind, workers).map_err(|e| {
                    anyhow::anyhow!("listeners.{}: cannot bind {}: {e}", l.name, l.bind)
                })?;
                let a = match s.first() {
                    Some(first) => first.local_addr()?,
                    None => anyhow::bail!("listeners.{}: no worker to listen", l.name),
                };
                fresh.push((a, s));
                a
            }
        };
        l.bind = addr;
        pins.insert(key, addr);
    }
    // A listener given the very port the kernel chose for a port-0 one would
    // share its socket (both bind with SO_REUSEPORT): refuse it by name.
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some(other) = config.listeners[..i].iter().find(|o| o.bind == l.bind) {
            anyhow::bail!(
                "listeners.{}: bind {} is already used by listener {} (bound there from port 0)",
                l.name,
                l.bind,
                other.name
            );
        }
    }
    Ok((pins, fresh))
}

impl Generations {
    /// Builds generation 1 from a validated config: binds every listener
    /// (failing start if one cannot bind), starts workers, probes and resolvers.
    pub async fn start(
        path: PathBuf,
        mut config: Config,
        runtime: RuntimeStore,
    ) -> anyhow::Result<Self> {
        let workers = config.workers;
        let (pinned, mut sockets) = pin_port_zero(&mut config, &Pinned::new(), workers)?;
        let config = Arc::new(config);
        let registry = ServerRegistry::default();
        let first = snapshot::build(config.clone(), 1, None, &registry)
            .map_err(|e| anyhow::anyhow!("invalid configuration:\n{}", e.join("\n")))?;
        resolve::resolve_now(&first).await;
        runtime.retain_configured(&first.upstreams);
        runtime.apply(&first.upstreams);
        let handle = SnapshotHandle::new(first);
        let status = Arc::new(ControlStatus::default());
        let pinned_binds: Vec<SocketAddr> = sockets.iter().map(|(b, _)| *b).collect();
        for l in config
            .listeners
            .iter()
            .filter(|l| !pinned_binds.contains(&l.bind))
        {
            let s = crate::listener::bind_sockets(l.bind, config.workers).map_err(|e| {
                anyhow::anyhow!("listeners.{}: cannot bind {}: {e}", l.name, l.bind)
            })?;
            sockets.push((l.bind, s));
        }
        for (bind, s) in &sockets {
            if let Some(first) = s.first() {
                lock(&status.bound).insert(*bind, first.local_addr()?);
            }
        }
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            workers.push(crate::worker::spawn(i, handle.clone())?);
        }
        let mut gens = Self {
            path,
            snapshot: handle,
            status,
            runtime,
            registry,
            workers,
            prober: Prober::default(),
            resolver: Resolver::default(),
            pinned,
        };
        for (bind, socks) in sockets {
            gens.listen(bind, socks);
        }
        let snap = gens.snapshot.load();
        gens.prober.reconcile(&snap);
        gens.resolver.reconcile(&snap);
        metrics::global().config_generation.set(1);
        tracing::info!(
            generation = 1,
            listeners = config.listeners.len(),
            upstreams = config.upstreams.len(),
            workers = config.workers,
            "serving"
        );
        Ok(gens)
    }

    fn listen(&self, bind: SocketAddr, sockets: Vec<std::net::TcpListener>) {
        for (w, socket) in self.workers.iter().zip(sockets) {
            w.send(Command::Listen { bind, socket });
        }
    }

    /// Re-reads the file and moves to a new generation, or keeps the current
    /// one untouched and returns every error.
    pub async fn reload(&mut self, source: Source) -> Result<u64, Vec<String>> {
        let mut sha256 = None;
        let mut changes = None;
        let result = self.try_reload(&mut sha256, &mut changes).await;
        audit::reload(&source, &result, sha256.as_deref(), changes.as_ref());
        let m = metrics::global();
        let record = match &result {
            Ok(generation) => {
                m.config_reloads.with_label_values(&["success"]).inc();
                tracing::info!(generation, "configuration reloaded");
                ReloadRecord {
                    at_unix_ms: unix_ms(SystemTime::now()),
                    result: "success",
                    errors: Vec::new(),
                }
            }
            Err(errors) => {
                m.config_reloads.with_label_values(&["failure"]).inc();
                for e in errors {
                    tracing::error!("{e}");
                }
                tracing::error!(
                    count = errors.len(),
                    "reload failed; the previous configuration stays in use"
                );
                ReloadRecord {
                    at_unix_ms: unix_ms(SystemTime::now()),
                    result: "failure",
                    errors: errors.clone(),
                }
            }
        };
        *lock(&self.status.last_reload) = Some(record);
        result
    }

    /// Sets `sha256` once the file is read and `changes` once the new
    /// generation is published.
    async fn try_reload(
        &mut self,
        sha256: &mut Option<String>,
        changes: &mut Option<ConfigDiff>,
    ) -> Result<u64, Vec<String>> {
        let strings = |errs: config::ConfigErrors| -> Vec<String> {
            errs.iter().map(ToString::to_string).collect()
        };
        let text = config::read(&self.path).map_err(strings)?;
        *sha256 = Some(audit::sha256_hex(&text));
        let mut next = config::parse_file(&text, &self.path).map_err(strings)?;
        let current = self.snapshot.load();
        restart_only_changes(&current.config, &next, &self.path)?;

        // Bind new listeners first: a bind failure must leave everything as is.
        let (pinned, mut new_sockets) = pin_port_zero(&mut next, &self.pinned, self.workers.len())
            .map_err(|e| vec![format!("{}: {e}", self.path.display())])?;
        for l in &next.listeners {
            let fresh = new_sockets.iter().any(|(b, _)| *b == l.bind);
            if !fresh && current.listener(l.bind).is_none() {
                match crate::listener::bind_sockets(l.bind, self.workers.len()) {
                    Ok(s) => new_sockets.push((l.bind, s)),
                    Err(e) => {
                        return Err(vec![format!(
                            "{}: listeners.{}: cannot bind {}: {e}",
                            self.path.display(),
                            l.name,
                            l.bind
                        )])
                    }
                }
            }
        }
        let generation = current.generation + 1;
        let next = snapshot::build(Arc::new(next), generation, Some(&current), &self.registry)
            .map_err(|errs| {
                let file = self.path.display();
                errs.iter()
                    .map(|e| format!("{file}: {e}"))
                    .collect::<Vec<_>>()
            })?;
        resolve::resolve_now(&next).await;
        let removed_binds: Vec<SocketAddr> = current
            .listeners
            .iter()
            .map(|l| l.config.bind)
            .filter(|b| next.listener(*b).is_none())
            .collect();
        let next_servers = next.servers();
        let removed_servers: Vec<_> = current
            .servers()
            .into_iter()
            .filter(|(k, _)| !next_servers.contains_key(k))
            .map(|(_, s)| s)
            .collect();

        let diff = audit::diff(&current.config, &next.config);
        self.runtime.apply(&next.upstreams);
        let previous = self.snapshot.publish(next);
        drop(previous);
        self.pinned = pinned;
        for (bind, socks) in new_sockets {
            if let Some(first) = socks.first() {
                if let Ok(a) = first.local_addr() {
                    lock(&self.status.bound).insert(bind, a);
                }
            }
            self.listen(bind, socks);
        }
        for bind in removed_binds {
            lock(&self.status.bound).remove(&bind);
            for w in &self.workers {
                w.send(Command::Unlisten { bind });
            }
        }
        for s in removed_servers {
            s.metrics.remove();
        }
        let snap = self.snapshot.load();
        // Entries of removed servers go; a change merged while this
        // generation was built reaches it by the second apply.
        self.runtime.retain_configured(&snap.upstreams);
        self.runtime.apply(&snap.upstreams);
        self.prober.reconcile(&snap);
        self.resolver.reconcile(&snap);
        metrics::global()
            .config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        *changes = Some(diff);
        Ok(generation)
    }

    /// Stops accepting, lets connections finish until `deadline`, joins workers.
    pub async fn shutdown(mut self, deadline: tokio::time::Instant) {
        self.prober.stop();
        self.resolver.stop();
        for w in &self.workers {
            w.send(Command::Shutdown { deadline });
        }
        let mut workers = std::mem::take(&mut self.workers);
        let joined = tokio::task::spawn_blocking(move || {
            for w in &mut workers {
                w.join();
            }
        });
        if joined.await.is_err() {
            tracing::error!("joining worker threads failed");
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.load()
    }
}

/// Errors for settings that only a restart can change.
fn restart_only_changes(
    cur: &Config,
    next: &Config,
    path: &std::path::Path,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let file = path.display();
    if cur.admin.bind != next.admin.bind {
        errors.push(format!(
            "{file}: admin.bind: changing the admin address ({} -> {}) needs a restart",
            cur.admin.bind, next.admin.bind
        ));
    }
    if cur.workers != next.workers {
        errors.push(format!(
            "{file}: workers: changing the worker count ({} -> {}) needs a restart",
            cur.workers, next.workers
        ));
    }
    if cur.ha != next.ha {
        errors.push(format!(
            "{file}: ha: changing the ha section needs a restart"
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Locks a control-plane mutex. Poisoning only means another control task
/// panicked mid-update; the data is plain records, still usable.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
