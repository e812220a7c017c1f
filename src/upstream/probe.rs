//! Active health checks: one task per probed server, reconciled on reload.
//!
//! A [`Prober`] lives on the control runtime. For every server of an upstream
//! with a `health_check` it runs a task that probes every `interval` (first
//! probes spread over the interval so servers are not all probed at once),
//! feeds the pure [`HealthMachine`] and publishes its verdict into the shared
//! `ServerState`. Servers that survive a reload keep their task and verdict if
//! the check is unchanged; a changed check restarts the task with the verdict
//! carried over (so does a change of the upstream's `tls`: probes go over TLS
//! exactly as requests do). Without a `health_check`, servers count as healthy. A
//! server the operator put in maintenance (admin state `maint`) is not probed.
//!
//! The prober sees only the upstreams it is handed (`reconcile` takes the list
//! of the generation just published), never the configuration snapshot, so
//! `upstream` stays below `snapshot` in the module graph.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::health::{probe_offset, HealthMachine};
use super::runtime::AdminState;
use super::tls::UpstreamTls;
use super::{ServerState, Upstream};
use crate::config::types::{self, HealthCheck, Probe};

/// What a probe task needs besides its server: the check, and how to connect
/// (the host for the TLS name, the upstream's TLS client and its config, the
/// latter to notice a change on reload).
#[derive(Clone)]
struct Target {
    check: HealthCheck,
    host: String,
    tls: Option<Arc<UpstreamTls>>,
    tls_config: Option<types::UpstreamTls>,
}

impl Target {
    fn same(&self, other: &Target) -> bool {
        self.check == other.check && self.host == other.host && self.tls_config == other.tls_config
    }
}

struct Running {
    target: Target,
    task: JoinHandle<()>,
}

/// The set of running probe tasks.
#[derive(Default)]
pub struct Prober {
    running: HashMap<u64, Running>,
}

impl Prober {
    /// Starts, keeps or stops probe tasks to match `upstreams`, the complete
    /// list of the generation just published (a server missing from it loses
    /// its task).
    pub fn reconcile(&mut self, upstreams: &[Arc<Upstream>]) {
        let mut wanted: HashMap<u64, (Arc<ServerState>, Target, usize, usize)> = HashMap::new();
        for up in upstreams {
            let n = up.servers.len();
            for (i, s) in up.servers.iter().enumerate() {
                match &up.config.health_check {
                    Some(hc) => {
                        let target = Target {
                            check: hc.clone(),
                            host: up.host(i).to_owned(),
                            tls: up.tls.clone(),
                            tls_config: up.config.tls.clone(),
                        };
                        wanted.insert(s.id, (s.clone(), target, i, n));
                    }
                    None => {
                        if !s.is_healthy() {
                            tracing::info!(server = %s.key.address, upstream = %s.key.upstream,
                                "health check removed: server counts as healthy");
                        }
                        s.set_healthy(true);
                    }
                }
            }
        }
        self.running.retain(|id, r| {
            let keep = wanted.get(id).is_some_and(|w| w.1.same(&r.target));
            if !keep {
                r.task.abort();
            }
            keep
        });
        for (id, (server, target, i, n)) in wanted {
            if self.running.contains_key(&id) {
                continue;
            }
            let offset = probe_offset(i, n, target.check.interval);
            let task = tokio::spawn(run(server, target.clone(), offset));
            self.running.insert(id, Running { target, task });
        }
    }

    pub fn stop(&mut self) {
        for (_, r) in self.running.drain() {
            r.task.abort();
        }
    }
}

async fn run(server: Arc<ServerState>, target: Target, offset: Duration) {
    let check = &target.check;
    let mut machine = HealthMachine::new(check.rise, check.fall);
    if !server.is_healthy() {
        // Carry an unhealthy verdict over a restart: it takes `rise` passes.
        for _ in 0..check.fall {
            machine.record(false);
        }
    }
    tokio::time::sleep(offset).await;
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // In maintenance the server may be down on purpose: no probes, and the
        // verdict stays as it was. Checked on every tick, so probing resumes
        // within one interval of the server leaving maintenance.
        if server.admin_state() == AdminState::Maint {
            continue;
        }
        let result = match tokio::time::timeout(check.timeout, probe_once(&server, &target)).await {
            Ok(r) => r,
            Err(_) => Err("timeout".to_owned()),
        };
        match &result {
            Ok(()) => server.metrics.checks_pass.inc(),
            Err(_) => server.metrics.checks_fail.inc(),
        }
        if let Some(change) = machine.record(result.is_ok()) {
            server.set_healthy(change.healthy);
            let why = result.err().unwrap_or_else(|| "probe passed".to_owned());
            if change.healthy {
                tracing::warn!(upstream = %server.key.upstream, server = %server.key.address,
                    from = "unhealthy", to = "healthy", after = change.after, reason = %why,
                    "server health changed");
            } else {
                tracing::warn!(upstream = %server.key.upstream, server = %server.key.address,
                    from = "healthy", to = "unhealthy", after = change.after, reason = %why,
                    "server health changed");
            }
        }
    }
}

/// One probe. `Err` says why it failed, for the log.
async fn probe_once(server: &ServerState, target: &Target) -> Result<(), String> {
    let probe = &target.check.probe;
    let addr = server.next_addr().ok_or("no address resolved")?;
    let mut stream = super::tls::connect(
        std::iter::once(addr),
        &target.host,
        target.tls.as_deref(),
        target.check.timeout,
    )
    .await
    .map_err(|f| match f {
        super::attempt::Failure::Tls => "TLS handshake failed".to_owned(),
        other => format!("connect: {}", other.kind()),
    })?;
    let Probe::Http {
        path,
        host,
        expect_status,
    } = probe
    else {
        return Ok(());
    };
    let host = host.clone().unwrap_or_else(|| server.key.address.clone());
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tandem-health-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let Some(rest) = buf.get_mut(n..) else { break };
        let r = stream.read(rest).await.map_err(|e| format!("read: {e}"))?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let code = parse_status(buf.get(..n).unwrap_or_default())
        .ok_or_else(|| "invalid response".to_owned())?;
    if (expect_status.0..=expect_status.1).contains(&code) {
        Ok(())
    } else {
        Err(format!("status {code}"))
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Arc;

    use super::{parse_status, Prober};
    use crate::upstream::{ServerRegistry, Upstream};

    /// The upstreams of a config whose only upstream has the given servers.
    /// Servers present in `previous` keep their state, as a reload builds them.
    fn upstreams(
        registry: &ServerRegistry,
        previous: &[Arc<Upstream>],
        ports: &[u16],
    ) -> Vec<Arc<Upstream>> {
        let previous: HashMap<_, _> = previous
            .iter()
            .flat_map(|u| u.servers.iter())
            .map(|s| (s.key.clone(), s.clone()))
            .collect();
        let servers: String = ports
            .iter()
            .map(|p| format!("      - address: 127.0.0.1:{p}\n"))
            .collect();
        let text = format!(
            "listeners:\n  - name: web\n    bind: 127.0.0.1:1\n    upstream: app\nupstreams:\n  - name: app\n    health_check:\n      tcp: {{}}\n      interval: 1h\n    servers:\n{servers}"
        );
        let config = crate::config::parse(&text, "test.yaml", Path::new(".")).unwrap();
        vec![Arc::new(
            registry.build_upstream(&config.upstreams[0], &previous),
        )]
    }

    fn probed(prober: &Prober, ups: &[Arc<Upstream>]) -> Vec<String> {
        let mut v: Vec<String> = ups
            .iter()
            .flat_map(|u| u.servers.iter())
            .filter(|s| prober.running.contains_key(&s.id))
            .map(|s| s.key.address.clone())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn probes_follow_the_upstreams_handed_over() {
        let registry = ServerRegistry::default();
        let mut prober = Prober::default();
        let first = upstreams(&registry, &[], &[3001, 3002]);
        prober.reconcile(&first);
        assert_eq!(
            probed(&prober, &first),
            ["127.0.0.1:3001", "127.0.0.1:3002"]
        );
        let s2 = first[0].servers[1].id;
        let task = prober.running[&s2].task.id();

        // A reload drops 3001 and adds 3003: 3001's task stops, 3002 keeps its own.
        let second = upstreams(&registry, &first, &[3002, 3003]);
        assert_eq!(second[0].servers[0].id, s2, "state survives the reload");
        prober.reconcile(&second);
        assert_eq!(
            probed(&prober, &second),
            ["127.0.0.1:3002", "127.0.0.1:3003"]
        );
        assert_eq!(prober.running.len(), 2, "the removed server's task stopped");
        assert_eq!(
            prober.running[&s2].task.id(),
            task,
            "unchanged check keeps its task"
        );

        prober.reconcile(&[]);
        assert!(prober.running.is_empty());
    }

    /// `upstream` sits below `snapshot`: probes and resolvers are handed the
    /// upstreams they need, so nothing here reaches into the snapshot.
    #[test]
    fn upstream_does_not_import_snapshot() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/upstream");
        let mut files = vec![dir.with_extension("rs")];
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        assert!(files.len() > 5, "found the upstream sources: {files:?}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            // Doc comments may name the snapshot; code may not. The needle is
            // split so this test does not match itself.
            let needle = concat!("crate::", "snapshot");
            let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
            assert!(
                !code.into_iter().any(|l| l.contains(needle)),
                "{} imports the snapshot module",
                f.display()
            );
        }
    }

    #[test]
    fn status_line_is_parsed() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(parse_status(b"HTTP/2 200"), None);
        assert_eq!(parse_status(b"garbage"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
    }
}
