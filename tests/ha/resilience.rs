//! The pair never goes dark: double faults, active/active with two VIPs, an IPv6 VIP,
//! configuration drift, a drain replicated to the peer, forged ICMP refusals, and SIGKILL
//! failover at the default timings (the refusal hint).
//!
//! Same lab as the rest of `ha` (two tandem nodes in namespaces, real Express backends);
//! bounds as in the user-facing contract: one VIP holder within `dead_interval` + 1 s,
//! active/active and IPv6 failover within 1 s, a SIGKILL failover median <= 500 ms at
//! heartbeat 200 ms / dead interval 1 s.

use std::time::Duration;

use super::lab::{self, median, now_ns, wait_until, ClientLoop, Lab, VIP, VIP2, VIP6};
use super::{is_role, pair, start_node, wait_settled, NodeOpts, DEAD_MS};

/// The HTTP status a fresh client connection gets from `url` ("000" when none).
fn code(lab: &Lab, url: &str) -> String {
    let out = lab.exec(
        "client",
        &[
            "curl",
            "-gs",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "1",
            url,
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn status(lab: &Lab, node: &str) -> serde_json::Value {
    lab.admin(node, "/status")
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn set_health(lab: &Lab, port: u16, health: &str) {
    let url = format!("http://{}:{port}/__control", lab::BACKEND_IP);
    let body = format!("{{\"health\":\"{health}\"}}");
    let out = lab.exec("client", &["curl", "-sf", "-X", "POST", "-d", &body, &url]);
    assert!(out.status.success(), "control {port}: {health}");
}

#[test]
fn double_fault_keeps_one_holder_serving_503_and_other_listeners_serve() {
    let Some(mut lab) = Lab::new() else { return };
    lab.express("b2", 3002);
    let mut o1 = NodeOpts::new(200);
    o1.track = true;
    o1.second = true;
    let mut o2 = NodeOpts::new(100);
    o2.track = true;
    o2.second = true;
    pair(&mut lab, &o1, &o2);
    // The shared pool goes down: both nodes become faulty.
    set_health(&lab, 3001, "fail");
    let t0 = now_ns();
    wait_until(Duration::from_secs(3), "both nodes faulty", || {
        status(&lab, "lb1")["ha"]["faulty"] == true && status(&lab, "lb2")["ha"]["faulty"] == true
    });
    let bound = Duration::from_millis(DEAD_MS + 1000);
    wait_until(bound, "lb1 (the higher priority) is the one holder", || {
        lab.holds_vip("lb1") && !lab.holds_vip("lb2") && is_role(&lab, "lb1", "master")
    });
    let took = (now_ns() - t0) as f64 / 1e6;
    eprintln!("double fault: one holder {took:.0} ms after the pool went down");
    // Stays that way: no flapping between two faulty nodes.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(2 * super::HEARTBEAT_MS));
        assert!(lab.holds_vip("lb1") && !lab.holds_vip("lb2"));
        assert!(is_role(&lab, "lb2", "fault"));
    }
    let app = code(&lab, &format!("http://{VIP}:8080/"));
    assert_eq!(
        app, "503",
        "the dead pool answers a fast 503 through the VIP"
    );
    let other = code(&lab, &format!("http://{VIP}:8081/"));
    assert_eq!(
        other, "200",
        "a listener of a healthy upstream keeps serving"
    );
    set_health(&lab, 3001, "ok");
    wait_settled(&lab, "lb1", "lb2");
}

fn two_vips(first: u8, second: u8) -> String {
    format!(
        "  vips:\n    - address: {VIP}/24\n      interface: eth0\n      priority: {first}\n    \
         - address: {VIP2}/24\n      interface: eth0\n      priority: {second}\n"
    )
}

#[test]
fn active_active_each_node_holds_one_vip_and_one_holds_both_after_sigkill() {
    let Some(mut lab) = Lab::new() else { return };
    let opts = |prio: u8, vips: String| {
        let mut o = NodeOpts::new(prio);
        o.bind = "0.0.0.0:8080".into();
        o.vips = Some(vips);
        o
    };
    let o1 = opts(200, two_vips(200, 100));
    let o2 = opts(100, two_vips(100, 200));
    lab.express("b1", 3001);
    start_node(&mut lab, "lb1", &o1);
    let p2 = start_node(&mut lab, "lb2", &o2);
    let split = |lab: &Lab| {
        lab.holds("lb1", VIP)
            && !lab.holds("lb1", VIP2)
            && lab.holds("lb2", VIP2)
            && !lab.holds("lb2", VIP)
    };
    wait_until(Duration::from_secs(5), "each node holds its VIP", || {
        split(&lab)
    });
    for vip in [VIP, VIP2] {
        assert_eq!(code(&lab, &format!("http://{vip}:8080/")), "200", "{vip}");
    }
    let st = status(&lab, "lb1");
    assert_eq!(st["ha"]["vips"][0]["address"], format!("{VIP}/24"));
    assert_eq!(st["ha"]["vips"][0]["held"], true);
    assert_eq!(st["ha"]["vips"][1]["held"], false);
    let held = |lab: &Lab, node: &str, vip: &str| {
        lab.metric(node, "tandem_ha_vip_held", &[("vip", &format!("{vip}/24"))])
    };
    assert_eq!(
        (held(&lab, "lb1", VIP), held(&lab, "lb1", VIP2)),
        (1.0, 0.0)
    );

    lab.signal(p2, "KILL");
    let t0 = now_ns();
    wait_until(Duration::from_secs(1), "lb1 holds both VIPs", || {
        lab.holds("lb1", VIP) && lab.holds("lb1", VIP2)
    });
    eprintln!(
        "active/active: lb1 holds both {:.0} ms after SIGKILL of lb2",
        (now_ns() - t0) as f64 / 1e6
    );
    wait_until(Duration::from_secs(2), "VIP2 served through lb1", || {
        code(&lab, &format!("http://{VIP2}:8080/")) == "200"
    });

    start_node(&mut lab, "lb2", &o2);
    wait_until(Duration::from_secs(5), "back to one VIP each", || {
        split(&lab)
    });
    assert_eq!(code(&lab, &format!("http://{VIP2}:8080/")), "200");
}

#[test]
fn ipv6_vip_fails_over_within_a_second_and_the_client_learns_the_new_mac() {
    let Some(mut lab) = Lab::new() else { return };
    lab.enable_ipv6();
    let opts = |prio: u8| {
        let mut o = NodeOpts::new(prio);
        o.bind = format!("\"[{VIP6}]:8080\"");
        o.vips = Some(format!(
            "  vip:\n    address: {VIP6}/64\n    interface: eth0\n    gratuitous_arp: 3\n"
        ));
        o
    };
    lab.express("b1", 3001);
    let p1 = start_node(&mut lab, "lb1", &opts(200));
    wait_until(Duration::from_secs(5), "lb1 holds the IPv6 VIP", || {
        lab.holds("lb1", VIP6)
    });
    start_node(&mut lab, "lb2", &opts(100));
    wait_until(Duration::from_secs(5), "lb2 backup", || {
        is_role(&lab, "lb2", "backup")
    });
    let url = format!("http://[{VIP6}]:8080/");
    assert_eq!(code(&lab, &url), "200");
    let (mac1, mac2) = (lab.mac("lb1"), lab.mac("lb2"));
    assert_eq!(lab.client_mac_of(VIP6).as_deref(), Some(mac1.as_str()));

    lab.signal(p1, "KILL");
    let t0 = now_ns();
    wait_until(Duration::from_secs(1), "lb2 holds the IPv6 VIP", || {
        lab.holds("lb2", VIP6)
    });
    wait_until(
        Duration::from_secs(1) - Duration::from_nanos((now_ns() - t0) as u64),
        "the client's neighbour entry moved to lb2's MAC (unsolicited NA)",
        || lab.client_mac_of(VIP6).as_deref() == Some(mac2.as_str()),
    );
    let took = (now_ns() - t0) as f64 / 1e6;
    eprintln!("IPv6 VIP: lb2 holds it and the client has its MAC {took:.0} ms after SIGKILL");
    assert_eq!(code(&lab, &url), "200");
    assert_eq!(lab.metric("lb2", "tandem_ha_vip_errors_total", &[]), 0.0);
}

#[test]
fn configuration_drift_is_detected_and_cleared_without_a_role_change() {
    let Some(mut lab) = Lab::new() else { return };
    pair(&mut lab, &NodeOpts::new(200), &NodeOpts::new(100));
    let in_sync = |lab: &Lab, node: &str| lab.metric(node, "tandem_ha_config_in_sync", &[]);
    wait_until(Duration::from_secs(2), "in sync", || {
        in_sync(&lab, "lb1") == 1.0 && status(&lab, "lb1")["ha"]["config_in_sync"] == true
    });
    let transitions = lab.metric("lb1", "tandem_ha_transitions_total", &[("to", "backup")]);
    let cfg = lab.path("lb2").join("proxy.yaml");
    let original = std::fs::read_to_string(&cfg).unwrap();
    // The same upstream, one setting changed (and comments/formatting, which do not count).
    std::fs::write(
        &cfg,
        original.replace("    retries: 0\n", "    retries: 1\n"),
    )
    .unwrap();
    let reload = |lab: &Lab| {
        let out = lab.exec(
            "lb2",
            &["curl", "-sf", "-X", "POST", "http://127.0.0.1:9901/reload"],
        );
        assert!(
            out.status.success(),
            "reload: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    reload(&lab);
    wait_until(
        Duration::from_secs(2),
        "drift detected on both nodes",
        || in_sync(&lab, "lb1") == 0.0 && in_sync(&lab, "lb2") == 0.0,
    );
    let st = status(&lab, "lb1");
    assert_eq!(st["ha"]["config_in_sync"], false);
    assert_ne!(st["ha"]["config_hash"], st["ha"]["peer_config_hash"]);
    std::fs::write(&cfg, format!("# comment only\n{original}")).unwrap();
    reload(&lab);
    wait_until(Duration::from_secs(2), "back in sync", || {
        in_sync(&lab, "lb1") == 1.0 && in_sync(&lab, "lb2") == 1.0
    });
    assert!(is_role(&lab, "lb1", "master") && is_role(&lab, "lb2", "backup"));
    let after = lab.metric("lb1", "tandem_ha_transitions_total", &[("to", "backup")]);
    assert_eq!(after, transitions, "drift changes no role");
    let log = std::fs::read_to_string(lab.path("lb1.log")).unwrap_or_default();
    assert_eq!(
        log.matches("configuration drift").count(),
        1,
        "one warning per change"
    );
}

#[test]
fn sigkill_failover_at_default_timings_takes_under_half_a_second_median() {
    let Some(mut lab) = Lab::new() else { return };
    let opts = |prio: u8| {
        let mut o = NodeOpts::new(prio);
        o.timings = (200, 1000);
        o
    };
    let o1 = opts(200);
    let (mut p1, _p2) = pair(&mut lab, &o1, &opts(100));
    let client = ClientLoop::start(&mut lab, "0.1");
    let mut failovers = Vec::new();
    for run in 0..5 {
        wait_until(Duration::from_secs(3), "client served", || {
            client.first_success_after(now_ns() - 100_000_000).is_some()
        });
        // The standby must know its peer (a node in its start-up wait that has not
        // heard one yet ignores refusals and claims after its own wait).
        wait_until(Duration::from_secs(3), "lb2 has heard lb1", || {
            status(&lab, "lb2")["ha"]["peer_role"] == "master"
        });
        lab.signal(p1, "KILL");
        let t0 = now_ns();
        wait_until(
            Duration::from_secs(3),
            "a request succeeds after the kill",
            || client.first_success_after(t0).is_some(),
        );
        let ms = client.first_success_after(t0).unwrap() as f64 / 1e6;
        eprintln!("run {run}: SIGKILL failover at defaults {ms:.0} ms");
        failovers.push(ms);
        assert!(is_role(&lab, "lb2", "master"));
        p1 = start_node(&mut lab, "lb1", &o1);
        wait_settled(&lab, "lb1", "lb2");
    }
    client.stop(&mut lab);
    let med = median(&mut failovers.clone());
    eprintln!("SIGKILL failover at heartbeat 200ms / dead 1s (ms): {failovers:?}, median {med:.0}");
    let refused = lab.metric(
        "lb2",
        "tandem_ha_heartbeats_total",
        &[("direction", "rx"), ("result", "refused")],
    );
    assert!(refused > 0.0, "the refusal hint was used");
    assert!(med <= 500.0, "median {med} ms > 500 ms: {failovers:?}");
}

/// Runs `f` on a thread that has joined network namespace `ns` (`ip netns` names).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd as _;
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
            // SAFETY: setns(2) with a valid namespace descriptor, kept open for the call;
            // it changes only this short-lived thread's network namespace.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP port unreachable "about" a UDP datagram `from` -> `to`.
fn port_unreachable(from: std::net::SocketAddrV4, to: std::net::SocketAddrV4) -> Vec<u8> {
    let mut inner = vec![0x45, 0, 0, 36, 0, 1, 0x40, 0, 64, 17, 0, 0];
    inner.extend_from_slice(&from.ip().octets());
    inner.extend_from_slice(&to.ip().octets());
    let c = checksum(&inner);
    inner[10..12].copy_from_slice(&c.to_be_bytes());
    inner.extend_from_slice(&from.port().to_be_bytes());
    inner.extend_from_slice(&to.port().to_be_bytes());
    inner.extend_from_slice(&[0, 16, 0, 0]);
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&inner);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    icmp
}

#[test]
fn forged_port_unreachable_while_heartbeats_arrive_changes_nothing() {
    let Some(mut lab) = Lab::new() else { return };
    pair(&mut lab, &NodeOpts::new(200), &NodeOpts::new(100));
    // lb2's connected heartbeat socket: 10.99.0.2:<ephemeral> -> 10.99.0.1:7400.
    let peer = format!("{}:7400", lab::ip_of("lb1"));
    let out = lab.exec("lb2", &["ss", "-Huan"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let local = text
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(peer.as_str()))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_else(|| panic!("no connected heartbeat socket on lb2:\n{text}"));
    let from: std::net::SocketAddrV4 = local.parse().unwrap();
    let to: std::net::SocketAddrV4 = peer.parse().unwrap();
    let refused = |lab: &Lab| {
        lab.metric(
            "lb2",
            "tandem_ha_heartbeats_total",
            &[("direction", "rx"), ("result", "refused")],
        )
    };
    let transitions =
        |lab: &Lab| lab.metric("lb2", "tandem_ha_transitions_total", &[("to", "master")]);
    let (r0, t0) = (refused(&lab), transitions(&lab));
    let packet = port_unreachable(from, to);
    in_netns(&lab.ns("client"), || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
        let dst: std::net::SocketAddr = format!("{}:0", from.ip()).parse().unwrap();
        // 40 forgeries over 2 s: a refusal after nearly every genuine heartbeat.
        for _ in 0..40 {
            s.send_to(&packet, &dst.into()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    std::thread::sleep(Duration::from_millis(3 * DEAD_MS));
    assert!(
        refused(&lab) >= r0 + 10.0,
        "the forgeries reached lb2 ({} -> {})",
        r0,
        refused(&lab)
    );
    assert_eq!(transitions(&lab), t0, "a forged refusal changed a role");
    assert!(is_role(&lab, "lb1", "master") && is_role(&lab, "lb2", "backup"));
    assert!(lab.holds_vip("lb1") && !lab.holds_vip("lb2"));
}

/// `GET /upstreams/app/servers/{addr}` on `node`: the server's admin state.
fn admin_state(lab: &Lab, node: &str, addr: &str) -> Option<String> {
    let v: serde_json::Value = lab
        .admin(node, &format!("/upstreams/app/servers/{addr}"))
        .and_then(|s| serde_json::from_str(&s).ok())?;
    v["admin_state"].as_str().map(str::to_owned)
}

#[test]
fn a_drain_is_replicated_and_respected_after_sigkill_of_the_node_where_it_was_set() {
    let Some(mut lab) = Lab::new() else { return };
    lab.express("b2", 3002);
    let mut o1 = NodeOpts::new(200);
    o1.second_server = true;
    let mut o2 = NodeOpts::new(100);
    o2.second_server = true;
    let (p1, _p2) = pair(&mut lab, &o1, &o2);
    let b1 = format!("{}:3001", lab::BACKEND_IP);
    let url = format!("http://127.0.0.1:9901/upstreams/app/servers/{b1}");
    let out = lab.exec(
        "lb1",
        &[
            "curl",
            "-sf",
            "-X",
            "PUT",
            "-d",
            r#"{"state":"drain"}"#,
            &url,
        ],
    );
    assert!(out.status.success(), "PUT drain on lb1");
    wait_until(Duration::from_secs(2), "the drain reached lb2", || {
        admin_state(&lab, "lb2", &b1).as_deref() == Some("drain")
    });
    lab.signal(p1, "KILL");
    wait_until(Duration::from_secs(2), "lb2 took over", || {
        is_role(&lab, "lb2", "master") && lab.holds_vip("lb2")
    });
    let instances: Vec<String> = (0..20)
        .map(|_| {
            let out = lab.exec(
                "client",
                &[
                    "curl",
                    "-s",
                    "--max-time",
                    "1",
                    &format!("http://{VIP}:8080/"),
                ],
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v["instance"].as_str().unwrap_or("none").to_owned()
        })
        .collect();
    assert!(
        instances.iter().all(|i| i == "b2"),
        "the drained server got traffic after the failover: {instances:?}"
    );
    assert_eq!(admin_state(&lab, "lb2", &b1).as_deref(), Some("drain"));
}
