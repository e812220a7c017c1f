//! A network-namespace lab for the HA tests: namespaces `lb1`, `lb2`, `client` and
//! `backend` (names carry a per-run prefix) wired to a bridge that lives in a namespace
//! of its own, on 10.99.0.0/24, with the VIP 10.99.0.100/24.
//!
//! Other namespace tests (`tests/bgp.rs`) build their own topology on a [`Lab::bare`] lab
//! with [`Lab::add_ns`] and share the spawning, cleanup and serialisation here.
//!
//! Invariants: every namespace and every process the lab started is removed on drop,
//! also when the test panics; names are `tdm<pid>x<n>-<role>` so parallel runs never
//! collide, and leftovers of runs whose process is gone are deleted at start. Only
//! processes inside the lab's own namespaces are ever killed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::repo_root;

pub const VIP: &str = "10.99.0.100";
pub const VIP_CIDR: &str = "10.99.0.100/24";
pub const BACKEND_IP: &str = "10.99.0.20";
/// A second IPv4 VIP (active/active) and the IPv6 VIP.
pub const VIP2: &str = "10.99.0.101";
pub const VIP6: &str = "fd00:99::100";
pub const HEARTBEAT_MS: u64 = 100;
pub const DEAD_MS: u64 = 500;
const NODES: [(&str, &str); 4] = [
    ("lb1", "10.99.0.1"),
    ("lb2", "10.99.0.2"),
    ("client", "10.99.0.10"),
    ("backend", "10.99.0.20"),
];

/// HA tests run one at a time: they measure sub-second failovers on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn ip_of(node: &str) -> &'static str {
    NODES.iter().find(|(n, _)| *n == node).unwrap().1
}

/// Runs a command; panics with its output if it fails.
pub fn run(cmd: &[&str]) -> Output {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_quiet(cmd: &[&str]) -> Option<Output> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().ok()?;
    out.status.success().then_some(out)
}

/// Polls `cond` every 10 ms; panics after `within`.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Lab {
    pub prefix: String,
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
    /// Roles of the namespaces this lab created, deleted on drop.
    namespaces: Vec<String>,
    /// Log files of spawned processes, whose tails are printed when a test fails.
    logs: Vec<String>,
    _serial: MutexGuard<'static, ()>,
}

impl Lab {
    /// The lab, or `None` (after a loud notice) when `TANDEM_SKIP_NETNS=1`. Without root
    /// or `ip netns` the test fails: CI runs these as root.
    pub fn new() -> Option<Lab> {
        let mut lab = Lab::bare("HA")?;
        lab.build();
        Some(lab)
    }

    /// A lab with no namespace yet (the caller adds its own with [`Lab::add_ns`]), or
    /// `None` after a loud notice naming `what` when `TANDEM_SKIP_NETNS=1`. Holds the
    /// lock that runs namespace tests one at a time.
    pub fn bare(what: &str) -> Option<Lab> {
        if std::env::var("TANDEM_SKIP_NETNS").is_ok_and(|v| v == "1") {
            eprintln!("\n!!! SKIPPED: {what} namespace test (TANDEM_SKIP_NETNS=1) !!!\n");
            return None;
        }
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let root = run_quiet(&["id", "-u"]).is_some_and(|o| o.stdout.starts_with(b"0\n"));
        assert!(
            root,
            "{what} tests need root (network namespaces, addresses, routes); run as root or \
             set TANDEM_SKIP_NETNS=1 to skip them"
        );
        assert!(
            run_quiet(&["ip", "netns", "list"]).is_some(),
            "{what} tests need iproute2 with `ip netns` (apt-get install iproute2), or set \
             TANDEM_SKIP_NETNS=1"
        );
        remove_leftovers();
        let prefix = format!(
            "tdm{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        Some(Lab {
            prefix,
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
            namespaces: Vec::new(),
            logs: Vec::new(),
            _serial: serial,
        })
    }

    /// Creates the namespace for `role` with its loopback up; deleted on drop.
    pub fn add_ns(&mut self, role: &str) -> String {
        let ns = self.ns(role);
        // Recorded first: a half-made namespace is deleted too.
        self.namespaces.push(role.to_owned());
        run(&["ip", "netns", "add", &ns]);
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    fn build(&mut self) {
        let br = self.add_ns("br");
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        for (node, ip) in NODES {
            let ns = self.add_ns(node);
            let veth = format!("v-{node}");
            run(&[
                "ip", "-n", &br, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            run(&["ip", "-n", &br, "link", "set", &veth, "master", "br0", "up"]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
    }

    /// `ip netns exec NS cmd...`, waited for.
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        let ns = self.ns(node);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(cmd);
        Command::new(full[0]).args(&full[1..]).output().unwrap()
    }

    /// Spawns `cmd` in `node`; the lab kills it on drop. `ip netns exec` execs the
    /// command, so the child's pid is the command's.
    /// Writes `yaml` as `node`'s proxy.yaml (in its own directory, beside any
    /// files already there), starts tandem in `node` and waits until its admin
    /// API answers.
    pub fn start_tandem(&mut self, node: &str, yaml: &str) -> u32 {
        let dir = self.path(node);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("proxy.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let cfg = cfg.display().to_string();
        let bin = env!("CARGO_BIN_EXE_tandem");
        let pid = self.spawn(
            node,
            &[bin, "--log-level", "info", "run", "-c", &cfg],
            &dir,
            &format!("{node}.log"),
        );
        wait_until(Duration::from_secs(10), "tandem admin API up", || {
            self.admin(node, "/healthz").is_some()
        });
        pid
    }

    pub fn spawn(&mut self, node: &str, cmd: &[&str], cwd: &Path, log: &str) -> u32 {
        let ns = self.ns(node);
        if !self.logs.iter().any(|l| l == log) {
            self.logs.push(log.to_owned());
        }
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(cmd)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Sends `sig` to a process this lab spawned and reaps it if it was SIGKILL.
    pub fn signal(&mut self, pid: u32, sig: &str) {
        crate::support::signal(pid, sig);
        if sig == "KILL" {
            self.reap(pid);
        }
    }

    /// SIGKILLs every process in `node` (all started by this lab: keepalived forks).
    pub fn kill_all_in(&mut self, node: &str) {
        let out = run(&["ip", "netns", "pids", &self.ns(node)]);
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        // Stop everything first: keepalived's child gets SIGTERM when its parent dies and
        // would then resign gracefully (priority 0), which is not a node death.
        for sig in ["-STOP", "-KILL"] {
            let mut cmd = Command::new("kill");
            cmd.arg(sig).args(&pids);
            let _ = cmd.status();
        }
        let mut alive = Vec::new();
        for mut c in self.children.drain(..) {
            if matches!(c.try_wait(), Ok(None)) {
                alive.push(c);
            } else {
                let _ = c.wait();
            }
        }
        self.children = alive;
    }

    pub fn reap(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        let i = self.children.iter().position(|c| c.id() == pid)?;
        let mut c = self.children.remove(i);
        c.wait().ok()
    }

    /// Real Express backend in `backend` on `port`; waits until it listens.
    pub fn express(&mut self, name: &str, port: u16) -> u32 {
        self.express_in("backend", BACKEND_IP, name, port)
    }

    /// Real Express backend named `name` in namespace `node` on `host:port`; waits until
    /// it listens.
    pub fn express_in(&mut self, node: &str, host: &str, name: &str, port: u16) -> u32 {
        let dir = repo_root().join("examples/express-backend");
        assert!(
            dir.join("node_modules/express").exists(),
            "Express backend not installed: run `npm ci` in {}",
            dir.display()
        );
        let ns = self.ns(node);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "node", "server.js"])
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("HOST", host)
            .env("NAME", name)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("express exited").unwrap();
            if line.starts_with(&format!("listening {name} on ")) {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Whether `node` has the VIP on eth0.
    pub fn holds_vip(&self, node: &str) -> bool {
        let out = self.exec(node, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/"))
    }

    pub fn mac(&self, node: &str) -> String {
        let out = self.exec(node, &["cat", "/sys/class/net/eth0/address"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Gives every node an IPv6 address `fd00:99::N/64` on eth0 (N = the IPv4 host
    /// part), without duplicate address detection so it is usable at once.
    pub fn enable_ipv6(&self) {
        for (node, ip) in NODES {
            let host = ip.rsplit('.').next().unwrap();
            let addr = format!("fd00:99::{host}/64");
            let ns = self.ns(node);
            run(&[
                "ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0", "nodad",
            ]);
        }
    }

    /// Whether `node` has `addr` (IPv4 or IPv6, without prefix) on eth0.
    pub fn holds(&self, node: &str, addr: &str) -> bool {
        let out = self.exec(node, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .any(|w| w.split('/').next() == Some(addr))
    }

    /// The MAC the client currently has for `addr` (IPv4 or IPv6), if any.
    pub fn client_mac_of(&self, addr: &str) -> Option<String> {
        let out = self.exec("client", &["ip", "neigh", "show", addr]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_owned)
    }

    /// The MAC the client currently has for the VIP, if any.
    pub fn client_vip_mac(&self) -> Option<String> {
        let out = self.exec("client", &["ip", "neigh", "show", VIP]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_owned)
    }

    /// GET on the node's admin API (127.0.0.1:9901 inside its namespace).
    pub fn admin(&self, node: &str, path: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:9901{path}");
        let out = self.exec(node, &["curl", "-sf", "--max-time", "1", &url]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn role(&self, node: &str) -> Option<String> {
        let s = self.admin(node, "/status")?;
        let v: serde_json::Value = serde_json::from_str(&s).ok()?;
        v["ha"]["role"].as_str().map(str::to_owned)
    }

    pub fn metric(&self, node: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.admin(node, "/metrics").unwrap_or_default();
        crate::support::metric_value(&text, name, labels)
    }

    /// The tail of a log file in the lab dir, for failure messages.
    pub fn log_tail(&self, log: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in &self.logs {
                eprintln!("--- {log} (tail)\n{}", self.log_tail(log));
            }
            let keep = std::env::temp_dir().join(format!("{}-logs", self.prefix));
            let _ = std::fs::create_dir_all(&keep);
            if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
                for e in entries.flatten() {
                    let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                }
            }
            eprintln!("--- lab files kept in {}", keep.display());
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for node in &self.namespaces {
            delete_ns(&self.ns(node));
        }
    }
}

/// Kills what still runs in `ns` (only ever a lab namespace) and deletes it.
fn delete_ns(ns: &str) {
    if let Some(out) = run_quiet(&["ip", "netns", "pids", ns]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Deletes namespaces of earlier runs (prefix `tdm<pid>x`) whose process is gone.
fn remove_leftovers() {
    let Some(out) = run_quiet(&["ip", "netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name.strip_prefix("tdm").and_then(|r| r.split('x').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_ns(name);
        }
    }
}

/// One request outcome seen by the client loop: start and end (wall-clock ns), HTTP code.
#[derive(Debug, Clone)]
pub struct Sample {
    pub start: u128,
    pub end: u128,
    pub code: String,
}

/// A shell loop in `client` sending one new-connection request after another to the VIP.
pub struct ClientLoop {
    pub samples: Arc<Mutex<Vec<Sample>>>,
    pid: u32,
}

impl ClientLoop {
    pub fn start(lab: &mut Lab, max_time: &str) -> Self {
        let script = format!(
            "while :; do s=$(date +%s%N); c=$(curl -s -o /dev/null -w '%{{http_code}}' \
             --max-time {max_time} http://{VIP}:8080/); echo \"$s $(date +%s%N) $c\"; done"
        );
        let ns = lab.ns("client");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "bash", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [s, e, c] = f[..] {
                    if let (Ok(start), Ok(end)) = (s.parse(), e.parse()) {
                        let code = c.to_owned();
                        sink.lock().unwrap().push(Sample { start, end, code });
                    }
                }
            }
        });
        let pid = child.id();
        lab.children.push(child);
        ClientLoop { samples, pid }
    }

    pub fn since(&self, t: u128) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.start >= t)
            .cloned()
            .collect()
    }

    /// Nanoseconds from `t` to the end of the first successful request started after it.
    pub fn first_success_after(&self, t: u128) -> Option<u128> {
        self.since(t)
            .iter()
            .find(|s| s.code == "200")
            .map(|s| s.end - t)
    }

    pub fn stop(self, lab: &mut Lab) {
        lab.signal(self.pid, "KILL");
    }
}

/// Samples which nodes hold the VIP as fast as `ip` allows, on a thread of its own.
pub struct VipSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u128, bool, bool)>>,
}

impl VipSampler {
    pub fn start(lab: &Lab) -> Self {
        let (ns1, ns2) = (lab.ns("lb1"), lab.ns("lb2"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let holds = |ns: &str| {
                let out = Command::new("ip")
                    .args(["-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/"))
            };
            let mut v = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let t = now_ns();
                let (a, b) = (holds(&ns1), holds(&ns2));
                v.push((t, a, b));
            }
            v
        });
        VipSampler { stop, thread }
    }

    /// The samples, (wall-clock ns, lb1 holds, lb2 holds).
    pub fn finish(self) -> Vec<(u128, bool, bool)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// The longest stretch during which both nodes were seen holding the VIP, in ms.
pub fn longest_overlap_ms(samples: &[(u128, bool, bool)]) -> f64 {
    let mut longest = 0u128;
    let mut since: Option<u128> = None;
    for &(t, a, b) in samples {
        match (a && b, since) {
            (true, None) => since = Some(t),
            (false, Some(s)) => {
                longest = longest.max(t - s);
                since = None;
            }
            _ => {}
        }
    }
    if let (Some(s), Some(&(t, _, _))) = (since, samples.last()) {
        longest = longest.max(t - s);
    }
    longest as f64 / 1e6
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
