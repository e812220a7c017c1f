//! Re-resolution of server host names (`resolve_interval`).
//!
//! Servers written as `HOST:PORT` get their addresses from the system resolver
//! at start ([`resolve_now`], awaited before serving) and then every
//! `resolve_interval` by one task per upstream. A failed lookup keeps the last
//! good addresses; a server that never resolved has none, so attempts to it
//! fail fast with `resolve` errors and move to other servers.
//!
//! Both entry points take the upstreams to resolve, not the configuration
//! snapshot: the control plane hands over each generation's list when it is
//! built, so `upstream` does not depend on `snapshot`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{ServerState, Upstream};

/// Servers of one upstream that have host names, with their name and port.
fn named(up: &Upstream) -> Vec<(Arc<ServerState>, String, u16)> {
    up.config
        .servers
        .iter()
        .zip(up.servers.iter())
        .filter(|(c, _)| c.host.parse::<std::net::IpAddr>().is_err() && !c.host.starts_with('['))
        .map(|(c, s)| (s.clone(), c.host.clone(), c.port))
        .collect()
}

async fn resolve_one(server: &ServerState, host: &str, port: u16) {
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let mut v: Vec<SocketAddr> = addrs.collect();
            v.sort();
            v.dedup();
            if v.is_empty() {
                tracing::warn!(server = %server.key.address, "host name resolved to no address");
            } else if *server.addrs() != v {
                tracing::info!(server = %server.key.address, addrs = ?v, "resolved");
                server.set_addrs(v);
            }
        }
        Err(e) => {
            tracing::warn!(server = %server.key.address, error = %e,
                "host name resolution failed; keeping previous addresses");
        }
    }
}

/// Resolves every named server of `upstreams` once, concurrently.
pub async fn resolve_now(upstreams: &[Arc<Upstream>]) {
    let mut set = tokio::task::JoinSet::new();
    for up in upstreams {
        for (s, host, port) in named(up) {
            set.spawn(async move { resolve_one(&s, &host, port).await });
        }
    }
    while set.join_next().await.is_some() {}
}

/// Periodic re-resolution tasks, one per upstream with host names.
#[derive(Default)]
pub struct Resolver {
    tasks: HashMap<String, JoinHandle<()>>,
}

impl Resolver {
    /// Restarts the per-upstream tasks for `upstreams`, the complete list of
    /// the generation just published (cheap: reloads are rare).
    pub fn reconcile(&mut self, upstreams: &[Arc<Upstream>]) {
        self.stop();
        for up in upstreams {
            let servers = named(up);
            if servers.is_empty() {
                continue;
            }
            let every = up.config.resolve_interval;
            let task = tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    for (s, host, port) in &servers {
                        resolve_one(s, host, *port).await;
                    }
                }
            });
            self.tasks.insert(up.config.name.clone(), task);
        }
    }

    pub fn stop(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
    }
}
