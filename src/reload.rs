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

mod error;

pub use error::{ListenError, Problem, ReloadError, RestartOnly, StartError};

/// The last reload attempt, for `/status`.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub at_unix_ms: u64,
    pub result: &'static str,
    /// Why it failed; `None` for a success.
    pub error: Option<Arc<ReloadError>>,
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
) -> Result<(Pinned, Vec<Bound>), ListenError> {
    let mut pins = Pinned::new();
    let mut fresh = Vec::new();
    for l in config.listeners.iter_mut().filter(|l| l.bind.port() == 0) {
        let key = (l.name.clone(), l.bind);
        let addr = match pinned.get(&key) {
            Some(a) => *a,
            None => {
                let bind_error = |source| ListenError::Bind {
                    listener: l.name.clone(),
                    bind: l.bind,
                    source,
                };
                let s = crate::listener::bind_sockets(l.bind, workers).map_err(bind_error)?;
                let a = match s.first() {
                    Some(first) => first.local_addr().map_err(bind_error)?,
                    None => {
                        return Err(ListenError::NoWorker {
                            listener: l.name.clone(),
                        })
                    }
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
            return Err(ListenError::PortTaken {
                listener: l.name.clone(),
                bind: l.bind,
                other: other.name.clone(),
            });
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
    ) -> Result<Self, StartError> {
        let workers = config.workers;
        let (pinned, mut sockets) = pin_port_zero(&mut config, &Pinned::new(), workers)?;
        let config = Arc::new(config);
        let registry = ServerRegistry::default();
        let first = snapshot::build(config.clone(), 1, None, &registry)?;
        resolve::resolve_now(&first.upstreams).await;
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
            let s = crate::listener::bind_sockets(l.bind, config.workers).map_err(|source| {
                ListenError::Bind {
                    listener: l.name.clone(),
                    bind: l.bind,
                    source,
                }
            })?;
            sockets.push((l.bind, s));
        }
        for (bind, s) in &sockets {
            if let Some(first) = s.first() {
                let name = config.listeners.iter().find(|l| l.bind == *bind);
                let addr = first.local_addr().map_err(|source| ListenError::Bind {
                    listener: name.map(|l| l.name.clone()).unwrap_or_default(),
                    bind: *bind,
                    source,
                })?;
                lock(&status.bound).insert(*bind, addr);
            }
        }
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            let worker = crate::worker::spawn(i, handle.clone())
                .map_err(|source| StartError::Worker { index: i, source })?;
            workers.push(worker);
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
        gens.prober.reconcile(&snap.upstreams);
        gens.resolver.reconcile(&snap.upstreams);
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
    pub async fn reload(&mut self, source: Source) -> Result<u64, Arc<ReloadError>> {
        let mut sha256 = None;
        let mut changes = None;
        let result = self
            .try_reload(&mut sha256, &mut changes)
            .await
            .map_err(Arc::new);
        let problems = result.as_ref().map_err(|e| e.problems());
        let outcome = match &problems {
            Ok(g) => Ok(**g),
            Err(p) => Err(p.as_slice()),
        };
        audit::reload(&source, outcome, sha256.as_deref(), changes.as_ref());
        let m = metrics::global();
        let record = match &result {
            Ok(generation) => {
                m.config_reloads.with_label_values(&["success"]).inc();
                tracing::info!(generation, "configuration reloaded");
                ReloadRecord {
                    at_unix_ms: unix_ms(SystemTime::now()),
                    result: "success",
                    error: None,
                }
            }
            Err(error) => {
                m.config_reloads.with_label_values(&["failure"]).inc();
                let problems = error.problems();
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    count = problems.len(),
                    "reload failed; the previous configuration stays in use"
                );
                ReloadRecord {
                    at_unix_ms: unix_ms(SystemTime::now()),
                    result: "failure",
                    error: Some(error.clone()),
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
    ) -> Result<u64, ReloadError> {
        let file = || self.path.display().to_string();
        let text = config::read(&self.path)?;
        *sha256 = Some(audit::sha256_hex(&text));
        let mut next = config::parse_file(&text, &self.path)?;
        let current = self.snapshot.load();
        let restart_only = restart_only_changes(&current.config, &next);
        if !restart_only.is_empty() {
            return Err(ReloadError::RestartOnly {
                file: file(),
                changes: restart_only,
            });
        }

        // Bind new listeners first: a bind failure must leave everything as is.
        let listen_error = |source| ReloadError::Listen {
            file: file(),
            source,
        };
        let (pinned, mut new_sockets) =
            pin_port_zero(&mut next, &self.pinned, self.workers.len()).map_err(listen_error)?;
        for l in &next.listeners {
            let fresh = new_sockets.iter().any(|(b, _)| *b == l.bind);
            if !fresh && current.listener(l.bind).is_none() {
                match crate::listener::bind_sockets(l.bind, self.workers.len()) {
                    Ok(s) => new_sockets.push((l.bind, s)),
                    Err(source) => {
                        return Err(listen_error(ListenError::Bind {
                            listener: l.name.clone(),
                            bind: l.bind,
                            source,
                        }))
                    }
                }
            }
        }
        let generation = current.generation + 1;
        let next = snapshot::build(Arc::new(next), generation, Some(&current), &self.registry)
            .map_err(|errors| ReloadError::Build {
                file: file(),
                errors,
            })?;
        resolve::resolve_now(&next.upstreams).await;
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
        self.prober.reconcile(&snap.upstreams);
        self.resolver.reconcile(&snap.upstreams);
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

/// The settings that only a restart can change, in file order.
fn restart_only_changes(cur: &Config, next: &Config) -> Vec<RestartOnly> {
    let mut changes = Vec::new();
    if cur.admin.bind != next.admin.bind {
        changes.push(RestartOnly::AdminBind {
            from: cur.admin.bind,
            to: next.admin.bind,
        });
    }
    if cur.workers != next.workers {
        changes.push(RestartOnly::Workers {
            from: cur.workers,
            to: next.workers,
        });
    }
    if cur.ha != next.ha {
        changes.push(RestartOnly::Ha);
    }
    changes
}

/// Locks a control-plane mutex. Poisoning only means another control task
/// panicked mid-update; the data is plain records, still usable.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
