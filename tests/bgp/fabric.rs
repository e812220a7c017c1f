//! The ECMP fabric for the BGP tests, built on a bare [`Lab`]: a router namespace `rt`
//! running BIRD (`bgp/bird-router.conf`) with multipath routes into its kernel table and
//! L4 hashing, a `client` namespace routed through it, and three nodes `lb1..lb3`, each
//! running tandem, its own Express backend, BIRD (`bgp/bird.conf`) and the check loop
//! (`bgp/tandem-bgp-announce` + `bgp/tandem-bgp-check`), the shipped files with only
//! this lab's addresses substituted.
//!
//! Addresses: client 10.200.0.2 -- 10.200.0.1 rt; node N 10.200.N.2 -- 10.200.N.1 rt;
//! the VIP 192.0.2.10/32 on every node's loopback. Nothing is routed outside.
//!
//! Also owns the client side: TCP connections opened from inside the client namespace
//! (a thread that enters it with `setns`), so the test speaks plain HTTP/1.1 from Rust.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::ha::lab::{run, wait_until, Lab};
use crate::support::repo_root;

pub const VIP: &str = "192.0.2.10";
pub const PORT: u16 = 8080;
pub const NODES: [&str; 3] = ["lb1", "lb2", "lb3"];
/// Check loop timing: a dead tandem is withdrawn after FALL x INTERVAL (+ one check).
pub const INTERVAL: &str = "0.5";
pub const RISE: &str = "2";
pub const FALL: &str = "2";
const BACKEND_PORT: u16 = 3000;

/// `lbN` -> N.
pub fn index(node: &str) -> usize {
    node.trim_start_matches("lb").parse().unwrap()
}

/// The node's address on its link to the router: the BGP next hop the router installs.
pub fn gateway_of(node: &str) -> String {
    format!("10.200.{}.2", index(node))
}

pub fn node_of_gateway(gw: &str) -> &'static str {
    NODES.iter().find(|n| gateway_of(n) == gw).unwrap()
}

pub struct Fabric {
    pub lab: Lab,
    /// Each node's running tandem pid.
    pub tandem: [u32; 3],
    /// Each node's check loop (`tandem-bgp-announce`) pid.
    pub announce: [u32; 3],
}

impl Fabric {
    /// Builds the topology and starts everything; returns once the router has a route
    /// to the VIP through all three nodes. `None` when namespace tests are skipped.
    pub fn start() -> Option<Fabric> {
        let mut lab = Lab::bare("BGP")?;
        assert!(
            std::process::Command::new("bird")
                .arg("--version")
                .output()
                .is_ok(),
            "BGP tests need BIRD 2 (apt-get install bird2), or set TANDEM_SKIP_NETNS=1"
        );
        let rt = lab.add_ns("rt");
        run(&[
            "ip",
            "netns",
            "exec",
            &rt,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        // L4 hashing: one client's connections (same addresses, different source
        // ports) spread over the next hops; the default policy hashes addresses only.
        run(&[
            "ip",
            "netns",
            "exec",
            &rt,
            "sysctl",
            "-qw",
            "net.ipv4.fib_multipath_hash_policy=1",
        ]);
        link(&mut lab, "client", "c0", 0);
        for node in NODES {
            link(&mut lab, node, &format!("l{}", index(node)), index(node));
            let ns = lab.ns(node);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{VIP}/32"),
                "dev",
                "lo",
            ]);
        }
        start_bird(&mut lab, "rt", &router_conf());
        let (mut tandem, mut announce) = ([0; 3], [0; 3]);
        for (i, node) in NODES.iter().enumerate() {
            lab.express_in(node, "127.0.0.1", node, BACKEND_PORT);
            tandem[i] = start_tandem(&mut lab, node);
            start_bird(&mut lab, node, &node_conf(node));
            announce[i] = start_announce(&mut lab, node);
        }
        let fabric = Fabric {
            lab,
            tandem,
            announce,
        };
        fabric.wait_gateways(Duration::from_secs(20), &NODES, "all three nodes announced");
        Some(fabric)
    }

    /// The router's next hops for the VIP, in the kernel's order (the order of the
    /// hash-threshold ranges).
    pub fn gateways(&self) -> Vec<String> {
        let out = self
            .lab
            .exec("rt", &["ip", "-4", "route", "show", &format!("{VIP}/32")]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_owned())
            .collect()
    }

    /// Waits until the router's next hops are exactly `nodes`' addresses.
    pub fn wait_gateways(&self, within: Duration, nodes: &[&str], what: &str) {
        let mut want: Vec<String> = nodes.iter().map(|n| gateway_of(n)).collect();
        want.sort();
        let mut last = Vec::new();
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(within, what, || {
                last = self.gateways();
                last.sort();
                last == want
            })
        }));
        if let Err(e) = ok {
            let bird = self.lab.exec(
                "rt",
                &["birdc", "-s", &self.ctl("rt"), "show", "protocols", "all"],
            );
            eprintln!(
                "router next hops {last:?}, wanted {want:?}\n{}",
                String::from_utf8_lossy(&bird.stdout)
            );
            std::panic::resume_unwind(e);
        }
    }

    pub fn ctl(&self, node: &str) -> String {
        self.lab
            .path(&format!("{node}-bird.ctl"))
            .display()
            .to_string()
    }

    /// Restarts tandem on `node` (after it was killed).
    pub fn restart_tandem(&mut self, node: &str) {
        self.tandem[index(node) - 1] = start_tandem(&mut self.lab, node);
    }

    /// Sets a switch of `node`'s own Express backend (`/__control`).
    pub fn backend_health(&self, node: &str, health: &str) {
        let url = format!("http://127.0.0.1:{BACKEND_PORT}/__control");
        let body = format!("{{\"health\":\"{health}\"}}");
        let out = self
            .lab
            .exec(node, &["curl", "-sf", "-X", "POST", "-d", &body, &url]);
        assert!(out.status.success(), "control of {node}'s backend failed");
    }

    /// Opens `n` new connections to the VIP one after another, one request each; the
    /// node that answered each (`Err` for a failed one).
    pub fn new_connections(&self, n: usize) -> Vec<Result<String, String>> {
        let ns = self.lab.ns("client");
        in_netns(&ns, move || {
            (0..n)
                .map(|_| connect().and_then(|mut s| request(&mut s)))
                .collect()
        })
    }

    /// Opens `n` keep-alive connections to the VIP and sends one request on each.
    pub fn keepalive_connections(&self, n: usize) -> Vec<(TcpStream, String)> {
        let ns = self.lab.ns("client");
        in_netns(&ns, move || {
            (0..n)
                .map(|_| {
                    let mut s = connect().unwrap();
                    let node = request(&mut s).unwrap();
                    (s, node)
                })
                .collect()
        })
    }
}

/// Per-node counts of successful answers.
pub fn spread(results: &[Result<String, String>]) -> [usize; 3] {
    let mut counts = [0; 3];
    for node in results.iter().flatten() {
        counts[index(node) - 1] += 1;
    }
    counts
}

/// A veth pair: `dev` in the router with 10.200.`net`.1/24, `eth0` in `node` with
/// 10.200.`net`.2/24 and its default route through the router.
fn link(lab: &mut Lab, node: &str, dev: &str, net: usize) {
    let ns = lab.add_ns(node);
    let rt = lab.ns("rt");
    run(&[
        "ip", "-n", &rt, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ]);
    run(&[
        "ip",
        "-n",
        &rt,
        "addr",
        "add",
        &format!("10.200.{net}.1/24"),
        "dev",
        dev,
    ]);
    run(&["ip", "-n", &rt, "link", "set", dev, "up"]);
    run(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        &format!("10.200.{net}.2/24"),
        "dev",
        "eth0",
    ]);
    run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
    run(&[
        "ip",
        "-n",
        &ns,
        "route",
        "add",
        "default",
        "via",
        &format!("10.200.{net}.1"),
    ]);
}

fn shipped(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("bgp").join(file)).unwrap()
}

/// Replaces `from` (which must occur) in the shipped text: a changed example fails here
/// rather than silently testing something else.
fn subst(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "bgp example no longer contains {from:?}"
    );
    text.replace(from, to)
}

fn router_conf() -> String {
    let mut c = subst(
        shipped("bird-router.conf"),
        "log syslog all;",
        "log stderr all;",
    );
    c = subst(c, "router id 10.0.1.1;", "router id 10.200.0.1;");
    for node in NODES {
        let n = index(node);
        c = subst(
            c,
            &format!("neighbor 10.0.{n}.2 "),
            &format!("neighbor 10.200.{n}.2 "),
        );
    }
    c
}

fn node_conf(node: &str) -> String {
    let n = index(node);
    let c = subst(shipped("bird.conf"), "log syslog all;", "log stderr all;");
    let c = subst(
        c,
        "router id 10.0.1.2;",
        &format!("router id 10.200.{n}.2;"),
    );
    subst(c, "neighbor 10.0.1.1 ", &format!("neighbor 10.200.{n}.1 "))
}

/// BIRD in the foreground with its own config, control socket and pid file.
fn start_bird(lab: &mut Lab, node: &str, conf: &str) {
    let file = lab.path(&format!("{node}-bird.conf"));
    std::fs::write(&file, conf).unwrap();
    let p = |f: &str| lab.path(&format!("{node}-{f}")).display().to_string();
    let (ctl, pid, conf) = (p("bird.ctl"), p("bird.pid"), file.display().to_string());
    let cwd = lab.path("");
    lab.spawn(
        node,
        &["bird", "-f", "-c", &conf, "-s", &ctl, "-P", &pid],
        &cwd,
        &format!("{node}-bird.log"),
    );
    wait_until(Duration::from_secs(5), "BIRD control socket", || {
        lab.exec(node, &["birdc", "-s", &ctl, "show", "status"])
            .status
            .success()
    });
}

/// The file whose presence drains `node` (the loop withdraws its route).
pub fn drain_file(lab: &Lab, node: &str) -> std::path::PathBuf {
    lab.path(&format!("{node}-drain"))
}

/// The shipped check loop with the lab's VIP, run from the checkout.
fn start_announce(lab: &mut Lab, node: &str) -> u32 {
    let script = repo_root().join("bgp/tandem-bgp-announce");
    let env = [
        format!("TANDEM_BGP_VIP={VIP}/32"),
        format!("TANDEM_BGP_INTERVAL={INTERVAL}"),
        format!("TANDEM_BGP_RISE={RISE}"),
        format!("TANDEM_BGP_FALL={FALL}"),
        format!("TANDEM_BGP_DRAIN_FILE={}", drain_file(lab, node).display()),
    ];
    let mut cmd = vec!["env"];
    cmd.extend(env.iter().map(String::as_str));
    let script = script.display().to_string();
    cmd.push(&script);
    let cwd = lab.path("");
    lab.spawn(node, &cmd, &cwd, &format!("{node}-announce.log"))
}

fn tandem_conf() -> String {
    format!(
        r#"workers: 1
shutdown_timeout: 2s
admin:
  bind: 127.0.0.1:9901
listeners:
  - name: web
    bind: {VIP}:{PORT}
    mode: http
    upstream: app
upstreams:
  - name: app
    servers:
      - address: 127.0.0.1:{BACKEND_PORT}
    health_check:
      http:
        path: /healthz
      interval: 200ms
      timeout: 150ms
      rise: 1
      fall: 1
    retries: 0
"#
    )
}

fn start_tandem(lab: &mut Lab, node: &str) -> u32 {
    lab.start_tandem(node, &tandem_conf())
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it opens stay
/// in that namespace whichever thread uses them afterwards.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        enter_netns(&file);
        f()
    })
    .join()
    .unwrap()
}

#[allow(unsafe_code)]
fn enter_netns(file: &std::fs::File) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: setns only reads the descriptor, which `file` keeps open for the call; it
    // changes the namespace of this (test-owned, short-lived) thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

fn connect() -> Result<TcpStream, String> {
    let addr: SocketAddr = format!("{VIP}:{PORT}").parse().unwrap();
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    Ok(s)
}

/// One keep-alive GET on `s`; the Express instance (node) that answered.
pub fn request(s: &mut TcpStream) -> Result<String, String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip.test\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
    if !line.starts_with("HTTP/1.1 200 ") {
        return Err(format!("status line {line:?}"));
    }
    let mut len = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).map_err(|e| format!("read: {e}"))?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = vec![0; len.ok_or("no content-length")?];
    r.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    // The BufReader may only hold this response's bytes: one request at a time.
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    v["instance"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no instance in {v}"))
}
