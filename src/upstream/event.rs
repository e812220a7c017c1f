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

/// Which events of one server have a hook running (one bit per [`ServerEvent`]).
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use crate::upstream::ServerRegistry;

    #[tokio::test]
    async fn one_hook_at_a_time_per_server_and_event() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("calls");
        let hook = dir.path().join("hook.sh");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$TANDEM_EVENT\" >> {}\nsleep 1\n",
                record.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = format!(
            "listeners:\n  - name: web\n    bind: 127.0.0.1:1\n    upstream: app\nupstreams:\n  - name: app\n    notify:\n      down: {h}\n      up: {h}\n    servers:\n      - address: 127.0.0.1:3001\n",
            h = hook.display()
        );
        let config = crate::config::parse(&text, "t.yaml", dir.path()).unwrap();
        let up = ServerRegistry::default().build_upstream(&config.upstreams[0], &HashMap::new());
        let s = &up.servers[0];
        s.set_healthy(false); // down: runs (sleeps 1 s)
        s.set_healthy(true); // up: another event, runs beside it
        s.set_healthy(false); // down again while the first still runs: skipped
        let calls = || std::fs::read_to_string(&record).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let running = || {
            s.hooks_running()
                .0
                .load(std::sync::atomic::Ordering::Acquire)
        };
        while (calls().lines().count() < 2 || running() != 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut got: Vec<String> = calls().lines().map(str::to_owned).collect();
        got.sort();
        assert_eq!(got, ["down", "up"], "the second down was skipped");
        // Once it finished, the next down runs again.
        s.set_healthy(true);
        s.set_healthy(false);
        while calls().lines().count() < 4 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(calls().lines().count(), 4, "{}", calls());
    }
}
