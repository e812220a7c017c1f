//! Test harness: real tandem processes, real Express backends, conditions not sleeps.
//!
//! - [`Express`] starts `examples/express-backend/server.js` on a free port
//!   (PORT=0; the port is read from its `listening NAME on HOST:PORT` line) and
//!   kills it on drop. Run `npm ci` in that folder first (`.ci/run` does).
//! - [`Tandem`] writes a config into a temp dir, starts the real binary, waits
//!   for the admin API, and sends SIGTERM (then SIGKILL) on drop.
//! - [`eventually`] polls a condition until it holds or a deadline passes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// First and one-past-last port [`free_port`] hands out: below the kernel's
/// ephemeral range (32768 and up by default), so neither a client connection
/// nor a concurrent test's `:0` bind can take a port between the moment it is
/// chosen and the moment tandem binds it.
const FIXED_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A port that was free a moment ago (for addresses the test must know
/// upfront, such as the admin API's). Each call in this process gets a port no
/// earlier call got; the start is spread by pid so concurrent test processes
/// rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = FIXED_PORTS.end - FIXED_PORTS.start;
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIXED_PORTS.start + (offset + n) % span;
        let port = u16::try_from(port).expect("range is below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIXED_PORTS:?}");
}

/// Polls `cond` every 20 ms until it returns true; panics after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// A real Express backend from `examples/express-backend`.
pub struct Express {
    pub name: String,
    pub port: u16,
    child: Option<Child>,
}

impl Express {
    pub fn start(name: &str) -> Self {
        Self::start_on(name, 0)
    }

    pub fn start_on(name: &str, port: u16) -> Self {
        Self::start_env(name, port, &[])
    }

    /// Starts with extra environment (e.g. `TLS_CERT`/`TLS_KEY` for HTTPS).
    pub fn start_env(name: &str, port: u16, env: &[(&str, &Path)]) -> Self {
        let dir = repo_root().join("examples/express-backend");
        assert!(
            dir.join("node_modules/express").exists(),
            "Express backend not installed: run `npm ci` in {}",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("NAME", name)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("express exited before listening")
                .expect("read express stdout");
            if let Some(addr) = line.strip_prefix(&format!("listening {name} on ")) {
                let addr: SocketAddr = addr.trim().parse().expect("listening address");
                break addr.port();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Self {
            name: name.to_owned(),
            port,
            child: Some(child),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub async fn control(&self, switches: serde_json::Value) {
        let r = reqwest::Client::new()
            .post(self.url("/__control"))
            .json(&switches)
            .send()
            .await
            .expect("control request");
        assert!(
            r.status().is_success(),
            "control {switches} -> {}",
            r.status()
        );
    }

    pub async fn requests(&self) -> u64 {
        let v: serde_json::Value = reqwest::get(self.url("/__stats"))
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json");
        v["requests"].as_u64().expect("requests count")
    }

    /// SIGKILL: the process dies with its connections.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Express {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A SIGSTOPped process must be continued to die from SIGKILL promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A running tandem process.
pub struct Tandem {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub admin: SocketAddr,
    child: Option<Child>,
}

/// Replaces `{admin}` in a config template with a free admin address.
pub fn admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

impl Tandem {
    /// Starts tandem with `yaml`, where `{admin}` stands for the admin address.
    /// Should the chosen admin port be taken after all (another process on
    /// this machine), tandem refuses to start and the start is retried on a
    /// fresh port.
    pub async fn start(yaml: &str) -> Self {
        Self::start_logging(yaml, "warn").await
    }

    /// [`Tandem::start`] with `--log-level level` (the default is `warn`);
    /// the log is read back with [`Tandem::log`].
    pub async fn start_logging(yaml: &str, level: &str) -> Self {
        Self::launch(yaml, level, &[]).await
    }

    /// [`Tandem::start`] with global options before `run` (e.g.
    /// `["--log-format", "json"]`).
    pub async fn start_with(yaml: &str, options: &[&str]) -> Self {
        Self::launch(yaml, "warn", options).await
    }

    async fn launch(yaml: &str, level: &str, options: &[&str]) -> Self {
        for _ in 0..3 {
            match Self::try_start(yaml, level, options).await {
                Ok(t) => return t,
                Err(log) if log.contains("admin.bind") && log.contains("in use") => continue,
                Err(log) => panic!("tandem exited during startup: {log}"),
            }
        }
        panic!("tandem could not bind an admin port in three tries");
    }

    /// One start; `Err(status and log)` if the process exited before the
    /// admin API answered.
    async fn try_start(yaml: &str, level: &str, options: &[&str]) -> Result<Self, String> {
        let admin = admin_addr();
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("proxy.yaml");
        std::fs::write(&config_path, yaml.replace("{admin}", &admin.to_string()))
            .expect("write config");
        let log_path = dir.path().join("tandem.log");
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(options)
            .args(["--log-level", level, "run", "-c"])
            .arg(&config_path)
            .stdout(Stdio::null())
            // Logs go to a file beside the config; printed only if the test fails.
            .stderr(Stdio::from(
                std::fs::File::create(&log_path).expect("log file"),
            ))
            .spawn()
            .expect("start tandem");
        let mut t = Self {
            dir,
            config_path,
            admin,
            child: Some(child),
        };
        let url = t.admin_url("/healthz");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(t);
                }
            }
            if let Some(status) = t.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                t.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("{status}\n{log}"));
            }
            assert!(
                Instant::now() < deadline,
                "tandem did not start within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What tandem has logged so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tandem.log")).unwrap_or_default()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(self.admin_url("/status"))
            .await
            .expect("status")
            .json()
            .await
            .expect("status json")
    }

    /// The address a listener actually bound (its config may say port 0).
    pub async fn listener_addr(&self, name: &str) -> SocketAddr {
        let s = self.status().await;
        let l = s["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no listener {name} in {s}"));
        l["bound"].as_str().expect("bound").parse().expect("addr")
    }

    pub async fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{path}", self.listener_addr(listener).await)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Sum of a metric's samples whose label set contains every `labels` pair.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    pub fn write_config(&self, yaml: &str) {
        std::fs::write(
            &self.config_path,
            yaml.replace("{admin}", &self.admin.to_string()),
        )
        .expect("write config");
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Sends `sig` without waiting (see [`Tandem::wait_exit`]).
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Waits without blocking the runtime until the process exits; panics
    /// (after SIGKILL) if it is still running after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = exited_by(&mut child, deadline, &format!(" (within {within:?})"))
            {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends `sig` and waits for the exit status.
    pub fn stop_with(&mut self, sig: &str, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), sig);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = exited_by(
                &mut child,
                deadline,
                &format!(" (within {within:?} after SIG{sig})"),
            ) {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One check of a process expected to exit by `deadline`: its status once it
/// has exited; past the deadline it is killed and the test fails.
fn exited_by(child: &mut Child, deadline: Instant, what: &str) -> Option<std::process::ExitStatus> {
    if let Some(status) = child.try_wait().expect("wait") {
        return Some(status);
    }
    if Instant::now() > deadline {
        let _ = child.kill();
        let _ = child.wait();
        panic!("tandem did not exit by its deadline{what}");
    }
    None
}

impl Drop for Tandem {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("tandem.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "---- tandem log (last {} lines) ----\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// Parses one metric out of a Prometheus text scrape.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_str) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_str.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Runs the `tandem` binary with `args`, returning (exit code, stdout, stderr).
pub fn tandem_cli(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run tandem");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// What a bounded load loop saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: u64,
    /// (milliseconds since the start, status or error text)
    pub errors: Vec<(u128, String)>,
    pub by_instance: std::collections::HashMap<String, u64>,
}

impl LoadReport {
    pub fn errors_after(&self, ms: u128) -> usize {
        self.errors.iter().filter(|(t, _)| *t >= ms).count()
    }
}

/// GETs `url` from `concurrency` keep-alive clients until `duration` passes or
/// `max_requests` were sent. Counts non-2xx answers and transport errors.
pub async fn load(
    url: &str,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
) -> LoadReport {
    let started = Instant::now();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let url = url.to_owned();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut r = LoadReport::default();
            while started.elapsed() < duration
                && sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < max_requests
            {
                let at = started.elapsed().as_millis();
                match c.get(&url).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let inst = resp
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["instance"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        *r.by_instance.entry(inst).or_default() += 1;
                        r.ok += 1;
                    }
                    Ok(resp) => r.errors.push((at, resp.status().to_string())),
                    Err(e) => r.errors.push((at, e.to_string())),
                }
            }
            r
        }));
    }
    let mut total = LoadReport::default();
    for t in tasks {
        let r = t.await.expect("load task");
        total.ok += r.ok;
        total.errors.extend(r.errors);
        for (k, v) in r.by_instance {
            *total.by_instance.entry(k).or_default() += v;
        }
    }
    total.errors.sort();
    total
}

impl Tandem {
    /// A server's field in `/status` (e.g. "health", "breaker").
    pub async fn server_field(&self, upstream: &str, address: &str, field: &str) -> String {
        let s = self.status().await;
        s["upstreams"]
            .as_array()
            .and_then(|ups| ups.iter().find(|u| u["name"] == upstream))
            .and_then(|u| u["servers"].as_array())
            .and_then(|ss| ss.iter().find(|x| x["address"] == address))
            .map(|x| match &x[field] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| panic!("no server {upstream}/{address} in {s}"))
    }
}

/// The usual test config: the admin API, one HTTP listener `web` on a free port
/// sending to upstream `app`, and that upstream's `servers`. `listener_keys` and
/// `upstream_keys` are extra YAML lines, indented four spaces, placed before
/// the listener's end and the upstream's `servers`. More upstreams may be
/// appended to the result.
pub fn web_config(listener_keys: &str, upstream_keys: &str, servers: &[String]) -> String {
    let list: String = servers
        .iter()
        .map(|s| format!("      - address: {s}\n"))
        .collect();
    format!(
        "admin:\n  bind: \"{{admin}}\"\nlisteners:\n  - name: web\n    bind: 127.0.0.1:0\n    upstream: app\n{listener_keys}upstreams:\n  - name: app\n{upstream_keys}    servers:\n{list}"
    )
}

impl Express {
    /// `GET /__stats` as JSON (requests, healthz, in_flight, max_in_flight).
    pub async fn stats(&self) -> serde_json::Value {
        reqwest::get(self.url("/__stats"))
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }
}
