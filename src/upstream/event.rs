//! Server event hooks: `upstreams[].notify.{down,up,breaker_open}`.
//!
//! Owns: turning a server event into a hook run, off the hot path, one at a time
//! per server and event. Does not own noticing the events (health changes and
//! breaker transitions are recorded in [`super::ServerState`] and
//! [`super::log_breaker_transition`], which call [`fire`]) nor running a process
//! ([`crate::hook`]: 30 s limit, outcome logged).
//!
//! One [`EventHooks`] per upstream name, kept across reloads; a reload swaps its
//! paths. Hooks are spawned on the runtime that built the first snapshot (the main
//! one), never on a worker's. An event whose hook is still running for the same
//! server is skipped and logged: a flapping server must not fork a process storm.
//! Tested by `tests/events.rs` (a script that records its environment).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::ServerState;
use crate::config::types::ServerNotify;

/// A server event that may run a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// The server became unhealthy.
    Down,
    /// It became healthy again.
    Up,
    /// Its circuit breaker opened.
    BreakerOpen,
}

impl ServerEvent {
    /// `TANDEM_EVENT`'s value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
            Self::BreakerOpen => "breaker_open",
        }
    }

    /// This event's bit in [`Running`].
    fn bit(self) -> u8 {
        match self {
            Self::Down => 1,
            Self::Up => 2,
            Self::BreakerOpen => 4,
        }
    }
}

/// One upstream's hook paths and where to run them.
pub struct EventHooks {
    upstream: String,
    paths: ArcSwap<ServerNotify>,
    runtime: Option<tokio::runtime::Handle>,
}

impl EventHooks {
    pub fn new(upstream: &str) -> Self {
        Self {
            upstream: upstream.to_owned(),
            paths: ArcSwap::from_pointee(ServerNotify::default()),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The paths of the latest snapshot.
    pub fn set(&self, notify: &ServerNotify) {
        self.paths.store(Arc::new(notify.clone()));
    }

    fn path(&self, event: ServerEvent) -> Option<PathBuf> {
        let paths = self.paths.load();
        match event {
            ServerEvent::Down => paths.down.clone(),
            ServerEvent::Up => paths.up.clone(),
            ServerEvent::BreakerOpen => paths.breaker_open.clone(),
        }
    }
}

/// Which events of one server have a hook running (bits of [`ServerEvent::bit`]).
#[derive(Default)]
pub struct Running(AtomicU8);

/// Runs `server`'s hook for `event`, if one is configured and none is running
/// for this server and event. Returns at once.
pub fn fire(server: &Arc<ServerState>, event: ServerEvent) {
    let hooks = server.events();
    let Some(path) = hooks.path(event) else {
        return;
    };
    let Some(runtime) = hooks.runtime.as_ref() else {
        tracing::error!(upstream = %hooks.upstream, server = %server.key.address,
            event = event.as_str(), "server event hook not run: no runtime");
        return;
    };
    let bit = event.bit();
    if server.hooks_running().0.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        tracing::warn!(upstream = %hooks.upstream, server = %server.key.address,
            event = event.as_str(), "server event hook skipped: the previous one still runs");
        return;
    }
    let server = server.clone();
    runtime.spawn(async move {
        let upstream = server.key.upstream.clone();
        let address = server.key.address.clone();
        let env = [
            ("TANDEM_UPSTREAM", upstream.as_str()),
            ("TANDEM_SERVER", address.as_str()),
            ("TANDEM_EVENT", event.as_str()),
        ];
        let inv = crate::hook::Invocation {
            kind: "server event",
            path: &path,
            args: &[],
            env: &env,
        };
        crate::hook::run(inv, crate::hook::HOOK_TIMEOUT).await;
        server.hooks_running().0.fetch_and(!bit, Ordering::AcqRel);
    });
}
