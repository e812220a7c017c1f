//! Past one pair: three active tandem nodes behind a router's ECMP route, each
//! announcing the VIP by BGP through BIRD with the shipped `bgp/` kit, in network
//! namespaces (`bgp/fabric.rs`), plus the check script's own tests (`bgp/check.rs`).
//!
//! Shown end to end: new connections spread over the three nodes; a SIGKILLed tandem's
//! route is withdrawn within 3 s (measured from the kill to the router's kernel table),
//! after which every new connection succeeds through the others while keep-alive
//! connections already open on them keep working; a node whose `/readyz` fails (its
//! only upstream server down), whose tandem hangs (SIGSTOP), that is drained (drain
//! file) or whose check loop stops is withdrawn too; a restarted or recovered node
//! rejoins.
//! Figures are printed on stderr. Needs root, iproute2, curl, node and BIRD 2
//! (`TANDEM_SKIP_NETNS=1` skips loudly); runs in `scripts/test.sh`'s serial pass with
//! the HA tests because it measures timing.
//!
//! Why the killed node is the middle next hop: Linux's multipath routing is
//! hash-threshold (each next hop owns a contiguous range of the hash space), so when
//! the first or last of three next hops leaves, the two survivors' ranges shift and
//! some of *their* flows move to the other survivor, which resets them. Only removing
//! the middle one leaves every surviving flow in place. A router with resilient
//! (consistent) hashing keeps surviving flows in place whichever node leaves; BIRD 2
//! cannot program Linux's resilient nexthop groups, so this lab tests the case plain
//! Linux gets right and `bgp/README.md` explains the rest.

mod check;
mod fabric;

use std::time::{Duration, Instant};

use fabric::{gateway_of, node_of_gateway, spread, Fabric, NODES};

/// Bound on route withdrawal after a node stops being able to serve.
const WITHDRAW_WITHIN: Duration = Duration::from_secs(3);

fn report(line: &str) {
    // Past the test harness's capture: CI logs should show the figures.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "== bgp: {line}");
}

/// Asserts that each node got at least 10 % of `results` (an equal share is expected) and
/// that none failed.
fn assert_spread(results: &[Result<String, String>], nodes: &[&str], what: &str) -> [usize; 3] {
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{what}: failed connections: {failed:?}");
    let counts = spread(results);
    for node in nodes {
        let c = counts[fabric::index(node) - 1];
        assert!(
            c * 100 >= results.len() * 10,
            "{what}: {node} got {c} of {}: {counts:?}",
            results.len()
        );
    }
    counts
}

/// Polls the router until `node`'s next hop is gone; the time since `t0`.
fn wait_withdrawn(f: &Fabric, node: &str, t0: Instant, what: &str) -> Duration {
    let gw = gateway_of(node);
    let deadline = t0 + Duration::from_secs(10);
    while f.gateways().contains(&gw) {
        assert!(Instant::now() < deadline, "{what}: {node} never withdrawn");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

#[test]
fn ecmp_spreads_new_connections_and_a_killed_node_is_withdrawn_within_3s_then_rejoins() {
    let Some(mut f) = Fabric::start() else { return };
    let counts = assert_spread(&f.new_connections(150), &NODES, "three nodes");
    report(&format!("150 new connections over lb1/lb2/lb3: {counts:?}"));

    // Keep-alive connections on every node, opened before the failure.
    let mut kept = f.keepalive_connections(30);
    for node in NODES {
        assert!(
            kept.iter().any(|(_, n)| n == node),
            "no keep-alive connection landed on {node}"
        );
    }

    let order = f.gateways();
    assert_eq!(order.len(), 3, "router next hops: {order:?}");
    let victim = node_of_gateway(&order[1]);
    let pid = f.tandem[fabric::index(victim) - 1];
    let t0 = Instant::now();
    f.lab.signal(pid, "KILL");
    let took = wait_withdrawn(&f, victim, t0, "SIGKILL");
    report(&format!(
        "SIGKILL of {victim}'s tandem -> route withdrawn at the router after {} ms",
        took.as_millis()
    ));
    assert!(took < WITHDRAW_WITHIN, "withdrawal took {took:?}");
    let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != victim).collect();

    // Every new connection now succeeds, through the two others.
    let after = f.new_connections(100);
    let counts = assert_spread(&after, &others, "after the kill");
    report(&format!(
        "100 new connections after the kill: {counts:?}, 0 failed"
    ));

    // Open keep-alive connections on the survivors keep working, on the same node; the
    // victim's are gone (its flows break, and only its).
    let mut survived = 0;
    for (s, node) in &mut kept {
        let again = fabric::request(s);
        if *node == victim {
            assert!(
                again.is_err(),
                "a connection to the killed node answered: {again:?}"
            );
        } else {
            assert_eq!(
                again.as_deref(),
                Ok(node.as_str()),
                "keep-alive on {node} broke"
            );
            survived += 1;
        }
    }
    report(&format!(
        "keep-alive connections on the survivors: {survived} of {survived} kept working"
    ));
    drop(kept);

    // The node comes back: tandem restarts, the check passes RISE times, BIRD announces.
    let t1 = Instant::now();
    f.restart_tandem(victim);
    f.wait_gateways(Duration::from_secs(10), &NODES, "restarted node rejoins");
    report(&format!(
        "{victim} rejoined {} ms after its restart",
        t1.elapsed().as_millis()
    ));
    let counts = assert_spread(&f.new_connections(90), &NODES, "after the rejoin");
    report(&format!("90 new connections after the rejoin: {counts:?}"));
}

#[test]
fn ecmp_withdraws_a_node_whose_readyz_fails_or_that_hangs_and_takes_it_back() {
    let Some(mut f) = Fabric::start() else { return };
    let node = "lb1";
    let t0 = Instant::now();
    // Its only server fails its probes: upstream down, /readyz 503, tandem still alive.
    f.backend_health(node, "fail");
    let took = wait_withdrawn(&f, node, t0, "/readyz 503");
    report(&format!(
        "{node}'s upstream down -> route withdrawn after {} ms",
        took.as_millis()
    ));
    assert!(took < WITHDRAW_WITHIN, "withdrawal took {took:?}");
    assert!(
        f.lab.admin(node, "/healthz").is_some(),
        "{node}'s tandem is still running: the withdrawal came from /readyz"
    );
    let counts = assert_spread(&f.new_connections(90), &["lb2", "lb3"], "lb1 unready");
    assert_eq!(counts[0], 0, "lb1 still got connections: {counts:?}");

    f.backend_health(node, "ok");
    f.wait_gateways(Duration::from_secs(10), &NODES, "recovered node rejoins");
    assert_spread(&f.new_connections(90), &NODES, "after recovery");

    // A hung tandem (stopped, its sockets open: connections are accepted by the kernel
    // and never answered) is withdrawn too: each check gives up after 0.4 s.
    let hung = "lb2";
    let pid = f.tandem[fabric::index(hung) - 1];
    let t0 = Instant::now();
    f.lab.signal(pid, "STOP");
    let took = wait_withdrawn(&f, hung, t0, "SIGSTOP");
    report(&format!(
        "{hung}'s tandem hung (SIGSTOP) -> route withdrawn after {} ms",
        took.as_millis()
    ));
    f.lab.signal(pid, "CONT");
    assert!(took < WITHDRAW_WITHIN, "withdrawal took {took:?}");
    f.wait_gateways(Duration::from_secs(10), &NODES, "resumed node rejoins");
}

#[test]
fn ecmp_drain_file_or_stopping_the_loop_withdraws_a_healthy_node_at_once() {
    let Some(mut f) = Fabric::start() else { return };
    let node = "lb3";
    let drain = fabric::drain_file(&f.lab, node);
    let t0 = Instant::now();
    std::fs::write(&drain, "").unwrap();
    let took = wait_withdrawn(&f, node, t0, "drain file");
    report(&format!(
        "{node} drained -> route withdrawn after {} ms",
        took.as_millis()
    ));
    // One check interval (0.5 s) plus BGP; no `fall` wait for a drain.
    assert!(
        took < Duration::from_millis(1500),
        "drain withdrawal took {took:?}"
    );
    assert!(
        f.lab.admin(node, "/readyz").is_some(),
        "{node} is ready: the withdrawal came from the drain file"
    );
    let counts = assert_spread(&f.new_connections(60), &["lb1", "lb2"], "lb3 drained");
    assert_eq!(counts[2], 0, "the drained node got connections: {counts:?}");
    std::fs::remove_file(&drain).unwrap();
    f.wait_gateways(Duration::from_secs(10), &NODES, "undrained node rejoins");

    // Stopping the loop (systemctl stop) withdraws too: nobody would check any more.
    let t0 = Instant::now();
    let pid = f.announce[fabric::index(node) - 1];
    f.lab.signal(pid, "TERM");
    let took = wait_withdrawn(&f, node, t0, "check loop stopped");
    report(&format!(
        "{node}'s check loop stopped -> withdrawn after {} ms",
        took.as_millis()
    ));
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let status = f.lab.reap(pid).unwrap();
    assert!(status.success(), "the loop exited with {status}");
}
