//! keepalived (VRRP) in the same namespace topology, with two tandem nodes *without* an
//! `ha` section, using the shipped `keepalived/` files: measures its failover after
//! SIGKILL of everything on the master node (keepalived and tandem), for the README's
//! side-by-side figure.

use std::time::Duration;

use super::lab::{now_ns, wait_until, ClientLoop, Lab, VIP_CIDR};
use super::{report_failover, start_node, NodeOpts};
use crate::support::repo_root;

/// The shipped config with this lab's addresses. `enable_script_security` is dropped
/// because a checkout's path may be writable by others, which that option refuses.
fn keepalived_conf(node: &str) -> String {
    let dir = repo_root().join("keepalived");
    let text = std::fs::read_to_string(dir.join("keepalived.conf")).unwrap();
    let (me, peer) = if node == "lb1" {
        ("10.99.0.1", "10.99.0.2")
    } else {
        ("10.99.0.2", "10.99.0.1")
    };
    let mut c = text
        .replace("    enable_script_security\n", "")
        .replace("/etc/tandem/keepalived/", &format!("{}/", dir.display()))
        .replace("10.0.0.100/24", VIP_CIDR)
        .replace("10.0.0.2", "@ME@")
        .replace("10.0.0.3", "@PEER@")
        .replace("@ME@", me)
        .replace("@PEER@", peer);
    if node == "lb2" {
        c = c
            .replace("priority 200", "priority 100")
            .replace("router_id tandem_a", "router_id tandem_b");
    }
    c
}

fn start_keepalived(lab: &mut Lab, node: &str) -> u32 {
    let conf = lab.path(&format!("{node}-keepalived.conf"));
    std::fs::write(&conf, keepalived_conf(node)).unwrap();
    let p = |f: &str| lab.path(&format!("{node}-{f}")).display().to_string();
    let (pid, vrrp, chk) = (p("ka.pid"), p("vrrp.pid"), p("chk.pid"));
    // A SIGKILLed keepalived leaves its pid files, and its forked child may linger as a
    // zombie, which keepalived takes for a running daemon.
    for f in [&pid, &vrrp, &chk] {
        let _ = std::fs::remove_file(f);
    }
    let conf = conf.display().to_string();
    let cwd = lab.path("");
    lab.spawn(
        node,
        &[
            "keepalived",
            "--dont-fork",
            "--log-console",
            "--vrrp",
            "-f",
            &conf,
            "-p",
            &pid,
            "-r",
            &vrrp,
            "-c",
            &chk,
        ],
        &cwd,
        &format!("{node}-keepalived.log"),
    )
}

fn keepalived_installed() -> bool {
    std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .is_ok()
}

#[test]
fn keepalived_failover_for_comparison() {
    let Some(mut lab) = Lab::new() else { return };
    assert!(
        keepalived_installed(),
        "keepalived is not installed (apt-get install keepalived; .ci/run does)"
    );
    let mut o = NodeOpts::new(200);
    o.ha = false;
    lab.express("b1", 3001);
    start_node(&mut lab, "lb1", &o);
    start_node(&mut lab, "lb2", &o);
    start_keepalived(&mut lab, "lb1");
    start_keepalived(&mut lab, "lb2");
    let settled = |lab: &Lab| lab.holds_vip("lb1") && !lab.holds_vip("lb2");
    wait_until(
        Duration::from_secs(15),
        "keepalived: lb1 holds the VIP",
        || settled(&lab),
    );
    let client = ClientLoop::start(&mut lab, "0.2");
    let mut runs = Vec::new();
    for run in 0..3 {
        wait_until(Duration::from_secs(5), "client served", || {
            client.first_success_after(now_ns() - 100_000_000).is_some()
        });
        lab.kill_all_in("lb1");
        let t0 = now_ns();
        wait_until(Duration::from_secs(10), "keepalived failover", || {
            client.first_success_after(t0).is_some()
        });
        let ms = client.first_success_after(t0).unwrap() as f64 / 1e6;
        eprintln!("keepalived run {run}: SIGKILL failover {ms:.0} ms");
        runs.push(ms);
        // A SIGKILLed keepalived leaves its VIP configured; an init system's
        // ExecStopPost would clean it up, the test does it by hand.
        let ns = lab.ns("lb1");
        let _ = std::process::Command::new("ip")
            .args(["-n", &ns, "addr", "del", VIP_CIDR, "dev", "eth0"])
            .output();
        start_node(&mut lab, "lb1", &o);
        start_keepalived(&mut lab, "lb1");
        wait_until(Duration::from_secs(15), "lb1 preempts back", || {
            settled(&lab)
        });
    }
    client.stop(&mut lab);
    let med = super::lab::median(&mut runs.clone());
    eprintln!("keepalived SIGKILL failover (ms): {runs:?}, median {med:.0}");
    report_failover(None, Some(med));
}
